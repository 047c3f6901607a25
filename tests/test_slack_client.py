from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.clients.slack import SlackClient, _AbandonableClock, _Abandoned
from rotator.clients.transport import RetryPolicy
from rotator.config import load_config
from rotator.errors import SlackError
from rotator.redact import RedactingFilter, Secret, scrub

WEBHOOK_PATH = "/services/T0ALIGN/B0ROTATOR/" + "wEbHoOkSeCrEtToKeN0123456789"
PAYLOAD: dict[str, Any] = {
    "text": "rotation succeeded",
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*succeeded*"}}],
}


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    # Send the body one byte per this many seconds (a server that trickles its answer).
    trickle_s: float = 0.0


@dataclass
class Receiver:
    """A tiny loopback stand-in for Slack's incoming webhook, answering from a script."""

    base: str
    replies: list[Reply]
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    trickled: bool = False  # a trickled answer was sent to its end

    @property
    def url(self) -> Secret:
        return Secret(self.base + WEBHOOK_PATH)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        receiver.paths.append(self.path)
        receiver.received.append(json.loads(self.rfile.read(length)))
        reply = receiver.replies.pop(0) if receiver.replies else Reply(200, "ok")
        body = reply.body.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/html")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not reply.trickle_s:
            self.wfile.write(body)
            return
        for i in range(len(body)):
            if receiver.stop.wait(reply.trickle_s):
                return
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
        receiver.trickled = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver(base=f"http://127.0.0.1:{server.server_address[1]}", replies=[])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.receiver
    server.receiver.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(receiver: Receiver, clock: FakeClock) -> Iterator[SlackClient]:
    with SlackClient(
        webhook_url=receiver.url, timeout=(2, 2), retry=RetryPolicy(attempts=3), clock=clock
    ) as slack:
        yield slack


def test_a_200_ok_posts_the_payload_once(
    client: SlackClient, receiver: Receiver, clock: FakeClock
) -> None:
    client.post(PAYLOAD)
    assert receiver.received == [PAYLOAD]
    assert receiver.paths == [WEBHOOK_PATH]
    assert clock.sleeps == []


@pytest.mark.parametrize("body", ["invalid_payload", "no_text", "", "<html>proxy says hi</html>"])
def test_a_200_whose_body_is_not_ok_is_a_slack_error_and_is_not_retried(
    client: SlackClient, receiver: Receiver, clock: FakeClock, body: str
) -> None:
    # Slack's incoming webhooks answer exactly "ok" for a delivered message.
    receiver.replies = [Reply(200, body)]
    with pytest.raises(SlackError, match="HTTP 200 but not 'ok'") as info:
        client.post(PAYLOAD)
    assert (info.value.status, info.value.retryable) == (200, False)
    assert (body or "(empty body)") in str(info.value)
    assert len(receiver.received) == 1
    assert clock.sleeps == []


def test_invalid_payload_under_a_200_names_the_fix(client: SlackClient, receiver: Receiver) -> None:
    receiver.replies = [Reply(200, "invalid_payload")]
    with pytest.raises(SlackError, match="invalid_payload; Slack rejected the message itself"):
        client.post(PAYLOAD)


def test_a_webhook_that_trickles_its_answer_is_abandoned_at_the_deadline(
    receiver: Receiver, clock: FakeClock
) -> None:
    # One byte every 0.5 s: no socket read ever waits the 5 s read timeout, so only a deadline
    # for the whole answer ends the post. The server would need 60 s for the body.
    receiver.replies = [Reply(200, "ok" + " " * 118, trickle_s=0.5)]
    with (
        SlackClient(
            webhook_url=receiver.url,
            timeout=(5, 5),
            retry=RetryPolicy(attempts=3),
            deadline_s=1,
            clock=clock,
        ) as slack,
        pytest.raises(SlackError, match=r"no whole answer within 1s \(slack.deadline_s\)") as info,
    ):
        slack.post(PAYLOAD)
    assert info.value.retryable
    assert not receiver.trickled  # given up on while the server was still sending
    assert len(receiver.received) == 1
    assert clock.sleeps == []


def test_an_abandoned_post_starts_no_further_attempt() -> None:
    # The worker's retries sleep on this clock: once the caller gave up, the sleep before the
    # next attempt ends the worker instead of posting again.
    abandoned = threading.Event()
    inner = FakeClock()
    wrapped = _AbandonableClock(inner, abandoned)
    wrapped.sleep(1)  # still wanted: sleeps and returns
    abandoned.set()
    with pytest.raises(_Abandoned):
        wrapped.sleep(2)
    assert inner.sleeps == [1, 2]


def test_invalid_blocks_is_a_slack_error_with_the_fix_and_is_not_retried(
    client: SlackClient, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.replies = [Reply(400, "invalid_blocks")]
    with pytest.raises(
        SlackError, match=r"HTTP 400: invalid_blocks; Slack rejected the message"
    ) as info:
        client.post(PAYLOAD)
    assert (info.value.status, info.value.retryable) == (400, False)
    assert len(receiver.received) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "code", "fix"),
    [
        (400, "no_text", "rotator bug"),
        (404, "no_service", "create a new incoming webhook"),
        (403, "invalid_token", "create a new incoming webhook"),
        (410, "channel_is_archived", "live channel"),
        (400, "something_new", "something_new"),
    ],
)
def test_slack_4xx_errors_name_slacks_error_string_and_the_fix(
    client: SlackClient, receiver: Receiver, status: int, code: str, fix: str
) -> None:
    receiver.replies = [Reply(status, code)]
    with pytest.raises(SlackError) as info:
        client.post(PAYLOAD)
    assert code in str(info.value)
    assert fix in str(info.value)
    assert len(receiver.received) == 1


