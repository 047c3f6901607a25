"""The outcome classifier (``rotator.run.outcome.classify``) as a table: one row for each kind
of run the reliability matrix and classes produce (tests/test_reliability_matrix.py,
tests/test_reliability_classes.py, tests/test_run_unexpected_errors.py), each the facts such a
run records and the outcome it must be reported as. Then an exhaustive check over every
combination of facts: a run that changed something, or whose key moved, is never "aborted,
nothing changed". Pure and fast: no sandbox, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from rotator.report import Outcome
from rotator.run.ledger import (
    DryRun,
    Fact,
    GroupVerified,
    Inconclusive,
    InFlight,
    KeyChangedDuringRun,
    KeyReset,
    LeaseLost,
    Ledger,
    Pushed,
    ResetMayHaveHappened,
    Restarted,
    Resuming,
    Sent,
    Settled,
    StepCrashed,
    StopKind,
    Stopped,
    in_flight,
)
from rotator.run.outcome import classify, needs_in_flight_probe

P = 1
RESET = KeyReset(P, "sha256:000000000000", "sha256:111111111111")
PUSHED = Pushed(P, "c0ffee")
RESTARTED = Restarted("preview", "sha256:111111111111")
SENT_RESET = Sent("reset", "project 1")
SETTLED_RESET = Settled("reset", "project 1")
SENT_PUSH = Sent("push", "project 1")
SETTLED_PUSH = Settled("push", "project 1")
SENT_RESTART = Sent("restart", "preview")
DONE_RESET = (SENT_RESET, SETTLED_RESET, RESET)
DONE_PUSH = (SENT_PUSH, SETTLED_PUSH, PUSHED)
DONE_RESTART = (SENT_RESTART, Settled("restart", "preview"), RESTARTED)
ROTATED = (*DONE_RESET, *DONE_PUSH, *DONE_RESTART)


def stop(kind: StopKind, message: str = "why") -> Stopped:
    return Stopped(kind, message)


@dataclass(frozen=True)
class Row:
    id: str
    facts: tuple[Fact, ...]
    outcome: Outcome
    error: str | None = "why"


ROWS = (
    # -- ran to its end
    Row(
        "a rotation that ran to its end succeeded",
        (*ROTATED, GroupVerified(P)),
        Outcome.SUCCEEDED,
        None,
    ),
    Row("an adopt check that changed nothing succeeded", (), Outcome.SUCCEEDED, None),
    Row(
        "a resume that completed succeeded",
        (Resuming(P, "in flight"), InFlight(P, "in flight"), *DONE_PUSH, GroupVerified(P)),
        Outcome.SUCCEEDED,
        None,
    ),
    Row(
        "an unproven gateway is inconclusive, naming every unproven check",
        (*ROTATED, Inconclusive("preview: no gateway events"), Inconclusive("prod: throttled")),
        Outcome.INCONCLUSIVE,
        "preview: no gateway events; prod: throttled",
    ),
    Row("a dry run is a dry run", (DryRun(),), Outcome.DRY_RUN, None),
    Row(
        "a dry run is a dry run even when unproven",
        (DryRun(), Inconclusive("x")),
        Outcome.DRY_RUN,
        None,
    ),
    Row(
        "a lost Lease renewal alone changes no outcome",
        (*ROTATED, LeaseLost("409")),
        Outcome.SUCCEEDED,
        None,
    ),
    # -- locked
    Row("another run holding the Lease is locked", (stop(StopKind.LOCKED),), Outcome.LOCKED),
    # -- a check refused
    Row("a refused preflight is aborted", (stop(StopKind.PREFLIGHT),), Outcome.ABORTED),
    Row(
        "a refused preflight while an earlier run's rotation is in flight is failed-after-reset",
        (InFlight(P, "git has the old key"), stop(StopKind.PREFLIGHT)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a refused check of the second project after the first was rotated is failed",
        (*ROTATED, GroupVerified(P), stop(StopKind.PREFLIGHT)),
        Outcome.FAILED,
    ),
    Row(
        "a reset refused by PostHog (sent, answered 403) is aborted",
        (SENT_RESET, SETTLED_RESET, stop(StopKind.PREFLIGHT)),
        Outcome.ABORTED,
    ),
    Row(
        "a resume of an unhealthy world without a rotator commit is aborted",
        (Resuming(P, "not converged"), stop(StopKind.PREFLIGHT)),
        Outcome.ABORTED,
    ),
    Row(
        "a lost reset answer whose read-back shows the old key is aborted",
        (SENT_RESET, SETTLED_RESET, stop(StopKind.PREFLIGHT)),
        Outcome.ABORTED,
    ),
    # -- a system failed, a wait timed out
    Row("a failure before any change is aborted", (stop(StopKind.FAILED),), Outcome.ABORTED),
    Row(
        "a failure after the reset is failed-after-reset",
        (*DONE_RESET, stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "an ArgoCD timeout after the push is failed-after-reset",
        (*DONE_RESET, *DONE_PUSH, stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a reset whose outcome stays unreadable is failed-after-reset",
        (
            SENT_RESET,
            SETTLED_RESET,
            ResetMayHaveHappened(P, "read back failed"),
            stop(StopKind.FAILED),
        ),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a key reset by someone else during the run is failed-after-reset",
        (*ROTATED, KeyChangedDuringRun(P, "sha256:222222222222"), stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a resume whose check fails is failed-after-reset",
        (Resuming(P, "in flight"), stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a verify-only failure while a rotation is in flight is failed-after-reset",
        (InFlight(P, "reset recently"), stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "an unselected environment left on a revoked key after the reset is failed-after-reset",
        (*ROTATED, GroupVerified(P), stop(StopKind.FAILED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a failure after an adopt push (no reset, nothing in flight) is failed",
        (*DONE_PUSH, stop(StopKind.FAILED)),
        Outcome.FAILED,
    ),
    Row(
        "a push rejected by git (sent, refused) is aborted",
        (SENT_PUSH, SETTLED_PUSH, stop(StopKind.FAILED)),
        Outcome.ABORTED,
    ),
    # -- signals
    Row("a signal before any change is aborted", (stop(StopKind.INTERRUPTED),), Outcome.ABORTED),
    Row(
        "a signal while the reset was out is failed-after-reset",
        (SENT_RESET, ResetMayHaveHappened(P, "interrupted"), stop(StopKind.INTERRUPTED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a signal during the rollout is failed-after-reset",
        (*DONE_RESET, *DONE_PUSH, SENT_RESTART, stop(StopKind.INTERRUPTED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    # -- a bug of ours
    Row(
        "a bug before any side effect is aborted",
        (StepCrashed("preflight", None, "TypeError"), stop(StopKind.UNEXPECTED)),
        Outcome.ABORTED,
    ),
    Row(
        "a bug after the reset PATCH went out is failed-after-reset, never aborted",
        (SENT_RESET, StepCrashed("rotate", None, "TypeError"), stop(StopKind.UNEXPECTED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a bug after the push went out is failed, never aborted",
        (SENT_PUSH, StepCrashed("push", None, "TypeError"), stop(StopKind.UNEXPECTED)),
        Outcome.FAILED,
    ),
    Row(
        "a bug after the restart went out is failed, never aborted",
        (SENT_RESTART, StepCrashed("rollout", "preview", "TypeError"), stop(StopKind.UNEXPECTED)),
        Outcome.FAILED,
    ),
    Row(
        "a bug after the reset is failed-after-reset",
        (*DONE_RESET, SENT_RESTART, stop(StopKind.UNEXPECTED)),
        Outcome.FAILED_AFTER_RESET,
    ),
    Row(
        "a bug after a settled push is failed",
        (*DONE_PUSH, stop(StopKind.UNEXPECTED)),
        Outcome.FAILED,
    ),
    Row(
        "only the first stop counts",
        (stop(StopKind.LOCKED, "first"), stop(StopKind.FAILED, "second")),
        Outcome.LOCKED,
        "first",
    ),
)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_the_outcome_of_each_kind_of_run(row: Row) -> None:
    assert classify(row.facts) == (row.outcome, row.error)


def test_a_signal_while_a_push_was_out_keeps_todays_outcome_only_a_bug_counts_it() -> None:
    """An unsettled push after a signal is not counted (the signal class pins its outcomes);
    after a bug it is."""
    assert classify((SENT_PUSH, stop(StopKind.INTERRUPTED)))[0] is Outcome.ABORTED
    assert classify((SENT_PUSH, stop(StopKind.UNEXPECTED)))[0] is Outcome.FAILED


def test_a_completed_rotation_is_no_longer_in_flight() -> None:
    assert in_flight((InFlight(P, "x"), InFlight(2, "y"), GroupVerified(P))) == {2: "y"}


# Every fact kind a run records, one instance each (the exhaustive check combines them).
UNIVERSE: tuple[Fact, ...] = (
    DryRun(),
    SENT_RESET,
    SETTLED_RESET,
    RESET,
    ResetMayHaveHappened(P, "x"),
    KeyChangedDuringRun(P, "x"),
    SENT_PUSH,
    SETTLED_PUSH,
    PUSHED,
    SENT_RESTART,
    RESTARTED,
    Resuming(P, "x"),
    InFlight(P, "x"),
    GroupVerified(P),
    Inconclusive("x"),
    LeaseLost("x"),
)
MOVED = (RESET, ResetMayHaveHappened(P, "x"), KeyChangedDuringRun(P, "x"), Resuming(P, "x"))


def _combinations(universe: Sequence[Fact] = UNIVERSE) -> list[tuple[Fact, ...]]:
    return [
        tuple(f for f, on in zip(universe, bits, strict=True) if on)
        for bits in itertools.product((False, True), repeat=len(universe))
    ]


# A stopped run: what it found (inconclusive checks, a lost renewal) does not matter.
STOPPED_UNIVERSE = tuple(f for f in UNIVERSE if not isinstance(f, (Inconclusive, LeaseLost)))


def _is_aborted(facts: Sequence[Fact]) -> bool:
    return classify(facts)[0] is Outcome.ABORTED


@pytest.mark.parametrize("kind", list(StopKind))
def test_no_combination_that_changed_something_or_moved_the_key_is_aborted(kind: StopKind) -> None:
    for combo in _combinations(STOPPED_UNIVERSE):
        facts = (*combo, stop(kind))
        outcome, error = classify(facts)
        assert error == "why"
        if kind is StopKind.LOCKED:
            assert outcome is Outcome.LOCKED
            continue
        changed = any(isinstance(f, (KeyReset, Pushed, Restarted)) for f in combo)
        if changed:
            assert outcome is not Outcome.ABORTED, combo
        if kind is not StopKind.PREFLIGHT and any(f in combo for f in MOVED):
            assert outcome is Outcome.FAILED_AFTER_RESET, combo
        if kind is StopKind.UNEXPECTED and SENT_RESET in combo and SETTLED_RESET not in combo:
            assert outcome is Outcome.FAILED_AFTER_RESET, combo
        if kind is StopKind.UNEXPECTED and any(isinstance(f, Sent) for f in combo):
            settled = {(f.what, f.where) for f in combo if isinstance(f, Settled)}
            if any((f.what, f.where) not in settled for f in combo if isinstance(f, Sent)):
                assert outcome is not Outcome.ABORTED, combo


def test_a_run_that_ran_to_its_end_is_never_a_failure() -> None:
    for combo in _combinations():
        outcome, _ = classify(combo)
        assert outcome in (Outcome.SUCCEEDED, Outcome.INCONCLUSIVE, Outcome.DRY_RUN), combo


def test_the_runner_probes_for_a_rotation_in_flight_only_when_it_could_change_the_outcome() -> None:
    assert not needs_in_flight_probe(())
    assert not needs_in_flight_probe((stop(StopKind.LOCKED),))
    assert needs_in_flight_probe((*DONE_RESET, stop(StopKind.PREFLIGHT)))
    assert needs_in_flight_probe((stop(StopKind.FAILED),))
    assert not needs_in_flight_probe((*DONE_RESET, stop(StopKind.FAILED)))
    assert not needs_in_flight_probe((Resuming(P, "x"), stop(StopKind.INTERRUPTED)))


def test_the_ledger_records_from_threads_and_settles_only_what_came_back() -> None:
    import threading

    from rotator.errors import GitError

    ledger = Ledger()
    threads = [
        threading.Thread(
            target=lambda i=i: [ledger.record(Restarted(f"e{i}", "f")) for _ in range(200)]
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.of(Restarted)) == 1600
    with pytest.raises(GitError), ledger.sending("push", "p"):
        raise GitError("rejected")
    with pytest.raises(TypeError), ledger.sending("reset", "p"):
        raise TypeError("a bug")
    facts = ledger.facts()[-3:]
    assert facts == (Sent("push", "p"), Settled("push", "p"), Sent("reset", "p"))
