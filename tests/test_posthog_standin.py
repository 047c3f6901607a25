"""The PostHog stand-in on its own: routes, bodies and behaviour as upstream PostHog has them.

Bodies checked here come from upstream source: rust/capture/src/api.rs and token.rs (capture),
posthog/permissions.py APIScopePermission and posthog/auth.py (private API), DRF's throttle.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from rotator.redact import Secret
from rotator_sandbox.posthog import HogQLError, PostHogStandIn, RateLimits, run_hogql
from tests.posthog_fixtures import (  # noqa: F401 - fixtures
    FakeClock,
    PostHogWorld,
    fake_clock_fixture,
    personal_key,
    start_world,
    timed_world_fixture,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(name="world")
def cloud_world_fixture() -> Iterator[PostHogWorld]:
    """The stand-in's default flavour, PostHog Cloud."""
    world = start_world(lag_s=0.05, window_s=0.4, separate_hosts=True, flavour="cloud")
    try:
        yield world
    finally:
        world.standin.stop()


@pytest.fixture(name="legacy_world")
def legacy_world_fixture() -> Iterator[PostHogWorld]:
    """A self-hosted PostHog built before PR #51237: a legacy key without scopes may reset."""
    world = start_world(lag_s=0.05, window_s=0.4, flavour="self_hosted_legacy")
    try:
        yield world
    finally:
        world.standin.stop()


def post_capture(world: PostHogWorld, body: Any, path: str = "/e/") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(world.standin.ingest_url + path, data=data, timeout=2)


def api(
    world: PostHogWorld, method: str, path: str, key: Secret | None = None, **kwargs: Any
) -> requests.Response:
    headers = {"Authorization": f"Bearer {key.reveal()}"} if key else {}
    return requests.request(method, world.standin.url + path, headers=headers, timeout=2, **kwargs)


def query(world: PostHogWorld, hogql: str, **extra: Any) -> requests.Response:
    body = {"query": {"kind": "HogQLQuery", "query": hogql}, "refresh": "force_blocking", **extra}
    return api(world, "POST", f"/api/projects/{world.project}/query/", world.legacy_key, json=body)


# --- capture --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/i/v0/e/", "/e/", "/capture/", "/capture", "/track/"])
def test_capture_answers_ok_for_any_well_formed_key_alive_or_not(
    world: PostHogWorld, path: str
) -> None:
    for key in (world.initial_key.reveal(), "phc_neverissued", "anything-at-all"):
        response = post_capture(world, {"api_key": key, "event": "e", "distinct_id": "d"}, path)
        assert response.status_code == 200
        assert response.content == b'{"status":"Ok"}'


CAPTURE_REJECTIONS = [
    # body, status, upstream text (rust/capture/src/api.rs CaptureError, token.rs reasons)
    ({"event": "e", "distinct_id": "d"}, 401, "event submitted without an api_key"),
    ({"api_key": "", "event": "e", "distinct_id": "d"}, 401, "API key is not valid: empty"),
    (
        {"api_key": "phx_personalkey", "event": "e", "distinct_id": "d"},
        401,
        "API key is not valid: personal_api_key",
    ),
    (
        {"api_key": "phc_" + "x" * 61, "event": "e", "distinct_id": "d"},
        401,
        "API key is not valid: too_long",
    ),
    (
        {"api_key": "phc_é", "event": "e", "distinct_id": "d"},
        401,
        "API key is not valid: not_ascii",
    ),
    (
        {"api_key": "phc_a", "event": "", "distinct_id": "d"},
        400,
        "event submitted with an empty event name",
    ),
    ({"api_key": "phc_a", "event": "e"}, 400, "event submitted without a distinct_id"),
    (
        {"api_key": "phc_a", "event": "e", "distinct_id": None},
        400,
        "event submitted without a distinct_id",
    ),
    (
        {"api_key": "phc_a", "distinct_id": "d"},
        400,
        "failed to parse request: data did not match any variant of untagged enum RawRequest",
    ),
    (
        [{"token": "phc_a", "event": "e", "distinct_id": "d"}, {"token": "phc_b", "event": "e"}],
        401,
        "batch submitted with inconsistent api_key values",
    ),
    (b"", 400, "request missing data payload"),
]


