"""Kubernetes Events: what the run did and found, on the objects it touched and on its pod.

The pure part (``rotator.recorder``) as a table; then whole runs in the sandbox, whose API
server validates Events as kube-apiserver does (pkg/apis/core/validation/events.go), read back
the way ``kubectl describe`` finds them (by the object's uid), and through kubectl itself.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rotator.config import RunSwitches, load_config
from rotator.recorder import NOTE_LIMIT, EnvObjects, ObjectRef, events_for
from rotator.report import Outcome, RunReport, StepResult, StepStatus
from rotator.runner import run_once
from rotator.steps import Step
from rotator_sandbox.controllers.base import DEPLOYMENT, EVENT, POD, SEALED_SECRET
from rotator_sandbox.kubeapi import KubeApiServer
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import MakeSandbox, e2e_key_pair, make_sandbox, sandbox_clients
from tests.kube_fixtures import client_for, namespace

__all__ = ["e2e_key_pair", "make_sandbox"]

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
OBJECTS = {
    "preview": EnvObjects("align-preview", "align-posthog", "align-preview-gateway"),
    "prod": EnvObjects("align-prod", "align-posthog", "align-prod-gateway"),
}
POD_REF = ObjectRef("v1", "Pod", "rotator", "rotator-29000000-abcde", "uid-1")
KUBECTL = shutil.which("kubectl")


def report(outcome: Outcome, steps: tuple[StepResult, ...], **kw: Any) -> RunReport:
    return RunReport(
        run_id="rot-1",
        trigger="cron",
        mode="rotate",
        outcome=outcome,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=60),
        envs=("preview", "prod"),
        steps=steps,
        commit="c" * 40,
        **kw,
    )


def ok(step: Step, env: str | None, detail: str = "done") -> StepResult:
    return StepResult(step, StepStatus.OK, detail, env=env)


def test_each_touched_object_gets_what_happened_to_it_and_the_pod_gets_the_outcome() -> None:
    steps = (
        ok(Step.SEAL, None),
        ok(Step.ARGOCD, "preview"),
        ok(Step.UNSEAL, "preview", "unsealed with sha256:111111111111"),
        ok(Step.ROLLOUT, "preview"),
        ok(Step.ARGOCD, "prod"),
        ok(Step.UNSEAL, "prod"),
        StepResult(Step.ROLLOUT, StepStatus.FAILED, "exceeded its progress deadline", env="prod"),
    )
    events = events_for(report(Outcome.FAILED_AFTER_RESET, steps), OBJECTS, pod=POD_REF)
    got = [(e.regarding.kind, e.regarding.namespace, e.type, e.reason) for e in events]
    assert got == [
        ("SealedSecret", "align-preview", "Normal", "Synced"),
        ("SealedSecret", "align-preview", "Normal", "KeyUnsealed"),
        ("Deployment", "align-preview", "Normal", "KeyRolledOut"),
        ("SealedSecret", "align-prod", "Normal", "Synced"),
        ("SealedSecret", "align-prod", "Normal", "KeyUnsealed"),
        ("Deployment", "align-prod", "Warning", "RolloutFailed"),
        ("Pod", "rotator", "Warning", "RotationFailedAfterReset"),
    ]
    unsealed = events[1]
    assert unsealed.note == "run rot-1: unsealed with sha256:111111111111 (commit cccccccccccc)"
    assert events[5].note == "run rot-1: exceeded its progress deadline"


def test_a_step_retried_in_the_run_leaves_one_event_as_it_ended() -> None:
    steps = (
        StepResult(Step.VERIFY, StepStatus.INCONCLUSIVE, "no traffic yet", env="prod"),
        ok(Step.VERIFY, "prod", "3 gateway events on the new key"),
    )
    (event,) = events_for(report(Outcome.SUCCEEDED, steps), OBJECTS)
    assert (event.reason, event.type) == ("KeyVerified", "Normal")


def test_the_pods_event_keeps_broken_now_and_resume_and_cuts_the_error() -> None:
    failed = report(
        Outcome.FAILED_AFTER_RESET,
        (),
        error="e" * 5000,
        broken_now="PostHog's key is now sha256:222222222222 (prod)",
        resume_command="rotator run --env prod",
    )
    (event,) = events_for(failed, OBJECTS, pod=POD_REF)
    assert len(event.note) <= NOTE_LIMIT
    assert "Broken now: PostHog's key is now sha256:222222222222 (prod)" in event.note
    assert "Resume: rotator run --env prod" in event.note
    assert "error: eee" in event.note


@pytest.mark.parametrize(
    ("outcome", "type_", "reason"),
    [
        (Outcome.SUCCEEDED, "Normal", "RotationSucceeded"),
        (Outcome.ABORTED, "Warning", "RotationAborted"),
        (Outcome.LOCKED, "Warning", "RotationLocked"),
        (Outcome.INCONCLUSIVE, "Warning", "RotationInconclusive"),
    ],
)
def test_the_outcome_decides_the_pods_event(outcome: Outcome, type_: str, reason: str) -> None:
    (event,) = events_for(report(outcome, ()), OBJECTS, pod=POD_REF)
    assert (event.type, event.reason, event.regarding) == (type_, reason, POD_REF)


def test_without_a_pod_only_the_objects_get_events() -> None:
    assert events_for(report(Outcome.SUCCEEDED, ()), OBJECTS) == []


# --- in the sandbox ---------------------------------------------------------------------------


def _job_pod(world: Sandbox) -> dict[str, Any]:
    assert world.client is not None
    return world.client.create(
        POD,
        "rotator",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "rotator-29000000-abcde", "namespace": "rotator"},
            "spec": {"containers": [{"name": "rotator", "image": "rotator"}]},
        },
    )


def _events_of(world: Sandbox, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """What ``kubectl describe`` shows: Events whose involvedObject is this object (by uid)."""
    assert world.client is not None
    meta = obj["metadata"]
    items, _ = world.client.list(EVENT, meta["namespace"])
    return [e for e in items if e["involvedObject"].get("uid") == meta["uid"]]


def _rotate_as_pod(world: Sandbox, pod: dict[str, Any], **switches: Any) -> RunReport:
    environ = {
        **world.environ(),
        "POD_NAME": pod["metadata"]["name"],
        "POD_NAMESPACE": "rotator",
        "POD_UID": pod["metadata"]["uid"],
    }
    config = load_config(world.config_path, environ=environ)
    switches.setdefault("trigger", "test")
    return run_once(config, RunSwitches(**switches), clients=sandbox_clients(config))


def test_a_rotation_leaves_events_on_the_sealed_secret_the_deployment_and_its_pod(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.client is not None
    pod = _job_pod(world)
    result = _rotate_as_pod(world, pod, force=True)
    assert result.outcome is Outcome.SUCCEEDED
    deployment = world.client.get(DEPLOYMENT, "align-prod", "align-prod-gateway")
    sealed = world.client.get(SEALED_SECRET, "align-prod", "align-posthog")
    assert deployment is not None
    assert sealed is not None
    on_deployment = {e["reason"] for e in _events_of(world, deployment)}
    assert {"KeyRolledOut", "KeyVerified"} <= on_deployment
    ours = [e for e in _events_of(world, sealed) if e.get("reportingComponent")]
    assert {e["reason"] for e in ours} >= {"KeyUnsealed"}
    (outcome,) = _events_of(world, pod)
    assert (outcome["type"], outcome["reason"]) == ("Normal", "RotationSucceeded")
    assert outcome["reportingComponent"] == "rotator.align.dev/rotator"
    assert outcome["reportingInstance"] == "rotator-29000000-abcde"
    assert result.run_id in outcome["message"]
    for event in ours:
        assert event["involvedObject"]["kind"] == "SealedSecret"
        assert event["type"] == "Normal"


def test_a_dry_run_writes_no_event(make_sandbox: MakeSandbox) -> None:
    world = make_sandbox()
    pod = _job_pod(world)
    result = _rotate_as_pod(world, pod, dry_run=True)
    assert result.outcome is Outcome.DRY_RUN
    assert _events_of(world, pod) == []


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_describe_shows_the_runs_events(make_sandbox: MakeSandbox) -> None:
    world = make_sandbox()
    pod = _job_pod(world)
    assert _rotate_as_pod(world, pod, force=True).outcome is Outcome.SUCCEEDED
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(world.admin_kubeconfig_path), "describe", "pod",
         "-n", "rotator", pod["metadata"]["name"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "RotationSucceeded" in out.stdout
    assert "rotator.align.dev/rotator" in out.stdout or "rotator" in out.stdout


def _bad_event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "align-prod-gateway.1", "namespace": "align-prod"},
        "involvedObject": {"kind": "Deployment", "namespace": "align-prod", "name": "x"},
        "type": "Normal",
        "reason": "KeyRolledOut",
        "action": "Restart",
        "message": "m",
        "reportingComponent": "rotator.align.dev/rotator",
        "reportingInstance": "pod",
        "eventTime": "2026-11-23T06:00:00.000000Z",
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reportingComponent": ""}, "reportingController"),
        ({"reportingComponent": "not a name!"}, "reportingController"),
        ({"action": ""}, "action"),
        ({"reason": "R" * 129}, "reason"),
        ({"message": "m" * 1025}, "message"),
        (
            {"involvedObject": {"kind": "Deployment", "namespace": "align-preview", "name": "x"},
             "eventTime": None},
            "involvedObject.namespace",
        ),
    ],
)  # fmt: skip
def test_the_api_stand_in_refuses_events_kube_apiserver_refuses(
    changes: dict[str, Any], field: str
) -> None:
    server = KubeApiServer().start()
    try:
        api = client_for(server)
        namespace(api, "align-prod")
        core = client.CoreV1Api(api)
        core.create_namespaced_event("align-prod", _bad_event())  # ours passes
        bad = _bad_event(**changes)
        bad["metadata"] = {"name": "align-prod-gateway.2", "namespace": "align-prod"}
        with pytest.raises(ApiException) as info:
            core.create_namespaced_event("align-prod", bad)
        assert info.value.status == 422
        assert field in str(info.value.body)
        api.close()
    finally:
        server.stop()
