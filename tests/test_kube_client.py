"""rotator.clients.kube: the pure predicates, the error boundary, and (against the Kubernetes API
stand-in) SealedSecrets, Deployments, the Lease, the service proxy and the waits."""

from __future__ import annotations

import http.client
import http.server
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from rotator.clients.kube import (
    REQUIRED_RBAC,
    Condition,
    DeploymentState,
    Json,
    Kube,
    RbacRule,
    SealedSecretState,
    WaitOutcome,
    WatchTarget,
    deployment_from,
    json_body,
    lease_from,
    micro_time,
    parse_time,
    required_rbac,
    rollout_status,
    sealed_secret_from,
    translate_error,
    unseal_status,
)
from rotator.clock import rfc3339
from rotator.config import Config, ControllerRef, KubernetesConfig, Timeouts, Waits
from rotator.errors import (
    ArgoCDError,
    ClientError,
    ConfigError,
    KubeError,
    LockHeld,
    WaitTimeout,
)
from rotator.names import FINGERPRINT_ANNOTATION
from rotator_sandbox.kubeapi import KubeApiServer
from tests.kube_fixtures import register_backend

FP = "sha256:0123456789ab"
OTHER_FP = "sha256:ba9876543210"


class FakeClock:
    """Time that moves only when slept (or advanced)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.start = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t - 1000.0)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0)


def offline_kube(clock: FakeClock | None = None, attempts: int = 3) -> Kube:
    configuration = k8s.Configuration(host="http://127.0.0.1:9")
    return Kube(
        k8s.ApiClient(configuration),
        timeouts=Timeouts(connect_s=1, read_s=1, attempts=attempts),
        waits=Waits(poll_interval_s=0.01, watch_timeout_s=1),
        clock=clock or FakeClock(),
    )


# --- rollout_status: kubectl rollout status, as a table ------------------------------------


def dep(**changes: Any) -> DeploymentState:
    base = DeploymentState(
        namespace="align-prod",
        name="align-prod-gateway",
        generation=5,
        observed_generation=5,
        replicas=2,
        current=2,
        updated=2,
        ready=2,
        available=2,
        unavailable=0,
        paused=False,
        conditions={"Progressing": Condition("True", "NewReplicaSetAvailable", "")},
        restarted_at=None,
        selector={"app": "align-gateway"},
        resource_version="10",
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("state", "min_generation", "phase", "words"),
    [
        (dep(), 0, "done", "successfully rolled out"),
        (dep(), 5, "done", "successfully rolled out"),
        (dep(), 6, "waiting", "generation 5 < 6"),
        (dep(observed_generation=4), 0, "waiting", "spec update to be observed"),
        (dep(updated=1), 0, "waiting", "1 out of 2 new replicas"),
        (dep(current=3), 0, "waiting", "1 old replicas are pending termination"),
        (dep(available=1), 0, "waiting", "1 of 2 updated replicas are available"),
        (
            dep(conditions={"Progressing": Condition("False", "ProgressDeadlineExceeded", "x")}),
            0,
            "failed",
            "exceeded its progress deadline",
        ),
        # kubectl checks the deadline only once the spec is observed
        (
            dep(
                observed_generation=4,
                conditions={"Progressing": Condition("False", "ProgressDeadlineExceeded", "")},
            ),
            0,
            "waiting",
            "observed",
        ),
        (dep(paused=True), 0, "failed", "kubectl rollout resume"),
        # paused mid-rollout: named as paused, not blamed on the replica counts
        (dep(paused=True, updated=1), 0, "failed", "is paused"),
        (dep(paused=True, observed_generation=4), 0, "failed", "is paused"),
        (dep(replicas=0, current=0, updated=0, ready=0, available=0), 0, "done", "rolled out"),
    ],
)
def test_rollout_status_follows_kubectl(
    state: DeploymentState, min_generation: int, phase: str, words: str
) -> None:
    got_phase, reason = rollout_status(state, min_generation=min_generation)
    assert got_phase == phase
    assert words in reason


def test_is_rolled_out_is_the_same_predicate_without_a_minimum_generation() -> None:
    kube = offline_kube()
    assert kube.is_rolled_out(dep()) == (True, rollout_status(dep())[1])
    ok, why = kube.is_rolled_out(dep(available=0))
    assert not ok
    assert "available" in why


def test_deployment_from_reads_the_fields_kubectl_reads() -> None:
    state = deployment_from(
        {
            "metadata": {"name": "d", "namespace": "n", "generation": 3, "resourceVersion": "9"},
            "spec": {
                "selector": {"matchLabels": {"app": "a"}},
                "template": {
                    "metadata": {
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T20:00:00Z"}
                    }
                },
            },
            "status": {
                "observedGeneration": 3,
                "replicas": 2,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicas"}
                ],
            },
        }
    )
    assert state.replicas == 1  # spec.replicas defaults to 1
    assert (state.current, state.updated, state.available, state.unavailable) == (2, 1, 1, 1)
    assert state.conditions["Available"] == Condition("False", "MinimumReplicas", "")
    assert state.restarted_at == "2026-11-27T20:00:00Z"
    assert state.selector == {"app": "a"}


# --- unseal_status ----------------------------------------------------------------------------


def sealed(**changes: Any) -> SealedSecretState:
    base = SealedSecretState(
        namespace="align-prod",
        name="align-posthog",
        generation=4,
        observed_generation=4,
        synced=True,
        message="",
        template_fingerprint=FP,
        resource_version="7",
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("state", "phase", "words"),
    [
        (sealed(), "done", "unsealed"),
        (None, "waiting", "does not exist"),
        (sealed(template_fingerprint=OTHER_FP), "waiting", "not sha256:0123"),
        (sealed(template_fingerprint=None), "waiting", "unknown"),
        # a stale status (from the previous generation) is never trusted, not even a True
        (sealed(observed_generation=3), "waiting", "not observed generation 4"),
        (sealed(observed_generation=None), "waiting", "not observed"),
        (sealed(observed_generation=3, synced=False), "waiting", "not observed"),
        (sealed(synced=None), "waiting", "no Synced condition"),
        (sealed(synced=False, message="no key could decrypt secret"), "failed", "no key could"),
        # a failure of the previous spec (another fingerprint) may still be replaced by ours
        (sealed(synced=False, template_fingerprint=OTHER_FP), "waiting", "carries key"),
    ],
)
def test_unseal_status_trusts_only_an_observed_generation_with_our_fingerprint(
    state: SealedSecretState | None, phase: str, words: str
) -> None:
    got, reason = unseal_status(state, FP)
    assert got == phase
    assert words in reason


@pytest.mark.parametrize(
    ("state", "phase", "words"),
    [
        # v0.24.2 (#1295): the status of the previous generation, never moved
        (sealed(observed_generation=3), "done", "is stale: observedGeneration 3"),
        # --update-status=false: no status at all
        (sealed(observed_generation=None, synced=None), "done", "is missing"),
        # <= v0.24.1: the first, failed attempt of the generation stays after the retry
        (sealed(synced=False, message="etcdserver: timeout"), "done", "failed attempt"),
        # a decryption failure stays one: the same keys will not open it on a retry
        (sealed(synced=False, message="no key could decrypt secret"), "failed", "no key could"),
        # the event is about our spec only once the SealedSecret carries it
        (sealed(template_fingerprint=OTHER_FP), "waiting", "carries key"),
    ],
)
def test_an_unsealed_event_after_the_apply_overrules_a_stale_or_missing_status(
    state: SealedSecretState, phase: str, words: str
) -> None:
    got, reason = unseal_status(state, FP, unsealed_after_apply=True)
    assert got == phase
    assert words in reason


def test_one_synced_false_other_than_a_decryption_failure_waits_for_the_controller_s_retries() -> (
    None
):
    got, reason = unseal_status(sealed(synced=False, message="etcdserver: timeout"), FP)
    assert got == "waiting"
    assert "retries" in reason


def test_sealed_secret_from_reads_status_and_template_fingerprint() -> None:
    state = sealed_secret_from(
        {
            "metadata": {"name": "s", "namespace": "n", "generation": 2, "resourceVersion": "5"},
            "spec": {
                "template": {"metadata": {"annotations": {"rotator.align.dev/key-fingerprint": FP}}}
            },
            "status": {
                "observedGeneration": 2,
                "conditions": [{"type": "Synced", "status": "False", "message": "bad key"}],
            },
        }
    )
    assert state == SealedSecretState("n", "s", 2, 2, False, "bad key", FP, "5")


# --- Lease values -----------------------------------------------------------------------------


def test_micro_time_always_has_six_fraction_digits_and_parses_back() -> None:
    moment = datetime(2026, 11, 27, 20, 0, 0, tzinfo=UTC)
    assert micro_time(moment) == "2026-11-27T20:00:00.000000Z"
    assert parse_time(micro_time(moment)) == moment
    assert parse_time("2026-11-27T20:00:00Z") == moment
    assert parse_time("not a time") is None
    assert parse_time(None) is None


def test_a_lease_expires_after_renew_time_plus_duration() -> None:
    lease = lease_from(
        {
            "metadata": {"name": "l", "namespace": "n", "resourceVersion": "1"},
            "spec": {
                "holderIdentity": "run-1",
                "renewTime": "2026-11-27T20:00:00.000000Z",
                "leaseDurationSeconds": 60,
            },
        }
    )
    start = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    assert not lease.is_expired(start + timedelta(seconds=60))
    assert lease.is_expired(start + timedelta(seconds=61))
    assert lease.transitions == 0


# --- RBAC -------------------------------------------------------------------------------------


def test_required_rbac_asks_only_to_get_the_unsealed_secret_and_never_for_exec_or_wildcards() -> (
    None
):
    for kind, rules in REQUIRED_RBAC.items():
        for rule in rules:
            assert rule.resource not in ("pods/exec", "*"), (kind, rule)
            if rule.resource == "secrets":  # its metadata, where the status is stale
                assert (kind, rule.verbs, rule.resource_names) == (
                    "app",
                    ("get",),
                    ("align-posthog",),
                )
            assert "*" not in rule.verbs
            assert set(rule.verbs) <= {"get", "list", "watch", "patch", "update", "create"}
    proxy = REQUIRED_RBAC["controller"][0]
    assert proxy.resource == "services/proxy"
    assert proxy.resource_names == ("http:sealed-secrets-controller:http",)
    leases = {v for r in REQUIRED_RBAC["lock"] for v in r.verbs}
    assert leases == {"get", "create", "update"}


def test_rbac_rules_render_as_role_rules() -> None:
    assert RbacRule("apps", "deployments", ("get", "patch"), ("gw",)).to_rule() == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "patch"],
        "resourceNames": ["gw"],
    }
    assert "resourceNames" not in RbacRule("", "events", ("list",)).to_rule()


def test_required_rbac_names_the_configured_controller() -> None:
    rules = required_rbac(controller=ControllerRef(name="sealed-secrets", port_name="web"))
    assert rules["controller"][0].resource_names == ("http:sealed-secrets:web",)


# --- the error boundary: every library error becomes a KubeError ----------------------------


def _library_exception_types() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for module in (k8s_exceptions, urllib3.exceptions):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Exception) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def _instantiate(cls: type[BaseException]) -> BaseException:
    try:
        params = [
            p
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self"
            and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    for filler in ("boom", None, 0):
        try:
            return cls(*[filler] * len(params))
        except Exception:
            continue
    # e.g. InvalidChunkLength wants a live response: build it without its __init__
    exc = cls.__new__(cls)
    Exception.__init__(exc, "boom")
    return exc


LIBRARY_EXCEPTIONS = _library_exception_types()


def test_the_meta_test_sees_the_main_library_errors() -> None:
    names = {cls.__name__ for cls in LIBRARY_EXCEPTIONS}
    assert {"ApiException", "ApiTypeError", "MaxRetryError", "ProtocolError"} <= names
    assert len(LIBRARY_EXCEPTIONS) > 20


@pytest.mark.parametrize("cls", LIBRARY_EXCEPTIONS, ids=lambda c: c.__name__)
def test_every_library_error_maps_to_a_kube_error(cls: type[BaseException]) -> None:
    exc = _instantiate(cls)
    clock = FakeClock()
    kube = offline_kube(clock)
    calls = 0

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(KubeError) as info:
        kube.request("read thing", fail, idempotent=True)
    assert info.value.__cause__ is exc
    assert str(info.value).startswith("read thing: ")
    assert calls == (3 if info.value.retryable else 1)
    with pytest.raises(ArgoCDError):
        kube.request("read app", fail, idempotent=False, error=ArgoCDError)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (404, False), (403, False)]
)
def test_api_exceptions_carry_status_and_the_status_message(status: int, retryable: bool) -> None:
    exc = k8s_exceptions.ApiException(status=status, reason="Reason")
    exc.body = '{"kind":"Status","message":"deployments.apps \\"x\\" is forbidden"}'
    err = translate_error(exc, "patch x")
    assert isinstance(err, KubeError)
    assert err.status == status
    assert err.retryable is retryable
    assert str(err) == f'patch x: HTTP {status}: deployments.apps "x" is forbidden'


def test_long_error_bodies_are_truncated() -> None:
    exc = k8s_exceptions.ApiException(status=500, reason="Internal")
    exc.body = "x" * 5000
    assert len(str(translate_error(exc, "read"))) < 400


def test_idempotent_calls_are_retried_with_logged_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    kube = offline_kube(clock, attempts=4)
    results: list[Callable[[], str]] = [
        lambda: (_ for _ in ()).throw(urllib3.exceptions.ProtocolError("reset")),
        lambda: (_ for _ in ()).throw(k8s_exceptions.ApiException(status=503)),
        lambda: "ok",
    ]

    def next_result() -> str:
        return results.pop(0)()

    assert kube.request("read x", next_result, idempotent=True) == "ok"
    assert len(clock.sleeps) == 2
    assert "attempt 1/4 failed" in caplog.text
    assert "attempt 2/4 failed" in caplog.text


def test_non_idempotent_calls_are_sent_once() -> None:
    kube = offline_kube()
    calls = 0

    def fail() -> None:
        nonlocal calls
        calls += 1
        raise urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out")  # type: ignore[arg-type]

    with pytest.raises(KubeError) as info:
        kube.request("create lease", fail, idempotent=False)
    assert calls == 1
    assert info.value.retryable


def test_our_own_errors_pass_through_the_boundary_unchanged() -> None:
    kube = offline_kube()
    mine = KubeError("already ours")

    def fail() -> None:
        raise mine

    with pytest.raises(ClientError) as info:
        kube.request("x", fail, idempotent=True)
    assert info.value is mine


def test_a_refused_connection_is_a_retryable_kube_error() -> None:
    kube = offline_kube(attempts=2)
    with pytest.raises(KubeError) as info:
        kube.get_deployment("align-prod", "align-prod-gateway")
    assert info.value.retryable
    assert "connection failed" in str(info.value)


# =============================================================================================
# Against the Kubernetes API stand-in (rotator_sandbox.kubeapi), seeded through the official
# client the way a controller would write (the "test controller" below).
# =============================================================================================

TOKEN = "kube-test-token"


@pytest.fixture(scope="module")
def api_server() -> Iterator[KubeApiServer]:
    """One stand-in per module, with RBAC on (the admin token is never restricted)."""
    from rotator_sandbox.kubeapi import KubeApiServer

    server = KubeApiServer(port=0, token=TOKEN, rbac=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kubeconfig(api_server: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    api_server.write_kubeconfig(path, token=TOKEN)
    return path


def make_config(kubeconfig: Path, **waits: float) -> Config:
    return Config.model_validate(
        {
            "environments": {
                "prod": {
                    "posthog_project_id": 1,
                    "namespace": "align-prod",
                    "sealed_file": "sealedsecrets/prod/posthog.yaml",
                    "argocd_app": {"name": "align-prod"},
                    "deployment": "align-prod-gateway",
                }
            },
            "git": {"remote": "file:///nonexistent.git"},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "timeouts": {"connect_s": 2, "read_s": 5, "attempts": 2},
            "waits": {"poll_interval_s": 0.05, "watch_timeout_s": 2, **waits},
        }
    )


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[Kube]:
    client = Kube.from_config(make_config(kubeconfig))
    yield client
    client.close()


class Seed:
    """The test's controller: writes objects and statuses through the official client."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = k8s_config.new_client_from_config(str(kubeconfig))
        self.core: Any = k8s.CoreV1Api(self.api)
        self.apps: Any = k8s.AppsV1Api(self.api)
        self.custom: Any = k8s.CustomObjectsApi(self.api)
        self.coordination: Any = k8s.CoordinationV1Api(self.api)

    def namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except k8s_exceptions.ApiException as exc:
            if exc.status != 409:
                raise

    def deployment(
        self, namespace: str, name: str, *, replicas: int = 2, paused: bool = False
    ) -> Json:
        self.namespace(namespace)
        labels = {"app": "align-gateway", "env": "prod"}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": replicas,
                "paused": paused,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "gateway", "image": "gateway:1"}]},
                },
            },
        }
        self.apps.create_namespaced_deployment(namespace, body, _preload_content=False)
        return self.set_deployment_status(namespace, name, ready=replicas)

    def read_deployment(self, namespace: str, name: str) -> Json:
        response = self.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
        return json_body(response)

    def set_deployment_status(
        self,
        namespace: str,
        name: str,
        *,
        ready: int,
        old: int = 0,
        updated: int | None = None,
        progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
    ) -> Json:
        current = self.read_deployment(namespace, name)
        replicas = current["spec"].get("replicas", 1)
        updated = replicas if updated is None else updated
        status = {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": updated + old,
            "updatedReplicas": updated,
            "readyReplicas": ready + old,
            "availableReplicas": ready + old,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": f"ReplicaSet is {progressing[1]}",
                }
            ],
        }
        response = self.apps.patch_namespaced_deployment_status(
            name,
            namespace,
            {"status": status},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
        return json_body(response)

    def sealed_secret(self, namespace: str, name: str, fingerprint: str) -> Json:
        self.namespace(namespace)
        body = {
            "apiVersion": "bitnami.com/v1alpha1",
            "kind": "SealedSecret",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "encryptedData": {"POSTHOG_API_KEY": "AgBy3i4OJSWK+PiTySYZZA=="},
                "template": {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "annotations": {"rotator.align.dev/key-fingerprint": fingerprint},
                    },
                    "type": "Opaque",
                },
            },
        }
        response = self.custom.create_namespaced_custom_object(
            "bitnami.com", "v1alpha1", namespace, "sealedsecrets", body, _preload_content=False
        )
        return json_body(response)

    def reseal(self, namespace: str, name: str, fingerprint: str) -> Json:
        patch = {
            "spec": {
                "encryptedData": {"POSTHOG_API_KEY": "AgAnotherCiphertext=="},
                "template": {"metadata": {"annotations": {FINGERPRINT_ANNOTATION: fingerprint}}},
            }
        }
        response = self.custom.patch_namespaced_custom_object(
            "bitnami.com",
            "v1alpha1",
            namespace,
            "sealedsecrets",
            name,
            patch,
            _preload_content=False,
        )
        return json_body(response)

    def unseal_status(
        self, namespace: str, name: str, *, synced: bool, message: str = "", lag: int = 0
    ) -> Json:
        current = json_body(
            self.custom.get_namespaced_custom_object(
                "bitnami.com",
                "v1alpha1",
                namespace,
                "sealedsecrets",
                name,
                _preload_content=False,
            )
        )
        status = {
            "observedGeneration": current["metadata"]["generation"] - lag,
            "conditions": [
                {
                    "type": "Synced",
                    "status": "True" if synced else "False",
                    "reason": "" if synced else "ErrUnsealFailed",
                    "message": message,
                }
            ],
        }
        response = self.custom.patch_namespaced_custom_object_status(
            "bitnami.com",
            "v1alpha1",
            namespace,
            "sealedsecrets",
            name,
            {"status": status},
            _preload_content=False,
        )
        return json_body(response)


