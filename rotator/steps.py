"""PURE: the step model and the decision chain (observe -> decide), no I/O.

Every run observes where things stand in the systems themselves (PostHog's current key, the
fingerprint recorded in each sealed file in git, the SealedSecret in the cluster and its
status, the Deployment's pod template) and ``decide()`` turns that into a plan: for each step,
whether it is needed and why. The first unsatisfied step is what the run does next (cert-manager's
policy chain). Because the state lives in the systems, a crashed run is resumed by running again:
a fingerprint that differs from PostHog's means a rotation is in flight, and it is completed with
PostHog's current key, never by resetting again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.names import EnvName, Fingerprint, ProjectId


class Step(StrEnum):
    PREFLIGHT = "preflight"
    LOCK = "lock"
    ROTATE = "rotate"
    SEAL = "seal"
    PUSH = "push"
    ARGOCD = "argocd"
    UNSEAL = "unseal"
    ROLLOUT = "rollout"
    VERIFY = "verify"
    REPORT = "report"


# The steps a project group goes through after preflight and lock, in order.
GROUP_STEPS: tuple[Step, ...] = (
    Step.ROTATE,
    Step.SEAL,
    Step.PUSH,
    Step.ARGOCD,
    Step.UNSEAL,
    Step.ROLLOUT,
    Step.VERIFY,
)


@dataclass(frozen=True)
class EnvObservation:
    """What one environment looks like right now, as fingerprints and flags."""

    env: EnvName
    git_fingerprint: Fingerprint | None
    cluster_fingerprint: Fingerprint | None
    unsealed: bool
    deployment_fingerprint: Fingerprint | None
    rolled_out: bool
    restart_managed: bool = True

    def drift(self, current: Fingerprint) -> list[str]:
        """Where this environment records a key other than ``current``."""
        places = []
        if self.git_fingerprint != current:
            places.append(f"git has {self.git_fingerprint or 'no fingerprint'}")
        if self.cluster_fingerprint != current:
            places.append(f"SealedSecret has {self.cluster_fingerprint or 'no fingerprint'}")
        if self.restart_managed and self.deployment_fingerprint != current:
            places.append(f"pods started for {self.deployment_fingerprint or 'an unknown key'}")
        return places

    def is_in_sync(self, current: Fingerprint) -> bool:
        return not self.drift(current) and self.unsealed and self.rolled_out


@dataclass(frozen=True)
class GroupObservation:
    """One PostHog project and the environments that use its key."""

    project_id: ProjectId
    posthog_fingerprint: Fingerprint
    envs: tuple[EnvObservation, ...]
    now: datetime
    last_rotation_at: datetime | None = None
    last_rotation_run: str | None = None


@dataclass(frozen=True)
class PlannedStep:
    step: Step
    needed: bool
    reason: str
    envs: tuple[EnvName, ...] = ()


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlannedStep, ...]
    reset: bool
    resume: bool

    def get(self, step: Step) -> PlannedStep:
        for planned in self.steps:
            if planned.step is step:
                return planned
        raise KeyError(step)

    def is_needed(self, step: Step) -> bool:
        return self.get(step).needed

    @property
    def first_needed(self) -> PlannedStep:
        """The first step not yet satisfied (VERIFY is always needed, so there is one)."""
        return next(p for p in self.steps if p.needed)


def _envs(observations: Sequence[EnvObservation], pred: object) -> tuple[EnvName, ...]:
    assert callable(pred)
    return tuple(o.env for o in observations if pred(o))


def decide(
    obs: GroupObservation,
    *,
    no_reset: bool,
    min_interval_s: float = 0.0,
    force: bool = False,
) -> Plan:
    """PURE: turn an observation into the plan for this project group."""
    current = obs.posthog_fingerprint
    drifted = {o.env: o.drift(current) for o in obs.envs if o.drift(current)}
    # Same key everywhere but not converged (unseal pending, rollout running): an earlier run
    # was interrupted after its restart, or something is unhealthy. Finish, never reset on top.
    unsettled = [o.env for o in obs.envs if not drifted.get(o.env) and not o.is_in_sync(current)]
    resume = bool(drifted) or bool(unsettled)
    recent = (
        obs.last_rotation_at is not None
        and not force
        and obs.now - obs.last_rotation_at < timedelta(seconds=min_interval_s)
    )

    if drifted:
        first = next(iter(drifted))
        reset = False
        rotate_reason = (
            f"rotation in flight ({first}: {'; '.join(drifted[first])}; PostHog has {current}): "
            "completing it with PostHog's current key, no reset"
        )
    elif unsettled:
        reset = False
        rotate_reason = (
            f"not converged on {current} ({', '.join(unsettled)}: unseal or rollout not "
            "finished): completing it, no reset"
        )
    elif no_reset:
        reset = False
        rotate_reason = f"adopt mode: keeping PostHog's current key {current}"
    elif recent:
        reset = False
        when = obs.last_rotation_at.isoformat() if obs.last_rotation_at else "?"
        rotate_reason = (
            f"rotated recently (at {when} by run {obs.last_rotation_run or '?'}); "
            f"the next reset is allowed {min_interval_s:.0f}s after that (use --force to override)"
        )
    else:
        reset = True
        rotate_reason = f"every environment is on {current}: reset the key"

    envs = obs.envs
    all_envs = tuple(o.env for o in envs)
    git_stale = _envs(envs, lambda o: o.git_fingerprint != current)
    cluster_stale = _envs(envs, lambda o: o.cluster_fingerprint != current)
    not_unsealed = _envs(envs, lambda o: o.cluster_fingerprint != current or not o.unsealed)
    not_rolled = _envs(
        envs,
        lambda o: (o.restart_managed and o.deployment_fingerprint != current) or not o.rolled_out,
    )

    def planned(step: Step, stale: tuple[EnvName, ...], what: str) -> PlannedStep:
        if reset:
            return PlannedStep(step, True, f"new key: {what}", all_envs)
        if stale:
            return PlannedStep(step, True, f"{what} ({', '.join(stale)})", stale)
        return PlannedStep(step, False, "already done")

    steps = (
        PlannedStep(Step.ROTATE, reset, rotate_reason, all_envs if reset else ()),
        planned(Step.SEAL, git_stale, "seal the key for each environment"),
        planned(Step.PUSH, git_stale, "commit the sealed files and push"),
        planned(Step.ARGOCD, cluster_stale, "wait for ArgoCD to sync the commit"),
        planned(Step.UNSEAL, not_unsealed, "wait for the controller to unseal"),
        planned(Step.ROLLOUT, not_rolled, "restart the gateway and wait for the rollout"),
        PlannedStep(
            Step.VERIFY, True, "prove the key works: marker event, gateway events", all_envs
        ),
    )
    return Plan(steps=steps, reset=reset, resume=resume)


def dark_window_s(reset_at: datetime | None, rollouts_done: Sequence[datetime]) -> float | None:
    """PURE: seconds from the reset to the last gateway pod Ready on the new key."""
    if reset_at is None or not rollouts_done:
        return None
    return max(0.0, (max(rollouts_done) - reset_at).total_seconds())