def test_a_429_waits_for_retry_after_then_posts(
    client: SlackClient, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.replies = [Reply(429, "rate_limited", {"Retry-After": "7"})]
    client.post(PAYLOAD)
    assert clock.sleeps == [7.0]
    assert receiver.received == [PAYLOAD, PAYLOAD]


def test_a_500_is_retried_and_a_duplicate_is_accepted_over_a_lost_report(
    client: SlackClient, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.replies = [Reply(500, "rollup_error"), Reply(503, "")]
    client.post(PAYLOAD)
    assert len(clock.sleeps) == 2
    assert receiver.received == [PAYLOAD] * 3


def test_persistent_5xx_gives_up_after_the_attempts_as_retryable(
    client: SlackClient, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.replies = [Reply(500, "rollup_error")] * 3
    with pytest.raises(SlackError, match="HTTP 500") as info:
        client.post(PAYLOAD)
    assert info.value.retryable
    assert len(receiver.received) == 3
    assert len(clock.sleeps) == 2


def test_an_unreachable_webhook_is_retried_then_a_retryable_slack_error(clock: FakeClock) -> None:
    url = Secret("http://127.0.0.1:1" + WEBHOOK_PATH)
    with (
        SlackClient(
            webhook_url=url, timeout=(1, 1), retry=RetryPolicy(attempts=2), clock=clock
        ) as slack,
        pytest.raises(SlackError, match="connection failed") as info,
    ):
        slack.post(PAYLOAD)
    assert info.value.retryable
    assert len(clock.sleeps) == 1


def test_the_webhook_url_never_appears_in_errors_or_logs(
    receiver: Receiver, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    token = WEBHOOK_PATH.rsplit("/", 1)[-1]
    caplog.handler.addFilter(RedactingFilter())  # as rotator.logs installs it in production
    down = Secret("http://127.0.0.1:1" + WEBHOOK_PATH)
    receiver.replies = [Reply(500, "rollup_error"), Reply(404, "no_service")]
    errors: list[SlackError] = []
    with caplog.at_level(logging.DEBUG):
        for url in (receiver.url, down):
            with SlackClient(
                webhook_url=url, timeout=(1, 1), retry=RetryPolicy(attempts=2), clock=clock
            ) as slack:
                assert token not in repr(slack)
                try:
                    slack.post(PAYLOAD)
                except SlackError as exc:
                    errors.append(exc)
                    logging.getLogger("rotator.test").exception("report failed")
    assert len(errors) == 2
    chains = ["".join(traceback.format_exception(e)) for e in errors]
    for text in (caplog.text, *(str(e) for e in errors), *(scrub(c) for c in chains)):
        assert token not in text
        assert WEBHOOK_PATH not in text
    # The backstop matters: urllib3's own exception text does carry the path.
    assert any(WEBHOOK_PATH in chain for chain in chains)


def test_a_secret_in_the_payload_is_masked_not_sent(
    client: SlackClient, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    key = Secret("phc_" + "LeakedIntoTheReportByMistake")
    client.post({"text": f"new key {key.reveal()}"})
    assert key.reveal() not in json.dumps(receiver.received)
    assert receiver.received[0]["text"].startswith("new key [secure](sha256:")
    assert "held a secret value" in caplog.text


def test_a_webhook_url_that_is_not_https_is_refused_without_showing_it() -> None:
    url = Secret("http://hooks.slack.com" + WEBHOOK_PATH)
    with pytest.raises(SlackError, match="not an https URL") as info:
        SlackClient(webhook_url=url, timeout=(1, 1))
    assert WEBHOOK_PATH not in str(info.value)
    assert url.fingerprint in str(info.value)


def _config(tmp_path: Path, slack: dict[str, Any]) -> Path:
    tree = {
        "environments": {
            "preview": {
                "posthog_project_id": 1,
                "namespace": "align-preview",
                "sealed_file": "sealedsecrets/preview/posthog.yaml",
                "argocd_app": {"name": "align-preview"},
                "deployment": "align-preview-gateway",
            }
        },
        "git": {"remote": "git@github.com:align/ops.git"},
        "slack": slack,
        "timeouts": {"connect_s": 3, "read_s": 9, "attempts": 2},
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_from_config_builds_a_client_or_none_when_disabled(
    tmp_path: Path, receiver: Receiver, clock: FakeClock
) -> None:
    enabled = load_config(
        _config(tmp_path, {"webhook_url": {"env": "HOOK"}}),
        environ={"HOOK": receiver.base + WEBHOOK_PATH},
    )
    slack = SlackClient.from_config(enabled, clock=clock)
    assert slack is not None
    with slack:
        slack.post(PAYLOAD)
    assert receiver.received == [PAYLOAD]

    disabled = load_config(_config(tmp_path, {"enabled": False}), environ={})
    assert SlackClient.from_config(disabled) is None

    missing = load_config(_config(tmp_path, {"webhook_url": {"env": "HOOK"}}), environ={})
    with pytest.raises(SlackError, match="environment variable HOOK is not set"):
        SlackClient.from_config(missing)