@pytest.mark.parametrize(("body", "status", "text"), CAPTURE_REJECTIONS)
def test_capture_rejections_carry_upstreams_plain_text_bodies(
    world: PostHogWorld, body: Any, status: int, text: str
) -> None:
    response = post_capture(world, body)

    assert response.status_code == status
    assert response.text == text
    assert response.headers["Content-Type"].startswith("text/plain")


def test_capture_takes_batches_and_arrays_and_keys_in_properties(world: PostHogWorld) -> None:
    key = world.initial_key.reveal()
    batch = {"api_key": key, "batch": [{"event": "a", "distinct_id": "1"}] * 3}
    array = [{"token": key, "event": "b", "distinct_id": "2"}] * 2
    in_props = {"event": "c", "properties": {"token": key, "distinct_id": "3"}}

    assert post_capture(world, batch, "/batch/").status_code == 200
    assert post_capture(world, array, "/e/").status_code == 200
    assert post_capture(world, in_props).status_code == 200
    time.sleep(world.standin.lag_s * 3)

    counts = world.standin.counters().for_key(world.initial_key)
    assert (counts.accepted, counts.ingested) == (6, 6)


def test_separate_hosts_serve_capture_only_on_the_ingestion_host(world: PostHogWorld) -> None:
    body = {"api_key": "phc_a", "event": "e", "distinct_id": "d"}

    assert requests.post(world.standin.url + "/i/v0/e/", json=body, timeout=2).status_code == 404
    assert requests.get(world.standin.ingest_url + "/api/projects/1/", timeout=2).status_code == 404
    assert requests.post(world.standin.ingest_url + "/i/v0/e/", json=body, timeout=2).ok


# --- ingestion and attribution ------------------------------------------------------------------


