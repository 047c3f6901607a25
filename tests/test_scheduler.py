"""``rotator schedule``: cron meaning, firing, one run at a time, metrics, stopping."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.config import Config, RunSwitches, load_config
from rotator.errors import ConfigError
from rotator.report import Outcome, RunReport
from rotator.scheduler import JobKind, Scheduler, crontab_trigger

ROOT = Path(__file__).resolve().parent.parent
LONDON = ZoneInfo("Europe/London")
EVERY_SECOND = CronTrigger(second="*", timezone=UTC)


def make_config(tmp_path: Path, **schedule: object) -> Config:
    settings = {"cron": "0 6 * * 1", "timezone": "Europe/London", "misfire_grace_s": 60}
    settings.update(schedule)
    lines = "".join(f"  {k}: {v if v is not None else 'null'}\n" for k, v in settings.items())
    path = tmp_path / "config.yaml"
    path.write_text(
        "environments:\n"
        "  preview: {posthog_project_id: 1, namespace: align-preview,"
        " sealed_file: sealedsecrets/preview/posthog.yaml,"
        " argocd_app: {name: align-preview}, deployment: align-preview-gateway}\n"
        "git: {remote: /nonexistent}\n"
        "slack: {enabled: false}\n"
        "kubernetes: {kubeconfig: /nonexistent/kubeconfig}\n"
        "posthog: {personal_api_key: {env: ROTATOR_TEST_UNSET_KEY}}\n"
        f"schedule:\n{lines}"
    )
    return load_config(path, environ={})


def report_for(switches: RunSwitches, outcome: Outcome = Outcome.SUCCEEDED) -> RunReport:
    now = datetime.now(UTC)
    return RunReport(
        run_id=f"rot-{time.monotonic_ns()}",
        trigger=switches.trigger,
        mode="adopt" if switches.no_reset else "rotate",
        outcome=outcome,
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        envs=("preview",),
        steps=(),
    )


class FakeRun:
    """A run function that records its calls and can be held open to test overlap."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[RunSwitches] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold:
            self.release.set()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, config: Config, switches: RunSwitches) -> RunReport:
        with self._lock:
            self.calls.append(switches)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.set()
        try:
            assert self.release.wait(10), "the test never released the run"
            return report_for(switches)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def schedulers() -> Iterator[list[tuple[Scheduler, FakeRun]]]:
    made: list[tuple[Scheduler, FakeRun]] = []
    yield made
    for sched, run in made:
        run.release.set()
        sched.stop(timeout=5)


def build(
    made: list[tuple[Scheduler, FakeRun]], config: Config, run: FakeRun, **kw: object
) -> Scheduler:
    sched = Scheduler(config, run=run, **kw)  # type: ignore[arg-type]
    made.append((sched, run))
    return sched


def in_thread(fn: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


# --- cron with cron's meaning ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # The team's schedule: Mondays 06:00 London time, in winter (GMT) and summer (BST).
        ("0 6 * * 1", datetime(2026, 11, 27, 12, tzinfo=LONDON), datetime(2026, 11, 30, 6)),
        ("0 6 * * 1", datetime(2026, 7, 1, 12, tzinfo=LONDON), datetime(2026, 7, 6, 6)),
        # cron's 0 and 7 are Sunday (APScheduler 3's own numbering would say Monday).
        ("30 2 * * 0", datetime(2026, 11, 27, 12, tzinfo=LONDON), datetime(2026, 11, 29, 2, 30)),
        ("30 2 * * 7", datetime(2026, 11, 27, 12, tzinfo=LONDON), datetime(2026, 11, 29, 2, 30)),
        ("0 9 * * 1-5", datetime(2026, 11, 28, 12, tzinfo=LONDON), datetime(2026, 11, 30, 9)),
        ("0 9 * * 5-7", datetime(2026, 11, 25, 12, tzinfo=LONDON), datetime(2026, 11, 27, 9)),
        ("0 9 * * */2", datetime(2026, 11, 30, 12, tzinfo=LONDON), datetime(2026, 12, 1, 9)),
        ("0 9 * * MON", datetime(2026, 11, 27, 12, tzinfo=LONDON), datetime(2026, 11, 30, 9)),
        ("@weekly", datetime(2026, 11, 27, 12, tzinfo=LONDON), datetime(2026, 11, 29, 0)),
        (
            "*/10 * * * *",
            datetime(2026, 11, 27, 12, 1, tzinfo=LONDON),
            datetime(2026, 11, 27, 12, 10),
        ),
    ],
)
def test_a_cron_expression_fires_when_cron_would(
    expr: str, after: datetime, expected: datetime
) -> None:
    trigger = crontab_trigger(expr, "Europe/London")
    fire = trigger.get_next_fire_time(None, after)
    assert fire == expected.replace(tzinfo=LONDON)


