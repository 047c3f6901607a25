"""Reading PostHog's key back can lag or come late; a run never goes backwards because of it.

- A read replica that still returns the key a rotation replaced (posthog/dbrouter.py
  ReplicaRouter; the stand-in's ``replica_lag_s``) must never make a run seal and roll out that
  revoked key.
- A reset whose answer was lost may be applied seconds later (the stand-in's ``late_5xx``
  fault: a proxy answers 504 while the app still works on the PATCH): one read that still
  shows the old key is not proof that nothing changed.
"""

from __future__ import annotations

from collections.abc import Callable

from rotator.report import Outcome, to_text
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    make_world,
    reliability_key_pair,
)


def test_a_lagging_replica_never_makes_the_next_run_roll_out_the_revoked_key(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    sb = world.sb
    assert sb.posthog is not None
    old = world.current_key()
    sb.stick_argocd("prod")  # the first run resets, pushes, then fails after the reset
    first = world.run("waits.argocd_s=1")
    assert first.outcome is Outcome.FAILED_AFTER_RESET, to_text(first)
    new = world.current_key()
    assert new != old
    head = world.head()
    sb.clear_faults()

    sb.posthog.replica_lag_s = 3600.0  # every read now returns the key before the reset
    second = world.run("waits.reset_readback_s=0.5")

    assert second.outcome is not Outcome.SUCCEEDED, to_text(second)
    assert "lagging read" in (second.error or ""), to_text(second)
    assert world.head() == head, "nothing sealed or pushed for the revoked key"
    assert world.resets == 1

    sb.posthog.replica_lag_s = 0.0  # the replica caught up: the next run completes
    third = world.run()
    assert third.outcome is Outcome.SUCCEEDED, to_text(third)
    assert world.pods_on(new)
    assert world.resets == 1


def test_a_reset_applied_after_its_answer_was_lost_is_never_reported_as_nothing_changed(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    sb = world.sb
    assert sb.posthog is not None
    old = world.current_key()
    # The answer (a 504) comes at once; PostHog applies the reset 0.3 s later.
    sb.posthog.inject("reset_token", "late_5xx", delay_s=0.3, status=504)

    report = world.run("waits.reset_readback_s=5")

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert world.resets == 1
    assert world.current_key() != old
    assert world.pods_on(world.current_key())


def test_a_lost_reset_that_never_happened_is_concluded_only_after_the_read_back_window(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    sb = world.sb
    assert sb.posthog is not None
    old = world.current_key()
    head = world.head()
    sb.posthog.inject("reset_token", "5xx", status=502)
    reads_before = sb.posthog.calls("project")

    report = world.run("waits.reset_readback_s=1", "waits.poll_interval_s=0.2")

    assert report.outcome is Outcome.ABORTED, to_text(report)
    assert "reads over 1s: the reset did not happen" in (report.error or "")
    assert sb.posthog.calls("project") - reads_before >= 3, "read back over the window"
    assert world.resets == 0
    assert world.head() == head
    assert world.current_key() == old
