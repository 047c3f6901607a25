"""The failure classes of issue 14, each a scenario against the sandbox with its faults injected
from outside rotator's code (the stand-ins' hooks, the Kubernetes API, the filesystem, signals).
Each asserts the outcome, the exit code, how many times PostHog's key was reset, what Slack was
told and, where the run failed, the resume.

Class 6, the report is always complete: every anomaly the run saw (a retried push, a throttled
check, a Lease someone else took) is in the report and its renderings, not only in the log.
"""

from __future__ import annotations

from collections.abc import Callable

from rotator.report import Outcome, RunReport, to_json, to_text
from rotator.sandbox.controllers.base import LEASE
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    LOCK_NAME,
    LOCK_NAMESPACE,
    World,
    make_world,
    reliability_key_pair,
)


def _assert_anomaly_everywhere(world: World, report: RunReport, *words: str) -> str:
    """The anomaly is in the report's list, its text and JSON renderings and in Slack."""
    found = [a for a in report.anomalies if all(w in a for w in words)]
    assert found, report.anomalies
    assert found[0] in to_text(report)
    assert found[0] in to_json(report)["anomalies"]
    slack = world.slack_text()
    assert "Anomalies" in slack, slack
    assert all(w in slack for w in words), slack
    return found[0]


# --- class 6: the report is always complete ----------------------------------------------------


def test_a_push_re_applied_after_a_concurrent_commit_is_an_anomaly_in_the_report_and_slack(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.sb.posthog is not None

    def colleague_pushes(_pid: int) -> None:
        world.sb.git.commit_directly({"CONCURRENT.md": "a colleague's change\n"}, message="c")

    world.sb.posthog.on_reset = colleague_pushes

    report = world.run()

    assert report.outcome is Outcome.SUCCEEDED, report.error
    assert int(report.exit_code) == 0
    assert world.resets == 1
    assert report.resume_command is None
    assert "rotated and verified" in world.slack_text()
    _assert_anomaly_everywhere(world, report, "push attempt 1/", "rejected")


def test_a_throttled_posthog_query_that_was_retried_is_an_anomaly_in_the_report_and_slack(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    posthog = world.sb.posthog
    assert posthog is not None
    # After the reset, PostHog's query API answers 429 once: the check goes on after a retry.
    posthog.on_reset = lambda _pid: posthog.inject("query", "5xx", times=1, status=429)

    report = world.run()

    assert report.outcome is Outcome.SUCCEEDED, report.error
    assert int(report.exit_code) == 0
    assert world.resets == 1
    assert "rotated and verified" in world.slack_text()
    line = _assert_anomaly_everywhere(world, report, "HTTP 429", "retrying")
    assert line.startswith("verify"), line  # it names the step it happened in


def test_a_lease_taken_over_during_the_run_is_an_anomaly_in_the_report_and_slack(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.sb.posthog is not None
    client = world.sb.client
    assert client is not None

    def colleague_takes_the_lease(_pid: int) -> None:
        client.patch(
            LEASE, LOCK_NAMESPACE, LOCK_NAME, {"spec": {"holderIdentity": "rot-colleague"}}
        )

    world.sb.posthog.on_reset = colleague_takes_the_lease

    report = world.run()

    assert world.resets == 1
    assert world.lease_holder() == "rot-colleague"  # not released from under its holder
    _assert_anomaly_everywhere(world, report, "rot-colleague", "not ours any more")