def test_events_are_queryable_only_after_the_ingestion_lag(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    body = {"api_key": timed_world.initial_key.reveal(), "event": "e", "distinct_id": "d"}
    post_capture(timed_world, body)
    hogql = "SELECT count() FROM events WHERE event = 'e'"

    fake_clock.advance(timed_world.standin.lag_s - 1)
    before = query(timed_world, hogql).json()["results"]
    fake_clock.advance(2)
    after = query(timed_world, hogql).json()["results"]

    assert (before, after) == ([[0]], [[1]])


def test_an_unknown_key_is_answered_ok_then_dropped_silently_and_counted(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    post_capture(timed_world, {"api_key": "phc_unknown", "event": "e", "distinct_id": "d"})
    fake_clock.advance(timed_world.standin.lag_s + 1)

    counts = timed_world.standin.counters().for_key("phc_unknown")
    assert (counts.accepted, counts.ingested, counts.dropped) == (1, 0, 1)
    assert counts.last_dropped_at is not None
    assert query(timed_world, "SELECT count() FROM events").json()["results"] == [[0]]


def test_the_old_key_window_is_measured_from_the_reset_at_ingestion_time(
    timed_world: PostHogWorld, fake_clock: FakeClock
) -> None:
    standin = timed_world.standin
    old = timed_world.initial_key.reveal()
    standin.reset_key_out_of_band(timed_world.project)
    # Ingested at arrival + lag: lands while that is before reset + window.
    fake_clock.advance(standin.window_s - standin.lag_s - 1)
    post_capture(timed_world, {"api_key": old, "event": "last_in", "distinct_id": "d"})
    fake_clock.advance(2)
    post_capture(timed_world, {"api_key": old, "event": "first_out", "distinct_id": "d"})
    fake_clock.advance(standin.lag_s + 1)

    rows = query(timed_world, "SELECT event FROM events").json()["results"]
    assert rows == [["last_in"]]
    counts = standin.counters().for_key(old)
    assert (counts.ingested, counts.dropped) == (1, 1)


# --- private API ---------------------------------------------------------------------------------


def test_project_and_reset_routes_answer_like_posthog_including_the_environments_alias(
    legacy_world: PostHogWorld,
) -> None:
    world = legacy_world
    project = api(world, "GET", f"/api/environments/{world.project}/", world.legacy_key).json()
    assert project["id"] == world.project
    assert project["api_token"] == world.initial_key.reveal()

    reset = api(world, "PATCH", f"/api/environments/{world.project}/reset_token/", world.legacy_key)
    assert reset.status_code == 200
    new = reset.json()["api_token"]
    assert new != world.initial_key.reveal()
    assert new.startswith("phc_")
    assert new[4:].isalnum()
    assert len(new) <= 64
    assert world.standin.current_key(world.project).reveal() == new
    assert world.standin.counters().resets == {world.project: 1}


def test_a_ui_reset_changes_the_key_without_an_api_call(world: PostHogWorld) -> None:
    new = world.standin.reset_key_out_of_band(world.project)

    assert new != world.initial_key
    assert world.standin.current_key(world.project) == new
    assert world.standin.calls("reset_token") == 0


def drf(type_: str, code: str, detail: str) -> dict[str, Any]:
    return {"type": type_, "code": code, "detail": detail, "attr": None}


def test_personal_key_errors_use_posthogs_bodies(world: PostHogWorld) -> None:
    path = f"/api/projects/{world.project}/"
    reader = world.standin.add_personal_key(
        personal_key(), scoped=True, legacy=False, scopes=("project:read",)
    )

    assert api(world, "GET", path).json() == drf(
        "authentication_error", "not_authenticated", "Authentication credentials were not provided."
    )
    unknown = api(world, "GET", path, personal_key())
    assert unknown.status_code == 401
    assert unknown.json() == drf(
        "authentication_error",
        "authentication_failed",
        "Personal API key found in request Authorization header is invalid.",
    )
    refused = api(world, "PATCH", path + "reset_token/", world.scoped_key)
    assert refused.status_code == 403
    assert refused.json() == drf(
        "authentication_error",
        "permission_denied",
        "This action does not support personal API key access",
    )
    no_scope = api(world, "POST", path + "query/", reader, json={})
    assert no_scope.status_code == 403
    assert no_scope.json()["detail"] == "API key missing required scope 'query:read'"
    assert api(world, "GET", path, reader).status_code == 200
    assert api(world, "GET", "/api/projects/999/", world.legacy_key).status_code == 404
    assert world.standin.current_key(world.project) == world.initial_key


def test_the_rate_limit_answers_429_with_retry_after(world: PostHogWorld) -> None:
    world.standin.rate_limits = RateLimits(per_minute=2)
    path = f"/api/projects/{world.project}/"

    statuses = [api(world, "GET", path, world.legacy_key).status_code for _ in range(2)]
    throttled = api(world, "GET", path, world.legacy_key)

    assert statuses == [200, 200]
    assert throttled.status_code == 429
    seconds = int(throttled.headers["Retry-After"])
    assert 58 <= seconds <= 60
    assert throttled.json() == drf(
        "throttled_error",
        "throttled",
        f"Request was throttled. Expected available in {seconds} seconds.",
    )


def test_the_query_cache_is_bypassed_only_by_force_blocking(world: PostHogWorld) -> None:
    hogql = "SELECT count() FROM events"
    first = query(world, hogql, refresh="blocking").json()
    post_capture(world, {"api_key": world.initial_key.reveal(), "event": "e", "distinct_id": "d"})
    time.sleep(world.standin.lag_s * 3)

    cached = query(world, hogql, refresh="blocking").json()
    fresh = query(world, hogql).json()

    assert (first["results"], first["is_cached"]) == ([[0]], False)
    assert (cached["results"], cached["is_cached"]) == ([[0]], True)
    assert (fresh["results"], fresh["is_cached"]) == ([[1]], False)


# --- HogQL -------------------------------------------------------------------------------------


def _events() -> list[Any]:
    from rotator_sandbox.posthog import _Event

    base = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def ev(name: str, minutes: int, **props: Any) -> _Event:
        return _Event(
            uuid=f"00000000-0000-0000-0000-{minutes:012d}",
            event=name,
            distinct_id=f"d{minutes}",
            properties=props,
            timestamp=base + timedelta(minutes=minutes),
            token="phc_t",
            received_at=0.0,
        )

    return [
        ev("rotator_check", 0, check_id="c1", environment="preview"),
        ev("gateway_heartbeat", 1, environment="preview", n=5),
        ev("gateway_heartbeat", 2, environment="prod", n=50),
        ev("$pageview", 3, environment="preview"),
    ]


NOW = datetime(2026, 11, 27, 12, 5, tzinfo=UTC)
HOGQL_CASES = [
    ("SELECT count() FROM events", [[4]]),
    ("SELECT count() FROM events WHERE event = 'gateway_heartbeat'", [[2]]),
    ("SELECT count() FROM events WHERE event != 'gateway_heartbeat'", [[2]]),
    (
        "SELECT count() FROM events WHERE event = 'gateway_heartbeat' "
        "AND (properties.environment = 'preview' OR properties.environment = 'prod')",
        [[2]],
    ),
    ("SELECT count() FROM events WHERE properties.n > 10", [[1]]),
    ("SELECT count() FROM events WHERE properties.n <= 5 AND properties.n >= 5", [[1]]),
    ("SELECT count() FROM events WHERE properties.missing = 'x'", [[0]]),
    # HogQL's printer makes != null-safe: a missing property is "not equal" (ifNull(..., 1)).
    ("SELECT count() FROM events WHERE properties.missing != 'x'", [[4]]),
    ("SELECT count() FROM events WHERE properties.n != 5", [[3]]),
    ("SELECT count() FROM events WHERE properties.n = NULL", [[2]]),
    ("SELECT count() FROM events WHERE properties.n != NULL", [[2]]),
    ("SELECT count() FROM events WHERE properties.n < 100", [[2]]),
    ("SELECT count() FROM events WHERE NOT (event = '$pageview')", [[3]]),
    ("SELECT count() FROM events WHERE timestamp >= now() - INTERVAL 3 MINUTE", [[2]]),
    ("SELECT count() FROM events WHERE timestamp > now() - INTERVAL 180 SECOND", [[1]]),
    ("SELECT count() FROM events WHERE timestamp >= '2026-11-27 12:02:00'", [[2]]),
    ("SELECT count() FROM events WHERE timestamp < toDateTime('2026-11-27T12:01:00Z')", [[1]]),
    (
        "SELECT uuid, event, timestamp, properties.check_id FROM events "
        "WHERE event = 'rotator_check' AND properties.check_id = 'c1' "
        "AND timestamp >= now() - INTERVAL 60 MINUTE AND (properties.environment = 'preview')",
        [
            [
                "00000000-0000-0000-0000-000000000000",
                "rotator_check",
                "2026-11-27T12:00:00.000Z",
                "c1",
            ]
        ],
    ),
    (
        "SELECT distinct_id, properties.n FROM events WHERE event = 'gateway_heartbeat' "
        "ORDER BY timestamp DESC LIMIT 1",
        [["d2", "50"]],
    ),
]


@pytest.mark.parametrize(("hogql", "rows"), HOGQL_CASES)
def test_the_hogql_subset_answers_correctly(hogql: str, rows: list[list[Any]]) -> None:
    assert run_hogql(hogql, _events(), NOW)[1] == rows


@pytest.mark.parametrize(
    "hogql",
    [
        "SELECT event, count() FROM events GROUP BY event",
        "SELECT count() FROM persons",
        "SELECT count() FROM events WHERE event LIKE 'gate%'",
        "SELECT count() FROM events WHERE person.properties.email = 'x'",
        "SELECT count() FROM events WHERE event IN ('a', 'b')",
        "SELECT count() FROM events WHERE lower(event) = 'x'",
        "SELECT count() FROM events WHERE event = 'x' ; SELECT 1",
        "SELECT count() FROM events WHERE (event = 'x'",
        "DELETE FROM events",
    ],
)
def test_unsupported_hogql_is_a_400_never_a_silent_wrong_answer(
    world: PostHogWorld, hogql: str
) -> None:
    with pytest.raises(HogQLError):
        run_hogql(hogql, [], NOW)
    response = query(world, hogql)
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["attr"]) == ("validation_error", None)
    assert body["detail"]


# --- faults, counters, the command --------------------------------------------------------------


def test_a_5xx_fault_hits_the_next_n_calls_only(world: PostHogWorld) -> None:
    world.standin.inject("project", "5xx", times=2, status=503)
    path = f"/api/projects/{world.project}/"

    statuses = [api(world, "GET", path, world.legacy_key).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]
    assert world.standin.calls("project") == 3


def test_a_lost_response_acts_then_closes_the_connection(legacy_world: PostHogWorld) -> None:
    world = legacy_world
    world.standin.inject("reset_token", "lose_response")

    with pytest.raises(requests.ConnectionError):
        api(world, "PATCH", f"/api/projects/{world.project}/reset_token/", world.legacy_key)

    assert world.standin.current_key(world.project) != world.initial_key


def test_counters_and_faults_are_reachable_over_http(world: PostHogWorld) -> None:
    base = world.standin.url + "/_sandbox"
    post_capture(world, {"api_key": world.initial_key.reveal(), "event": "e", "distinct_id": "d"})
    inject = {"route": "project", "kind": "5xx", "times": 1}
    assert requests.post(base + "/inject", json=inject, timeout=2).ok
    assert api(world, "GET", f"/api/projects/{world.project}/", world.legacy_key).status_code == 500
    reset = requests.post(f"{base}/projects/{world.project}/reset", timeout=2).json()
    time.sleep(world.standin.lag_s * 3)

    counters = requests.get(base + "/counters", timeout=2).json()

    assert reset["key_fingerprint"] == world.standin.current_key(world.project).fingerprint
    assert counters["keys"][world.initial_key.fingerprint]["ingested"] == 1
    assert counters["requests"]["project"] == 1
    assert world.initial_key.reveal() not in json.dumps(counters)
    assert counters == world.standin.counters().as_json()
    events = requests.get(base + "/events", timeout=2).json()
    assert [(e["event"], e["outcome"]) for e in events] == [("e", "ingested")]
    assert events[0]["key_fingerprint"] == world.initial_key.fingerprint
    assert world.initial_key.reveal() not in json.dumps(events)


def test_stop_releases_a_hanging_request_and_refuses_non_loopback_hosts() -> None:
    standin = PostHogStandIn().start()
    standin.add_project(1, "p")
    standin.inject("capture", "hang", delay_s=60)
    started = time.monotonic()
    try:
        with pytest.raises(requests.Timeout):
            requests.post(standin.url + "/i/v0/e/", json={}, timeout=(1, 0.2))
    finally:
        standin.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="loopback"):
        PostHogStandIn(host="0.0.0.0")


def test_rotator_sandbox_posthog_serves_until_sigterm_and_keeps_the_key_out_of_stdout() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rotator", "sandbox", "posthog", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "stop with Ctrl-C" in line:
                break
        text = "".join(lines)
        url = text.split(" on ", 1)[1].split()[0]
        key_file = Path(
            text.split("personal API key (read-only: project:read, query:read): in ", 1)[1].split()[
                0
            ]
        )
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert key.startswith("phx_")
        assert key not in text
        project = requests.get(
            f"{url}/api/projects/12345/", headers={"Authorization": f"Bearer {key}"}, timeout=5
        ).json()
        assert project["api_token"] not in text
        assert Secret(project["api_token"]).fingerprint in text

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not key_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
