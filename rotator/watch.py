"""``rotator watch``: propagate a key reset done by a person within seconds.

The runbook's first step is a person clicking Rotate in PostHog; from then on the gateways send
with a revoked key (PostHog drops those events after its grace window). This long-running
process reads each project's current key every ``watch.interval_s`` (one idempotent GET per
project per tick: far inside PostHog's 480/min per personal key) and compares its fingerprint
with what the ops repo explains:

- the ``Rotator-Key-Fingerprint`` trailers and the fingerprints recorded in the sealed files
  over the sealed file's recent history (the newest is the key rotator rolled out; older ones
  were replaced by it, so PostHog answering one is a lagging read, never a person's reset).

A key git does not explain was reset by someone else: the watcher runs the adopt rotation at
once, the same path as ``rotator run --no-reset`` (``runner.run_once``, same Lease), with the
trigger ``watch``. A rotation done by rotator itself is explained as soon as its commit is
pushed; before that its Lease is held, so an adopt run in that gap ends "locked" and changes
nothing, and the next tick finds the commit.

- A read error (PostHog or git) is logged and the read is repeated on the next tick (reads are
  idempotent); it is never fatal.
- An adopt run that does not succeed is retried for the same key after ``watch.adopt_retry_s``,
  not on every tick.
- SIGTERM/SIGINT stop it: no new run starts; a running adopt run is asked to stop as the
  scheduler asks (``interrupts.StopSignals.request_stop``: it releases its Lease and reports).
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rotator.clock import Clock, SystemClock
from rotator.config import Config, RunSwitches
from rotator.errors import ExitCode, RotatorError
from rotator.interrupts import StopSignals
from rotator.logs import log_context
from rotator.names import TRAILER_KEY_FINGERPRINT, Fingerprint, ProjectId
from rotator.report import Outcome, RunReport

if TYPE_CHECKING:
    from rotator.clients.gitrepo import OpsRepo
    from rotator.clients.posthog import PostHogClient

log = logging.getLogger(__name__)

RunFn = Callable[[Config, RunSwitches], RunReport | None]
# The watcher's own checkout, beside the run's (the run holds a lock on its workdir).
WATCH_WORKDIR = "rotator-ops-repo-watch"
_HISTORY = 20


class Watcher:
    """One ``tick()`` reads every project's key once and adopts an unexplained one.

    Tests drive ``tick()`` directly with ``run=`` (any ``(config, switches) -> RunReport``),
    ``posthog=`` and ``clock=``; ``serve()`` is the CLI's loop (``sleep`` is injectable).
    """

    def __init__(
        self,
        config: Config,
        *,
        run: RunFn | None = None,
        posthog: PostHogClient | None = None,
        clock: Clock | None = None,
        workdir: Path | None = None,
        max_adopts: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._run = run
        self._posthog = posthog
        self._workdir = workdir
        self._repo: OpsRepo | None = None
        self.switches = RunSwitches(trigger="watch", no_reset=True)
        self.max_adopts = max_adopts
        self._seen: dict[int, Fingerprint] = {}  # project -> fingerprint git explains
        self._tried: dict[Fingerprint, float] = {}  # unexplained key -> last adopt (monotonic)
        self._stop = threading.Event()
        self._signals: list[str] = []
        self._run_stop: StopSignals | None = None
        self.adopt_count = 0
        self.last_report: RunReport | None = None

    # -- one tick --------------------------------------------------------------------------

    def tick(self) -> RunReport | None:
        """Read each project's key; run one adopt if any is unexplained. Its report, or None."""
        with log_context(step="watch"):
            unexplained: list[str] = []
            for project_id, _envs in self.config.project_groups():
                why = self._check_project(int(project_id))
                if why is not None:
                    unexplained.append(why)
            if not unexplained or self._stop.is_set():
                return None
            log.warning("%s: adopting it now (no reset)", "; ".join(unexplained))
            return self._adopt()

    def _check_project(self, project_id: int) -> str | None:
        """None when the key is the one last seen or git explains it, else why it is not."""
        try:
            fp = self._read_key(project_id)
        except RotatorError as exc:
            log.warning(
                "reading project %d's key failed (%s); reading again next tick", project_id, exc
            )
            return None
        if self._seen.get(project_id) == fp:
            return None
        try:
            known = self._explained(project_id)
        except RotatorError as exc:
            log.warning(
                "project %d's key is now %s, but the ops repo could not be read (%s); "
                "checking again next tick",
                project_id,
                fp,
                exc,
            )
            return None
        if fp in known:
            if project_id in self._seen:
                log.info("project %d's key %s is explained by a rotator commit", project_id, fp)
            self._seen[project_id] = fp
            return None
        last = self._tried.get(fp)
        if last is not None and self.clock.monotonic() - last < self.config.watch.adopt_retry_s:
            return None  # an adopt for this key did not succeed; retried after adopt_retry_s
        return f"project {project_id}'s key is {fp}, which no rotator commit explains"

    def _read_key(self, project_id: int) -> Fingerprint:

        if self._posthog is None:
            from rotator.clients.posthog import PostHogClient

            self._posthog = PostHogClient.from_config(self.config, clock=self.clock)
        return self._posthog.get_project(ProjectId(project_id)).api_token.fingerprint

    def _explained(self, project_id: int) -> set[Fingerprint]:
        """Every key fingerprint rotator's commits and sealed files name for the project."""
        from rotator.clients.sealing import read_sealed_file

        repo = self._open_repo()
        repo.sync()
        known: set[Fingerprint] = set()
        for name, env in self.config.environments.items():
            if env.posthog_project_id != project_id:
                continue
            path = env.sealed_file
            for commit in repo.history(path, max_count=_HISTORY):
                trailer = commit.trailers.get(TRAILER_KEY_FINGERPRINT)
                if trailer:
                    known.add(Fingerprint(trailer))
            text = repo.read_file(path)
            if text is not None:
                try:
                    info = read_sealed_file(text, path=path)
                except RotatorError as exc:
                    log.warning("environments.%s: %s is not readable: %s", name, path, exc)
                    continue
                if info.fingerprint:
                    known.add(Fingerprint(info.fingerprint))
        return known

    def _open_repo(self) -> OpsRepo:
        from rotator.clients.gitrepo import OpsRepo

        if self._repo is None:
            workdir = self._workdir
            if workdir is None:
                base = self.config.git.workdir
                workdir = (
                    base.parent / f"{base.name}-watch"
                    if base is not None
                    else Path(tempfile.gettempdir()) / WATCH_WORKDIR
                )
            self._repo = OpsRepo.open(
                self.config.git,
                token=self.config.secrets.git_https_token,
                workdir=workdir,
                timeout_s=self.config.timeouts.read_s * 4,
            )
        return self._repo

    def _adopt(self) -> RunReport | None:
        started = self.clock.monotonic()
        try:
            if self._run is not None:
                report = self._run(self.config, self.switches)
            else:
                from rotator.scheduler import _default_run

                self._run_stop = StopSignals()
                report = _default_run(self.config, self.switches, signals=self._run_stop)
        except Exception:
            log.exception("watch: the adopt run crashed (unexpected error)")
            report = None
        finally:
            self._run_stop = None
        self.adopt_count += 1
        self.last_report = report
        if self.max_adopts is not None and self.adopt_count >= self.max_adopts:
            self._stop.set()
        if report is not None:
            from rotator.output import log_report

            log.info(
                "watch: adopt run %s finished: %s (exit %d) in %.1fs",
                report.run_id,
                report.outcome.value,
                int(report.exit_code),
                self.clock.monotonic() - started,
            )
            log_report(report)
        if report is None or report.outcome is not Outcome.SUCCEEDED:
            # Retry this key later, not every tick (each run takes the Lease and reports).
            for project_id, _envs in self.config.project_groups():
                try:
                    fp = self._read_key(int(project_id))
                except RotatorError:
                    continue
                if self._seen.get(int(project_id)) != fp:
                    self._tried[fp] = self.clock.monotonic()
        return report

    # -- the CLI's loop --------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only set flags here (logging from a handler can deadlock); the loop logs.
        name = signal.Signals(signum).name
        self._signals.append(name)
        self._stop.set()
        if self._run_stop is not None:
            self._run_stop.request_stop(name)

    def bind_run(self, run: RunFn) -> None:
        """Run adopts through ``run`` (the scheduler's run path, under its run lock)."""
        self._run = run

    def close(self) -> None:
        """Close the watcher's checkout (and its workdir lock)."""
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def request_stop(self) -> None:
        self._stop.set()

    @contextmanager
    def _signals_handled(self) -> Iterator[None]:
        handled = (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def serve(self, *, sleep: Callable[[float], bool] | None = None) -> int:
        """Tick every ``watch.interval_s`` until SIGTERM/SIGINT (or ``max_adopts``)."""
        wait = sleep or self._stop.wait
        interval = float(self.config.watch.interval_s)
        with self._signals_handled():
            log.info(
                "watching PostHog's key for %d project(s) every %.1fs",
                len(self.config.project_groups()),
                interval,
            )
            try:
                while not self._stop.is_set():
                    self.tick()
                    if self._stop.is_set() or wait(interval):
                        break
            finally:
                self.close()
        if self._signals:
            log.info("%s received: watch stopped", self._signals[0])
        log.info("watch stopped after %d adopt run(s)", self.adopt_count)
        if self.max_adopts is not None and not self._signals:
            return int(self.last_report.exit_code) if self.last_report else int(ExitCode.FAILED)
        return int(ExitCode.OK)
