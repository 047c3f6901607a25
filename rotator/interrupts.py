"""SIGTERM and SIGINT for one run: the first stops the work, none stops the report.

Kubernetes stops a Job's pod with SIGTERM, waits ``terminationGracePeriodSeconds`` and then
sends SIGKILL; a person presses Ctrl-C, often twice. The first signal raises
``KeyboardInterrupt`` in the main thread while the run works (the runner then releases the Lease
and reports). From then on, and as soon as the run has stopped working for any reason, signals
are only counted: a second SIGTERM can no longer cut the release, the report or Slack short.
After a signal, each finishing action (release, Slack, metrics push) gets at most
``FINISH_BUDGET_S``, so that the report is out well inside the grace period (README,
cronjob.yaml: ``terminationGracePeriodSeconds``).

The handler only sets fields (logging from a signal handler can deadlock on a handler's lock);
the run logs and reports what arrived.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from rotator.clock import Clock

log = logging.getLogger(__name__)

# Per finishing action after a stop signal: release the Lease, post to Slack, push metrics.
FINISH_BUDGET_S = 10.0
# What the job needs: three finishing actions, with room for the report and the exit.
GRACE_PERIOD_S = 60


class StopSignals:
    """The run's view of SIGTERM/SIGINT (install once, in the main thread)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.first_at: float | None = None  # time.monotonic() of the first signal
        self._armed = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        if self.first_at is None:
            self.first_at = time.monotonic()
        if self._armed:
            self._armed = False
            raise KeyboardInterrupt

    def request_stop(self, name: str) -> None:
        """A stop asked for from another thread (the scheduler's signal handling): the run
        stops at its next wait or clock reading (``StoppingClock``), as if signalled."""
        self.received.append(name)
        if self.first_at is None:
            self.first_at = time.monotonic()

    def ensure_running(self) -> None:
        """Raise ``KeyboardInterrupt`` if a stop was asked for and the run still works."""
        if self._armed and self.received:
            raise KeyboardInterrupt

    def disarm(self) -> None:
        """The work is over: from now on signals are only counted."""
        self._armed = False

    @property
    def stopping(self) -> bool:
        return bool(self.received)

    def summary(self) -> str | None:
        """One line for the report: which signals arrived, and what they did."""
        if not self.received:
            return None
        names = ", ".join(self.received)
        more = len(self.received) - 1
        tail = f"; the {more} later one(s) were counted, not obeyed" if more else ""
        return f"stop signal(s) received: {names}: the run stopped and reported{tail}"

    def finish(
        self, what: str, fn: Callable[[], object], *, budget_s: float = FINISH_BUDGET_S
    ) -> bool:
        """Run ``fn`` to its end, unless a stop signal came: then give it at most ``budget_s``
        after the signal (or after its start, whichever is later) and go on without it.
        True when ``fn`` finished (its exception, if any, is raised here)."""
        context = contextvars.copy_context()
        done = threading.Event()
        failed: list[Exception] = []

        def work() -> None:
            try:
                context.run(fn)
            except Exception as exc:  # handed to the caller below
                failed.append(exc)
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=work, name=f"rotator-finish-{what}", daemon=True).start()
        while not done.wait(0.1):
            if self.first_at is None:
                continue
            if time.monotonic() - max(started, self.first_at) >= budget_s:
                log.warning(
                    "%s: not done %.0fs after the stop signal; going on without it", what, budget_s
                )
                return False
        if failed:
            raise failed[0]
        return True


class StoppingClock:
    """``base``, except that once a stop is asked for (``StopSignals.request_stop``), every
    reading and sleep raises ``KeyboardInterrupt`` in whichever of the run's threads makes it,
    until the run has stopped working (``disarm``): its waits end within one poll interval or
    one watch (``waits.watch_timeout_s``), its finishing (release, report) is not cut."""

    def __init__(self, base: Clock, signals: StopSignals) -> None:
        self._base = base
        self._signals = signals

    def monotonic(self) -> float:
        self._signals.ensure_running()
        return self._base.monotonic()

    def now(self) -> datetime:
        self._signals.ensure_running()
        return self._base.now()

    def sleep(self, seconds: float) -> None:
        self._signals.ensure_running()
        self._base.sleep(seconds)
        self._signals.ensure_running()


def finish(
    signals: StopSignals | None,
    what: str,
    fn: Callable[[], object],
    *,
    budget_s: float = FINISH_BUDGET_S,
) -> bool:
    """``signals.finish``, or just ``fn()`` where no signals are handled (tests, scheduler)."""
    if signals is None:
        fn()
        return True
    return signals.finish(what, fn, budget_s=budget_s)


def exit_now_if_abandoned(code: int) -> None:
    """After a stop signal, leave at once: per-environment waits may still run in daemon
    threads (one writing to stderr during interpreter shutdown aborts the process, SIGABRT), and
    the interpreter's shutdown puts the default signal handlers back, so one more SIGTERM of a
    burst would end the process as killed (-15) and lose the exit code. The report is out and
    the Lease released."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
