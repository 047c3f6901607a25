"""The failure classes of issue 14, each a scenario against the sandbox with its faults injected
from outside rotator's code (the stand-ins' hooks, the Kubernetes API, the filesystem, signals).
Each asserts the outcome, the exit code, how many times PostHog's key was reset, what Slack was
told and, where the run failed, the resume.

Class 1, a resume is never "nothing changed": once an earlier run reset the key (the old key
is dead), a run that fails its preflight or only verifies and whose check fails is
failed-after-reset, exit 1, with Broken now and the Resume command.

Class 2, signals: any number of SIGTERM/SIGINT, at any moment, give one report, the Lease
released and the outcome's exit code (a real ``python -m rotator run`` subprocess; the signals
are sent when its log shows the moment). Slack answers the first post 429 (Retry-After 1 s), so
the burst of signals lands while the report is being delivered.

Class 3 (second half), every input checked before the point of no return: a key listed twice
in the YAML config (an environment copied and not renamed) is refused, naming both lines,
instead of the second silently replacing the first.

Class 4, the checkout heals itself: damage to the reused ``git.workdir`` (a corrupt index, a
corrupt pack, a garbled config or ref) is detected, the workdir emptied and the branch cloned
afresh, and the log (so the report's anomalies) says so.

Class 6, the report is always complete: every anomaly the run saw (a retried push, a throttled
check, a Lease someone else took) is in the report and its renderings, not only in the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import ConfigError
from rotator.redact import Secret
from rotator.report import Outcome, RunReport, to_json, to_text
from rotator_sandbox.controllers.base import LEASE
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    LOCK_NAME,
    LOCK_NAMESPACE,
    Finished,
    World,
    log_message,
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


def _assert_failed_after_reset(world: World, report: RunReport, *, key: Secret) -> None:
    summary = f"{report.outcome.value}: {report.error}"
    assert report.outcome is Outcome.FAILED_AFTER_RESET, summary
    assert int(report.exit_code) == 1, summary
    assert world.resets == 1, "the resume never resets again"
    assert "never resets again" in (report.resume_command or ""), report.resume_command
    broken = report.broken_now or ""
    assert key.fingerprint in broken or "unknown" in broken, broken
    slack = json.dumps(world.slack_payloads()[-1])
    assert "FAILED after the key reset" in slack, slack
    assert "Resume" in slack, slack
    assert "Broken now" in slack, slack
    assert "aborted" not in slack.lower(), slack


def _resume_completes(world: World, *, key: Secret) -> None:
    assert world.sb.posthog is not None
    world.sb.posthog.on_reset = None
    world.sb.clear_faults()
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, f"{again.outcome.value}: {again.error}"
    assert world.resets == 1
    assert world.current_key() == key
    world.sb.wait_for(lambda: world.converged_on(key), timeout=15, what="convergence")


# --- class 1: a resume is never "nothing changed" ----------------------------------------------


def test_a_resume_whose_preflight_fails_is_failed_after_reset_with_the_resume_not_aborted(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.sb.posthog is not None
    # The first run resets the key, then the push is refused: git and the cluster keep the
    # old key, which is dead.
    world.sb.posthog.on_reset = lambda _pid: world.sb.git.reject_pushes("pre-receive: no")
    first = world.run()
    assert first.outcome is Outcome.FAILED_AFTER_RESET, first.error
    key = world.current_key()
    world.sb.posthog.on_reset = None
    world.sb.clear_faults()

    # The resume meets a sealing cert it cannot fetch: it stops in preflight.
    report = world.run("environments.prod.cert.controller.port_name=https")

    assert "sealing cert for prod" in (report.error or ""), report.error
    _assert_failed_after_reset(world, report, key=key)
    assert any("rotation is in flight" in a for a in report.anomalies), report.anomalies
    _resume_completes(world, key=key)


def test_a_resume_that_cannot_read_posthog_is_failed_after_reset_when_git_and_cluster_disagree(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    # The first run pushes the new key, then ArgoCD's sync of it fails: git has the new key,
    # the cluster the old one.
    world.sb.inject_sync_error("prod", "admission webhook denied the request (sandbox)")
    first = world.run()
    assert first.outcome is Outcome.FAILED_AFTER_RESET, first.error
    key = world.current_key()
    world.sb.clear_faults()
    assert world.sb.posthog is not None
    world.sb.posthog.inject("project", "5xx", times=20, status=503)

    report = world.run()

    assert "PostHog project 1" in (report.error or ""), report.error
    _assert_failed_after_reset(world, report, key=key)
    _resume_completes(world, key=key)


def test_a_resume_that_only_verifies_and_whose_check_fails_is_failed_after_reset(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    posthog = world.sb.posthog
    assert posthog is not None
    # After the reset PostHog's query API fails: the marker is never read back.
    posthog.on_reset = lambda _pid: posthog.inject("query", "5xx", times=10_000, status=503)
    short = ("waits.marker_s=1.5", "timeouts.attempts=1")
    first = world.run(*short)
    assert first.outcome is Outcome.FAILED_AFTER_RESET, first.error
    key = world.current_key()
    posthog.on_reset = None

    # The resume finds everything on the new key (rotated recently: no reset) and only
    # verifies; the query API still fails.
    report = world.run(*short)

    assert "rotated recently" in " ".join(report.plan), report.plan
    assert "marker event" in (report.error or ""), report.error
    _assert_failed_after_reset(world, report, key=key)
    _resume_completes(world, key=key)


# --- class 2: signals ---------------------------------------------------------------------------

Cue = Callable[[str], bool]
BURST = (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM)


def _slack_retrying(message: str) -> bool:
    return "post the report to Slack" in message and "retrying" in message


def _run_with_signals(
    world: World,
    plan: Sequence[tuple[Cue, Sequence[signal.Signals]]],
    *,
    timeout: float = 90,
    command: Sequence[str] = ("run", "--json"),
    extra_env: dict[str, str] | None = None,
) -> Finished:
    """Run ``rotator run --json``; at each cue (a log message), send its signals, in order."""
    proc = world.popen(*command, extra_env=extra_env)
    assert proc.stdout is not None
    assert proc.stderr is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    steps = list(plan)
    try:
        for line in proc.stderr:
            lines.append(line)
            if steps and steps[0][0](log_message(line)):
                for sig in steps.pop(0)[1]:
                    proc.send_signal(sig)
                    time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        timer.cancel()
        reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert not steps, "a cue never came:\n" + "".join(lines[-30:])
    return Finished(proc.returncode, "".join(out), "".join(lines))


def _one_report(done: Finished) -> dict[str, Any]:
    """Exactly one JSON report on stdout."""
    text = done.stdout.strip()
    assert text, f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    report, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip() == "", "more than one report"
    assert isinstance(report, dict)
    return report


def _assert_signalled_run(
    world: World,
    done: Finished,
    *,
    outcome: Outcome,
    resets: int,
    slack: Sequence[str],
    first_signal: str | None,
) -> dict[str, Any]:
    """One report, the outcome's exit code, the Lease released, Slack told once (the report
    is printed before the Slack post, so the burst during the post is only in the log)."""
    report = _one_report(done)
    assert report["outcome"] == outcome.value, report["error"]
    assert done.returncode == report["exit_code"], done.stderr[-3000:]
    assert world.resets == resets
    assert world.lease_holder() == "", "the Lease was not released"
    payloads = world.slack_payloads()
    assert len(payloads) == 1, "one Slack report"
    for word in slack:
        assert word in json.dumps(payloads[0]), payloads[0]
    assert "posted the report to Slack" in done.stderr
    if first_signal is not None:
        signals = [a for a in report["anomalies"] if a.startswith("stop signal(s) received")]
        assert signals, report["anomalies"]
        assert first_signal in signals[0], signals[0]
    return report


def test_signals_after_the_reset_and_a_burst_during_the_report_give_one_report_and_the_resume(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.sb.slack is not None
    world.sb.slack.fail_next(1, status=429, retry_after=1)

    done = _run_with_signals(
        world,
        [
            (lambda m: m.startswith("rotate: done"), (signal.SIGTERM,)),
            (_slack_retrying, BURST),
        ],
    )

    report = _assert_signalled_run(
        world,
        done,
        outcome=Outcome.FAILED_AFTER_RESET,
        resets=1,
        slack=("FAILED after the key reset", "Resume"),
        first_signal="SIGTERM",
    )
    assert done.returncode == 1
    assert "never resets again" in (report["resume_command"] or "")
    key = world.current_key()
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, again.error
    assert world.resets == 1
    assert world.current_key() == key


def test_signals_before_the_reset_and_a_burst_during_the_report_give_one_aborted_report(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    old = world.current_key()
    assert world.sb.slack is not None
    world.sb.slack.fail_next(1, status=429, retry_after=1)

    done = _run_with_signals(
        world,
        [
            (lambda m: m.startswith("lock: done"), (signal.SIGINT,)),
            (_slack_retrying, BURST),
        ],
    )

    report = _assert_signalled_run(
        world, done, outcome=Outcome.ABORTED, resets=0, slack=("aborted",), first_signal="SIGINT"
    )
    assert done.returncode == 3
    assert report["resume_command"] is None
    assert world.current_key() == old


def test_a_burst_of_signals_while_a_finished_run_reports_keeps_its_outcome_and_its_report(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.sb.slack is not None
    world.sb.slack.fail_next(1, status=429, retry_after=1)

    done = _run_with_signals(world, [(_slack_retrying, BURST)])

    _assert_signalled_run(
        world,
        done,
        outcome=Outcome.SUCCEEDED,
        resets=1,
        slack=("rotated and verified",),
        first_signal=None,
    )
    assert done.returncode == 0
    world.sb.wait_for(lambda: world.converged_on(world.current_key()), timeout=15)


def test_the_scheduler_stopped_twice_mid_rotation_has_its_run_release_the_lease_and_report(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    world.sb.stick_argocd("prod")  # the run waits after the reset, where the signals land
    proc = world.popen(
        "schedule", "--run-now", "--max-runs", "1", extra_env={"ROTATOR_WAITS__ARGOCD_S": "60"}
    )
    assert proc.stderr is not None
    lines: list[str] = []
    plan: list[tuple[Cue, Sequence[signal.Signals]]] = [
        (lambda m: m.startswith("argocd: started"), (signal.SIGTERM,)),
        (lambda m: m.startswith("stopping: waiting up to"), BURST),
    ]
    timer = threading.Timer(90, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            lines.append(line)
            if plan and plan[0][0](log_message(line)):
                for sig in plan.pop(0)[1]:
                    proc.send_signal(sig)
                    time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        timer.cancel()
        proc.stderr.close()
        if proc.stdout is not None:
            proc.stdout.close()
    log = "".join(lines)
    assert not plan, log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    assert "asking the running rotation to stop" in log, log[-3000:]
    assert "abandoning" not in log, log[-3000:]
    assert world.resets == 1
    assert world.lease_holder() == "", "the stopped run released its Lease"
    payloads = world.slack_payloads()
    assert len(payloads) == 1, "one report"
    text = json.dumps(payloads[0])
    assert "FAILED after the key reset" in text, text
    assert "Resume" in text, text
    key = world.current_key()
    world.sb.clear_faults()
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, again.error
    assert world.resets == 1
    assert world.current_key() == key


def test_signals_during_rotator_verify_give_one_inconclusive_report_not_exit_130(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    posthog = world.sb.posthog
    assert posthog is not None
    posthog.inject("query", "5xx", times=10_000, status=503)  # the marker is polled on

    done = _run_with_signals(
        world,
        [
            (lambda m: m.startswith("verify: started (marker event)"), (signal.SIGINT,)),
            (lambda m: m.startswith("interrupted: stopping"), BURST),
        ],
        command=("verify", "--json"),
        extra_env={"ROTATOR_WAITS__MARKER_S": "60"},
    )

    report = _one_report(done)
    assert report["outcome"] == Outcome.INCONCLUSIVE.value, report["error"]
    assert report["error"] == "interrupted (SIGTERM or SIGINT)"
    assert done.returncode == 1 == report["exit_code"], done.stderr[-3000:]
    assert world.resets == 0


# --- class 3: a duplicate key in the config is refused, naming the line -----------------------


def test_an_environment_listed_twice_in_the_config_is_refused_naming_both_lines(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    seed_head = world.head()
    lines = world.sb.config_path.read_text().splitlines(keepends=True)
    first = lines.index("  preview:\n")
    block = lines[first : lines.index("  prod:\n")]
    end = lines.index("git:\n")
    # A copy of preview's block pasted after prod's, its name left as it was.
    lines[end:end] = block
    path = world.tmp / "twice.yaml"
    path.write_text("".join(lines))
    command = [sys.executable, "-m", "rotator", "--config", str(path), "run"]

    done = subprocess.run(
        command,
        cwd=world.tmp,
        env={**os.environ, **world.environ()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert f"duplicate key 'preview' at line {end + 1}" in done.stderr, done.stderr
    assert f"(first at line {first + 1})" in done.stderr, done.stderr
    assert str(path) in done.stderr
    assert world.resets == 0
    assert world.head() == seed_head
    assert world.slack_payloads() == [], "no run, no Slack report"


@pytest.mark.parametrize("name", ["''", "' <> '", "'\"; ,'"])
def test_a_git_author_name_git_would_refuse_at_the_commit_after_the_reset_is_a_config_error(
    name: str,
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    # A sibling of class 3: the author name is first used by the commit, after the reset.
    world = make_world()
    seed_head = world.head()
    with pytest.raises(ConfigError, match=r"git\.author_name: .*git refuses an author name"):
        world.run(f"git.author_name={name}")
    assert world.resets == 0
    assert world.head() == seed_head
    assert world.slack_payloads() == []


# --- class 4: the checkout heals itself --------------------------------------------------------


def _corrupt_index(dot_git: Path) -> None:
    (dot_git / "index").write_bytes(b"not an index " * 8)


def _corrupt_packs(dot_git: Path) -> None:
    files = [p for p in (dot_git / "objects").rglob("*") if p.is_file()]
    assert files
    for path in files:
        path.chmod(0o644)
        path.write_bytes(b"not an object " * 8)


def _garble_config(dot_git: Path) -> None:
    (dot_git / "config").write_text("[core\n\tbare = maybe\n")


def _break_the_tracking_ref(dot_git: Path) -> None:
    ref = dot_git / "refs" / "remotes" / "origin" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text("0123 not a sha\n")
    (dot_git / "packed-refs").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "damage",
    [_corrupt_index, _corrupt_packs, _garble_config, _break_the_tracking_ref],
    ids=["corrupt-index", "corrupt-objects", "garbled-config", "broken-ref"],
)
def test_a_damaged_reused_checkout_is_cloned_afresh_and_the_log_says_so(
    damage: Callable[[Path], None],
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    first = world.run()
    assert first.outcome is Outcome.SUCCEEDED, first.error
    key = world.current_key()
    workdir = world.sb.root / "checkout"
    damage(workdir / ".git")

    # The next run (rotated recently: it only verifies) reuses the checkout.
    report = world.run()

    assert report.outcome is Outcome.SUCCEEDED, report.error
    assert int(report.exit_code) == 0
    assert world.resets == 1
    assert world.current_key() == key
    assert "verified" in json.dumps(world.slack_payloads()[-1])
    healed = [a for a in report.anomalies if "discarding it and cloning afresh" in a]
    assert healed, report.anomalies
    assert str(workdir) in healed[0]
    fsck = subprocess.run(
        ["git", "-C", str(workdir), "fsck", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stderr


def test_a_reused_checkout_with_the_remote_down_is_still_aborted_with_the_remotes_error(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    assert world.run().outcome is Outcome.SUCCEEDED
    seed_head = world.head()
    world.sb.git.make_unreachable()

    report = world.run()

    world.sb.git.make_reachable()
    assert report.outcome is Outcome.ABORTED, report.error
    assert int(report.exit_code) == 3
    assert world.resets == 1
    assert world.head() == seed_head
    assert "preflight: git: fetch main" in (report.error or ""), report.error
    assert "aborted" in json.dumps(world.slack_payloads()[-1])
    # The next run, with the remote back, clones afresh and only verifies.
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, again.error


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
