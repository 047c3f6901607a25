from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.names import EnvName, Fingerprint, ProjectId
from rotator.steps import (
    GROUP_STEPS,
    EnvObservation,
    GroupObservation,
    Step,
    dark_window_s,
    decide,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD = Fingerprint("sha256:000000000000")
NEW = Fingerprint("sha256:111111111111")


def env(name: str = "preview", **kw: object) -> EnvObservation:
    base: dict[str, object] = {
        "env": EnvName(name),
        "git_fingerprint": OLD,
        "cluster_fingerprint": OLD,
        "unsealed": True,
        "deployment_fingerprint": OLD,
        "rolled_out": True,
    }
    base.update(kw)
    return EnvObservation(**base)  # type: ignore[arg-type]


def group(*envs: EnvObservation, current: Fingerprint = OLD, **kw: object) -> GroupObservation:
    return GroupObservation(
        project_id=ProjectId(1),
        posthog_fingerprint=current,
        envs=envs,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


def needed(plan_steps: object) -> list[str]:
    return [p.step.value for p in plan_steps if p.needed]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("observation", "no_reset", "expected", "reset", "resume"),
    [
        # Everything on PostHog's key: a fresh rotation does every step.
        (
            group(env(), env("prod")),
            False,
            ["rotate", "seal", "push", "argocd", "unseal", "rollout", "verify"],
            True,
            False,
        ),
        # Adopt mode with nothing to adopt: only the check.
        (group(env(), env("prod")), True, ["verify"], False, False),
        # PostHog was reset (UI or a crashed run) and nothing else moved: complete, never reset.
        (
            group(env(), env("prod"), current=NEW),
            False,
            ["seal", "push", "argocd", "unseal", "rollout", "verify"],
            False,
            True,
        ),
        # Crashed after the push: git has the new key, the cluster does not.
        (
            group(env(git_fingerprint=NEW), current=NEW),
            False,
            ["argocd", "unseal", "rollout", "verify"],
            False,
            True,
        ),
        # Crashed after the unseal, before the restart.
        (
            group(env(git_fingerprint=NEW, cluster_fingerprint=NEW), current=NEW),
            False,
            ["rollout", "verify"],
            False,
            True,
        ),
        # Crashed during the rollout: restarted for the new key but not rolled out yet.
        (
            group(
                env(
                    git_fingerprint=NEW,
                    cluster_fingerprint=NEW,
                    deployment_fingerprint=NEW,
                    rolled_out=False,
                ),
                current=NEW,
            ),
            False,
            ["rollout", "verify"],
            False,
            True,
        ),
        # A restart that something else manages does not count as drift.
        (
            group(
                env(
                    git_fingerprint=NEW,
                    cluster_fingerprint=NEW,
                    deployment_fingerprint=None,
                    restart_managed=False,
                ),
                current=NEW,
            ),
            True,
            ["verify"],
            False,
            False,
        ),
    ],
)
def test_decide_plans_the_first_unsatisfied_steps(
    observation: GroupObservation, no_reset: bool, expected: list[str], reset: bool, resume: bool
) -> None:
    plan = decide(observation, no_reset=no_reset)
    assert needed(plan.steps) == expected
    assert plan.reset is reset
    assert plan.resume is resume
    assert plan.first_needed.step.value == expected[0]


def test_a_rotation_in_flight_names_where_the_key_differs() -> None:
    plan = decide(group(env(git_fingerprint=NEW), env("prod"), current=NEW), no_reset=False)
    reason = plan.get(Step.ROTATE).reason
    assert "rotation in flight" in reason
    assert "no reset" in reason
    assert plan.get(Step.SEAL).envs == ("prod",)


def test_a_recent_rotation_is_not_reset_again_without_force() -> None:
    obs = group(env(), last_rotation_at=NOW - timedelta(minutes=5), last_rotation_run="rot-1")
    plan = decide(obs, no_reset=False, min_interval_s=3600)
    assert not plan.reset
    assert "rotated recently" in plan.get(Step.ROTATE).reason
    assert decide(obs, no_reset=False, min_interval_s=3600, force=True).reset


def test_the_plan_lists_every_group_step_in_order() -> None:
    plan = decide(group(env()), no_reset=False)
    assert tuple(p.step for p in plan.steps) == GROUP_STEPS


fingerprints = st.sampled_from([OLD, NEW, None])
env_obs = st.builds(
    EnvObservation,
    env=st.sampled_from([EnvName("preview"), EnvName("prod")]),
    git_fingerprint=fingerprints,
    cluster_fingerprint=fingerprints,
    unsealed=st.booleans(),
    deployment_fingerprint=fingerprints,
    rolled_out=st.booleans(),
    restart_managed=st.booleans(),
)


@given(
    envs=st.lists(env_obs, min_size=1, max_size=3),
    current=st.sampled_from([OLD, NEW]),
    no_reset=st.booleans(),
    force=st.booleans(),
    recent=st.booleans(),
)
def test_decide_never_resets_while_a_rotation_is_in_flight_or_in_adopt_mode(
    envs: list[EnvObservation], current: Fingerprint, no_reset: bool, force: bool, recent: bool
) -> None:
    obs = group(
        *envs, current=current, last_rotation_at=NOW - timedelta(seconds=10) if recent else None
    )
    plan = decide(obs, no_reset=no_reset, min_interval_s=60, force=force)
    in_flight = any(not e.is_in_sync(current) for e in envs)
    if in_flight or no_reset or (recent and not force):
        assert not plan.reset
    else:
        assert plan.reset
    assert plan.is_needed(Step.VERIFY)
    if plan.reset:
        assert all(p.needed for p in plan.steps)
    if all(e.is_in_sync(current) for e in envs) and not plan.reset:
        assert needed(plan.steps) == ["verify"]


def test_dark_window_runs_from_the_reset_to_the_last_rollout() -> None:
    assert dark_window_s(NOW, [NOW + timedelta(seconds=5), NOW + timedelta(seconds=9)]) == 9
    assert dark_window_s(None, [NOW]) is None
    assert dark_window_s(NOW, []) is None


# --- is a rotation in flight (the old key dead) before this run resets anything? -----------


@pytest.mark.parametrize(
    ("observation", "in_flight"),
    [
        # Nothing of ours in flight: a fresh rotation, or a rotation weeks ago.
        (group(env(), env("prod")), False),
        (group(env(), last_rotation_at=NOW - timedelta(days=7), last_rotation_run="r"), False),
        # git records another key than PostHog's: an earlier run reset and did not finish.
        (group(env(), env("prod", git_fingerprint=NEW), current=NEW), True),
        (group(env(git_fingerprint=NEW, cluster_fingerprint=NEW), current=NEW), True),
        # Reset so recently that this run only verifies.
        (group(env(), last_rotation_at=NOW - timedelta(hours=1), last_rotation_run="r"), True),
        # Same key everywhere but unsettled, and no rotator commit records it: someone's
        # rollout is stuck, nothing of ours is in flight (the run aborts, nothing changed).
        (group(env(rolled_out=False)), False),
        # ... and with a rotator commit recording it: ours, interrupted after the restart.
        (group(env(rolled_out=False), last_rotation_at=NOW - timedelta(days=7)), True),
    ],
)
def test_a_rotation_is_in_flight_when_an_earlier_runs_reset_is_unfinished_or_unverified(
    observation: GroupObservation, in_flight: bool
) -> None:
    from rotator.runner import _in_flight

    plan = decide(observation, no_reset=False, min_interval_s=6 * 3600)
    assert (_in_flight(observation, plan, min_interval_s=6 * 3600) is not None) is in_flight
