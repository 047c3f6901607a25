"""The run's report and Slack: stdout first, Slack within its deadline, Slack's answer honoured.

Whole runs in the sandbox; the webhook is either the Slack stand-in or a loopback server of
this test that answers in a scripted way (``tests.test_slack_client.Receiver``).
"""

from __future__ import annotations

import pytest

from rotator.config import RunSwitches, load_config
from rotator.report import Outcome, RunReport
from rotator.runner import SLACK_PENDING, run_once
from rotator_sandbox.world import SLACK_URL_ENV, Sandbox
from tests.e2e_fixtures import MakeSandbox, e2e_key_pair, make_sandbox, sandbox_clients
from tests.test_slack_client import WEBHOOK_PATH, Receiver, Reply, receiver

__all__ = ["e2e_key_pair", "make_sandbox", "receiver"]


@pytest.fixture
def world(make_sandbox: MakeSandbox) -> Sandbox:
    return make_sandbox()


def _run(
    world: Sandbox, *overrides: str, webhook: str | None = None
) -> tuple[list[RunReport], RunReport]:
    environ = world.environ()
    if webhook is not None:
        environ[SLACK_URL_ENV] = webhook
    config = load_config(world.config_path, environ=environ, overrides=overrides)
    printed: list[RunReport] = []
    assert world.slack is not None
    slack = world.slack

    def print_report(report: RunReport) -> None:
        # What the CLI prints: the report, while nothing has reached Slack yet.
        assert slack.payloads == []
        printed.append(report)

    final = run_once(
        config,
        RunSwitches(trigger="test"),
        clients=sandbox_clients(config),
        before_slack=print_report,
    )
    return printed, final


def test_the_report_is_printed_before_the_slack_post_starts(world: Sandbox) -> None:
    printed, final = _run(world)
    assert [r.slack for r in printed] == [SLACK_PENDING]
    assert printed[0].outcome is Outcome.SUCCEEDED
    assert final.slack == "sent"
    assert world.slack is not None
    assert len(world.slack.payloads) == 1


def test_a_slack_200_invalid_payload_is_recorded_as_failed_not_sent(
    world: Sandbox, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.replies = [Reply(200, "invalid_payload")]
    _, final = _run(world, webhook=receiver.base + WEBHOOK_PATH)
    assert final.outcome is Outcome.SUCCEEDED  # Slack never changes the outcome
    assert final.slack is not None
    assert final.slack.startswith("FAILED: post the report to Slack: HTTP 200 but not 'ok'")
    assert "invalid_payload" in final.slack
    assert "Slack report not delivered" in caplog.text
    assert len(receiver.received) == 1


def test_a_trickling_slack_answer_is_given_up_at_the_deadline_and_the_report_is_out(
    world: Sandbox, receiver: Receiver
) -> None:
    receiver.replies = [Reply(200, "ok" + " " * 200, trickle_s=0.5)]  # 100 s for the body
    printed, final = _run(world, "slack.deadline_s=1", webhook=receiver.base + WEBHOOK_PATH)
    assert len(printed) == 1
    assert final.slack is not None
    assert "no whole answer within 1s (slack.deadline_s)" in final.slack
    assert not receiver.trickled
