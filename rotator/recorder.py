"""PURE: the Kubernetes Events a run leaves for ``kubectl describe`` (what it did and found).

Like cert-manager, External Secrets and Reloader, rotator tells the objects it touched what
happened to them: the SealedSecret (synced by ArgoCD, unsealed with the new key or not), the
gateway Deployment (rolled out on the key, verified by its traffic or not), and its own pod
(the run's outcome, with *Broken now* and *Resume* when it failed). ``events_for`` decides them
from the report; ``clients.kube.Kube.record_event`` writes them (best effort).

The fields follow events.k8s.io/v1 (kubernetes ``staging/src/k8s.io/api/events/v1/types.go``):
``type`` Normal or Warning, a CamelCase ``reason`` and an ``action`` of at most 128 characters,
a ``note`` of at most 1024 (``pkg/apis/core/validation/events.go``: ReasonLengthLimit,
ActionLengthLimit, NoteLengthLimit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from rotator.report import Outcome, RunReport, StepResult, StepStatus, headline
from rotator.steps import Step

EventType = Literal["Normal", "Warning"]
NOTE_LIMIT: Final = 1024

SEALED_SECRET: Final = ("bitnami.com/v1alpha1", "SealedSecret")
DEPLOYMENT: Final = ("apps/v1", "Deployment")
POD: Final = ("v1", "Pod")


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None  # looked up before writing when None (kubectl describe needs it)


@dataclass(frozen=True)
class EnvObjects:
    """One environment's objects that the run touches."""

    namespace: str
    sealed_secret: str
    deployment: str


@dataclass(frozen=True)
class EventSpec:
    regarding: ObjectRef
    type: EventType
    reason: str
    action: str
    note: str


# (step, status) -> (which object, type, reason, action). Steps without an environment (seal,
# push) leave no Event of their own: the unseal's Event names the key and the commit.
_STEP_EVENTS: Mapping[tuple[Step, StepStatus], tuple[str, EventType, str, str]] = {
    (Step.ARGOCD, StepStatus.OK): ("sealed", "Normal", "Synced", "Sync"),
    (Step.ARGOCD, StepStatus.FAILED): ("sealed", "Warning", "SyncFailed", "Sync"),
    (Step.UNSEAL, StepStatus.OK): ("sealed", "Normal", "KeyUnsealed", "Unseal"),
    (Step.UNSEAL, StepStatus.FAILED): ("sealed", "Warning", "UnsealFailed", "Unseal"),
    (Step.ROLLOUT, StepStatus.OK): ("deployment", "Normal", "KeyRolledOut", "Restart"),
    (Step.ROLLOUT, StepStatus.FAILED): ("deployment", "Warning", "RolloutFailed", "Restart"),
    (Step.VERIFY, StepStatus.OK): ("deployment", "Normal", "KeyVerified", "Verify"),
    (Step.VERIFY, StepStatus.FAILED): ("deployment", "Warning", "VerifyFailed", "Verify"),
    (Step.VERIFY, StepStatus.INCONCLUSIVE): (
        "deployment",
        "Warning",
        "VerifyInconclusive",
        "Verify",
    ),
}

_OUTCOME_REASONS: Mapping[Outcome, tuple[EventType, str]] = {
    Outcome.SUCCEEDED: ("Normal", "RotationSucceeded"),
    Outcome.DRY_RUN: ("Normal", "DryRun"),
    Outcome.INCONCLUSIVE: ("Warning", "RotationInconclusive"),
    Outcome.ABORTED: ("Warning", "RotationAborted"),
    Outcome.FAILED_AFTER_RESET: ("Warning", "RotationFailedAfterReset"),
    Outcome.FAILED: ("Warning", "RotationFailed"),
    Outcome.LOCKED: ("Warning", "RotationLocked"),
}


def _cut(text: str, limit: int = NOTE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_per_env(report: RunReport) -> dict[tuple[Step, str], StepResult]:
    """The last result of each (step, environment): a retried step counts once, as it ended."""
    last: dict[tuple[Step, str], StepResult] = {}
    for result in report.steps:
        if result.env is not None:
            last[(result.step, result.env)] = result
    return last


def _pod_note(report: RunReport) -> str:
    """The outcome first, then what to do (whole where it fits), the error last."""
    head = f"run {report.run_id} ({report.trigger}, {report.mode}): {headline(report)}"
    parts = [head]
    if report.broken_now:
        parts.append(f"Broken now: {report.broken_now}")
    if report.resume_command:
        parts.append(f"Resume: {report.resume_command}")
    if report.commit:
        parts.append(f"commit {report.commit[:12]}")
    text = "; ".join(parts)
    if report.error:
        room = NOTE_LIMIT - len(text) - len("; error: ")
        if room > 40:
            text += f"; error: {_cut(report.error, room)}"
    return _cut(text)


def events_for(
    report: RunReport,
    objects: Mapping[str, EnvObjects],
    *,
    pod: ObjectRef | None = None,
) -> list[EventSpec]:
    """PURE: the Events for this run, in the order the steps ran; the pod's last."""
    out: list[EventSpec] = []
    commit = f" (commit {report.commit[:12]})" if report.commit else ""
    for (step, env), result in _last_per_env(report).items():
        shape = _STEP_EVENTS.get((step, result.status))
        target = objects.get(env)
        if shape is None or target is None:
            continue
        which, type_, reason, action = shape
        api_version, kind = SEALED_SECRET if which == "sealed" else DEPLOYMENT
        name = target.sealed_secret if which == "sealed" else target.deployment
        note = (
            f"run {report.run_id}: {result.detail or reason}{commit if which == 'sealed' else ''}"
        )
        out.append(
            EventSpec(
                regarding=ObjectRef(api_version, kind, target.namespace, name),
                type=type_,
                reason=reason,
                action=action,
                note=_cut(note),
            )
        )
    if pod is not None:
        type_, reason = _OUTCOME_REASONS[report.outcome]
        out.append(EventSpec(pod, type_, reason, "Rotate", _pod_note(report)))
    return out
