"""PURE: the run's outcome, classified from the facts it recorded (``rotator.run.ledger``).

One function decides what a run is reported as; no flag elsewhere does. The rules, in order:

- The work ran to its end: dry run, else inconclusive when a check could not prove the key,
  else succeeded.
- Another run holds the Lease: locked.
- A check refused (preflight): failed-after-reset when an earlier run's rotation is in flight
  (its old key is dead), failed when this run already changed something (a later project's
  checks stopped it after an earlier project was rotated), else aborted, nothing changed.
- Anything else (a system failed, a wait timed out, a signal, a bug of ours): failed-after-reset
  once the key was reset, may have been, is being resumed or is in flight; failed when something
  changed; else aborted. A bug of ours (an exception that is not a RotatorError) counts every
  side effect that was sent and never came back as possibly done: never "nothing changed".
"""

from __future__ import annotations

from collections.abc import Sequence

from rotator.report import Outcome
from rotator.run.ledger import (
    DryRun,
    Fact,
    Inconclusive,
    KeyChangedDuringRun,
    KeyReset,
    ResetMayHaveHappened,
    Resuming,
    Sent,
    Settled,
    StopKind,
    Stopped,
    has_changed,
    in_flight,
    of,
)


def classify(facts: Sequence[Fact]) -> tuple[Outcome, str | None]:
    """PURE: (outcome, the report's error) for the facts a run recorded."""
    stops = of(facts, Stopped)
    if not stops:
        return _finished(facts)
    stop = stops[0]
    if stop.kind is StopKind.LOCKED:
        outcome = Outcome.LOCKED
    elif stop.kind is StopKind.PREFLIGHT:
        if in_flight(facts):
            outcome = Outcome.FAILED_AFTER_RESET
        else:
            outcome = Outcome.FAILED if has_changed(facts) else Outcome.ABORTED
    else:
        outcome = _failure(facts, unexpected=stop.kind is StopKind.UNEXPECTED)
    return outcome, stop.message


def _finished(facts: Sequence[Fact]) -> tuple[Outcome, str | None]:
    if of(facts, DryRun):
        return Outcome.DRY_RUN, None
    inconclusive = of(facts, Inconclusive)
    if inconclusive:
        return Outcome.INCONCLUSIVE, "; ".join(f.detail for f in inconclusive)
    return Outcome.SUCCEEDED, None


def _failure(facts: Sequence[Fact], *, unexpected: bool) -> Outcome:
    unsettled = _unsettled(facts) if unexpected else set()
    if _key_moved(facts) or "reset" in unsettled:
        return Outcome.FAILED_AFTER_RESET
    if has_changed(facts) or unsettled:
        return Outcome.FAILED
    return Outcome.ABORTED


def _key_moved(facts: Sequence[Fact]) -> bool:
    moved = (KeyReset, ResetMayHaveHappened, KeyChangedDuringRun, Resuming)
    return any(isinstance(f, moved) for f in facts) or bool(in_flight(facts))


def _unsettled(facts: Sequence[Fact]) -> set[str]:
    """PURE: the kinds of side effect (reset, push, restart) sent and never come back."""
    pending: dict[tuple[str, str], int] = {}
    for fact in facts:
        if isinstance(fact, Sent):
            pending[(fact.what, fact.where)] = pending.get((fact.what, fact.where), 0) + 1
        elif isinstance(fact, Settled) and pending.get((fact.what, fact.where)):
            pending[(fact.what, fact.where)] -= 1
    return {what for (what, _), n in pending.items() if n > 0}


def needs_in_flight_probe(facts: Sequence[Fact]) -> bool:
    """PURE: should the runner look for an earlier run's rotation in flight before classifying
    (the projects the run did not plan yet)? Only when the answer could change the outcome:
    a refused check, or a failure that is not already after a reset."""
    stops = of(facts, Stopped)
    if not stops or stops[0].kind is StopKind.LOCKED:
        return False
    if stops[0].kind is StopKind.PREFLIGHT:
        return True
    moved = (KeyReset, ResetMayHaveHappened, KeyChangedDuringRun, Resuming)
    return not any(isinstance(f, moved) for f in facts)
