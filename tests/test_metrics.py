"""Metrics: what moves when, carried across runs, exposed by prometheus_client, checked by
promtool (the README's alert rules included, with promtool's rule unit tests)."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from rotator.metrics import Carried, carry_over, parse, render
from rotator.output import write_metrics
from rotator.report import Outcome, RunReport, StepResult, StepStatus
from rotator.steps import Step
from rotator_sandbox.gitremote import git
from tests.e2e_fixtures import MakeSandbox, e2e_key_pair, make_sandbox, rotate
from tests.go_tools import go_tool

__all__ = ["e2e_key_pair", "make_sandbox"]

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def run(
    outcome: Outcome = Outcome.SUCCEEDED,
    *,
    at: datetime = T0,
    mode: str = "rotate",
    rotated: bool = False,
    **kw: object,
) -> RunReport:
    base: dict[str, object] = {
        "run_id": "rot-1",
        "trigger": "cron",
        "mode": mode,
        "outcome": outcome,
        "started_at": at - timedelta(seconds=60),
        "finished_at": at,
        "envs": ("preview", "prod"),
        "steps": (
            StepResult(Step.PREFLIGHT, StepStatus.OK, "ok", duration_s=1.5),
            StepResult(Step.ROLLOUT, StepStatus.OK, "ok", env="preview", duration_s=10.0),
            StepResult(Step.ROLLOUT, StepStatus.OK, "ok", env="prod", duration_s=12.0),
        ),
        "rotated": rotated,
    }
    base.update(kw)
    return RunReport(**base)  # type: ignore[arg-type]


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, through prometheus_client's own parser."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_a_rotation_moves_the_rotation_time_and_the_key_age_per_project() -> None:
    since = {"12345": T0 - timedelta(seconds=30), "777": T0 - timedelta(days=3)}
    text = render(
        r := run(rotated=True, key_since=since, dark_window_s=21.5), carry_over(Carried(), r)
    )
    got = samples(text)
    assert got["rotator_last_rotation_timestamp_seconds"] == T0.timestamp()
    assert got["rotator_last_success_timestamp_seconds"] == T0.timestamp()
    assert got['rotator_key_age_seconds{project="12345"}'] == 30
    assert got['rotator_key_age_seconds{project="777"}'] == 3 * 86400
    assert (
        got['rotator_key_created_timestamp_seconds{project="777"}']
        == (T0 - timedelta(days=3)).timestamp()
    )
    assert got["rotator_dark_window_seconds"] == 21.5
    assert got['rotator_runs_total{outcome="succeeded"}'] == 1
    assert got['rotator_step_duration_seconds{step="rollout"}'] == 22.0
    assert got['rotator_last_run_outcome{outcome="succeeded"}'] == 1


@pytest.mark.parametrize("mode", ["adopt", "verify"])
def test_an_adopt_check_or_a_verify_moves_the_success_time_but_never_the_rotation_time(
    mode: str,
) -> None:
    first = carry_over(Carried(), run(rotated=True))
    later = run(at=T0 + timedelta(days=9), mode=mode)
    got = samples(render(later, carry_over(first, later)))
    assert got["rotator_last_success_timestamp_seconds"] == later.finished_at.timestamp()
    assert got["rotator_last_rotation_timestamp_seconds"] == T0.timestamp()


def test_failed_runs_count_and_keep_the_last_success_and_rotation_times() -> None:
    carried = carry_over(Carried(), run(rotated=True, dark_window_s=9.0))
    for day in (7, 14):
        failed = run(Outcome.ABORTED, at=T0 + timedelta(days=day))
        carried = carry_over(carried, failed)
    got = samples(render(failed, carried))
    assert got['rotator_runs_total{outcome="aborted-nothing-changed"}'] == 2
    assert got['rotator_runs_total{outcome="succeeded"}'] == 1
    assert got['rotator_runs_total{outcome="failed-after-reset"}'] == 0
    assert got["rotator_last_rotation_timestamp_seconds"] == T0.timestamp()
    assert got["rotator_dark_window_seconds"] == 9.0
    assert got['rotator_last_run_outcome{outcome="aborted-nothing-changed"}'] == 1


def test_the_textfile_carries_counters_and_times_from_run_to_run(tmp_path: Path) -> None:
    path = tmp_path / "collector" / "rotator.prom"
    write_metrics(path, run(rotated=True, key_since={"1": T0}))
    write_metrics(path, run(Outcome.FAILED, at=T0 + timedelta(days=7)))
    write_metrics(path, run(at=T0 + timedelta(days=8), mode="adopt"))
    got = samples(path.read_text())
    assert got['rotator_runs_total{outcome="succeeded"}'] == 2
    assert got['rotator_runs_total{outcome="failed"}'] == 1
    assert got["rotator_last_rotation_timestamp_seconds"] == T0.timestamp()
    assert got['rotator_key_age_seconds{project="1"}'] == 8 * 86400
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_broken_previous_file_starts_the_counts_again() -> None:
    assert parse("this is { not prometheus") == Carried()
    assert parse("") == Carried()


def test_only_the_jobs_own_samples_are_carried_from_a_pushgateway_exposition() -> None:
    text = (
        "# TYPE rotator_runs_total counter\n"
        'rotator_runs_total{instance="",job="other",outcome="failed"} 5\n'
        'rotator_runs_total{instance="",job="rotator",outcome="failed"} 2\n'
        "# TYPE push_time_seconds gauge\n"
        'push_time_seconds{instance="",job="rotator"} 1.7e9\n'
    )
    assert parse(text, job="rotator").runs == {"failed": 2}


# --- promtool ----------------------------------------------------------------------------------


def _promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(go_tool("promtool")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_finds_no_problem_in_the_exposition() -> None:
    carried = carry_over(Carried(), r := run(rotated=True, key_since={"1": T0}, dark_window_s=3.0))
    _promtool("check", "metrics", stdin=render(r, carried))


def readme_rules() -> str:
    """The alert rules block under the README's "Metrics and alerts"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Metrics and alerts", 1)[1]
    match = re.search(r"```yaml\n(groups:.*?)```", section, re.S)
    assert match, "the README's Metrics and alerts section has no ```yaml groups: block"
    return match.group(1)


