"""The PostHog client against the PostHog stand-in, over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from rotator.clients.posthog import (
    PostHogClient,
    ensure_condition,
    hogql_string,
)
from rotator.clients.transport import RetryPolicy
from rotator.config import load_config
from rotator.errors import ConfigError, PostHogError, ResetForbidden, ResetOutcomeUnknown
from rotator.redact import Secret
from rotator_sandbox.posthog import RateLimits
from tests.posthog_fixtures import (  # noqa: F401 - fixtures
    PROJECT,
    FakeClock,
    PostHogWorld,
    closed_port_url,
    cloud_world_fixture,
    fake_clock_fixture,
    personal_key,
    silent_server_fixture,
    timed_world_fixture,
    world_fixture,
)

SAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "align.yaml"
KEY_ENV = "ROTATOR_POSTHOG_PERSONAL_API_KEY"


def new_check_id() -> str:
    return str(uuid.uuid4())


# --- reading and resetting the key ------------------------------------------------------------


def test_get_project_returns_the_current_key_as_a_secret(world: PostHogWorld) -> None:
    project = world.client().get_project(world.project)

    assert project.id == world.project
    assert project.name == "Preview & Production"
    assert isinstance(project.api_token, Secret)
    assert project.api_token == world.initial_key
    assert project.live_events_token is not None


def test_reset_returns_a_new_key_that_reading_back_confirms(world: PostHogWorld) -> None:
    client = world.client()

    project = client.reset_key(world.project)

    assert project.api_token != world.initial_key
    assert project.api_token.reveal().startswith("phc_")
    assert client.get_project(world.project).api_token == project.api_token
    assert world.standin.calls("reset_token") == 1


def test_old_key_events_land_until_the_window_closes_then_are_dropped_silently(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    """Done-when: events with the old key before and after a reset; exact ingest/drop counts."""
    standin, client = timed_world.standin, timed_world.client(clock=fake_clock)
    old = timed_world.initial_key
    start = fake_clock.now()

    def send(key: Secret, phase: str, n: int = 2) -> None:
        for i in range(n):
            client.capture(key, "gateway_heartbeat", f"pod-{i}", {"phase": phase})

    send(old, "before")
    fake_clock.advance(60)
    new = client.reset_key(timed_world.project).api_token
    send(old, "in_window")  # lands: PostHog's token cache still maps it (150 s window)
    send(new, "new_key")  # lands: a new key resolves on first sight
    fake_clock.advance(standin.window_s + 1)
    send(old, "after_window")  # answered 200, then dropped silently
    fake_clock.advance(standin.lag_s + 1)

    old_counts = standin.counters().for_key(old)
    new_counts = standin.counters().for_key(new)
    assert (old_counts.accepted, old_counts.ingested, old_counts.dropped) == (6, 4, 2)
    assert (new_counts.accepted, new_counts.ingested, new_counts.dropped) == (2, 2, 0)
    assert old_counts.pending == new_counts.pending == 0

    def count(phase: str) -> int:
        where = f"event = 'gateway_heartbeat' AND properties.phase = {hogql_string(phase)}"
        return client.count_events(timed_world.project, where=where, since=start)

    counts = {p: count(p) for p in ("before", "in_window", "new_key", "after_window")}
    assert counts == {"before": 2, "in_window": 2, "new_key": 2, "after_window": 0}


FAULT_OUTCOMES = [
    # kind, does the reset happen on the server?
    ("5xx", False),
    ("hang", False),
    ("lose_response", True),
    ("slow", True),
]


@pytest.mark.parametrize(("kind", "happens"), FAULT_OUTCOMES)
def test_reset_is_attempted_exactly_once_under_every_fault(
    world: PostHogWorld, kind: Any, happens: bool
) -> None:
    client = world.client(timeout=(0.5, 0.3))
    world.standin.inject("reset_token", kind, times=3, delay_s=1.0)

    with pytest.raises(ResetOutcomeUnknown) as caught:
        client.reset_key(world.project)

    assert world.standin.calls("reset_token") == 1
    assert caught.value.retryable is False
    assert "Do not reset again" in str(caught.value)
    assert "read the key back" in str(caught.value)
    read_back = client.get_project(world.project).api_token
    assert read_back == world.standin.current_key(world.project)
    assert (read_back != world.initial_key) is happens


def test_reset_refused_or_throttled_is_sent_once_and_changes_nothing(
    world: PostHogWorld,
) -> None:
    with pytest.raises(ResetForbidden):
        world.client(world.scoped_key).reset_key(world.project)
    assert world.standin.calls("reset_token") == 1

    world.standin.rate_limits = RateLimits(per_minute=0)
    with pytest.raises(PostHogError) as caught:
        world.client().reset_key(world.project)
    assert caught.value.status == 429
    assert "nothing changed" in str(caught.value)
    assert world.standin.calls("reset_token") == 2
    assert world.standin.current_key(world.project) == world.initial_key


def test_a_reset_that_cannot_connect_was_never_sent() -> None:
    client = PostHogClient(
        app_host=closed_port_url(),
        ingest_host=closed_port_url(),
        personal_key=personal_key(),
        timeout=(0.5, 0.5),
    )

    with pytest.raises(PostHogError) as caught:
        client.reset_key(PROJECT)

    assert not isinstance(caught.value, ResetOutcomeUnknown)
    assert "nothing changed" in str(caught.value)


def test_a_lost_reset_response_is_recovered_by_reading_the_key_back(
    world: PostHogWorld,
) -> None:
    client = world.client()
    world.standin.inject("reset_token", "lose_response")

    with pytest.raises(ResetOutcomeUnknown):
        client.reset_key(world.project)
    recovered = client.get_project(world.project).api_token

    assert recovered != world.initial_key
    assert recovered == world.standin.current_key(world.project)
    check_id = new_check_id()
    client.send_marker(recovered, check_id=check_id)
    hit = client.find_marker(world.project, check_id=check_id, deadline_s=5, poll_s=0.05)
    assert hit is not None
    assert world.standin.calls("reset_token") == 1


# --- errors and their messages -------------------------------------------------------------------


@pytest.mark.parametrize("which", ["scoped_key", "legacy_key"])
def test_on_posthog_cloud_no_personal_key_may_reset_and_the_error_names_the_session_remedy(
    cloud_world: PostHogWorld, which: str
) -> None:
    # PR #51237: `*`-scoped keys and the former legacy keys (migrated to ["*"]) alike.
    world = cloud_world
    with pytest.raises(ResetForbidden) as caught:
        world.client(getattr(world, which)).reset_key(world.project)

    message = str(caught.value)
    assert "This action does not support personal API key access" in message
    assert "nothing changed" in message
    assert "posthog.reset.method: session" in message
    assert "without scopes" not in message
    assert "rotator run --no-reset" in message
    assert caught.value.status == 403
    assert caught.value.code == "permission_denied"
    assert world.standin.current_key(world.project) == world.initial_key
    assert world.standin.counters().resets == {}


def test_a_reset_refused_for_another_reason_is_forbidden_with_the_admin_remedy(
    fixed_answer: Any,
) -> None:
    fixed_answer.status = 403
    fixed_answer.answer = {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": "You do not have admin access to this resource.",
        "attr": None,
    }
    client = PostHogClient(
        app_host=fixed_answer.url,
        ingest_host=fixed_answer.url,
        personal_key=personal_key(),
        timeout=(1, 1),
    )

    with pytest.raises(ResetForbidden, match="needs a project admin") as caught:
        client.reset_key(PROJECT)

    assert "nothing changed" in str(caught.value)
    assert fixed_answer.calls == 1


def test_an_invalid_personal_key_is_named_by_its_source_never_by_its_value(
    world: PostHogWorld,
) -> None:
    wrong = personal_key()
    config = load_config(
        SAMPLE_CONFIG,
        overrides=[
            f"posthog.app_host={world.standin.url}",
            f"posthog.ingest_host={world.standin.ingest_url}",
        ],
        environ={KEY_ENV: wrong.reveal()},
    )
    client = PostHogClient.from_config(config)

    with pytest.raises(PostHogError) as caught:
        client.get_project(world.project)

    message = str(caught.value)
    assert caught.value.status == 401
    assert caught.value.code == "authentication_failed"
    assert f"env {KEY_ENV}" in message
    assert wrong.reveal() not in message
    assert caught.value.retryable is False


def test_a_missing_personal_key_is_a_config_error_naming_the_env_var() -> None:
    config = load_config(SAMPLE_CONFIG, environ={})

    with pytest.raises(ConfigError, match=KEY_ENV):
        PostHogClient.from_config(config)


def test_a_missing_scope_is_named_in_the_error(world: PostHogWorld) -> None:
    reader = world.standin.add_personal_key(
        personal_key(), scoped=True, legacy=False, scopes=("project:read",)
    )
    client = world.client(reader)

    assert client.get_project(world.project).api_token == world.initial_key
    with pytest.raises(PostHogError) as caught:
        client.query(world.project, "SELECT count() FROM events")

    assert caught.value.status == 403
    assert "'query:read'" in str(caught.value)


def test_capture_errors_carry_the_ingestion_text(world: PostHogWorld) -> None:
    too_long = Secret("phc_" + "a" * 61)

    with pytest.raises(PostHogError) as caught:
        world.client().capture(too_long, "x", "d")

    assert caught.value.status == 401
    assert "API key is not valid: too_long" in str(caught.value)


class _FixedAnswer(BaseHTTPRequestHandler):
    answer: ClassVar[dict[str, Any]] = {}
    status: ClassVar[int] = 200
    calls: ClassVar[int] = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        body = json.dumps(self.answer).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="fixed_answer")
def fixed_answer_fixture() -> Iterator[type[_FixedAnswer]]:
    handler = type("Answer", (_FixedAnswer,), {"answer": {}, "status": 200, "calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    "answer",
    [
        {"id": 4242, "name": "x"},
        {"id": 4242, "name": "x", "api_token": ""},
        {"id": 4242, "name": "x", "api_token": "sk_live_not_a_project_key"},
        {"id": 4242, "name": "x", "api_token": "phc_" + "a" * 61},
        {"id": 4242, "name": "x", "api_token": "phc_has-dash"},
    ],
)
def test_an_answer_without_a_valid_api_token_is_an_error_naming_the_field(
    fixed_answer: Any, answer: dict[str, Any]
) -> None:
    fixed_answer.answer = answer
    client = PostHogClient(
        app_host=fixed_answer.url,
        ingest_host=fixed_answer.url,
        personal_key=personal_key(),
        timeout=(1, 1),
    )

    with pytest.raises(PostHogError, match="`api_token`") as caught:
        client.get_project(PROJECT)

    token = answer.get("api_token")
    if token:
        assert token not in str(caught.value)


# --- rate limits and the query cache ---------------------------------------------------------


def test_a_429_waits_for_retry_after_then_succeeds(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    timed_world.standin.rate_limits = RateLimits(query_per_minute=2)
    client = timed_world.client(clock=fake_clock)
    hogql = "SELECT count() FROM events"

    for _ in range(3):
        assert client.query(timed_world.project, hogql) == [[0]]

    assert timed_world.standin.calls("query") == 4
    assert [s for s in fake_clock.sleeps if s >= 1] == [60.0]


def test_queries_are_spaced_to_stay_under_the_query_rate_limit(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    client = timed_world.client(clock=fake_clock, query_interval_s=30.0)

    client.query(timed_world.project, "SELECT count() FROM events")
    client.query(timed_world.project, "SELECT count() FROM events")
    client.query(timed_world.project, "SELECT count() FROM events")

    assert fake_clock.sleeps == [30.0, 30.0]
    assert timed_world.standin.calls("query") == 3  # never met a 429


def test_without_force_blocking_the_same_query_returns_stale_cached_results(
    world: PostHogWorld,
) -> None:
    """The trap the client avoids: PostHog may answer an identical query from its cache."""
    client = world.client()
    hogql = "SELECT count() FROM events WHERE event = 'signup'"

    def cached_count() -> tuple[int, bool]:
        response = requests.post(
            f"{world.standin.url}/api/projects/{world.project}/query/",
            json={"query": {"kind": "HogQLQuery", "query": hogql}},
            headers={"Authorization": f"Bearer {world.legacy_key.reveal()}"},
            timeout=2,
        )
        body = response.json()
        return body["results"][0][0], body["is_cached"]

    assert cached_count() == (0, False)
    client.capture(world.initial_key, "signup", "user-1")
    time.sleep(world.standin.lag_s * 3)

    assert cached_count() == (0, True)  # stale
    assert client.query(world.project, hogql) == [[1]]  # force_blocking sees it


# --- markers and counts -------------------------------------------------------------------------


def test_find_marker_sees_a_marker_sent_with_the_live_key_after_the_ingestion_lag(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    client = timed_world.client(clock=fake_clock, query_interval_s=1.5)
    check_id = new_check_id()

    client.send_marker(timed_world.initial_key, check_id=check_id, properties={"env": "preview"})
    hit = client.find_marker(timed_world.project, check_id=check_id, deadline_s=300, poll_s=2)

    assert hit is not None
    assert hit.check_id == check_id
    assert timed_world.standin.lag_s <= hit.seen_after_s < 300
    assert hit.polls > 1
    assert timed_world.standin.calls("query") == hit.polls  # spaced: no 429 on the way


def test_find_marker_gives_up_at_the_deadline_for_a_dead_key(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    client = timed_world.client(clock=fake_clock, query_interval_s=1.5)
    client.reset_key(timed_world.project)
    fake_clock.advance(timed_world.standin.window_s + 1)
    check_id = new_check_id()
    started = fake_clock.monotonic()

    client.send_marker(timed_world.initial_key, check_id=check_id)  # 200, then dropped
    hit = client.find_marker(timed_world.project, check_id=check_id, deadline_s=120, poll_s=2)

    assert hit is None
    assert 120 <= fake_clock.monotonic() - started < 130
    assert timed_world.standin.counters().for_key(timed_world.initial_key).dropped == 1


def test_count_events_counts_matching_events_since_a_time(world: PostHogWorld) -> None:
    client = world.client()
    key = world.initial_key
    client.capture(key, "gateway_heartbeat", "pod-a", {"environment": "preview"})
    client.capture(key, "gateway_heartbeat", "pod-b", {"environment": "prod"})
    client.capture(key, "gateway_heartbeat", "pod-c", {"environment": "preview"})
    time.sleep(world.standin.lag_s * 3)
    since = time_now() - timedelta(minutes=1)

    preview = client.count_events(
        world.project, where="properties.environment = 'preview'", since=since
    )
    later = client.count_events(
        world.project, where="properties.environment = 'preview'", since=time_now()
    )

    assert (preview, later) == (2, 0)


def time_now() -> datetime:
    return datetime.now(UTC)


def test_hogql_values_are_checked_and_quoted_before_interpolation(world: PostHogWorld) -> None:
    client = world.client()

    with pytest.raises(ValueError, match="UUID"):
        client.find_marker(world.project, check_id="x' OR 1=1 --", deadline_s=1, poll_s=1)
    with pytest.raises(ValueError, match="UUID"):
        client.send_marker(world.initial_key, check_id=str(uuid.uuid4()).upper())
    for bad in ("1) OR (1 = 1", "event = 'x'; DROP", "a = 'unterminated", "", "x -- comment"):
        with pytest.raises(ValueError, match="HogQL condition"):
            ensure_condition(bad)
    with pytest.raises(ValueError, match="control"):
        hogql_string("line\nbreak")

    tricky = "O'Brien \\ 'quoted'"
    client.capture(world.initial_key, "signup", "u", {"name": tricky})
    time.sleep(world.standin.lag_s * 3)
    where = f"properties.name = {hogql_string(tricky)}"
    assert client.count_events(world.project, where=where, since=time_now() - timedelta(1)) == 1


# --- secrets and timeouts --------------------------------------------------------------------


def test_no_secret_appears_in_any_log_record_or_exception_text(
    world: PostHogWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    wrong = personal_key()
    texts: list[str] = []
    client = world.client(timeout=(0.5, 0.3))

    def attempt(call: Any) -> Any:
        try:
            return call()
        except PostHogError as exc:
            texts.extend([str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)])
            return None

    new = client.reset_key(world.project).api_token
    client.capture(new, "signup", "u1")
    check_id = new_check_id()
    client.send_marker(new, check_id=check_id)
    client.find_marker(world.project, check_id=check_id, deadline_s=5, poll_s=0.05)
    attempt(lambda: world.client(wrong).get_project(world.project))
    attempt(lambda: world.client(world.scoped_key).reset_key(world.project))
    world.standin.inject("reset_token", "5xx")
    attempt(lambda: client.reset_key(world.project))
    world.standin.inject("reset_token", "hang", delay_s=1)
    attempt(lambda: client.reset_key(world.project))
    world.standin.inject("project", "5xx", times=5)
    attempt(lambda: client.get_project(world.project))
    attempt(lambda: client.capture(Secret("phc_" + "b" * 61), "x", "d"))

    session = requests.Session()
    session.auth = client._api.auth  # the same auth object the client sends with
    prepared = session.prepare_request(requests.Request("GET", world.standin.url))
    texts += [repr(prepared), repr(session.auth), str(session.auth), repr(client.__dict__)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    secrets = [world.legacy_key, world.scoped_key, wrong, world.initial_key, new]
    secrets.append(client.get_project(world.project).api_token)
    assert len(caplog.records) > 10
    assert any(record.name.startswith("urllib3") for record in caplog.records)
    for secret in secrets:
        leaks = [text for text in texts if secret.reveal() in text]
        assert not leaks, f"{secret.fingerprint} leaked"
    assert prepared.headers["Authorization"] == f"Bearer {world.legacy_key.reveal()}"


def test_every_client_call_has_a_timeout(silent_server: str) -> None:
    client = PostHogClient(
        app_host=silent_server,
        ingest_host=silent_server,
        personal_key=personal_key(),
        timeout=(0.5, 0.2),
        retry=RetryPolicy(attempts=1),
        query_interval_s=0,
    )
    key = Secret("phc_" + "c" * 40)
    calls = {
        "get_project": lambda: client.get_project(PROJECT),
        "reset_key": lambda: client.reset_key(PROJECT),
        "capture": lambda: client.capture(key, "x", "d"),
        "query": lambda: client.query(PROJECT, "SELECT count() FROM events"),
        "send_marker": lambda: client.send_marker(key, check_id=new_check_id()),
        "count_events": lambda: client.count_events(PROJECT, where="event = 'x'", since=time_now()),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(PostHogError, match=r"timed out|no answer"):
            call()
        assert time.monotonic() - started < 2, name

    started = time.monotonic()
    hit = client.find_marker(PROJECT, check_id=new_check_id(), deadline_s=0.5, poll_s=0.1)
    assert hit is None
    assert time.monotonic() - started < 3


def test_the_client_uses_the_app_host_for_the_api_and_the_ingest_host_for_capture(
    world: PostHogWorld,
) -> None:
    """The stand-in serves capture only under ingest_url here; a mix-up would 404."""
    client = world.client()
    client.capture(world.initial_key, "x", "d")
    client.get_project(world.project)
    swapped = PostHogClient(
        app_host=world.standin.ingest_url,
        ingest_host=world.standin.url,
        personal_key=world.legacy_key,
        timeout=(1, 1),
    )
    with pytest.raises(PostHogError, match="404"):
        swapped.capture(world.initial_key, "x", "d")
