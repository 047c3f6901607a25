"""rotator.clients.kube: the pure predicates, the error boundary, and (against the Kubernetes API
stand-in) SealedSecrets, Deployments, the Lease, the service proxy and the waits."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client import exceptions as k8s_exceptions

from rotator.clients.kube import (
    REQUIRED_RBAC,
    Condition,
    DeploymentState,
    Kube,
    SealedSecretState,
    deployment_from,
    lease_from,
    micro_time,
    parse_time,
    required_rbac,
    rollout_status,
    sealed_secret_from,
    translate_error,
    unseal_status,
)
from rotator.config import ControllerRef, Timeouts, Waits
from rotator.errors import ArgoCDError, ClientError, KubeError

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


def test_required_rbac_never_asks_for_secrets_exec_or_wildcards() -> None:
    for kind, rules in REQUIRED_RBAC.items():
        for rule in rules:
            assert rule.resource not in ("secrets", "pods/exec", "*"), (kind, rule)
            assert "*" not in rule.verbs
            assert set(rule.verbs) <= {"get", "list", "watch", "patch", "update", "create"}
    proxy = REQUIRED_RBAC["controller"][0]
    assert proxy.resource == "services/proxy"
    assert proxy.resource_names == ("http:sealed-secrets-controller:http",)
    leases = {v for r in REQUIRED_RBAC["lock"] for v in r.verbs}
    assert leases == {"get", "create", "update"}


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
