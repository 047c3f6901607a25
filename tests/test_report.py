from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rotator.errors import ExitCode
from rotator.report import (
    EXIT_CODES,
    STEP_TITLES,
    EventCounts,
    Outcome,
    RunReport,
    StepResult,
    StepStatus,
    to_json_text,
    to_slack,
    to_text,
)
from rotator.steps import Step

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def report(outcome: Outcome = Outcome.SUCCEEDED, **kw: object) -> RunReport:
    base: dict[str, object] = {
        "run_id": "rot-1",
        "trigger": "cron",
        "mode": "rotate",
        "outcome": outcome,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=42),
        "envs": ("preview", "prod"),
        "steps": tuple(StepResult(s, StepStatus.OK, "done", duration_s=1.0) for s in Step),
        "fingerprints": {"project 1": ("sha256:000000000000", "sha256:111111111111")},
        "commit": "a" * 40,
        "reset_at": T0 + timedelta(seconds=2),
        "dark_window_s": 21.5,
        "ingestion_window_s": 150.0,
        "events": EventCounts(marker_seen_after_s=1.5, gateway_events={"prod": 3}),
    }
    base.update(kw)
    return RunReport(**base)  # type: ignore[arg-type]


def test_every_step_has_a_report_line() -> None:
    assert set(STEP_TITLES) == set(Step)


def test_every_outcome_has_an_exit_code_and_the_documented_ones_hold() -> None:
    assert set(EXIT_CODES) == set(Outcome)
    assert report(Outcome.SUCCEEDED).exit_code is ExitCode.OK
    assert report(Outcome.FAILED_AFTER_RESET).exit_code is ExitCode.FAILED
    assert report(Outcome.ABORTED).exit_code is ExitCode.ABORTED
    assert report(Outcome.LOCKED).exit_code is ExitCode.LOCKED


def test_text_report_shows_fingerprints_commit_and_dark_window() -> None:
    text = to_text(report())
    assert "SUCCEEDED" in text
    assert "sha256:000000000000 -> sha256:111111111111" in text
    assert "dark window: 21.5s" in text
    assert "a" * 40 in text


def test_a_failed_run_after_the_reset_names_what_is_broken_and_how_to_resume() -> None:
    r = report(
        Outcome.FAILED_AFTER_RESET,
        error="argocd [prod]: sync failed",
        broken_now="prod runs the old key",
        resume_command="rotator run --env prod",
    )
    text = to_text(r)
    assert "broken now: prod runs the old key" in text
    assert "resume with: rotator run --env prod" in text
    slack = json.dumps(to_slack(r, mention="<!here>"))
    assert "rotator run --env prod" in slack
    assert to_slack(r, mention="<!here>")["text"].startswith("<!here>")


def test_json_report_round_trips_through_json() -> None:
    data = json.loads(to_json_text(report()))
    assert data["outcome"] == "succeeded"
    assert data["exit_code"] == 0
    assert data["fingerprints"] == [
        {
            "project_id": 1,
            "environments": [],
            "old": "sha256:000000000000",
            "new": "sha256:111111111111",
        }
    ]
    assert data["steps"][0]["step"] == "preflight"


@pytest.mark.parametrize("outcome", list(Outcome))
def test_slack_payload_stays_inside_block_kit_limits(outcome: Outcome) -> None:
    long_error = "x" * 10_000
    payload = to_slack(report(outcome, error=long_error))
    blocks = payload["blocks"]
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        for f in block.get("fields", []):
            assert len(f["text"]) <= 2000
        assert len(block.get("fields", [])) <= 10


def test_anomalies_are_listed_in_text_json_and_slack_and_absent_when_there_were_none() -> None:
    quiet = report()
    assert "anomalies" not in to_text(quiet)
    assert "Anomalies" not in json.dumps(to_slack(quiet))
    r = report(anomalies=("push: push attempt 1/3 rejected: main moved on (x2)",))
    assert "  anomalies:\n    push: push attempt 1/3 rejected" in to_text(r)
    assert json.loads(to_json_text(r))["anomalies"] == list(r.anomalies)
    assert "push attempt 1/3 rejected" in json.dumps(to_slack(r))


def _slack_texts(payload: dict[str, object]) -> str:
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)


BROKEN = "prod serves a revoked key: align-prod-gateway still runs sha256:000000000000 & <old>"
RESUME = "kubectl -n rotator create job --from=cronjob/rotator rotator-resume-1 # ROTATOR_ENVS=prod"


@pytest.mark.parametrize("error_len", [0, 100, 2_900, 10_000, 100_000])
def test_broken_now_and_resume_reach_slack_whole_however_long_the_error(error_len: int) -> None:
    from rotator_sandbox.slack import blocks_error

    failed = report(
        Outcome.FAILED_AFTER_RESET,
        error="e" * error_len or None,
        broken_now=BROKEN,
        resume_command=RESUME,
    )
    payload = to_slack(failed)
    assert blocks_error(payload["blocks"]) is None
    text = _slack_texts(payload)
    assert "*Broken now:*\nprod serves a revoked key" in text
    assert "sha256:000000000000 &amp; &lt;old&gt;" in text  # escaped, not cut
    assert f"*Resume:*\n```{RESUME}```" in text
    # What to do comes before what went wrong.
    assert text.index("*Resume:*") < text.index("*Error:*") if error_len else True


def test_a_broken_now_longer_than_one_section_is_split_not_truncated() -> None:
    from rotator_sandbox.slack import blocks_error

    broken = " ".join(f"env-{i:04d} runs the revoked key;" for i in range(400))  # ~11k chars
    payload = to_slack(report(Outcome.FAILED_AFTER_RESET, broken_now=broken, error="x" * 9000))
    assert blocks_error(payload["blocks"]) is None
    sections = [
        b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b
    ]
    joined = "".join(s.removeprefix("*Broken now:*\n") for s in sections if "env-" in s)
    assert joined == broken
    assert all(len(s) <= 3000 for s in sections)


def test_a_truncated_error_says_how_much_was_cut() -> None:
    payload = to_slack(report(Outcome.FAILED, error="y" * 5000))
    (error,) = [s for s in _slack_texts(payload).split("\n") if s.startswith("*Error:*")]
    assert error.endswith("more chars in the job's log)")
    assert len(error) <= 3000


def test_truncation_never_cuts_an_escaped_character_in_half() -> None:
    payload = to_slack(report(Outcome.FAILED, error="<" * 4000))
    (error,) = [s for s in _slack_texts(payload).split("\n") if s.startswith("*Error:*")]
    body = error.removeprefix("*Error:* ").split("...")[0]
    assert body.replace("&lt;", "") == ""
