"""Time, injected: waits take a ``Clock`` so tests can run them without real sleeps."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class Deadline:
    """A point in monotonic time after which a wait gives up."""

    clock: Clock
    seconds: float

    def __post_init__(self) -> None:
        self._start = self.clock.monotonic()

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self._start

    @property
    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed)

    @property
    def expired(self) -> bool:
        return self.elapsed >= self.seconds


def rfc3339(moment: datetime) -> str:
    """Kubernetes' time format (``2026-11-27T20:22:27Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
