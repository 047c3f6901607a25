"""The facts a run records as it goes, in the order they happened (thread-safe: environments
converge in parallel). Steps only ever append; nothing reads another step's private state, and
the outcome is classified from these facts alone (``rotator.run.outcome.classify``).

Facts are values that name what happened in the systems ("the reset was sent", "PostHog has a
new key", "commit X pushed"), never flags about the run's own code. PURE: no I/O here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from rotator.errors import RotatorError


class StopKind(StrEnum):
    """What stopped the work before its end."""

    LOCKED = "locked"  # another run holds the Lease
    PREFLIGHT = "preflight"  # a check refused (PreflightError, ConfigError)
    INTERRUPTED = "interrupted"  # SIGTERM / SIGINT
    FAILED = "failed"  # one of rotator's own errors (a system failed, a wait timed out)
    UNEXPECTED = "unexpected"  # any other exception: a programming error


@dataclass(frozen=True)
class Fact:
    """One thing that happened."""


@dataclass(frozen=True)
class DryRun(Fact):
    """The run only pretends: every side effect is skipped."""


@dataclass(frozen=True)
class Sent(Fact):
    """A side effect's call went out (``what``: reset, push, restart); until it is ``Settled``,
    whether it took effect is unknown."""

    what: str
    where: str


@dataclass(frozen=True)
class Settled(Fact):
    """The call of the matching ``Sent`` came back (done, or refused by the system itself)."""

    what: str
    where: str


@dataclass(frozen=True)
class KeyReset(Fact):
    """PostHog minted a new key for the project: its old key is dead."""

    project: int
    old: str
    new: str | None  # None: unknown until read back


@dataclass(frozen=True)
class ResetMayHaveHappened(Fact):
    """The reset may have been applied (a signal while it was out; its outcome unreadable)."""

    project: int
    why: str


@dataclass(frozen=True)
class KeyChangedDuringRun(Fact):
    """Someone else reset the key while this run worked (e.g. in PostHog's UI)."""

    project: int
    new: str


@dataclass(frozen=True)
class Pushed(Fact):
    project: int
    commit: str


@dataclass(frozen=True)
class Restarted(Fact):
    env: str
    fingerprint: str


@dataclass(frozen=True)
class Resuming(Fact):
    """The plan completes an earlier run's rotation (or an unconverged state): no reset."""

    project: int
    reason: str


@dataclass(frozen=True)
class InFlight(Fact):
    """The project's old key is already dead because of an earlier run's rotation."""

    project: int
    reason: str


@dataclass(frozen=True)
class GroupVerified(Fact):
    """The project's rotation is complete and verified (what was in flight no longer is)."""

    project: int


@dataclass(frozen=True)
class Inconclusive(Fact):
    """A check could not prove (nor disprove) that the key works."""

    detail: str


@dataclass(frozen=True)
class LeaseLost(Fact):
    """Renewing the Lease failed in the background."""

    detail: str


@dataclass(frozen=True)
class StepCrashed(Fact):
    """A step failed with an exception that is not one of rotator's own (logged with its
    traceback where it happened)."""

    step: str
    env: str | None
    kind: str


@dataclass(frozen=True)
class Stopped(Fact):
    """The work stopped before its end; ``message`` is the report's error."""

    kind: StopKind
    message: str


F = TypeVar("F", bound=Fact)


class Ledger:
    """An append-only list of facts, safe to record from several threads."""

    def __init__(self) -> None:
        self._facts: list[Fact] = []
        self._lock = threading.Lock()

    def record(self, fact: Fact) -> None:
        with self._lock:
            self._facts.append(fact)

    def facts(self) -> tuple[Fact, ...]:
        with self._lock:
            return tuple(self._facts)

    def of(self, kind: type[F]) -> tuple[F, ...]:
        return of(self.facts(), kind)

    @property
    def changed(self) -> bool:
        return has_changed(self.facts())

    @contextmanager
    def sending(self, what: str, where: str) -> Iterator[None]:
        """Record ``Sent`` before a side effect's call and ``Settled`` once it came back, or
        failed with one of rotator's own errors (the client knows what happened). Anything else
        (a bug, a signal) leaves it unsettled: it may have taken effect."""
        self.record(Sent(what, where))
        try:
            yield
        except RotatorError:
            self.record(Settled(what, where))
            raise
        self.record(Settled(what, where))


def of(facts: Sequence[Fact], kind: type[F]) -> tuple[F, ...]:
    """PURE: the facts of one kind, in order."""
    return tuple(f for f in facts if isinstance(f, kind))


def has_changed(facts: Sequence[Fact]) -> bool:
    """PURE: did the run change something in a system (a reset, a push, a restart)?"""
    return any(isinstance(f, (KeyReset, Pushed, Restarted)) for f in facts)


def in_flight(facts: Sequence[Fact]) -> dict[int, str]:
    """PURE: projects whose rotation is in flight (old key dead) and not completed since."""
    found: dict[int, str] = {}
    for fact in facts:
        if isinstance(fact, InFlight):
            found.setdefault(fact.project, fact.reason)
        elif isinstance(fact, GroupVerified):
            found.pop(fact.project, None)
    return found