@pytest.fixture
def seed(kubeconfig: Path) -> Iterator[Seed]:
    s = Seed(kubeconfig)
    yield s
    s.api.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def later(seconds: float, *actions: Callable[[], object]) -> threading.Thread:
    """Run the actions one after another, ``seconds`` apart, in a thread (a controller)."""

    def run() -> None:
        for action in actions:
            time.sleep(seconds)
            action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- reads ------------------------------------------------------------------------------------


def test_reads_of_missing_objects_return_none(kube: Kube, seed: Seed) -> None:
    seed.namespace("align-prod")
    assert kube.get_deployment("align-prod", "nope") is None
    assert kube.get_sealed_secret("align-prod", "nope") is None
    assert kube.get_lease("align-prod", "nope") is None


def test_from_config_without_any_credentials_names_the_fix(tmp_path: Path) -> None:
    config = make_config(tmp_path / "missing-kubeconfig")
    with pytest.raises(ConfigError, match=r"kubernetes\.kubeconfig"):
        Kube.from_config(config)


def test_a_wrong_token_is_a_401_kube_error_that_is_not_retried(
    kubeconfig: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text(kubeconfig.read_text().replace(TOKEN, "wrong-token"))
    client = Kube.from_config(make_config(bad))
    with pytest.raises(KubeError) as info:
        client.get_deployment("align-prod", "x")
    assert info.value.status == 401
    assert not info.value.retryable
    client.close()


# --- Deployments ------------------------------------------------------------------------------


def test_restart_patches_the_template_annotation_like_kubectl(kube: Kube, seed: Seed) -> None:
    name = unique("gw")
    before = seed.deployment("align-prod", name)
    at = datetime(2026, 11, 27, 20, 22, 27, tzinfo=UTC)
    state = kube.restart_deployment("align-prod", name, at=at)
    assert state.restarted_at == "2026-11-27T20:22:27Z"
    assert state.generation == before["metadata"]["generation"] + 1
    stored = seed.read_deployment("align-prod", name)
    annotations = stored["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"kubectl.kubernetes.io/restartedAt": "2026-11-27T20:22:27Z"}
    # the rest of the template survives a strategic merge
    assert stored["spec"]["template"]["spec"]["containers"][0]["name"] == "gateway"
    # repeating the same restart is harmless: same value, no new generation
    again = kube.restart_deployment("align-prod", name, at=at)
    assert again.generation == state.generation


def test_restart_can_record_more_template_annotations_in_the_same_patch(
    kube: Kube, seed: Seed
) -> None:
    name = unique("gw")
    before = seed.deployment("align-prod", name)
    at = datetime(2026, 11, 27, 20, 22, 27, tzinfo=UTC)
    state = kube.restart_deployment(
        "align-prod", name, at=at, annotations={FINGERPRINT_ANNOTATION: FP}
    )
    assert state.generation == before["metadata"]["generation"] + 1
    assert state.template_annotations == {
        FINGERPRINT_ANNOTATION: FP,
        "kubectl.kubernetes.io/restartedAt": "2026-11-27T20:22:27Z",
    }
    assert kube.get_deployment("align-prod", name) == state


def test_restart_refuses_a_paused_deployment(kube: Kube, seed: Seed) -> None:
    name = unique("gw")
    seed.deployment("align-prod", name, paused=True)
    with pytest.raises(KubeError, match="kubectl rollout resume"):
        kube.restart_deployment("align-prod", name, at=datetime.now(UTC))
    assert (
        "annotations"
        not in seed.read_deployment("align-prod", name)["spec"]["template"]["metadata"]
    )


def test_restart_of_a_missing_deployment_is_a_404_kube_error(kube: Kube, seed: Seed) -> None:
    seed.namespace("align-prod")
    with pytest.raises(KubeError) as info:
        kube.restart_deployment("align-prod", unique("none"), at=datetime.now(UTC))
    assert info.value.status == 404


def test_wait_for_rollout_follows_the_status_through_its_waves(
    kubeconfig: Path, seed: Seed
) -> None:
    # a long poll interval: finishing quickly proves the watch delivered the changes
    kube = Kube.from_config(make_config(kubeconfig, poll_interval_s=60))
    name = unique("gw")
    seed.deployment("align-prod", name, replicas=2)
    restarted = kube.restart_deployment("align-prod", name, at=datetime.now(UTC))
    ns = "align-prod"
    controller = later(
        0.15,
        lambda: seed.set_deployment_status(ns, name, ready=0, updated=1, old=2),
        lambda: seed.set_deployment_status(ns, name, ready=1, updated=2, old=1),
        lambda: seed.set_deployment_status(ns, name, ready=1, updated=2, old=0),
        lambda: seed.set_deployment_status(ns, name, ready=2, updated=2, old=0),
    )
    started = time.monotonic()
    done = kube.wait_for_rollout(
        "align-prod", name, min_generation=restarted.generation, deadline_s=20
    )
    controller.join()
    assert time.monotonic() - started < 10
    assert done.state.available == 2
    assert done.state.current == 2
    assert done.state.observed_generation == restarted.generation
    assert done.finished_at.tzinfo is not None
    kube.close()


def test_wait_for_rollout_does_not_trust_the_status_of_the_previous_generation(
    kube: Kube, seed: Seed
) -> None:
    name = unique("gw")
    seed.deployment("align-prod", name)  # fully rolled out at generation 1
    restarted = kube.restart_deployment("align-prod", name, at=datetime.now(UTC))
    with pytest.raises(WaitTimeout) as info:
        kube.wait_for_rollout(
            "align-prod", name, min_generation=restarted.generation, deadline_s=0.5
        )
    assert info.value.step == "rollout"
    assert "observed" in str(info.value)


def test_a_deployment_paused_during_the_rollout_wait_is_named_as_paused(
    kube: Kube, seed: Seed
) -> None:
    name = unique("gw")
    seed.deployment("align-prod", name, replicas=2)
    seed.set_deployment_status("align-prod", name, ready=1, old=1, updated=1)  # mid-rollout
    later(
        0.2,
        lambda: seed.apps.patch_namespaced_deployment(
            name, "align-prod", {"spec": {"paused": True}}, _preload_content=False
        ),
    )
    # KubeError at once; before, the wait blamed the replica counts until WaitTimeout
    with pytest.raises(KubeError, match="is paused") as info:
        kube.wait_for_rollout("align-prod", name, min_generation=1, deadline_s=20)
    assert "kubectl rollout resume" in str(info.value)


def test_progress_deadline_exceeded_fails_fast(kube: Kube, seed: Seed) -> None:
    name = unique("gw")
    seed.deployment("align-prod", name)
    restarted = kube.restart_deployment("align-prod", name, at=datetime.now(UTC))
    later(
        0.1,
        lambda: seed.set_deployment_status("align-prod", name, ready=0, updated=1, old=2),
        lambda: seed.set_deployment_status(
            "align-prod",
            name,
            ready=0,
            updated=1,
            old=2,
            progressing=("False", "ProgressDeadlineExceeded"),
        ),
    )
    started = time.monotonic()
    with pytest.raises(KubeError, match="exceeded its progress deadline"):
        kube.wait_for_rollout(
            "align-prod", name, min_generation=restarted.generation, deadline_s=30
        )
    assert time.monotonic() - started < 10


def test_waiting_for_a_missing_deployment_fails_at_once(kube: Kube, seed: Seed) -> None:
    seed.namespace("align-prod")
    with pytest.raises(KubeError, match="not found"):
        kube.wait_for_rollout("align-prod", unique("none"), min_generation=1, deadline_s=5)


# --- SealedSecrets ----------------------------------------------------------------------------


def test_wait_for_unseal_returns_once_the_controller_synced_our_generation(
    kube: Kube, seed: Seed
) -> None:
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, OTHER_FP)
    seed.unseal_status("align-prod", name, synced=True)
    later(
        0.15,
        lambda: seed.reseal("align-prod", name, FP),  # ArgoCD applies the new file
        lambda: seed.unseal_status("align-prod", name, synced=True, lag=1),  # stale status
        lambda: seed.unseal_status("align-prod", name, synced=True),
    )
    state = kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=20)
    assert state.template_fingerprint == FP
    assert state.synced is True
    assert state.is_observed
    got = kube.get_sealed_secret("align-prod", name)
    assert got == state


