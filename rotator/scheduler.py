"""``rotator schedule``: APScheduler wiring only; every run goes through ``runner.run_once``.

For places without a CronJob: one long-running process fires the rotation on
``schedule.cron`` (the CronJob's expression, read with cron's meaning, see ``crontab_trigger``)
in ``schedule.timezone``, and optionally an adopt-mode check (``--no-reset``) on
``schedule.adopt_check_cron`` / ``--adopt-check CRON`` that heals a key someone reset in
PostHog's UI within minutes.

- One run at a time in this process: both jobs share one lock. A rotation that comes due while an
  adopt check runs waits for it (up to ``schedule.misfire_grace_s``); an adopt check that comes
  due while anything runs is skipped (the next one is minutes away). Across processes the run's
  Lease still guards. Each job also has ``max_instances=1`` and ``coalesce=True`` (a backlog of
  missed fire times runs once), and a fire time missed by more than ``misfire_grace_s`` (the
  process was stopped or the host slept) is skipped.
- SIGTERM/SIGINT stop it: no new run starts; a run in progress is given up to
  ``stop_timeout_s`` to finish, because finishing is better than resuming, and then abandoned:
  stopping mid-rotation is safe, since the next run resumes from what PostHog, git and the
  cluster show. A second signal (or the end of that bound) asks the run to stop as the CLI's
  SIGTERM does (``interrupts.StoppingClock``): at its next wait it releases its Lease and
  reports, within ``_stop_report_s``; only a run that does not is abandoned.
- After each run the metrics file is written (``--metrics-file`` or ``metrics.file``) and pushed
  to ``metrics.pushgateway_url``, and the next fire times are logged.

Runs execute in daemon threads (``_DaemonThreadExecutor``), so an abandoned run can never keep
the process alive past the stop bound.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rotator.clock import SystemClock
from rotator.config import Config, RunSwitches
from rotator.cron import crontab_trigger
from rotator.errors import ConfigError, ExitCode
from rotator.interrupts import FINISH_BUDGET_S, StopSignals
from rotator.logs import log_context
from rotator.progress import waiting
from rotator.report import RunReport
from rotator.watch import Watcher

log = logging.getLogger(__name__)

RunFn = Callable[[Config, RunSwitches], RunReport]

# How long a stop waits for a running rotation before abandoning it. A Deployment running
# `rotator schedule` needs terminationGracePeriodSeconds above this.
DEFAULT_STOP_TIMEOUT_S = 300.0
_POLL_S = 0.2


class JobKind(StrEnum):
    ROTATION = "rotation"
    ADOPT_CHECK = "adopt-check"
    WATCH = "watch"


# --- cron with cron's meaning: rotator/cron.py (shared with the ArgoCD client's sync windows) ---


def _trigger_from_config(expr: str, timezone: str, *, field: str) -> CronTrigger:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"schedule.timezone: unknown time zone {timezone!r} (use an IANA name such as "
            "Europe/London)"
        ) from None
    try:
        return crontab_trigger(expr, timezone)
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


# --- APScheduler executor ---------------------------------------------------------------------


class _DaemonThreadExecutor(BaseExecutor):  # type: ignore[misc]  # untyped library base
    """Each job in its own daemon thread: the process can always exit after a stop.

    (APScheduler's ThreadPoolExecutor uses non-daemon threads that the interpreter joins at
    exit, which would turn the stop bound into "whenever the rotation ends".)
    """

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:  # reported to APScheduler, as its own executors do
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        name = f"rotator-{job.id}"
        threading.Thread(target=target, name=name, daemon=True).start()


# --- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    """The jobs, the shared run lock and the stop logic; ``serve()`` is the CLI's loop.

    Tests drive it with ``run=`` (any ``(config, switches) -> RunReport``), ``fire()`` (one
    job's body, synchronously), ``start()``/``wait_until_done()``/``stop()``, and may replace
    the cron triggers with faster ones.
    """

    def __init__(
        self,
        config: Config,
        *,
        run: RunFn | None = None,
        switches: RunSwitches | None = None,
        adopt_cron: str | None = None,
        run_now: bool = False,
        max_runs: int | None = None,
        metrics_file: Path | None = None,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        rotation_trigger: BaseTrigger | None = None,
        adopt_trigger: BaseTrigger | None = None,
        watch: bool | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        schedule = config.schedule
        self.config = config
        self._run = run  # None: run_once, stoppable through self._run_stop
        self._run_stop: StopSignals | None = None  # the running run's, to ask it to stop
        base = switches or RunSwitches(trigger="schedule")
        # ROTATOR_FORCE would bypass policy.min_interval_s on every scheduled run: not here.
        self.rotation_switches = base.model_copy(update={"trigger": "schedule", "force": False})
        self.adopt_switches = self.rotation_switches.model_copy(update={"no_reset": True})
        self.run_now = run_now
        self.max_runs = max_runs
        self.metrics_file = metrics_file or config.metrics.file
        self.stop_timeout_s = stop_timeout_s
        self.rotation_trigger = rotation_trigger or _trigger_from_config(
            schedule.cron, schedule.timezone, field="schedule.cron"
        )
        field = "--adopt-check" if adopt_cron else "schedule.adopt_check_cron"
        adopt_cron = adopt_cron or schedule.adopt_check_cron
        self.adopt_trigger = adopt_trigger
        if self.adopt_trigger is None and adopt_cron:
            self.adopt_trigger = _trigger_from_config(adopt_cron, schedule.timezone, field=field)
        self._timezone = ZoneInfo(schedule.timezone)
        # `rotator watch` between rotations: its ticks take the run lock like an adopt check
        # (skipped while anything runs) and its adopt runs go through _run_one.
        self.watcher: Watcher | None = None
        if watcher is not None or (schedule.watch if watch is None else watch):
            self.watcher = watcher or Watcher(config)
            self.watcher.bind_run(lambda _config, _switches: self._run_one(JobKind.WATCH))
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()  # no new run may start
        self._done = threading.Event()  # serve() should stop (signal or max_runs)
        self._abandon = threading.Event()  # a second signal: do not wait any more
        self._signals: list[str] = []
        self._current: JobKind | None = None
        self._apscheduler: BackgroundScheduler | None = None
        self.run_count = 0
        self.last_report: RunReport | None = None
        self.last_crashed = False

    # -- one job ---------------------------------------------------------------------------

    def fire(self, kind: JobKind) -> RunReport | None:
        """One job's body: take the run lock, run, publish metrics; None if skipped/crashed."""
        with log_context(step="schedule"):
            if not self._take_run_lock(kind):
                return None
            try:
                # _done too: a fire waiting for the run lock must not start a run past
                # --max-runs (it was counted only after the lock was released: one extra run).
                if self._stopping.is_set() or self._done.is_set():
                    log.info("%s: not started: the scheduler is stopping", kind.value)
                    return None
                self._current = kind
                report = self._run_one(kind)
                self._count(report)  # under the run lock, before a waiting fire can start
            finally:
                self._current = None
                self._run_stop = None
                self._run_lock.release()
            self.log_next_fire_times()
            return report

    def fire_watch(self) -> RunReport | None:
        """One watch tick between rotations: the adopt run's report, or None."""
        watcher = self.watcher
        if watcher is None:
            return None
        with log_context(step="schedule"):
            if not self._run_lock.acquire(blocking=False):
                return None  # a run is in progress: the next tick reads again
            adopts = watcher.adopt_count
            try:
                if self._stopping.is_set() or self._done.is_set():
                    return None
                self._current = JobKind.WATCH
                report = watcher.tick()
                if watcher.adopt_count != adopts:
                    self._count(report)
            finally:
                self._current = None
                self._run_stop = None
                self._run_lock.release()
            return report

    def _take_run_lock(self, kind: JobKind) -> bool:
        if kind is JobKind.ADOPT_CHECK:
            if self._run_lock.acquire(blocking=False):
                return True
            log.info("adopt-check: skipped: a %s is running", self._current or "run")
            return False
        announced = False
        grace = float(self.config.schedule.misfire_grace_s)
        since = time.monotonic()
        while not self._run_lock.acquire(timeout=_POLL_S):
            if self._stopping.is_set():
                log.info("rotation: not started: the scheduler is stopping")
                return False
            if not announced:
                log.info("rotation: waiting for the running %s to finish", self._current or "run")
                announced = True
            if time.monotonic() - since >= grace:
                log.warning(
                    "rotation: skipped: the %s still runs after %.0fs (misfire grace)",
                    self._current or "run",
                    grace,
                )
                return False
        return True

    def _run_one(self, kind: JobKind) -> RunReport | None:
        switches = self.adopt_switches if kind is JobKind.ADOPT_CHECK else self.rotation_switches
        if kind is JobKind.WATCH and self.watcher is not None:
            switches = self.watcher.switches.model_copy(update={"dry_run": switches.dry_run})
        log.info(
            "%s: run starting (%s%s)",
            kind.value,
            "adopt, no reset" if switches.no_reset else "rotate",
            ", dry run" if switches.dry_run else "",
        )
        started = time.monotonic()
        try:
            if self._run is not None:
                report = self._run(self.config, switches)
            else:
                self._run_stop = StopSignals()
                report = _default_run(self.config, switches, signals=self._run_stop)
        except Exception:
            # run_once reports every outcome; this is a bug, and the schedule must go on.
            log.exception("%s: the run crashed (unexpected error)", kind.value)
            self.last_crashed = True
            return None
        self.last_crashed = False
        log.info(
            "%s: run %s finished: %s (exit %d) in %.1fs",
            kind.value,
            report.run_id,
            report.outcome.value,
            int(report.exit_code),
            time.monotonic() - started,
        )
        if report.resume_command:
            log.warning("%s: to finish it by hand: %s", kind.value, report.resume_command)
        from rotator.output import log_report

        log_report(report)  # each run's whole report, as one record
        self._publish(report)
        return report

    def _publish(self, report: RunReport) -> None:
        from rotator.clients.pushgateway import push_report
        from rotator.output import write_metrics

        if self.metrics_file is not None:
            try:
                write_metrics(self.metrics_file, report)
            except OSError as exc:
                log.warning("metrics file %s not written: %s", self.metrics_file, exc)
        push_report(self.config, report)

    def _count(self, report: RunReport | None) -> None:
        with self._state_lock:
            self.run_count += 1
            self.last_report = report
            if self.max_runs is not None and self.run_count >= self.max_runs:
                log.info("stopping after %d run(s) (--max-runs)", self.run_count)
                self._done.set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        scheduler = BackgroundScheduler(
            executors={"default": _DaemonThreadExecutor()},
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": self.config.schedule.misfire_grace_s,
            },
            timezone=self._timezone,
        )
        scheduler.add_job(
            self.fire,
            self.rotation_trigger,
            args=(JobKind.ROTATION,),
            id=JobKind.ROTATION.value,
            name="rotation",
        )
        if self.adopt_trigger is not None:
            scheduler.add_job(
                self.fire,
                self.adopt_trigger,
                args=(JobKind.ADOPT_CHECK,),
                id=JobKind.ADOPT_CHECK.value,
                name="adopt check (no reset)",
            )
        if self.watcher is not None:
            scheduler.add_job(
                self.fire_watch,
                IntervalTrigger(seconds=float(self.config.watch.interval_s)),
                id=JobKind.WATCH.value,
                name="watch (adopt a reset no rotator commit explains)",
                misfire_grace_time=None,
            )
        if self.run_now:
            scheduler.add_job(
                self.fire,
                "date",
                args=(JobKind.ROTATION,),
                id="rotation-now",
                name="rotation (at start)",
                next_run_time=datetime.now(self._timezone),
            )
        self._apscheduler = scheduler
        scheduler.start()
        log.info(
            "scheduler started: rotation on %r (%s)%s",
            self.config.schedule.cron,
            self.config.schedule.timezone,
            "; adopt check enabled" if self.adopt_trigger is not None else "",
        )
        if self.watcher is not None:
            log.info(
                "watching PostHog's key every %.1fs between runs", self.config.watch.interval_s
            )
        self.log_next_fire_times()

    def next_fire_times(self) -> dict[str, datetime]:
        if self._apscheduler is None:
            return {}
        return {
            job.id: job.next_run_time
            for job in self._apscheduler.get_jobs()
            if job.next_run_time is not None
        }

    def log_next_fire_times(self) -> None:
        for job_id, when in sorted(self.next_fire_times().items()):
            log.info("next %s run at %s", job_id, when.isoformat())

    def wait_until_done(self, timeout: float | None = None) -> bool:
        """Wait until a stop was asked for (signal) or ``max_runs`` runs happened."""
        return self._done.wait(timeout)

    def request_stop(self) -> None:
        self._done.set()

    def stop(self, *, timeout: float | None = None) -> bool:
        """No new runs; wait (bounded) for a running one. True when nothing was abandoned."""
        bound = self.stop_timeout_s if timeout is None else timeout
        self._stopping.set()
        self._done.set()
        if self._apscheduler is not None and self._apscheduler.running:
            self._apscheduler.shutdown(wait=False)
        if self.watcher is not None:
            self.watcher.request_stop()
        running = self._current
        if running is not None:
            log.info("stopping: waiting up to %.0fs for the running %s", bound, running)
        deadline = time.monotonic() + bound
        asked = False
        with waiting(
            "schedule",
            f"the running {running or 'run'} to finish",
            clock=SystemClock(),
            deadline_s=bound,
            interval_s=self.config.waits.heartbeat_s,
        ) as progress:
            progress.state = "still running"  # set quietly: the line above said it
            while True:
                if self._run_lock.acquire(timeout=_POLL_S):
                    self._run_lock.release()
                    return True
                if (self._abandon.is_set() and not asked) or time.monotonic() >= deadline:
                    if not asked and self._ask_run_to_stop():
                        # It stops at its next wait and reports: a report beats abandoning it.
                        # Later signals are only counted; the bound still holds.
                        asked = True
                        deadline = time.monotonic() + self._stop_report_s()
                        progress.observe("asked to stop; waiting for its report")
                        continue
                    log.warning(
                        "stopping: abandoning the running %s; the next run resumes it from the "
                        "state in PostHog, git and the cluster (its Lease expires on its own)",
                        self._current or running or "run",
                    )
                    return False

    def _ask_run_to_stop(self) -> bool:
        """Ask the running run (once) to stop as on SIGTERM: release its Lease and report."""
        stop = self._run_stop
        if stop is None or stop.stopping or self._current is None:
            return False
        stop.request_stop(self._signals[-1] if self._signals else "stop")
        log.warning(
            "stopping: asking the running %s to stop; waiting up to %.0fs for its report",
            self._current,
            self._stop_report_s(),
        )
        return True

    def _stop_report_s(self) -> float:
        """How long a run asked to stop may take: to notice (one poll or one watch), then
        release its Lease, post to Slack and push the metrics (each bounded)."""
        waits = self.config.waits
        noticed = max(waits.poll_interval_s, waits.watch_timeout_s) + self.config.timeouts.read_s
        return noticed + 3 * FINISH_BUDGET_S

    # -- the CLI's loop --------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only set flags here: the main loop logs (logging from a handler can deadlock).
        self._signals.append(signal.Signals(signum).name)
        if self._done.is_set():
            self._abandon.set()
        self._done.set()

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT or ``max_runs``; the exit code for the CLI."""
        # APScheduler logs every job start and end at INFO; ours say more, in the run's terms.
        apscheduler_log = logging.getLogger("apscheduler")
        apscheduler_log.setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self.start()
            while not self._done.wait(_POLL_S):
                pass
            if self._signals:
                log.info(
                    "%s received: stopping (a running run gets up to %.0fs; a second signal "
                    "stops it, and it reports)",
                    self._signals[0],
                    self.stop_timeout_s,
                )
            clean = self.stop()
            if clean and self.watcher is not None:
                self.watcher.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info(
            "scheduler stopped after %d run(s)%s",
            self.run_count,
            "" if clean else " (a run was abandoned)",
        )
        if not clean:
            return int(ExitCode.FAILED)
        if self.max_runs is not None and not self._signals:
            # --max-runs (tests, one-shot use): the last run's outcome is the exit code.
            if self.last_report is None:
                return int(ExitCode.FAILED)
            return int(self.last_report.exit_code)
        return int(ExitCode.OK)


def _default_run(
    config: Config, switches: RunSwitches, *, signals: StopSignals | None = None
) -> RunReport:
    from rotator.clock import SystemClock
    from rotator.interrupts import StoppingClock
    from rotator.runner import run_once

    if signals is None:
        return run_once(config, switches)
    clock = StoppingClock(SystemClock(), signals)
    return run_once(config, switches, clock=clock, signals=signals)
