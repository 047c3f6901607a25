"""The Slack incoming-webhook receiver answers like Slack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from rotator_sandbox.slack import SlackReceiver, blocks_error


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    receiver = SlackReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _post(slack: SlackReceiver, body: Any, *, raw: bytes | None = None) -> requests.Response:
    url = slack.url.reveal()
    if raw is not None:
        return requests.post(url, data=raw, timeout=5)
    return requests.post(url, json=body, timeout=5)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_a_text_message_is_stored_and_answered_ok(slack: SlackReceiver) -> None:
    resp = _post(slack, {"text": "rotated", "blocks": [_section("*done*")]})
    assert (resp.status_code, resp.text) == (200, "ok")
    assert slack.payloads == [{"text": "rotated", "blocks": [_section("*done*")]}]


def test_a_body_that_is_not_json_is_invalid_payload(slack: SlackReceiver) -> None:
    resp = _post(slack, None, raw=b"text=hello")
    assert (resp.status_code, resp.text) == (400, "invalid_payload")
    assert slack.payloads == []


def test_a_message_without_text_or_blocks_is_no_text(slack: SlackReceiver) -> None:
    resp = _post(slack, {"username": "rotator"})
    assert (resp.status_code, resp.text) == (400, "no_text")


@pytest.mark.parametrize(
    "blocks",
    [
        [{"type": "carousel"}],
        [{"text": {"type": "mrkdwn", "text": "no type"}}],
        [_section("x" * 3001)],
        [_section("x")] * 51,
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        [{"type": "header", "text": {"type": "mrkdwn", "text": "not plain"}}],
        [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
        "not a list",
    ],
    ids=[
        "unknown-type",
        "missing-type",
        "long-section",
        "too-many",
        "long-header",
        "mrkdwn-header",
        "wide-context",
        "not-a-list",
    ],
)
def test_blocks_slack_would_reject_are_invalid_blocks(slack: SlackReceiver, blocks: Any) -> None:
    resp = _post(slack, {"text": "fallback", "blocks": blocks})
    assert (resp.status_code, resp.text) == (400, "invalid_blocks")
    assert blocks_error(blocks) is not None


def test_blocks_at_the_limits_pass() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
        _section("x" * 3000),
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10},
    ]
    blocks += [_section("y")] * (50 - len(blocks))
    assert blocks_error(blocks) is None


def test_a_wrong_path_is_no_service(slack: SlackReceiver) -> None:
    resp = requests.post(
        f"{slack.base_url}/services/T000/B000/wrong", json={"text": "x"}, timeout=5
    )
    assert (resp.status_code, resp.text) == (404, "no_service")
    slack.set_path_valid(False)
    assert _post(slack, {"text": "x"}).status_code == 404


def test_injected_rate_limits_carry_retry_after_then_it_recovers(slack: SlackReceiver) -> None:
    slack.fail_next(2, status=429, retry_after=3)
    slack.fail_next(1, status=503)
    first, second, third, fourth = (_post(slack, {"text": f"{i}"}) for i in range(4))
    assert (first.status_code, first.headers["Retry-After"]) == (429, "3")
    assert second.status_code == 429
    assert third.status_code == 503
    assert (fourth.status_code, fourth.text) == (200, "ok")
    assert slack.attempts == 4
    assert slack.payloads == [{"text": "3"}]


def test_the_webhook_url_is_a_secret(slack: SlackReceiver) -> None:
    url = slack.url
    assert slack.path not in repr(url)
    assert url.reveal().endswith(slack.path)
    assert slack.path.startswith("/services/T000/B000/")