def test_a_stale_synced_true_is_not_trusted(kube: Kube, seed: Seed) -> None:
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, OTHER_FP)
    seed.reseal("align-prod", name, FP)
    seed.unseal_status("align-prod", name, synced=True, lag=1)
    with pytest.raises(WaitTimeout) as info:
        kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=0.5)
    assert info.value.step == "unseal"


def test_synced_false_for_our_generation_fails_fast_with_the_controllers_message(
    kube: Kube, seed: Seed
) -> None:
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, FP)
    later(
        0.1,
        lambda: seed.unseal_status(
            "align-prod",
            name,
            synced=False,
            message="no key could decrypt secret (POSTHOG_API_KEY)",
        ),
    )
    started = time.monotonic()
    with pytest.raises(KubeError, match="no key could decrypt secret"):
        kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=30)
    assert time.monotonic() - started < 10


# --- Lease ------------------------------------------------------------------------------------


class ShiftedClock:
    """The system clock, moved by ``offset`` (another process whose lease went stale)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0))


def test_lease_acquire_refuse_renew_release(kube: Kube, seed: Seed) -> None:
    seed.namespace("align-prod")
    name = unique("lock")
    first = kube.acquire_lease("align-prod", name, holder="run-1", duration_s=60)
    assert first.holder == "run-1"
    assert first.transitions == 0
    assert first.acquired_at is not None
    raw = json_body(
        seed.coordination.read_namespaced_lease(name, "align-prod", _preload_content=False)
    )
    assert raw["spec"]["holderIdentity"] == "run-1"
    assert raw["spec"]["renewTime"].endswith("Z")
    assert "." in raw["spec"]["renewTime"]  # MicroTime keeps its fraction

    with pytest.raises(LockHeld) as info:
        kube.acquire_lease("align-prod", name, holder="run-2", duration_s=60)
    assert info.value.holder == "run-1"
    assert info.value.since == rfc3339(first.acquired_at)
    assert "run-1" in str(info.value)

    renewed = kube.renew_lease("align-prod", name, holder="run-1")
    assert renewed.renewed_at is not None
    assert renewed.renewed_at >= first.renewed_at  # type: ignore[operator]
    assert renewed.resource_version != first.resource_version

    with pytest.raises(KubeError, match="lost the lock"):
        kube.renew_lease("align-prod", name, holder="run-2")

    kube.release_lease("align-prod", name, holder="run-2")  # not ours: left alone
    assert kube.get_lease("align-prod", name).holder == "run-1"  # type: ignore[union-attr]
    kube.release_lease("align-prod", name, holder="run-1")
    assert kube.get_lease("align-prod", name).holder == ""  # type: ignore[union-attr]

    second = kube.acquire_lease("align-prod", name, holder="run-2", duration_s=60)
    assert second.holder == "run-2"
    assert second.transitions == 1


class ObservingClock:
    """Another machine's clock: its wall clock ``offset`` from ours, its monotonic clock moved
    only by its sleeps; ``on_sleep`` runs after each sleep (e.g. the holder renewing)."""

    def __init__(self, offset: timedelta, on_sleep: Callable[[float], None] | None = None):
        self.offset = offset
        self.t = 0.0
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0)
        if self.on_sleep is not None:
            self.on_sleep(self.t)


def test_a_clock_one_hour_ahead_does_not_take_over_a_live_lease(
    kubeconfig: Path, seed: Seed
) -> None:
    # client-go tools/leaderelection/leaderelection.go tryAcquireOrRenew: a candidate never
    # compares the holder's renewTime with its own wall clock; it takes over only a record it
    # has itself seen unchanged for the lease duration.
    seed.namespace("align-prod")
    name = unique("lock")
    holder = Kube.from_config(make_config(kubeconfig))
    holder.acquire_lease("align-prod", name, holder="live-run", duration_s=30)
    renewed_at = [0.0]

    def holder_renews(t: float) -> None:  # the live run renews every duration / 3
        if t - renewed_at[0] >= 10:
            renewed_at[0] = t
            holder.renew_lease("align-prod", name, holder="live-run")

    clock = ObservingClock(timedelta(hours=1), holder_renews)
    ahead = Kube.from_config(make_config(kubeconfig, poll_interval_s=2), clock=clock)
    with pytest.raises(LockHeld) as info:
        ahead.acquire_lease("align-prod", name, holder="run-2", duration_s=30)
    assert info.value.holder == "live-run"
    assert kube_holder(holder, name) == "live-run"
    holder.close()
    ahead.close()


def test_an_expired_lease_is_taken_over_only_after_watching_it_unchanged_for_its_duration(
    kubeconfig: Path, seed: Seed, caplog: pytest.LogCaptureFixture
) -> None:
    seed.namespace("align-prod")
    name = unique("lock")
    crashed = Kube.from_config(make_config(kubeconfig), clock=ShiftedClock(-timedelta(hours=1)))
    crashed.acquire_lease("align-prod", name, holder="crashed-run", duration_s=30)
    clock = ObservingClock(timedelta(0))
    kube = Kube.from_config(make_config(kubeconfig, poll_interval_s=2), clock=clock)
    caplog.set_level(logging.INFO, logger="rotator.clients.kube")
    caplog.set_level(logging.INFO, logger="rotator.progress")
    taken = kube.acquire_lease("align-prod", name, holder="run-2", duration_s=30)
    assert taken.holder == "run-2"
    assert taken.transitions == 1
    assert clock.t >= 30  # watched the record for the whole lease duration first
    assert "crashed-run" in caplog.text
    # A wait like any other: its heartbeat says what it waits for while it waits.
    assert f"lock: still waiting: the Lease align-prod/{name}, " in caplog.text
    assert "last seen: the lease of crashed-run looks expired" in caplog.text
    with pytest.raises(KubeError, match="lost the lock"):
        crashed.renew_lease("align-prod", name, holder="crashed-run")
    crashed.close()
    kube.close()


def test_re_acquiring_our_own_lease_keeps_it(kube: Kube, seed: Seed) -> None:
    seed.namespace("align-prod")
    name = unique("lock")
    first = kube.acquire_lease("align-prod", name, holder="run-1", duration_s=60)
    again = kube.acquire_lease("align-prod", name, holder="run-1", duration_s=60)
    assert again.holder == "run-1"
    assert again.transitions == first.transitions
    assert again.acquired_at == first.acquired_at


@pytest.mark.parametrize("contenders", [2, 6])
def test_racing_acquirers_exactly_one_wins(kubeconfig: Path, seed: Seed, contenders: int) -> None:
    seed.namespace("align-prod")
    name = unique("lock")
    clients = [Kube.from_config(make_config(kubeconfig)) for _ in range(contenders)]
    barrier = threading.Barrier(contenders)
    results: dict[str, str] = {}

    def contend(i: int) -> None:
        barrier.wait()
        try:
            clients[i].acquire_lease("align-prod", name, holder=f"run-{i}", duration_s=60)
            results[f"run-{i}"] = "won"
        except LockHeld as exc:
            results[f"run-{i}"] = f"held by {exc.holder}"

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [h for h, r in results.items() if r == "won"]
    assert len(results) == contenders
    assert len(winners) == 1, results
    assert all(r == f"held by {winners[0]}" for h, r in results.items() if h != winners[0])
    assert kube_holder(clients[0], name) == winners[0]
    for c in clients:
        c.close()


def kube_holder(kube: Kube, name: str) -> str:
    lease = kube.get_lease("align-prod", name)
    assert lease is not None
    return lease.holder


# --- the watch: 410 Gone and a forbidden watch --------------------------------------------------


def test_a_410_gone_watch_reads_again_and_carries_on(
    kube: Kube, seed: Seed, api_server: KubeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("posthog")
    stale = seed.sealed_secret("align-prod", name, OTHER_FP)
    seed.reseal("align-prod", name, FP)
    seed.unseal_status("align-prod", name, synced=True)
    api_server.expire_watch_history()  # stale's resourceVersion is now too old to watch from
    reads = [stale]

    def get() -> Json | None:
        return (
            reads.pop()
            if reads
            else json_body(
                seed.custom.get_namespaced_custom_object(
                    "bitnami.com",
                    "v1alpha1",
                    "align-prod",
                    "sealedsecrets",
                    name,
                    _preload_content=False,
                )
            )
        )

    def check(obj: Json | None) -> WaitOutcome:
        phase, reason = unseal_status(None if obj is None else sealed_secret_from(obj), FP)
        return WaitOutcome(phase == "done", obj, reason)

    caplog.set_level(logging.DEBUG, logger="rotator.clients.kube")
    got = kube.wait(
        step="unseal",
        what="test",
        get=get,
        watch=WatchTarget(
            kube.custom_objects.list_namespaced_custom_object,
            ("bitnami.com", "v1alpha1", "align-prod", "sealedsecrets"),
            name,
        ),
        check=check,
        deadline_s=10,
    )
    assert got["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    assert "the watch history has expired (410 Gone)" in caplog.text


def requests_for(api_server: KubeApiServer, name: str) -> list[tuple[str, str]]:
    """(verb, resource) of every request the stand-in authorised that named ``name``."""
    return [(e.verb, e.resource) for e in api_server.audit_log() if e.name == name]


def test_waiting_on_an_unchanged_object_after_the_watch_history_expired_does_not_storm(
    kubeconfig: Path, seed: Seed, api_server: KubeApiServer
) -> None:
    # FACTS 6 / client-go tools/cache/reflector.go: on 410 Gone a reflector re-LISTs and
    # watches from the list's resourceVersion; an unchanged object keeps its old
    # resourceVersion, so watching from it again gets 410 again, at full speed.
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, OTHER_FP)  # never changes: the wait times out
    seed.sealed_secret("align-prod", unique("other"), OTHER_FP)  # the cluster moves on
    api_server.expire_watch_history()  # ... and compacts: name's resourceVersion is too old
    kube = Kube.from_config(make_config(kubeconfig, poll_interval_s=0.5, watch_timeout_s=1))
    try:
        with pytest.raises(WaitTimeout):
            kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=2)
    finally:
        kube.close()
    calls = requests_for(api_server, name)
    # A GET, one watch that gets 410, one LIST, then watches from the list's resourceVersion
    # (one per watch_timeout_s) and at most one pause per 410: a handful, not hundreds.
    assert ("list", "sealedsecrets") in calls
    assert len(calls) <= 12, calls


# --- RBAC: REQUIRED_RBAC is enough, and nothing more is granted ------------------------------


def grant(
    api_server: KubeApiServer,
    seed: Seed,
    rules: dict[str, tuple[RbacRule, ...]],
    namespaces: dict[str, str],
) -> str:
    """A ServiceAccount bound to exactly ``rules`` (per namespace kind); returns its token."""
    account = unique("rotator")
    token = unique("token")
    api_server.add_token(token, user=f"system:serviceaccount:rotator:{account}")
    rbac: Any = k8s.RbacAuthorizationV1Api(seed.api)
    for kind, namespace in namespaces.items():
        seed.namespace(namespace)
        role_rules = [rule.to_rule() for rule in rules.get(kind, ())]
        role = f"{account}-{kind}"
        rbac.create_namespaced_role(
            namespace, {"metadata": {"name": role}, "rules": role_rules}, _preload_content=False
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "rotator"}],
            },
            _preload_content=False,
        )
    return token


def kube_as(kubeconfig: Path, token: str, tmp_path: Path, **waits: float) -> Kube:
    path = tmp_path / f"kubeconfig-{token}"
    path.write_text(kubeconfig.read_text().replace(TOKEN, token))
    return Kube.from_config(make_config(path, **waits))


def test_a_forbidden_watch_falls_back_to_polling(
    kubeconfig: Path, seed: Seed, api_server: KubeApiServer, tmp_path: Path
) -> None:
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, FP)
    only_get = {"app": (RbacRule("bitnami.com", "sealedsecrets", ("get",), (name,)),)}
    token = grant(api_server, seed, only_get, {"app": "align-prod"})
    kube = kube_as(kubeconfig, token, tmp_path)
    later(0.2, lambda: seed.unseal_status("align-prod", name, synced=True))
    state = kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=20)
    assert state.synced
    denied = [e for e in api_server.audit_log() if e.name == name and not e.allowed]
    # the watch tried once, then polled with get; the Secret's metadata (no rule for it here)
    # asked for once, never again in this run
    assert sorted((e.resource, e.verb) for e in denied) == [
        ("sealedsecrets", "watch"),
        ("secrets", "get"),
    ]
    kube.close()


class Backend:
    """The sealed-secrets controller's HTTP API on loopback: /v1/cert.pem and /v1/verify."""

    PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/cert.pem":
                    self._reply(200, backend.PEM, "application/x-pem-file")
                else:
                    self._reply(404, b"404 page not found\n", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                backend.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                ok = b'"good"' in body
                self._reply(200 if ok else 409, b"" if ok else b"cannot decrypt", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def controller_service(kubeconfig: Path) -> Iterator[Backend]:
    backend = Backend()
    seed = Seed(kubeconfig)
    seed.namespace("kube-system")
    seed.core.create_namespaced_service(
        "kube-system",
        {
            "metadata": {"name": "sealed-secrets-controller"},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        },
        _preload_content=False,
    )
    register_backend(seed.api, backend.port)
    seed.api.close()
    yield backend
    backend.stop()


def test_service_proxy_get_returns_the_raw_pem(kube: Kube, controller_service: Backend) -> None:
    pem = kube.get("kube-system", "sealed-secrets-controller", "http", "/v1/cert.pem")
    assert pem == Backend.PEM


def test_service_proxy_post_returns_status_and_body(
    kube: Kube, controller_service: Backend
) -> None:
    good = b'{"kind":"SealedSecret","spec":"good"}'
    assert kube.post("kube-system", "sealed-secrets-controller", "http", "/v1/verify", good) == (
        200,
        b"",
    )
    status, body = kube.post(
        "kube-system", "sealed-secrets-controller", "http", "/v1/verify", b'{"spec":"bad"}'
    )
    assert (status, body) == (409, b"cannot decrypt")
    path, content_type, sent = controller_service.posts[-2]
    assert (path, content_type, sent) == ("/v1/verify", "application/json", good)


def test_service_proxy_errors_name_the_service(kube: Kube, controller_service: Backend) -> None:
    with pytest.raises(KubeError) as info:
        kube.get("kube-system", "sealed-secrets-controller", "http", "/v1/missing")
    assert info.value.status == 404
    with pytest.raises(KubeError) as info:
        kube.get("kube-system", "sealed-secrets", "http", "/v1/cert.pem")
    assert info.value.status == 404
    assert "sealed-secrets" in str(info.value)
    with pytest.raises(KubeError) as info:
        kube.post("kube-system", "sealed-secrets-controller", "web", "/v1/verify", b"{}")
    assert info.value.status == 503


def test_required_rbac_allows_every_call_and_nothing_else(
    kubeconfig: Path,
    seed: Seed,
    api_server: KubeApiServer,
    controller_service: Backend,
    tmp_path: Path,
) -> None:
    deployment, secret, lease = unique("gw"), unique("posthog"), unique("lock")
    seed.deployment("align-prod", deployment)
    seed.sealed_secret("align-prod", secret, FP)
    rules = required_rbac(deployments=(deployment,), sealed_secrets=(secret,), lease_name=lease)
    token = grant(
        api_server,
        seed,
        dict(rules),
        {"app": "align-prod", "lock": "align-prod", "controller": "kube-system"},
    )
    kube = kube_as(kubeconfig, token, tmp_path)
    started = len(api_server.audit_log())

    assert kube.get("kube-system", "sealed-secrets-controller", "http", "/v1/cert.pem")
    assert kube.post("kube-system", "sealed-secrets-controller", "http", "/v1/verify", b'"good"')
    held = kube.acquire_lease("align-prod", lease, holder="run-1", duration_s=60)
    kube.renew_lease("align-prod", lease, holder="run-1")
    later(0.1, lambda: seed.unseal_status("align-prod", secret, synced=True))
    kube.wait_for_unseal("align-prod", secret, fingerprint=FP, deadline_s=20)
    restarted = kube.restart_deployment("align-prod", deployment, at=datetime.now(UTC))
    later(0.1, lambda: seed.set_deployment_status("align-prod", deployment, ready=2))
    kube.wait_for_rollout(
        "align-prod", deployment, min_generation=restarted.generation, deadline_s=20
    )
    kube.recent_events("align-prod", deployment)
    kube.release_lease("align-prod", lease, holder=held.holder)

    denied = [e for e in api_server.audit_log()[started:] if not e.allowed]
    assert not denied, denied

    # and what the run must never do stays closed
    secrets: Any = k8s.CoreV1Api(kube.api_client)
    with pytest.raises(k8s_exceptions.ApiException) as info:
        secrets.read_namespaced_secret("align-posthog", "align-prod")
    assert info.value.status == 403
    with pytest.raises(KubeError) as denied_info:
        kube.get_deployment("align-prod", unique("other-deployment"))
    assert denied_info.value.status == 403
    kube.close()


class LossyProxy:
    """A loopback HTTP proxy to the stand-in that forwards a matching request once, then hangs
    up without answering: the write happened, the client cannot know."""

    def __init__(self, upstream: str, *, method: str, path_part: str) -> None:
        self.dropped = 0
        proxy = self
        host, port = upstream.removeprefix("http://").split(":")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if self.command == method and path_part in self.path and not proxy.dropped:
                    proxy.dropped += 1
                    self.close_connection = True
                    return  # applied upstream, answer lost
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_a_lost_answer_to_the_lease_create_is_decided_by_reading_again(
    kubeconfig: Path, seed: Seed, api_server: KubeApiServer, tmp_path: Path
) -> None:
    seed.namespace("align-prod")
    name = unique("lock")
    proxy = LossyProxy(api_server.url, method="POST", path_part="/leases")
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig.read_text().replace(api_server.url, proxy.url))
    kube = Kube.from_config(make_config(path))
    try:
        lease = kube.acquire_lease("align-prod", name, holder="run-1", duration_s=60)
    finally:
        kube.close()
        proxy.stop()
    assert proxy.dropped == 1  # the create went through once, its answer was lost
    assert lease.holder == "run-1"
    assert lease.transitions == 0  # re-reading found our own lease: no takeover counted


# --- the wait helper on its own (offline, injected reads and a fake clock) --------------------


def _obj(rv: str, ready: bool) -> Json:
    return {"metadata": {"name": "x", "resourceVersion": rv}, "ready": ready}


def _ready(obj: Json | None) -> WaitOutcome:
    ok = bool(obj and obj.get("ready"))
    return WaitOutcome(ok, obj, "ready" if ok else "not ready yet")


def test_a_transient_read_failure_does_not_end_a_long_wait() -> None:
    clock = FakeClock()
    kube = offline_kube(clock)
    reads: list[Json | Exception] = [
        _obj("1", False),
        KubeError("read x: HTTP 503: etcd leader changed", retryable=True, status=503),
        KubeError("read x: connection failed (ProtocolError)", retryable=True),
        _obj("2", True),
    ]

    def get() -> Json | None:
        item = reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    got = kube.wait(step="t", what="x", get=get, watch=None, check=_ready, deadline_s=60)
    assert got["metadata"]["resourceVersion"] == "2"
    assert not reads


def test_a_wait_that_times_out_names_the_last_reason_and_the_last_read_error() -> None:
    clock = FakeClock()
    kube = offline_kube(clock)
    answers: list[Json | None] = [_obj("1", False)]

    def get() -> Json | None:
        if answers:
            return answers.pop()
        raise KubeError("read x: HTTP 503", retryable=True, status=503)

    with pytest.raises(WaitTimeout) as info:
        kube.wait(step="rollout", what="x", get=get, watch=None, check=_ready, deadline_s=5)
    assert info.value.step == "rollout"
    assert "not ready yet" in str(info.value)
    assert "the last read failed: read x: HTTP 503" in str(info.value)
    assert 5 <= clock.t - 1000 < 6  # bounded by the deadline, in poll-interval steps


def test_a_permanent_read_failure_ends_the_wait_at_once() -> None:
    kube = offline_kube()
    calls = [_obj("1", False)]

    def get() -> Json | None:
        if calls:
            return calls.pop()
        raise KubeError("read x: HTTP 403: forbidden", status=403)

    with pytest.raises(KubeError, match="403"):
        kube.wait(step="t", what="x", get=get, watch=None, check=_ready, deadline_s=60)


# --- events -----------------------------------------------------------------------------------


def test_recent_events_are_named_in_the_unseal_failure(kube: Kube, seed: Seed) -> None:
    name = unique("posthog")
    seed.sealed_secret("align-prod", name, FP)
    for i, (reason, message) in enumerate(
        [("Unsealed", "SealedSecret unsealed successfully"), ("ErrUnsealFailed", "no key")]
    ):
        seed.core.create_namespaced_event(
            "align-prod",
            {
                "metadata": {"name": f"{name}.{i}"},
                "involvedObject": {"kind": "SealedSecret", "name": name, "namespace": "align-prod"},
                "reason": reason,
                "message": message,
                "type": "Warning",
                "lastTimestamp": f"2026-11-27T20:00:0{i}Z",
            },
            _preload_content=False,
        )
    assert kube.recent_events("align-prod", name) == [
        "Unsealed: SealedSecret unsealed successfully",
        "ErrUnsealFailed: no key",
    ]
    seed.unseal_status("align-prod", name, synced=False, message="no key could decrypt secret")
    with pytest.raises(KubeError, match=r"no key could decrypt secret \(events: .*ErrUnsealFailed"):
        kube.wait_for_unseal("align-prod", name, fingerprint=FP, deadline_s=5)


def test_from_config_uses_the_configured_context(kubeconfig: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["clusters"].append({"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}})
    doc["contexts"].append({"name": "broken", "context": {"cluster": "nowhere", "user": "admin"}})
    good = doc["current-context"]
    doc["current-context"] = "broken"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    config = make_config(path)
    chosen = Kube.from_config(
        config.model_copy(update={"kubernetes": KubernetesConfig(kubeconfig=path, context=good)})
    )
    assert chosen.get_deployment("align-prod", unique("none")) is None
    chosen.close()
    with pytest.raises(ConfigError, match=r"kubernetes\.context"):
        Kube.from_config(
            config.model_copy(
                update={"kubernetes": KubernetesConfig(kubeconfig=path, context="no-such")}
            )
        )
