"""Progress of a wait: a heartbeat line at a steady interval, and a live line on a terminal.

Every wait (the Kubernetes watch loop behind the ArgoCD, unseal and rollout waits, PostHog's
marker poll, the gateway-event poll) wraps its loop in ``waiting(...)`` and reports what it
saw with ``observe(state)``:

    with waiting("rollout", "deployment x to roll out", clock=clock, deadline_s=600) as wait:
        while ...:
            wait.observe(reason)          # logged at once when it changes

While the wait lasts, a heartbeat is logged every ``interval_s`` (``waits.heartbeat_s``,
default 15 s) whether or not anything changed: what is awaited, for how long, out of which
deadline, and the last observed state. A watch request may block for up to
``waits.watch_timeout_s`` without an event, so the beat comes from a small ticker thread, not
from the loop; the times come from the injected ``Clock``, so a test advances a fake clock and
calls ``beat()`` itself (``ticker=False``). On a terminal (text logs on a tty) the ticker also
redraws one live status line at the bottom (``rotator.logs.LiveLines``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from rotator.clock import Clock
from rotator.logs import current_env, live_lines

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 15.0
_TICK_S = 1.0  # how often the ticker looks (the live line's refresh rate)


@dataclass
class WaitProgress:
    """One wait's progress; thread-safe (the wait's thread observes, the ticker beats)."""

    step: str
    what: str
    clock: Clock
    deadline_s: float | None = None
    interval_s: float = DEFAULT_HEARTBEAT_S
    started: float = 0.0
    state: str = ""
    beats: int = 0
    _last_beat: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started = self._last_beat = self.clock.monotonic()

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started

    def observe(self, state: str) -> None:
        """The latest observed state; a change is logged at once, then the beat goes on."""
        if not state:
            return
        with self._lock:
            changed = state != self.state
            self.state = state
        if changed:
            log.info("%s: %s", self.step, state)
        self.beat()

    def beat(self) -> bool:
        """Log a heartbeat if ``interval_s`` has passed since the last one (or the start)."""
        with self._lock:
            now = self.clock.monotonic()
            if now - self._last_beat < self.interval_s:
                return False
            self._last_beat = now
            self.beats += 1
            line = self.summary(now)
        log.info("%s: still waiting: %s", self.step, line)
        return True

    def live_text(self) -> str:
        """The live line's part: time and state first, as a narrow terminal cuts the end."""
        limit = f"/{self.deadline_s:.0f}s" if self.deadline_s is not None else ""
        return f"{self.elapsed:.0f}s{limit} {self.state or 'waiting'} ({self.what})"

    def summary(self, now: float | None = None) -> str:
        elapsed = (self.clock.monotonic() if now is None else now) - self.started
        limit = f" of {self.deadline_s:.0f}s" if self.deadline_s is not None else ""
        return f"{self.what}, {elapsed:.0f}s{limit}; last seen: {self.state or 'nothing yet'}"


def _tick(progress: WaitProgress, stop: threading.Event, key: str) -> None:
    display = live_lines()
    env = current_env()  # the ticker runs in a copy of the wait's context
    label = progress.step if env in ("", "-") else f"{progress.step} {env}"
    while not stop.wait(_TICK_S):
        progress.beat()
        if display is not None:
            display.show(key, f"[{label}] {progress.live_text()}")


@contextlib.contextmanager
def waiting(
    step: str,
    what: str,
    *,
    clock: Clock,
    deadline_s: float | None = None,
    interval_s: float | None = None,
    ticker: bool = True,
) -> Iterator[WaitProgress]:
    """The progress of one wait, with its heartbeat running until the block ends."""
    progress = WaitProgress(
        step,
        what,
        clock,
        deadline_s=deadline_s,
        interval_s=DEFAULT_HEARTBEAT_S if interval_s is None else interval_s,
    )
    if not ticker:
        yield progress
        return
    stop = threading.Event()
    key = f"{step}:{id(progress)}"
    # The ticker logs in the wait's context, so its lines carry the same step and environment.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run,
        args=(_tick, progress, stop, key),
        name=f"rotator-heartbeat-{step}",
        daemon=True,
    )
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join(timeout=2 * _TICK_S)
        display = live_lines()
        if display is not None:
            display.show(key, None)