def test_an_expression_cron_and_apscheduler_read_differently_is_refused() -> None:
    with pytest.raises(ValueError, match="either the day of month or the day of week"):
        crontab_trigger("0 6 1 * 1", "UTC")


def test_a_bad_cron_or_time_zone_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"schedule\.cron: .*5 fields"):
        Scheduler(make_config(tmp_path, cron='"0 6 * *"'), run=FakeRun())
    with pytest.raises(ConfigError, match=r"schedule\.timezone: unknown time zone"):
        Scheduler(make_config(tmp_path, timezone="Mars/Olympus"), run=FakeRun())
    with pytest.raises(ConfigError, match=r"--adopt-check: .*out of range"):
        Scheduler(make_config(tmp_path), run=FakeRun(), adopt_cron="* * * * 9")


# --- firing ------------------------------------------------------------------------------------


def test_a_rotation_fires_on_its_schedule(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun()
    sched = build(schedulers, make_config(tmp_path), run, rotation_trigger=EVERY_SECOND, max_runs=1)
    sched.start()
    assert sched.next_fire_times()["rotation"] <= datetime.now(UTC) + timedelta(seconds=1)
    assert sched.wait_until_done(timeout=5)
    assert sched.stop(timeout=5)
    assert len(run.calls) == 1
    assert run.calls[0].trigger == "schedule"
    assert run.calls[0].no_reset is False
    assert sched.last_report is not None


def test_run_now_fires_at_start_and_the_weekly_job_stays_scheduled(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun()
    sched = build(schedulers, make_config(tmp_path), run, run_now=True, max_runs=1)
    sched.start()
    assert sched.wait_until_done(timeout=5)
    nxt = sched.next_fire_times()["rotation"].astimezone(LONDON)
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (0, 6, 0)  # a Monday, 06:00 London
    assert sched.stop(timeout=5)
    assert len(run.calls) == 1


def test_the_adopt_check_runs_without_a_reset(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun()
    config = make_config(tmp_path, adopt_check_cron='"*/10 * * * *"')
    sched = build(schedulers, config, run, adopt_trigger=EVERY_SECOND, max_runs=1)
    assert sched.adopt_trigger is not None
    sched.start()
    assert sched.wait_until_done(timeout=5)
    assert sched.stop(timeout=5)
    assert [c.no_reset for c in run.calls] == [True]
    assert run.calls[0].trigger == "schedule"


def test_env_switches_carry_into_scheduled_runs_except_force(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun()
    switches = RunSwitches(envs=("preview",), dry_run=True, force=True, trigger="manual")
    sched = build(schedulers, make_config(tmp_path), run, switches=switches)
    sched.fire(JobKind.ROTATION)
    sched.fire(JobKind.ADOPT_CHECK)
    rotation, adopt = run.calls
    assert (rotation.envs, rotation.dry_run, rotation.force, rotation.no_reset) == (
        ("preview",),
        True,
        False,
        False,
    )
    assert (adopt.dry_run, adopt.no_reset, adopt.trigger) == (True, True, "schedule")


# --- one run at a time -------------------------------------------------------------------------


def test_an_adopt_check_is_skipped_while_a_rotation_runs(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun(hold=True)
    sched = build(schedulers, make_config(tmp_path), run)
    rotation = in_thread(sched.fire, JobKind.ROTATION)
    assert run.started.wait(5)
    assert sched.fire(JobKind.ADOPT_CHECK) is None
    run.release.set()
    rotation.join(5)
    assert [c.no_reset for c in run.calls] == [False]
    assert run.max_active == 1


def test_a_rotation_waits_for_a_running_adopt_check_and_never_overlaps(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun(hold=True)
    sched = build(schedulers, make_config(tmp_path), run)
    adopt = in_thread(sched.fire, JobKind.ADOPT_CHECK)
    assert run.started.wait(5)
    rotation = in_thread(sched.fire, JobKind.ROTATION)
    time.sleep(0.5)
    assert len(run.calls) == 1, "the rotation started while the adopt check ran"
    run.release.set()
    adopt.join(5)
    rotation.join(5)
    assert [c.no_reset for c in run.calls] == [True, False]
    assert run.max_active == 1


def test_both_jobs_firing_often_never_overlap(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    class SlowRun(FakeRun):
        def __call__(self, config: Config, switches: RunSwitches) -> RunReport:
            time.sleep(0.15)
            return super().__call__(config, switches)

    run = SlowRun()
    sched = build(
        schedulers,
        make_config(tmp_path),
        run,
        rotation_trigger=IntervalTrigger(seconds=0.1),
        adopt_trigger=IntervalTrigger(seconds=0.1),
        max_runs=4,
    )
    sched.start()
    assert sched.wait_until_done(timeout=10)
    assert sched.stop(timeout=5)
    assert run.max_active == 1
    assert len(run.calls) >= 4


# --- after a run -----------------------------------------------------------------------------


def test_metrics_are_written_after_each_run(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    metrics = tmp_path / "metrics" / "rotator.prom"
    sched = build(schedulers, make_config(tmp_path), FakeRun(), metrics_file=metrics)
    sched.fire(JobKind.ROTATION)
    first = metrics.read_text()
    assert 'rotator_last_run_outcome{outcome="succeeded"} 1.0' in first
    assert "rotator_last_success_timestamp_seconds" in first


def test_each_scheduled_run_logs_its_whole_report_as_one_record(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sched = build(schedulers, make_config(tmp_path), FakeRun())
    sched.fire(JobKind.ROTATION)
    sched.fire(JobKind.ADOPT_CHECK)
    records = [r for r in caplog.records if getattr(r, "report", None)]
    assert [r.report["mode"] for r in records] == ["rotate", "adopt"]  # type: ignore[attr-defined]
    assert all(r.report["schema_version"] == 1 for r in records)  # type: ignore[attr-defined]
    assert "rotator run rot-" in records[0].getMessage()  # the text report, in a text log


def test_a_crashing_run_is_logged_and_the_schedule_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def crash_once(config: Config, switches: RunSwitches) -> RunReport:
        calls.append("x")
        if len(calls) == 1:
            raise RuntimeError("boom")
        return report_for(switches)

    sched = Scheduler(make_config(tmp_path), run=crash_once)
    assert sched.fire(JobKind.ROTATION) is None
    assert sched.last_crashed
    assert "the run crashed" in caplog.text
    assert sched.fire(JobKind.ROTATION) is not None
    assert sched.run_count == 2


# --- stopping ----------------------------------------------------------------------------------


def test_stop_waits_for_the_running_rotation_to_finish(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun(hold=True)
    sched = build(schedulers, make_config(tmp_path), run)
    in_thread(sched.fire, JobKind.ROTATION)
    assert run.started.wait(5)
    result: list[bool] = []
    stopper = in_thread(lambda: result.append(sched.stop(timeout=10)))
    time.sleep(0.4)
    assert not result, "stop returned while the rotation was still running"
    run.release.set()
    stopper.join(5)
    assert result == [True]
    assert sched.run_count == 1
    assert sched.fire(JobKind.ROTATION) is None, "no run starts after a stop"


def test_while_stop_waits_for_the_running_rotation_it_logs_a_heartbeat(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = make_config(tmp_path)
    config = config.model_copy(
        update={"waits": config.waits.model_copy(update={"heartbeat_s": 0.01})}
    )
    run = FakeRun(hold=True)
    sched = build(schedulers, config, run)
    in_thread(sched.fire, JobKind.ROTATION)
    assert run.started.wait(5)
    result: list[bool] = []
    stopper = in_thread(lambda: result.append(sched.stop(timeout=120)))
    beat = "schedule: still waiting: the running rotation to finish"
    for _ in range(600):  # the heartbeat ticks once a second; a loaded machine gets a minute
        if any(beat in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.1)
    run.release.set()
    stopper.join(10)
    assert result == [True]
    line = next(r.getMessage() for r in caplog.records if beat in r.getMessage())
    assert "of 120s; last seen: still running" in line


def test_stop_abandons_a_run_that_outlasts_the_bound(
    tmp_path: Path, schedulers: list[tuple[Scheduler, FakeRun]]
) -> None:
    run = FakeRun(hold=True)
    sched = build(schedulers, make_config(tmp_path), run)
    in_thread(sched.fire, JobKind.ROTATION)
    assert run.started.wait(5)
    start = time.monotonic()
    assert sched.stop(timeout=0.5) is False
    assert time.monotonic() - start < 3


# --- the command, as a process ------------------------------------------------------------------


_ROTATOR = (sys.executable, "-m", "rotator")


def _process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _config_file(tmp_path: Path) -> Path:
    make_config(tmp_path)  # validates it
    return tmp_path / "config.yaml"


def test_schedule_run_now_max_runs_one_runs_once_and_exits_with_its_outcome(
    tmp_path: Path,
) -> None:
    """The run fails fast in preflight (the PostHog key's env var is unset): exit 3."""
    metrics = tmp_path / "rotator.prom"
    result = subprocess.run(
        [
            *_ROTATOR,
            *("--config", str(_config_file(tmp_path)), "--log-format", "text", "schedule"),
            *("--run-now", "--max-runs", "1", "--metrics-file", str(metrics)),
        ],
        cwd=tmp_path,
        env=_process_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    log = result.stderr
    assert result.returncode == 3, log
    assert "scheduler started: rotation on '0 6 * * 1' (Europe/London)" in log
    assert "rotation: run starting (rotate)" in log
    assert "ROTATOR_TEST_UNSET_KEY is not set" in log
    assert "finished: aborted-nothing-changed (exit 3)" in log
    assert "next rotation run at" in log
    assert "scheduler stopped after 1 run(s)" in log
    assert 'rotator_last_run_outcome{outcome="aborted-nothing-changed"} 1' in metrics.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_scheduler_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*_ROTATOR, "--config", str(_config_file(tmp_path)), "--log-format", "text", "schedule"],
        cwd=tmp_path,
        env=_process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    reader = in_thread(lambda: [lines.put(line) for line in stderr])
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any("next rotation run at" in line for line in seen):
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert proc.poll() is None, "".join(seen)
        start = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=15)
        assert time.monotonic() - start < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        reader.join(5)
        stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    log = "".join(seen)
    assert code == 0, log
    assert f"{signum.name} received: stopping" in log
    assert "scheduler stopped after 0 run(s)" in log


# --- a scheduled rotation in the sandbox --------------------------------------------------------


@pytest.mark.slow
def test_the_scheduler_runs_a_whole_rotation_in_the_sandbox(tmp_path: Path) -> None:
    from rotator_sandbox.world import FAST, Sandbox, cached_key_pair

    with Sandbox(
        tmp_path / "sandbox", timing=FAST, key_pair=cached_key_pair(2048), seed=1
    ) as world:
        metrics = tmp_path / "rotator.prom"
        before = world.initial_keys["prod"].fingerprint
        sched = Scheduler(
            world.load_config(),
            rotation_trigger=EVERY_SECOND,
            max_runs=1,
            metrics_file=metrics,
        )
        sched.start()
        try:
            assert sched.wait_until_done(timeout=90)
        finally:
            assert sched.stop(timeout=30)
        report = sched.last_report
        assert report is not None
        assert report.outcome is Outcome.SUCCEEDED, report.error
        assert report.trigger == "schedule"
        (old, new), *_ = report.fingerprints.values()
        assert old == before
        assert new != before
        assert 'rotator_last_run_outcome{outcome="succeeded"} 1' in metrics.read_text()
