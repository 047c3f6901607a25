"""The simulated controllers, driven only through the Kubernetes API and the git remote."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import requests
import yaml

from rotator.clients.sealing import load_cert, update_sealed_file
from rotator.config import SealingScope
from rotator.names import FINGERPRINT_ANNOTATION
from rotator.redact import Secret
from rotator_sandbox import manifests
from rotator_sandbox.controllers.argocd import REFRESH_ANNOTATION
from rotator_sandbox.controllers.base import (
    APPLICATION,
    CONFIGMAP,
    DEPLOYMENT,
    EVENT,
    POD,
    SEALED_SECRET,
    SECRET,
    Obj,
    meta,
)
from rotator_sandbox.controllers.deployments import (
    RESTARTED_AT,
    RolloutController,
    surge_and_unavailable,
)
from rotator_sandbox.controllers.sealedsecrets import SealedSecretsController
from rotator_sandbox.unseal import ControllerKeyPair, generate_key_pair
from rotator_sandbox.world import Sandbox
from tests.sandbox_fixtures import KubeWorld, bare_sandbox, key_pair, kube_world, wait_for

FIXTURES = (bare_sandbox, key_pair, kube_world)  # used as pytest fixtures by name
ENVS = manifests.ENVS


def _status(obj: Obj) -> Obj:
    status = obj.get("status") or {}
    assert isinstance(status, dict)
    return status


def _condition(obj: Obj, ctype: str) -> Obj:
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def _app_done_at(sb: Sandbox, env: str, revision: str) -> bool:
    """FACTS section 4: done for commit S."""
    app = sb.application(env)
    status = _status(app)
    op = status.get("operationState") or {}
    return (
        app.get("operation") is None
        and op.get("phase") == "Succeeded"
        and (op.get("syncResult") or {}).get("revision") == revision
        and (status.get("sync") or {}).get("status") == "Synced"
        and (status.get("sync") or {}).get("revision") == revision
        and str(status.get("reconciledAt")) >= str(op.get("finishedAt"))
        and (status.get("health") or {}).get("status") == "Healthy"
        and not status.get("conditions")
    )


def _rollout_complete(d: Obj) -> bool:
    spec, status = d.get("spec") or {}, _status(d)
    replicas = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration", 0)) >= int(meta(d).get("generation", 0))
        and int(status.get("updatedReplicas", 0)) == replicas
        and int(status.get("replicas", 0)) == replicas
        and int(status.get("availableReplicas", 0)) == replicas
        and _condition(d, "Progressing").get("reason") == "NewReplicaSetAvailable"
    )


# --- the controller test -------------------------------------------------------------


def test_a_new_sealed_key_pushed_to_git_reaches_the_gateway_events(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    assert sandbox.posthog is not None
    assert sandbox.gateway is not None
    old = sandbox.initial_keys["preview"]
    new = sandbox.posthog.reset_key_out_of_band(sandbox.project_id("preview"))
    assert all(sandbox.pod_key_fingerprints(env) == {old.fingerprint} for env in ENVS)

    revision = sandbox.push_sealed_key(ENVS, new)
    for env in ENVS:
        sandbox.refresh_app(env)
    wait_for(lambda: all(_app_done_at(sandbox, e, revision) for e in ENVS), what="ArgoCD sync")
    for env in ENVS:
        assert REFRESH_ANNOTATION not in (meta(sandbox.application(env)).get("annotations") or {})

    def unsealed(env: str) -> bool:
        assert sandbox.client is not None
        ns = manifests.namespace(env)
        ss = sandbox.client.get(SEALED_SECRET, ns, manifests.SECRET_NAME) or {}
        secret = sandbox.client.get(SECRET, ns, manifests.SECRET_NAME) or {}
        annotations = meta(secret).get("annotations") or {}
        return (
            _status(ss).get("observedGeneration") == meta(ss).get("generation")
            and _condition(ss, "Synced").get("status") == "True"
            and annotations.get(FINGERPRINT_ANNOTATION) == new.fingerprint
        )

    wait_for(lambda: all(unsealed(e) for e in ENVS), what="the new Secret")
    # ArgoCD never restarts pods: they keep the key they started with.
    assert all(sandbox.pod_key_fingerprints(env) == {old.fingerprint} for env in ENVS)

    for env in ENVS:
        sandbox.restart(env)
    wait_for(
        lambda: all(
            _rollout_complete(sandbox.deployment(e))
            and sandbox.pod_key_fingerprints(e) == {new.fingerprint}
            for e in ENVS
        ),
        what="the restarted gateways",
    )
    wait_for(
        lambda: (
            sandbox.posthog is not None
            and sandbox.posthog.counters().for_key(new).ingested > 0
            and sandbox.gateway is not None
            and sandbox.gateway.sent_with(new.fingerprint) >= 2
        ),
        what="gateway events with the new key",
    )

    # A later sync keeps the restart annotation: ArgoCD patches only the fields it manages.
    pods = {meta(p)["name"] for p in sandbox.gateway_pods("prod")}
    manifest = manifests.gateway_deployment("prod")
    manifest["metadata"]["labels"]["team"] = "align"
    later = sandbox.git.commit_directly(
        {manifests.deployment_path("prod"): manifests.dump(manifest)}, message="label"
    )
    sandbox.refresh_app("prod")
    wait_for(lambda: _app_done_at(sandbox, "prod", later), what="the second sync")
    prod = sandbox.deployment("prod")
    template_annotations = (prod["spec"]["template"].get("metadata") or {}).get("annotations")
    assert RESTARTED_AT in (template_annotations or {})
    assert {meta(p)["name"] for p in sandbox.gateway_pods("prod")} == pods  # no new rollout
    assert meta(prod)["labels"]["team"] == "align"


# --- ArgoCD -------------------------------------------------------------------------------------


def test_argocd_status_carries_every_field_of_the_done_predicate(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    app = sandbox.application("preview")
    status = _status(app)
    op = status["operationState"]
    assert op["phase"] == "Succeeded"
    assert op["syncResult"]["revision"] == sandbox.seed_revision
    assert op["startedAt"] <= op["finishedAt"] <= status["reconciledAt"]
    assert op["operation"]["initiatedBy"] == {"automated": True}
    assert status["sync"]["status"] == "Synced"
    assert status["sync"]["revision"] == sandbox.seed_revision
    assert status["health"]["status"] == "Healthy"
    assert "operation" not in app
    assert status["history"][-1]["revision"] == sandbox.seed_revision
    kinds = {(r["kind"], r["name"]) for r in status["resources"]}
    assert kinds == {("Deployment", "align-preview-gateway"), ("SealedSecret", "align-posthog")}


def test_argocd_runs_a_manual_sync_operation_and_clears_it(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    assert sandbox.client is not None
    assert sandbox.argocd is not None
    name = manifests.app_name("preview")
    sandbox.client.patch(APPLICATION, "argocd", name, {"spec": {"syncPolicy": None}})
    revision = sandbox.git.commit_directly({"apps/preview/extra.yaml": _configmap()})
    sandbox.refresh_app("preview")
    wait_for(
        lambda: (
            (_status(sandbox.application("preview")).get("sync") or {}).get("status") == "OutOfSync"
            and _status(sandbox.application("preview"))["sync"]["revision"] == revision
        ),
        what="OutOfSync at the new revision without auto-sync",
    )
    sandbox.argocd.sync_s = 10.0  # long enough to see Running (x time scale 0.02 = 0.2 s)
    sandbox.client.patch(
        APPLICATION,
        "argocd",
        name,
        {"operation": {"sync": {"revision": revision}, "initiatedBy": {"username": "rotator"}}},
    )
    wait_for(
        lambda: (
            (_status(sandbox.application("preview")).get("operationState") or {}).get("phase")
            == "Running"
        ),
        what="the operation to run",
    )
    wait_for(lambda: _app_done_at(sandbox, "preview", revision), what="the manual sync")
    op = _status(sandbox.application("preview"))["operationState"]
    assert op["operation"]["initiatedBy"] == {"username": "rotator"}
    assert sandbox.client.get(CONFIGMAP, "align-preview", "extra") is not None


def test_argocd_reports_a_sync_error_and_a_comparison_error(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    sandbox.inject_sync_error("prod", "admission webhook denied the request")
    revision = sandbox.git.commit_directly({"apps/prod/extra.yaml": _configmap()})
    sandbox.refresh_app("prod")

    def failed() -> bool:
        status = _status(sandbox.application("prod"))
        op = status.get("operationState") or {}
        errors = [c for c in status.get("conditions") or [] if c["type"] == "SyncError"]
        return (
            op.get("phase") == "Failed"
            and op["syncResult"]["revision"] == revision
            and "admission webhook denied" in op.get("message", "")
            and bool(errors)
            # 3.2+ (the sandbox's default 3.6); "Failed sync attempt to <sha>" before
            and errors[0]["message"].startswith(f"Failed last sync attempt to [{revision}]")
            and status["sync"]["status"] == "OutOfSync"
        )

    wait_for(failed, what="a failed sync")
    with sandbox.git.unreachable():
        sandbox.refresh_app("prod")
        wait_for(
            lambda: any(
                c["type"] == "ComparisonError"
                for c in _status(sandbox.application("prod")).get("conditions") or []
            ),
            what="a ComparisonError",
        )
        assert _status(sandbox.application("prod"))["sync"]["status"] == "Unknown"


def test_argocd_stuck_on_an_old_revision_never_syncs_new_commits(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    sandbox.stick_argocd("preview")
    sandbox.git.commit_directly({"README.md": "changed\n"})
    sandbox.refresh_app("preview")
    wait_for(
        lambda: (
            REFRESH_ANNOTATION
            not in (meta(sandbox.application("preview")).get("annotations") or {})
        ),
        what="the refresh to be handled",
    )
    assert _status(sandbox.application("preview"))["sync"]["revision"] == sandbox.seed_revision


def test_argocd_picks_up_a_commit_on_its_own_poll_without_a_refresh(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    assert sandbox.argocd is not None
    sandbox.argocd.poll_s, sandbox.argocd.jitter_s = 10.0, 0.0  # x 0.02 = every 0.2 s
    sandbox.refresh_app("prod")  # the next poll is scheduled from this comparison
    revision = sandbox.git.commit_directly({"apps/prod/extra.yaml": _configmap()})
    wait_for(lambda: _app_done_at(sandbox, "prod", revision), what="a sync by polling")


def test_argocd_reports_degraded_health_when_injected(bare_sandbox: Sandbox) -> None:
    sandbox = bare_sandbox
    sandbox.inject_degraded("preview", "CrashLoopBackOff")
    wait_for(
        lambda: (
            _status(sandbox.application("preview"))["health"]
            == {"status": "Degraded", "message": "CrashLoopBackOff"}
        ),
        what="Degraded",
    )


# --- Deployments --------------------------------------------------------------------------------


def _deployment(replicas: int, *, deadline_s: int = 600, secret_ref: bool = False) -> Obj:
    d = manifests.gateway_deployment("preview", replicas=replicas, progress_deadline_s=deadline_s)
    if not secret_ref:
        d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    return d


def _restart(world: KubeWorld, name: str) -> None:
    world.kube.patch(
        DEPLOYMENT,
        "align-preview",
        name,
        {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: str(time.time())}}}}},
        strategic=True,
    )


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"), [(1, 1, 0), (3, 1, 0), (4, 1, 1), (10, 3, 2)]
)
def test_max_surge_rounds_up_and_max_unavailable_down(
    replicas: int, surge: int, unavailable: int
) -> None:
    assert surge_and_unavailable({"replicas": replicas}) == (surge, unavailable)


def test_a_restart_replaces_three_pods_in_waves(kube_world: KubeWorld) -> None:
    rollout = kube_world.run(
        RolloutController(kube_world.kubeconfig, pod_start_s=0.05, pod_ready_s=0.05)
    )
    body = _deployment(3)
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    d = kube_world.kube.create(DEPLOYMENT, "align-preview", body)
    name = meta(d)["name"]
    wait_for(lambda: _rollout_complete(_get_deploy(kube_world, name)), what="the first rollout")
    first_pods = {meta(p)["name"] for p in _pods(kube_world)}
    started = time.monotonic()
    _restart(kube_world, name)
    wait_for(lambda: _rollout_complete(_get_deploy(kube_world, name)), what="the restart")
    # Each replaced pod was deleted gracefully: Terminating for its grace period, then removed.
    left = [p for p in _pods(kube_world) if meta(p)["name"] in first_pods]
    assert all(meta(p).get("deletionTimestamp") for p in left)
    wait_for(
        lambda: not first_pods & {meta(p)["name"] for p in _pods(kube_world)},
        what="the replaced pods to finish terminating",
    )
    samples = [s for s in rollout.history[("align-preview", name)] if s.at >= started]
    # maxSurge 1 (25% of 3, up), maxUnavailable 0 (down): never more than 4 pods, never < 3 ready
    assert max(s.new_pods + s.old_pods for s in samples) == 4
    assert min(s.available for s in samples) >= 3
    assert {s.new_pods for s in samples} >= {1, 2, 3}
    d = _get_deploy(kube_world, name)
    assert _status(d)["observedGeneration"] == meta(d)["generation"]
    assert _condition(d, "Available")["status"] == "True"


def test_pods_that_never_get_ready_exceed_the_progress_deadline(kube_world: KubeWorld) -> None:
    rollout = kube_world.run(
        RolloutController(kube_world.kubeconfig, pod_start_s=0.02, pod_ready_s=0.02, time_scale=0.1)
    )
    d = kube_world.kube.create(DEPLOYMENT, "align-preview", _deployment(1, deadline_s=3))
    name = meta(d)["name"]
    wait_for(lambda: _rollout_complete(_get_deploy(kube_world, name)), what="the first rollout")
    rollout.set_never_ready("align-preview", name)
    _restart(kube_world, name)
    wait_for(
        lambda: (
            _condition(_get_deploy(kube_world, name), "Progressing").get("reason")
            == "ProgressDeadlineExceeded"
        ),
        timeout=5,
        what="ProgressDeadlineExceeded",
    )
    d = _get_deploy(kube_world, name)
    assert _condition(d, "Progressing")["status"] == "False"
    assert _status(d)["updatedReplicas"] == 1
    assert _status(d)["availableReplicas"] == 1  # the old pod stays (maxUnavailable 0)


def test_a_paused_deployment_does_not_roll_out(kube_world: KubeWorld) -> None:
    kube_world.run(RolloutController(kube_world.kubeconfig, pod_start_s=0.01, pod_ready_s=0.01))
    d = kube_world.kube.create(DEPLOYMENT, "align-preview", _deployment(1))
    name = meta(d)["name"]
    wait_for(lambda: _rollout_complete(_get_deploy(kube_world, name)), what="the first rollout")
    pods = {meta(p)["name"] for p in _pods(kube_world)}
    kube_world.kube.patch(DEPLOYMENT, "align-preview", name, {"spec": {"paused": True}})
    _restart(kube_world, name)
    wait_for(
        lambda: (
            _condition(_get_deploy(kube_world, name), "Progressing").get("reason")
            == "DeploymentPaused"
        ),
        what="DeploymentPaused",
    )
    assert {meta(p)["name"] for p in _pods(kube_world)} == pods


def test_a_pod_keeps_the_key_it_started_with_and_waits_for_a_missing_secret(
    kube_world: KubeWorld,
) -> None:
    rollout = kube_world.run(
        RolloutController(kube_world.kubeconfig, pod_start_s=0.01, pod_ready_s=0.01)
    )
    d = kube_world.kube.create(DEPLOYMENT, "align-preview", _deployment(1, secret_ref=True))
    name = meta(d)["name"]
    wait_for(lambda: len(_pods(kube_world)) == 1, what="a pod")
    time.sleep(0.2)
    assert _status(_pods(kube_world)[0])["containerStatuses"][0]["state"]["waiting"] == {
        "reason": "CreateContainerConfigError",
        "message": 'secret "align-posthog" not found',
    }
    kube_world.kube.create(SECRET, "align-preview", _secret("phc_first_key_value"))
    wait_for(lambda: _rollout_complete(_get_deploy(kube_world, name)), what="the pod to start")
    pod = _pods(kube_world)[0]
    env = rollout.pod_env("align-preview", meta(pod)["name"])
    assert env == {"ENVIRONMENT": "preview", "POSTHOG_API_KEY": "phc_first_key_value"}
    fp = Secret("phc_first_key_value").fingerprint
    assert meta(pod)["annotations"]["sandbox.rotator/key-fingerprint"] == fp
    assert "phc_first_key_value" not in str(pod)
    # A changed Secret does not reach a running pod.
    kube_world.kube.replace(SECRET, "align-preview", "align-posthog", _secret("phc_second_key"))
    time.sleep(0.1)
    assert rollout.pod_env("align-preview", meta(pod)["name"]) == env


# --- sealed-secrets -----------------------------------------------------------------------------


def _sealed_for(pair: ControllerKeyPair, value: str, *, namespace: str = "align-preview") -> Obj:
    cert = load_cert(pair.cert_pem, source="test", now=datetime.now(UTC))
    text = update_sealed_file(
        None,
        value=Secret(value),
        namespace=namespace,
        name="align-posthog",
        data_key="POSTHOG_API_KEY",
        scope=SealingScope.STRICT,
        cert=cert,
        labels={"team": "align"},
    ).text
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_the_controller_unseals_into_an_owned_secret_and_reports_synced(
    kube_world: KubeWorld, key_pair: ControllerKeyPair
) -> None:
    kube_world.run(SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair]))
    ss = kube_world.kube.create(
        SEALED_SECRET, "align-preview", _sealed_for(key_pair, "phc_unsealed_ok")
    )
    wait_for(
        lambda: _condition(_get_ss(kube_world), "Synced").get("status") == "True",
        what="Synced",
    )
    secret = kube_world.kube.get(SECRET, "align-preview", "align-posthog")
    assert secret is not None
    assert base64.b64decode(secret["data"]["POSTHOG_API_KEY"]) == b"phc_unsealed_ok"
    assert meta(secret)["labels"] == {"team": "align"}
    fp = Secret("phc_unsealed_ok").fingerprint
    assert meta(secret)["annotations"][FINGERPRINT_ANNOTATION] == fp
    assert meta(secret)["ownerReferences"][0]["uid"] == meta(ss)["uid"]
    assert meta(secret)["ownerReferences"][0]["controller"] is True
    assert _status(_get_ss(kube_world))["observedGeneration"] == meta(ss)["generation"]
    assert "Unsealed" in _event_reasons(kube_world)


def test_a_secret_sealed_for_another_key_fails_with_an_event_and_synced_false(
    kube_world: KubeWorld, key_pair: ControllerKeyPair
) -> None:
    kube_world.run(SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair]))
    other = generate_key_pair(2048)
    kube_world.kube.create(SEALED_SECRET, "align-preview", _sealed_for(other, "phc_wrong_key"))
    wait_for(
        lambda: _condition(_get_ss(kube_world), "Synced").get("status") == "False",
        what="Synced=False",
    )
    cond = _condition(_get_ss(kube_world), "Synced")
    assert "no key could decrypt secret (1 keys tried" in cond["message"]
    assert "ErrUnsealFailed" in _event_reasons(kube_world)
    assert kube_world.kube.get(SECRET, "align-preview", "align-posthog") is None


def test_the_controller_keeps_working_after_its_watch_history_expires(
    kube_world: KubeWorld, key_pair: ControllerKeyPair
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair])
    )
    assert controller.wait_synced()
    kube_world.api.expire_watch_history()  # the open watch's resourceVersion is now too old
    kube_world.kube.create(SEALED_SECRET, "align-preview", _sealed_for(key_pair, "phc_after_410"))
    wait_for(
        lambda: _condition(_get_ss(kube_world), "Synced").get("status") == "True",
        what="an unseal after 410 Gone",
    )


def test_the_cert_and_verify_endpoints_answer_through_the_service_proxy(
    kube_world: KubeWorld, key_pair: ControllerKeyPair
) -> None:
    kube_world.run(SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair]))
    base = (
        f"{kube_world.api.url}/api/v1/namespaces/kube-system/services/"
        "http:sealed-secrets-controller:http/proxy"
    )
    headers = {"Authorization": f"Bearer {kube_world.api.admin_token}"}
    cert = requests.get(f"{base}/v1/cert.pem", headers=headers, timeout=5)
    assert cert.status_code == 200
    assert cert.content == key_pair.cert_pem
    good = requests.post(
        f"{base}/v1/verify", json=_sealed_for(key_pair, "phc_v"), headers=headers, timeout=5
    )
    bad = requests.post(
        f"{base}/v1/verify",
        json=_sealed_for(key_pair, "phc_v", namespace="align-prod") | _moved("align-preview"),
        headers=headers,
        timeout=5,
    )
    assert (good.status_code, bad.status_code) == (200, 409)


# --- helpers --------------------------------------------------------------------------------------


def _moved(namespace: str) -> Obj:
    """Metadata of the same SealedSecret renamed into another namespace (strict scope fails)."""
    return {"metadata": {"name": "align-posthog", "namespace": namespace}}


def _configmap() -> str:
    return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n"


def _secret(value: str) -> Obj:
    return {
        "metadata": {"name": "align-posthog", "namespace": "align-preview"},
        "data": {"POSTHOG_API_KEY": base64.b64encode(value.encode()).decode()},
    }


def _get_deploy(world: KubeWorld, name: str) -> Obj:
    d = world.kube.get(DEPLOYMENT, "align-preview", name)
    assert d is not None
    return d


def _get_ss(world: KubeWorld) -> Obj:
    return world.kube.get(SEALED_SECRET, "align-preview", "align-posthog") or {}


def _pods(world: KubeWorld) -> list[Obj]:
    return world.kube.list(POD, "align-preview")[0]


def _event_reasons(world: KubeWorld) -> set[str]:
    return {str(e.get("reason")) for e in world.kube.list(EVENT, "align-preview")[0]}