def test_the_readme_alert_rules_pass_promtool_check_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(readme_rules())
    assert "SUCCESS" in _promtool("check", "rules", str(rules))


def test_the_readme_alert_rules_use_only_metrics_rotator_exports() -> None:
    carried = carry_over(Carried(), r := run(rotated=True, key_since={"1": T0}, dark_window_s=3.0))
    exported = {name.split("{")[0] for name in samples(render(r, carried))}
    used = set(re.findall(r"\brotator_[a-z_]+", readme_rules()))
    assert used, "no rotator metric in the alert rules"
    assert used <= exported, used - exported


# promtool's rule unit tests: the overdue alert fires while adopt checks succeed every 10
# minutes and no rotation has happened for 9 days (the scheduler-mode case it used to miss).
RULE_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 4m
    input_series:
      # scraped every 4 min (inside the 5 min lookback): adopt checks move the success time...
      - series: 'rotator_last_success_timestamp_seconds{job="rotator"}'
        values: '0+240x3600'
      # ...while the last rotation stays at t=0
      - series: 'rotator_last_rotation_timestamp_seconds{job="rotator"}'
        values: '0x3600'
      - series: 'rotator_key_created_timestamp_seconds{job="rotator",project="12345"}'
        values: '0x3600'
      - series: 'rotator_last_run_outcome{job="rotator",outcome="failed-after-reset"}'
        values: '0x3600'
      - series: 'rotator_runs_total{job="rotator",outcome="failed"}'
        values: '0x3600'
      - series: 'rotator_runs_total{job="rotator",outcome="failed-after-reset"}'
        values: '0x3600'
      - series: 'rotator_runs_total{job="rotator",outcome="inconclusive"}'
        values: '0x3600'
    alert_rule_test:
      - eval_time: 7d
        alertname: PostHogKeyRotationOverdue
        exp_alerts: []
      - eval_time: 9d
        alertname: PostHogKeyRotationOverdue
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations: {}
      - eval_time: 9d
        alertname: PostHogKeyRotationFailedAfterReset
        exp_alerts: []
"""


def test_the_overdue_alert_fires_in_scheduler_mode_although_adopt_checks_succeed(
    tmp_path: Path,
) -> None:
    (tmp_path / "rules.yaml").write_text(readme_rules())
    tests = yaml.safe_load(RULE_TESTS)
    # Compare labels only: the README's annotations are prose.
    rules = yaml.safe_load(readme_rules())
    overdue = next(
        r
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "PostHogKeyRotationOverdue"
    )
    tests["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_annotations"] = overdue.get(
        "annotations", {}
    )
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(tests))
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)


# --- what a real run reports ---------------------------------------------------------------


def test_a_sandbox_rotation_reports_rotated_and_when_the_key_was_set_and_a_rerun_does_not(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    first = rotate(world, force=True)
    assert first.outcome is Outcome.SUCCEEDED
    assert first.rotated
    assert first.reset_at is not None
    assert dict(first.key_since) == {"1": first.reset_at}
    again = rotate(world, no_reset=True)
    assert again.outcome is Outcome.SUCCEEDED
    assert not again.rotated
    # Read back from the rotation commit in git: its author time.
    assert world.git is not None
    authored = git("log", "-1", "--format=%aI", world.git.head(), cwd=world.git.path).strip()
    assert dict(again.key_since) == {"1": datetime.fromisoformat(authored)}
