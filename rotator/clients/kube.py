"""rotator's Kubernetes client: SealedSecrets, Deployments, the run Lease and the service proxy.

One of the two modules that import ``kubernetes`` (the other is ``clients/argocd.py``, which
reuses this module's request boundary and wait helper). Everything returned is our own frozen
dataclass built from the raw JSON; no kubernetes model object leaves this module.

The one boundary (``Kube.request``) gives every call an explicit ``_request_timeout``, retries
idempotent reads on transients (5xx, 429, connection errors), bounded and logged as
``attempt i/n failed; retrying``, and translates every library exception into ``KubeError`` (or
the caller's ``ClientError`` subclass) ``from`` it, with the HTTP status and a truncated message.

Waiting (``Kube.wait``) follows FACTS section 6: GET and test first (a watch may never fire),
then watch from that resourceVersion with a short ``timeout_seconds`` inside an overall
deadline; an ended watch -> GET again and watch from the newest resourceVersion it reported
(a BOOKMARK's); 410 Gone -> LIST by name and watch from the list's resourceVersion after a
pause; a forbidden watch -> poll.

Reads use the generated API methods with ``_preload_content=False`` and parse the JSON body
ourselves: the generated models round-trip ``MicroTime`` without its fraction, which a real API
server rejects, and we never want model objects outside this module anyway. The Lease writes
and the service proxy go through ``ApiClient.param_serialize``/``call_api`` with a raw body for
the same reason (and because the generated proxy POST has no body parameter).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.config.config_exception import ConfigException

from rotator.clients.transport import RetryPolicy, sleep_before_retry, truncate
from rotator.clock import Clock, Deadline, SystemClock, rfc3339
from rotator.config import ControllerRef, EnvironmentConfig, LockConfig, Timeouts, Waits
from rotator.errors import (
    ClientError,
    ConfigError,
    KubeError,
    LockHeld,
    RateLimited,
    RotatorError,
    WaitTimeout,
)
from rotator.names import COMPONENT, FINGERPRINT_ANNOTATION, REPORTING_CONTROLLER
from rotator.progress import WaitProgress, waiting
from rotator.recorder import EventSpec

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")
Json = dict[str, Any]

SEALED_GROUP, SEALED_VERSION, SEALED_PLURAL = "bitnami.com", "v1alpha1", "sealedsecrets"
# Deployments are read, patched and watched through CustomObjectsApi's generic
# /apis/{group}/{version}/namespaces/{ns}/{plural} calls (the same URLs and RBAC as AppsV1Api):
# building AppsV1Api imports its ~100 generated models (about 0.5 s of CPU at start-up), and we
# never deserialize into them.
DEPLOYMENTS = ("apps", "v1")
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
# kubectl rollout status: deploymentutil.TimedOutReason on the Progressing condition.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
MESSAGE_LIMIT = 300
MAX_BACKOFF_S = 8.0
_RETRY = RetryPolicy(backoff_s=0.25, max_backoff_s=MAX_BACKOFF_S)  # attempts come from config


# --- RBAC -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RbacRule:
    """One Role rule. Empty ``resource_names`` means any name (Kubernetes cannot narrow
    ``create``, nor ``list``/``watch`` without a name field selector, by resourceNames)."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()
    why: str = ""

    def to_rule(self) -> dict[str, list[str]]:
        """The rule as it appears in a Role manifest (``rules[]``)."""
        rule = {"apiGroups": [self.api_group], "resources": [self.resource], "verbs": [*self.verbs]}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


def proxy_name(service: str, port_name: str) -> str:
    """The proxy path segment ``http:<service>:<port name>`` (k8s net.JoinSchemeNamePort)."""
    return f"http:{service}:{port_name}"


NamespaceKind = Literal["app", "lock", "job", "argocd", "controller"]


def required_rbac(
    *,
    controller: ControllerRef | None = None,
    lease_name: str | None = None,
    deployments: tuple[str, ...] = (),
    sealed_secrets: tuple[str, ...] = (),
    applications: tuple[str, ...] = (),
    projects: tuple[str, ...] = (),
) -> dict[NamespaceKind, tuple[RbacRule, ...]]:
    """Every (apiGroup, resource, verb) the run needs, per kind of namespace.

    ``app``: each environment namespace (align-preview, align-prod); ``lock``: the Lease's
    namespace (``rotator``, the job's own: no app namespace grants Lease rights); ``argocd``:
    the Applications' namespace; ``controller``: the sealed-secrets controller's namespace
    (kube-system). No pods/exec, nothing cluster-wide. Names given narrow every verb but
    ``create`` (and the events list, which is by involvedObject) to those objects.

    Secrets: only ``get`` of the unsealed Secret itself (the SealedSecret's name: the
    controller names the Secret after it), never unnamed, and the run asks only for its
    metadata (``METADATA_ONLY``): RBAC cannot tell that GET from a full one, but rotator wrote
    this very value and can read it back from PostHog anyway, so the rule grants nothing new.
    """
    controller = controller or ControllerRef()
    lease = (lease_name or LockConfig().name,)
    secrets = sealed_secrets or (EnvironmentConfig.model_fields["secret_name"].default,)
    return {
        "app": (
            # list/watch too are narrowed by name: every wait watches (and re-lists) its one
            # object with a metadata.name field selector, which the API server's RequestInfo
            # turns into the request's name for RBAC (apiserver endpoints/request/requestinfo.go).
            RbacRule(
                SEALED_GROUP,
                SEALED_PLURAL,
                ("get", "list", "watch"),
                sealed_secrets,
                "unseal status; the unseal wait watches it by name",
            ),
            RbacRule(
                "apps",
                "deployments",
                ("get", "patch", "list", "watch"),
                deployments,
                "restart, status; the rollout wait watches it by name",
            ),
            RbacRule(
                "",
                "events",
                ("list", "create"),
                why="Unsealed events, recent events in error messages; our own Events",
            ),
            RbacRule(
                "",
                "secrets",
                ("get",),
                secrets,
                "the unsealed Secret's key-fingerprint annotation (metadata only) where the "
                "SealedSecret's status is stale",
            ),
        ),
        "lock": (
            RbacRule("coordination.k8s.io", "leases", ("get", "update"), lease, "run lock"),
            RbacRule("coordination.k8s.io", "leases", ("create",), why="first run: the Lease"),
        ),
        # The job's own namespace (the pod's, from the downward API).
        "job": (RbacRule("", "events", ("create",), why="the run's outcome as its pod's Event"),),
        "argocd": (
            RbacRule(
                "argoproj.io",
                "applications",
                ("get", "patch", "list", "watch"),
                applications,
                "refresh, sync; the sync wait watches it by name",
            ),
            RbacRule(
                "argoproj.io",
                "appprojects",
                ("get",),
                projects,
                "sync windows that would deny the sync, checked before the reset",
            ),
        ),
        "controller": (
            RbacRule(
                "",
                "services/proxy",
                ("get", "create"),
                (proxy_name(controller.name, controller.port_name),),
                "GET /v1/cert.pem and POST /v1/verify through the API server's service proxy",
            ),
        ),
    }


REQUIRED_RBAC: Mapping[NamespaceKind, tuple[RbacRule, ...]] = required_rbac()


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedSecretState:
    namespace: str
    name: str
    generation: int
    observed_generation: int | None
    synced: bool | None
    message: str
    template_fingerprint: str | None
    resource_version: str
    uid: str = ""

    @property
    def is_observed(self) -> bool:
        """The controller has seen this spec; only then is ``synced`` about it (FACTS 3)."""
        return self.observed_generation == self.generation


@dataclass(frozen=True)
class SecretMetadata:
    """The unsealed Secret as its metadata shows it (never its data: read with
    ``METADATA_ONLY``). ``fingerprint``: rotator's key-fingerprint annotation, which the
    controller copies from the SealedSecret's template with the value it describes; "" when
    absent."""

    namespace: str
    name: str
    fingerprint: str
    resource_version: str


class Condition(NamedTuple):
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentState:
    namespace: str
    name: str
    generation: int
    observed_generation: int
    replicas: int  # spec.replicas (desired)
    current: int  # status.replicas (all pods, old and new)
    updated: int
    ready: int
    available: int
    unavailable: int
    paused: bool
    conditions: Mapping[str, Condition]
    restarted_at: str | None
    selector: Mapping[str, str]
    resource_version: str
    # spec.template.metadata.annotations (restartedAt, the key fingerprint the run recorded)
    template_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutDone:
    finished_at: datetime
    state: DeploymentState


class LeaseRecord(NamedTuple):
    """client-go's ``LeaderElectionRecord``: the part of a Lease that a live holder changes."""

    holder: str
    acquired_at: datetime | None
    renewed_at: datetime | None
    duration_s: int
    transitions: int


@dataclass(frozen=True)
class LeaseState:
    namespace: str
    name: str
    holder: str
    acquired_at: datetime | None
    renewed_at: datetime | None
    duration_s: int
    transitions: int
    resource_version: str

    @property
    def record(self) -> LeaseRecord:
        """What client-go's leader election compares between two reads of the Lease."""
        return LeaseRecord(
            self.holder, self.acquired_at, self.renewed_at, self.duration_s, self.transitions
        )

    def expires_at(self) -> datetime | None:
        if self.renewed_at is None:
            return None
        return self.renewed_at + timedelta(seconds=self.duration_s)

    def is_expired(self, now: datetime) -> bool:
        expires = self.expires_at()
        return expires is None or expires < now


# --- parsing (pure) -------------------------------------------------------------------------


def parse_time(raw: object) -> datetime | None:
    """RFC3339 (``Time``) or RFC3339 with microseconds (``MicroTime``); None if absent/bad."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def micro_time(moment: datetime) -> str:
    """Kubernetes ``MicroTime``: always six fraction digits (the API server requires them)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dig(obj: Mapping[str, Any] | None, *path: str) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def sealed_secret_from(obj: Mapping[str, Any]) -> SealedSecretState:
    synced: bool | None = None
    message = ""
    for cond in dig(obj, "status", "conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Synced":
            synced = {"True": True, "False": False}.get(as_str(cond.get("status")))
            message = as_str(cond.get("message"))
    observed = dig(obj, "status", "observedGeneration")
    fingerprint = dig(obj, "spec", "template", "metadata", "annotations", FINGERPRINT_ANNOTATION)
    return SealedSecretState(
        namespace=as_str(dig(obj, "metadata", "namespace")),
        name=as_str(dig(obj, "metadata", "name")),
        generation=_int(dig(obj, "metadata", "generation")),
        observed_generation=observed if isinstance(observed, int) else None,
        synced=synced,
        message=message,
        template_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        resource_version=as_str(dig(obj, "metadata", "resourceVersion")),
        uid=as_str(dig(obj, "metadata", "uid")),
    )


# kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/response.go
# asPartialObjectMetadata: with this Accept the API server converts the object before it is
# written out and answers kind PartialObjectMetadata (meta.k8s.io/v1) with the metadata alone,
# so a Secret's data never crosses the wire. No fallback clause (e.g. plain application/json):
# a server that cannot convert answers 406 rather than the whole Secret.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PARTIAL_OBJECT_METADATA = "PartialObjectMetadata"


def secret_metadata_from(obj: Mapping[str, Any]) -> SecretMetadata | None:
    """PURE. A metadata-only answer -> ``SecretMetadata``; None for anything else (a server or
    proxy that ignored the conversion: its answer is not used)."""
    if obj.get("kind") != PARTIAL_OBJECT_METADATA:
        return None
    fingerprint = dig(obj, "metadata", "annotations", FINGERPRINT_ANNOTATION)
    return SecretMetadata(
        namespace=as_str(dig(obj, "metadata", "namespace")),
        name=as_str(dig(obj, "metadata", "name")),
        fingerprint=fingerprint if isinstance(fingerprint, str) else "",
        resource_version=as_str(dig(obj, "metadata", "resourceVersion")),
    )


def deployment_from(obj: Mapping[str, Any]) -> DeploymentState:
    status = dig(obj, "status") or {}
    conditions = {
        as_str(c.get("type")): Condition(
            as_str(c.get("status")), as_str(c.get("reason")), as_str(c.get("message"))
        )
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    }
    annotations = dig(obj, "spec", "template", "metadata", "annotations") or {}
    selector = dig(obj, "spec", "selector", "matchLabels") or {}
    replicas = dig(obj, "spec", "replicas")
    return DeploymentState(
        namespace=as_str(dig(obj, "metadata", "namespace")),
        name=as_str(dig(obj, "metadata", "name")),
        generation=_int(dig(obj, "metadata", "generation")),
        observed_generation=_int(status.get("observedGeneration")),
        replicas=_int(replicas, 1),  # the API server defaults spec.replicas to 1
        current=_int(status.get("replicas")),
        updated=_int(status.get("updatedReplicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        unavailable=_int(status.get("unavailableReplicas")),
        paused=dig(obj, "spec", "paused") is True,
        conditions=conditions,
        restarted_at=annotations.get(RESTARTED_AT_ANNOTATION),
        selector={str(k): str(v) for k, v in selector.items()},
        resource_version=as_str(dig(obj, "metadata", "resourceVersion")),
        template_annotations={str(k): str(v) for k, v in annotations.items()},
    )


def lease_from(obj: Mapping[str, Any]) -> LeaseState:
    spec = dig(obj, "spec") or {}
    return LeaseState(
        namespace=as_str(dig(obj, "metadata", "namespace")),
        name=as_str(dig(obj, "metadata", "name")),
        holder=as_str(spec.get("holderIdentity")),
        acquired_at=parse_time(spec.get("acquireTime")),
        renewed_at=parse_time(spec.get("renewTime")),
        duration_s=_int(spec.get("leaseDurationSeconds")),
        transitions=_int(spec.get("leaseTransitions")),
        resource_version=as_str(dig(obj, "metadata", "resourceVersion")),
    )


RolloutPhase = Literal["done", "waiting", "failed"]


def rollout_status(  # noqa: PLR0911 - a decision table reads best as early returns
    state: DeploymentState, *, min_generation: int = 0
) -> tuple[RolloutPhase, str]:
    """PURE. ``kubectl rollout status`` for a Deployment (kubectl polymorphichelpers
    rollout_status.go DeploymentStatusViewer), plus: a generation below ``min_generation``
    (our restart not yet applied) waits, and a paused Deployment fails at once, whatever its
    replica counts (it never progresses)."""
    name = f"deployment {state.namespace}/{state.name}"
    if state.generation < min_generation:
        return "waiting", f"{name}: generation {state.generation} < {min_generation}"
    if state.paused:
        # Before the replica counts: a paused Deployment never progresses (the deployment
        # controller sets Progressing=Unknown, DeploymentPaused: kubernetes pkg/controller/
        # deployment/sync.go checkPausedConditions), so counting would wait out the deadline.
        return "failed", (
            f"{name} is paused (someone ran `kubectl rollout pause`?); resume it with "
            f"`kubectl rollout resume deployment/{state.name} -n {state.namespace}`"
        )
    if state.observed_generation < state.generation:
        return "waiting", f"{name}: waiting for the spec update to be observed"
    progressing = state.conditions.get("Progressing")
    if progressing is not None and progressing.reason == PROGRESS_DEADLINE_EXCEEDED:
        detail = f": {progressing.message}" if progressing.message else ""
        return "failed", f"{name} exceeded its progress deadline{detail}"
    if state.updated < state.replicas:
        return "waiting", (
            f"{name}: {state.updated} out of {state.replicas} new replicas have been updated"
        )
    if state.current > state.updated:
        return "waiting", (
            f"{name}: {state.current - state.updated} old replicas are pending termination"
        )
    if state.available < state.updated:
        return "waiting", (
            f"{name}: {state.available} of {state.updated} updated replicas are available"
        )
    return "done", f"{name} successfully rolled out"


UnsealPhase = Literal["done", "waiting", "failed"]
# sealed-secrets pkg/controller/controller.go: the Event reason of a successful unseal.
UNSEALED_REASON = "Unsealed"
# sealed-secrets pkg/crypto/crypto.go HybridDecrypt: no key opens the value, and a retry with
# the same keys cannot either.
DECRYPTION_FAILURE = "no key could decrypt secret"


def is_decryption_failure(message: str) -> bool:
    """PURE. Is a ``Synced=False`` message the controller's decryption failure?"""
    return DECRYPTION_FAILURE in message


def unseal_status(  # noqa: PLR0911 - a decision table reads best as early returns
    state: SealedSecretState | None,
    fingerprint: str,
    *,
    unsealed_after_apply: bool = False,
    secret_fingerprint: str | None = None,
) -> tuple[UnsealPhase, str]:
    """PURE. Has the controller unsealed the SealedSecret that carries ``fingerprint``?

    The status is trusted only when ``observedGeneration == generation`` (FACTS 3), and only
    once our spec (our fingerprint) is there. It can lie or be missing (sealed-secrets
    pkg/controller/controller.go ``updateSealedSecretStatus``): v0.24.2 never writes
    ``observedGeneration`` while the condition stays True; <= v0.24.1 keeps a generation's first
    result, so a failed attempt stays ``Synced=False`` after its retry succeeded; a conflicting
    status write is never retried; ``--update-status=false`` writes none. Then the effect
    decides: ``secret_fingerprint`` (the unsealed Secret's key-fingerprint annotation, which
    the controller copies from the template with the value: sealed-secrets
    pkg/apis/sealedsecrets/v1alpha1/sealedsecret_expansion.go ``Unseal``; "" when absent; None
    when the Secret could not be read) equal to ours proves the unseal, and another one
    disproves it whatever the Events say. Only an unreadable Secret leaves the proof to
    ``unsealed_after_apply`` (the controller's ``Unsealed`` Event newer than the apply of our
    spec). A ``Synced=False`` fails fast only for a decryption failure: the controller
    retries anything else (up to ``--max-unseal-retries``, 5).
    """
    if state is None:
        return "waiting", "the SealedSecret does not exist yet"
    name = f"sealedsecret {state.namespace}/{state.name}"
    if state.template_fingerprint != fingerprint:
        return "waiting", (
            f"{name} carries key {state.template_fingerprint or 'unknown'}, not {fingerprint}"
        )
    if state.is_observed and state.synced is True:
        return "done", f"{name} unsealed with key {fingerprint}"
    if state.is_observed and state.synced is False and is_decryption_failure(state.message):
        return "failed", f"{name} could not be unsealed: {state.message}"
    if secret_fingerprint == fingerprint:
        return "done", (
            f"{name} unsealed with key {fingerprint} (its Secret's key-fingerprint annotation; "
            f"its status {_status_problem(state)})"
        )
    if secret_fingerprint is not None:
        return "waiting", (
            f"{name}: its Secret still carries key {secret_fingerprint or 'unknown'}, not "
            f"{fingerprint} (the status {_status_problem(state)})"
        )
    if unsealed_after_apply:
        return "done", (
            f"{name} unsealed with key {fingerprint} (the controller's Unsealed event; its "
            f"status {_status_problem(state)})"
        )
    if state.is_observed and state.synced is False:
        return "waiting", (
            f"{name}: an unseal attempt failed ({state.message or 'no message'}); the "
            "controller retries it"
        )
    if not state.is_observed:
        return "waiting", (
            f"{name}: the controller has not observed generation {state.generation} yet "
            f"(observedGeneration {state.observed_generation}); waiting for its status or an "
            "Unsealed event"
        )
    return "waiting", f"{name}: no Synced condition yet"


def _status_problem(state: SealedSecretState) -> str:
    if state.observed_generation is None and state.synced is None:
        return "is missing"
    if not state.is_observed:
        return f"is stale: observedGeneration {state.observed_generation}, not {state.generation}"
    if state.synced is None:
        return "has no Synced condition"
    return f"still shows a failed attempt: {state.message or 'no message'}"


class UnsealedEvent(NamedTuple):
    """One ``Unsealed`` Event as seen at one moment: client-go's recorder (tools/record/
    events_cache.go ``eventObserve``) turns a repeat of an event into the same Event with
    ``count`` + 1, so (name, count) tells a new unseal from an old one within one second."""

    name: str
    repeats: int  # the Event's count
    at: str  # RFC 3339, whole seconds for core v1 Events


def unsealed_events(
    events: Sequence[Mapping[str, Any]], state: SealedSecretState | None = None
) -> frozenset[UnsealedEvent]:
    """PURE. The ``Unsealed`` Events about a SealedSecret (with ``state``: about that object,
    by uid, so a recreated object's old Events do not count). Core v1 Events carry whole
    seconds (``lastTimestamp``; ``eventTime``/``series`` only from the events.k8s.io recorder)."""
    found = set()
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("reason") != UNSEALED_REASON or involved.get("kind") != "SealedSecret":
            continue
        if state and state.uid and involved.get("uid") and involved.get("uid") != state.uid:
            continue
        moment = parse_time(
            dig(event, "series", "lastObservedTime")
            or event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
        )
        if moment is None:
            continue
        count = dig(event, "series", "count") or event.get("count") or 1
        name = as_str(dig(event, "metadata", "name"))
        found.add(UnsealedEvent(name, int(count) if isinstance(count, int) else 1, rfc3339(moment)))
    return frozenset(found)


def unsealed_event_at(
    events: Sequence[Mapping[str, Any]],
    state: SealedSecretState,
    *,
    seen: frozenset[UnsealedEvent] = frozenset(),
) -> datetime | None:
    """PURE. The newest ``Unsealed`` Event time about this SealedSecret, leaving out the
    Events in ``seen`` (as they stood before our apply: the old key's unseal)."""
    known = {(e.name, e.repeats) for e in seen}
    times = [
        parse_time(e.at) for e in unsealed_events(events, state) if (e.name, e.repeats) not in known
    ]
    return max((t for t in times if t is not None), default=None)


# --- error translation (the one boundary) ---------------------------------------------------


def _status_message(body: object) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the (truncated) body itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body.strip():
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return truncate(body.strip(), MESSAGE_LIMIT)
    if isinstance(parsed, Mapping) and isinstance(parsed.get("message"), str):
        return truncate(parsed["message"], MESSAGE_LIMIT)
    return truncate(body.strip(), MESSAGE_LIMIT)


def translate_error(  # noqa: PLR0911 - one return per exception family
    exc: BaseException, what: str, *, error: type[ClientError] = KubeError
) -> ClientError:
    """Map any library exception to ``error`` (not raised; the caller raises it ``from`` exc).

    retryable: 5xx, 429, connection errors and timeouts. Not: other 4xx, TLS, bad input.
    """
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        if status == 0:  # the client's own failures: TLS errors, unpreparable requests
            reason = truncate(str(exc.reason or type(exc).__name__).splitlines()[0], MESSAGE_LIMIT)
            return error(f"{what}: {reason}", retryable=False)
        detail = _status_message(exc.body) or str(exc.reason or "")
        return error(
            f"{what}: HTTP {status}" + (f": {detail}" if detail else ""),
            retryable=status >= 500 or status == 429,
            status=status,
        )
    if isinstance(exc, urllib3.exceptions.SSLError):
        return error(f"{what}: TLS error ({type(exc).__name__})", retryable=False)
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return error(f"{what}: timed out ({type(exc).__name__})", retryable=True)
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
        return error(f"{what}: connection failed ({type(exc).__name__})", retryable=True)
    if isinstance(exc, OSError):
        return error(f"{what}: {type(exc).__name__}: {exc.strerror or exc}", retryable=True)
    if isinstance(exc, OpenApiException | ValueError | TypeError | KeyError):
        return error(f"{what}: bad request or response ({type(exc).__name__})", retryable=False)
    return error(f"{what}: unexpected {type(exc).__name__}", retryable=False)


# --- the client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WaitOutcome:
    """What a wait's ``check`` says about one observation: done (with the value to return) or
    not yet (with the reason, logged when it changes). Failing fast is raising."""

    done: bool = False
    value: Any = None
    reason: str = ""
    # Not done, and the watched object will not change to say so (e.g. a stale status that
    # only an Event can overrule): poll after ``poll_interval_s`` instead of watching.
    poll: bool = False


@dataclass
class WatchTarget:
    """How to watch one object: a generated list function (accepting ``watch=True`` and a
    field selector), its leading positional arguments, and the object's name."""

    list_func: Callable[..., Any]
    args: tuple[Any, ...]
    name: str

    @property
    def key(self) -> str:
        """What a forbidden watch is remembered by: the kind of object and its namespace."""
        return f"{getattr(self.list_func, '__name__', 'list')}{self.args}"


class _Progress:
    """The last reason a wait gave, logged once each time it changes; the heartbeat
    (``rotator.progress``) repeats it at a steady interval while the wait lasts."""

    def __init__(self, step: str, heartbeat: WaitProgress) -> None:
        self.step = step
        self.reason = ""
        self.error = ""
        self.heartbeat = heartbeat

    def last(self) -> str:
        return self.reason + (f"; the last read failed: {self.error}" if self.error else "")

    def note(self, outcome: WaitOutcome) -> None:
        if outcome.reason:
            self.reason = outcome.reason
        self.heartbeat.observe(self.last())


class Kube:
    """Typed access to the few Kubernetes objects the rotation touches."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        timeouts: Timeouts,
        waits: Waits,
        clock: Clock | None = None,
    ) -> None:
        self.api_client = api_client
        self._client: Any = api_client  # the stubs lack param_serialize, rest_client, close
        self.timeouts = timeouts
        self.waits = waits
        self.clock: Clock = clock or SystemClock()
        self._watch_forbidden: set[str] = set()
        # Secrets whose metadata this run cannot read (403, 406): asked once, logged once.
        self._secret_unreadable: set[tuple[str, str]] = set()
        self._secret_missing_logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- the generated APIs, built on first use (CoreV1Api alone takes ~2 s to build) ------
    # Typed as Any: the installed stubs describe an older generated client.

    @functools.cached_property
    def _core(self) -> Any:
        return k8s.CoreV1Api(self.api_client)

    @functools.cached_property
    def custom_objects(self) -> Any:
        """``CustomObjectsApi`` (shared with ``clients.argocd``)."""
        return k8s.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def _coordination(self) -> Any:
        return k8s.CoordinationV1Api(self.api_client)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> Kube:
        """kubeconfig path/context from ``config.kubernetes``, else in-cluster (the CronJob's
        ServiceAccount), else ``~/.kube/config``. ``ConfigError`` naming the fix if none."""
        kube = config.kubernetes
        configuration = k8s.Configuration()
        try:
            if kube.kubeconfig is not None or kube.context is not None:
                _load_kubeconfig(configuration, kube.kubeconfig, kube.context)
            else:
                try:
                    k8s_config.load_incluster_config(client_configuration=configuration)
                except ConfigException:
                    _load_kubeconfig(configuration, None, None)
        except (ConfigException, OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                "no usable Kubernetes credentials: set kubernetes.kubeconfig (and "
                "kubernetes.context) in the config, run in a pod with a ServiceAccount, or "
                f"create ~/.kube/config ({type(exc).__name__}: {truncate(str(exc), 200)})"
            ) from exc
        # Retries live in our one boundary (idempotent calls only), not in urllib3.
        configuration.retries = False
        return cls(
            k8s.ApiClient(configuration),
            timeouts=config.timeouts,
            waits=config.waits,
            clock=clock,
        )

    def close(self) -> None:
        self._client.close()

    # -- the one request boundary --------------------------------------------------------

    @property
    def request_timeout(self) -> tuple[float, float]:
        return (self.timeouts.connect_s, self.timeouts.read_s)

    def request(
        self,
        what: str,
        call: Callable[[], T],
        *,
        idempotent: bool,
        error: type[ClientError] = KubeError,
    ) -> T:
        """Run ``call`` at the boundary: translate every exception to ``error`` (from it) and
        retry idempotent calls on transients, bounded by ``timeouts.attempts``."""
        attempts = self.timeouts.attempts if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except ClientError as exc:
                # Ours already (e.g. a 5xx the service proxy answered, raised by ``call``):
                # unchanged, and retried like any other transient of an idempotent call; a 429
                # after its Retry-After.
                if not exc.retryable or attempt >= attempts:
                    raise
                wait = exc.retry_after_s if isinstance(exc, RateLimited) else None
                sleep_before_retry(
                    what, attempt, attempts, exc, retry=_RETRY, clock=self.clock, wait=wait
                )
            except RotatorError:
                raise
            except Exception as exc:
                translated = translate_error(exc, what, error=error)
                if not translated.retryable or attempt >= attempts:
                    raise translated from exc
                sleep_before_retry(
                    what, attempt, attempts, translated, retry=_RETRY, clock=self.clock
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def read_json(
        self, what: str, call: Callable[[], Any], *, error: type[ClientError] = KubeError
    ) -> Json | None:
        """An idempotent GET returning the parsed body, or None on 404."""

        def run() -> Json | None:
            try:
                response = call()
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return json_body(response)

        return self.request(what, run, idempotent=True, error=error)

    def raw(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
    ) -> urllib3.BaseHTTPResponse:
        """One HTTP call through the official client's auth and TLS, with a raw body; any
        status is returned (the caller decides). Not retried, not translated: call inside
        ``request``."""
        headers: dict[str, str] = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        _method, url, headers_out, _body, _post = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        timeout = urllib3.Timeout(connect=self.timeouts.connect_s, read=self.timeouts.read_s)
        pool: Any = self._client.rest_client.pool_manager
        response: urllib3.BaseHTTPResponse = pool.request(
            method, url, body=body, headers=headers_out, timeout=timeout, preload_content=True
        )
        return response

    # -- service proxy (sealing's ServiceProxy protocol) --------------------------------

    def _proxy_path(self, namespace: str, service: str, port_name: str, path: str) -> str:
        segments = "/".join(quote(part, safe="") for part in path.lstrip("/").split("/"))
        name = quote(proxy_name(service, port_name), safe=":")
        return f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{name}/proxy/{segments}"

    def get(self, namespace: str, service: str, port_name: str, path: str) -> bytes:
        """GET through the API server's service proxy; the raw body (e.g. a PEM).

        RBAC: ("", services/proxy, get) on ``http:<service>:<port>`` in ``namespace``.
        """
        what = f"GET {path} from service {namespace}/{service}:{port_name}"
        api_path = self._proxy_path(namespace, service, port_name, path)

        def run() -> bytes:
            response = self.raw("GET", api_path, accept="*/*")
            if response.status >= 300:
                raise _proxy_error(what, response)
            return bytes(response.data)

        return self.request(what, run, idempotent=True)

    def post(
        self,
        namespace: str,
        service: str,
        port_name: str,
        path: str,
        body: bytes,
        *,
        idempotent: bool = False,
    ) -> tuple[int, bytes]:
        """POST a JSON body through the service proxy; (status, raw body) for the backend's
        answers (e.g. /v1/verify: 200 valid, 409 not). The API server's own refusals (401,
        403, 404 no such service), 5xx (incl. 503 no endpoints) and 429 raise ``KubeError``.
        Sent once unless ``idempotent`` (a POST that only reads, like /v1/verify): then
        retried on 5xx and 429 like every read.

        RBAC: ("", services/proxy, create) on ``http:<service>:<port>`` in ``namespace``.
        """
        what = f"POST {path} to service {namespace}/{service}:{port_name}"
        api_path = self._proxy_path(namespace, service, port_name, path)

        def run() -> tuple[int, bytes]:
            response = self.raw("POST", api_path, body=body, accept="*/*")
            if response.status >= 500 or response.status in (401, 403, 404, 407, 429):
                raise _proxy_error(what, response)
            return response.status, bytes(response.data)

        return self.request(what, run, idempotent=idempotent)

    # -- SealedSecrets ------------------------------------------------------------------

    def _get_sealed_json(self, namespace: str, name: str) -> Json | None:
        return self.read_json(
            f"read sealedsecret {namespace}/{name}",
            lambda: self.custom_objects.get_namespaced_custom_object(
                SEALED_GROUP,
                SEALED_VERSION,
                namespace,
                SEALED_PLURAL,
                name,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            ),
        )

    def get_sealed_secret(self, namespace: str, name: str) -> SealedSecretState | None:
        """RBAC: (bitnami.com, sealedsecrets, get)."""
        obj = self._get_sealed_json(namespace, name)
        return None if obj is None else sealed_secret_from(obj)

    def wait_for_unseal(
        self,
        namespace: str,
        name: str,
        *,
        fingerprint: str,
        deadline_s: float,
        applied_after: datetime | None = None,
        events_seen: frozenset[UnsealedEvent] = frozenset(),
    ) -> SealedSecretState:
        """Until the SealedSecret carries ``fingerprint`` in its template and the controller
        has unsealed that spec: ``Synced=True`` for the observed generation, or, where the
        status lies or is missing (``unseal_status``), an ``Unsealed`` Event newer than the
        apply. The apply happened after ``applied_after`` (the push of our commit) and after
        any read of this wait that still showed another key; ``events_seen`` are the Unsealed
        Events read before the push (``unsealed_events_seen``), which prove nothing even in the
        push's second (Event times are whole seconds). ``Synced=False`` for our spec with
        a decryption failure -> KubeError with the controller's message (fail fast); any other
        failure waits for the controller's retries; the deadline -> WaitTimeout("unseal").

        Where the status is stale or missing, the Secret's metadata (``secret_fingerprint``,
        never its data) decides first: the controller copies the template's annotations onto
        it with the value, so our key-fingerprint annotation there is the unseal itself, and
        another one means not yet, whatever the Events say. A Secret that is missing or cannot
        be read leaves the Unsealed Event as the proof.
        RBAC: (bitnami.com, sealedsecrets, get, list, watch); (, events, list); (, secrets,
        get) on the Secret's name.
        """
        since = [applied_after]

        def check(obj: Json | None) -> WaitOutcome:
            state = None if obj is None else sealed_secret_from(obj)
            if state is not None and state.template_fingerprint != fingerprint:
                since[0] = self.clock.now()  # the apply of our spec is still to come
            phase, reason = unseal_status(state, fingerprint)
            ours = state is not None and state.template_fingerprint == fingerprint
            if phase == "waiting" and ours and state is not None:
                # The status is stale or missing: the Secret (the effect) decides, and the
                # Unsealed Event only where the Secret cannot be read.
                secret = self.secret_fingerprint(namespace, name)
                if secret is None and since[0] is None:
                    return WaitOutcome(reason=reason)  # nothing else to go by: the status
                event = (
                    secret is None
                    and since[0] is not None
                    and self._unsealed_after(state, since[0], events_seen)
                )
                phase, reason = unseal_status(
                    state, fingerprint, unsealed_after_apply=event, secret_fingerprint=secret
                )
                if phase == "waiting":
                    # The SealedSecret may not change again (no status write): poll the
                    # Secret and the Events rather than wait on a watch that will not fire.
                    return WaitOutcome(reason=reason, poll=True)
            if phase == "failed":
                events = self.recent_events(namespace, name)
                extra = f" (events: {'; '.join(events)})" if events else ""
                raise KubeError(
                    f"{reason}{extra}; check the sealing certificate and scope, then re-run"
                )
            return WaitOutcome(done=phase == "done", value=state, reason=reason)

        state: SealedSecretState = self.wait(
            step="unseal",
            what=f"sealedsecret {namespace}/{name} to unseal key {fingerprint}",
            get=lambda: self._get_sealed_json(namespace, name),
            watch=WatchTarget(
                self.custom_objects.list_namespaced_custom_object,
                (SEALED_GROUP, SEALED_VERSION, namespace, SEALED_PLURAL),
                name,
            ),
            check=check,
            deadline_s=deadline_s,
        )
        return state

    def get_secret_metadata(self, namespace: str, name: str) -> SecretMetadata | None:
        """The Secret's metadata, or None when it does not exist (404). Asks the API server for
        a metadata-only answer (``METADATA_ONLY``), so the Secret's data is never sent; an
        answer that is not metadata-only is refused (KubeError, the body dropped unread).
        403 (no RBAC for it), 406 (a server that cannot convert) -> KubeError with the status.
        RBAC: ("", secrets, get) on ``name``."""
        what = f"read the metadata of secret {namespace}/{name}"
        obj = self.read_json(
            what,
            lambda: self._core.read_namespaced_secret(
                name,
                namespace,
                _headers={"Accept": METADATA_ONLY},
                _preload_content=False,
                _request_timeout=self.request_timeout,
            ),
        )
        if obj is None:
            return None
        metadata = secret_metadata_from(obj)
        if metadata is None:
            raise KubeError(
                f"{what}: the API server answered kind {as_str(obj.get('kind')) or 'unknown'}, "
                f"not {PARTIAL_OBJECT_METADATA}; not used",
                retryable=False,
            )
        return metadata

    def secret_fingerprint(self, namespace: str, name: str) -> str | None:
        """The unsealed Secret's key-fingerprint annotation ("" when absent), or None when the
        Secret cannot tell: missing (404, logged once) or unreadable (403 without the RBAC
        rule, 406, any other failure: logged once with the fix, and not asked again in this
        run). Never raises: the Unsealed Event is the fallback."""
        key = (namespace, name)
        with self._lock:
            if key in self._secret_unreadable:
                return None
        try:
            metadata = self.get_secret_metadata(namespace, name)
        except KubeError as exc:
            if exc.retryable:  # already retried: try again at the next poll
                log.warning("unseal: %s; the Unsealed event decides meanwhile", exc)
                return None
            with self._lock:
                self._secret_unreadable.add(key)
            fix = (
                f"add the rule get on secrets, resourceNames [{name}], to rotator's Role in "
                f"namespace {namespace} (cronjob.yaml, or the Helm chart's rbac.yaml)"
                if exc.status == 403
                else "check the API server (it must answer as=PartialObjectMetadata)"
            )
            log.warning(
                "unseal: cannot read the key-fingerprint annotation of secret %s/%s (%s): %s; "
                "until then a stale status is judged by the controller's Unsealed event alone",
                namespace,
                name,
                exc,
                fix,
            )
            return None
        if metadata is None:
            with self._lock:
                first = key not in self._secret_missing_logged
                self._secret_missing_logged.add(key)
            if first:
                log.info(
                    "unseal: secret %s/%s does not exist (yet); the controller creates it on "
                    "unsealing; meanwhile a stale status is judged by its Unsealed event",
                    namespace,
                    name,
                )
            return None
        return metadata.fingerprint

    def _unsealed_after(
        self, state: SealedSecretState, since: datetime, seen: frozenset[UnsealedEvent]
    ) -> bool:
        """An ``Unsealed`` Event about this SealedSecret at or after ``since`` (to the whole
        second: core v1 Event times have no fraction) that is not one of ``seen``."""
        events = self._events_about(state.namespace, state.name)
        newest = unsealed_event_at(events, state, seen=seen)
        return newest is not None and newest >= since.replace(microsecond=0)

    def unsealed_events_seen(self, namespace: str, name: str) -> frozenset[UnsealedEvent]:
        """The SealedSecret's ``Unsealed`` Events now (best effort: empty when they cannot be
        listed): read before the push, so the unseal wait tells them from a new unseal.
        RBAC: ("", events, list)."""
        return unsealed_events(self._events_about(namespace, name))

    # -- Deployments --------------------------------------------------------------------

    def _get_deployment_json(self, namespace: str, name: str) -> Json | None:
        return self.read_json(
            f"read deployment {namespace}/{name}",
            lambda: self.custom_objects.get_namespaced_custom_object(
                *DEPLOYMENTS,
                namespace,
                "deployments",
                name,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            ),
        )

    def get_deployment(self, namespace: str, name: str) -> DeploymentState | None:
        """RBAC: (apps, deployments, get)."""
        obj = self._get_deployment_json(namespace, name)
        return None if obj is None else deployment_from(obj)

    def restart_deployment(
        self,
        namespace: str,
        name: str,
        *,
        at: datetime,
        annotations: Mapping[str, str] | None = None,
    ) -> DeploymentState:
        """``kubectl rollout restart``: strategic-merge patch of the pod template annotation
        ``kubectl.kubernetes.io/restartedAt`` = RFC3339 ``at`` (plus ``annotations``, e.g. the
        key fingerprint the restart is for, in the same patch). Refuses a paused Deployment.
        The patch sets fixed values, so repeating it is harmless (and retried on transients).
        RBAC: (apps, deployments, get, patch).
        """
        current = self.get_deployment(namespace, name)
        if current is None:
            raise KubeError(f"deployment {namespace}/{name} not found", status=404)
        if current.paused:
            raise KubeError(
                f"deployment {namespace}/{name} is paused and would not restart; resume it "
                f"with `kubectl rollout resume deployment/{name} -n {namespace}` and re-run"
            )
        wanted = {**(annotations or {}), RESTARTED_AT_ANNOTATION: rfc3339(at)}
        patch = {"spec": {"template": {"metadata": {"annotations": wanted}}}}
        obj = self.request(
            f"restart deployment {namespace}/{name}",
            lambda: json_body(
                self.custom_objects.patch_namespaced_custom_object(
                    *DEPLOYMENTS,
                    namespace,
                    "deployments",
                    name,
                    patch,
                    _content_type="application/strategic-merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            ),
            idempotent=True,
        )
        return deployment_from(obj)

    def is_rolled_out(self, state: DeploymentState) -> tuple[bool, str]:
        """PURE predicate + reason (``kubectl rollout status``), for preflight."""
        phase, reason = rollout_status(state)
        return phase == "done", reason

    def wait_for_rollout(
        self, namespace: str, name: str, *, min_generation: int, deadline_s: float
    ) -> RolloutDone:
        """Like ``kubectl rollout status`` (FACTS 5) for generation >= ``min_generation``.
        ProgressDeadlineExceeded (or paused) -> KubeError at once; deadline -> WaitTimeout.
        RBAC: (apps, deployments, get, list, watch).
        """

        def check(obj: Json | None) -> WaitOutcome:
            if obj is None:
                raise KubeError(f"deployment {namespace}/{name} not found", status=404)
            state = deployment_from(obj)
            phase, reason = rollout_status(state, min_generation=min_generation)
            if phase == "failed":
                events = self.recent_events(namespace, name)
                extra = f" (events: {'; '.join(events)})" if events else ""
                raise KubeError(f"{reason}{extra}")
            if phase == "done":
                return WaitOutcome(True, RolloutDone(finished_at=self.clock.now(), state=state))
            return WaitOutcome(reason=reason)

        done: RolloutDone = self.wait(
            step="rollout",
            what=f"deployment {namespace}/{name} to roll out",
            get=lambda: self._get_deployment_json(namespace, name),
            watch=WatchTarget(
                self.custom_objects.list_namespaced_custom_object,
                (*DEPLOYMENTS, namespace, "deployments"),
                name,
            ),
            check=check,
            deadline_s=deadline_s,
        )
        return done

    # -- Events -------------------------------------------------------------------------

    def record_event(self, event: EventSpec, *, instance: str) -> bool:
        """Write one core/v1 Event about ``event.regarding``; False when the object is gone.

        The object's uid is read first when the spec has none: ``kubectl describe`` finds an
        object's Events by ``involvedObject.uid`` (kubectl ``describe.go``: it searches with
        the object's full reference). The name is ``<object>.<hex nanoseconds>``, as
        client-go's recorder makes it (``tools/record/event.go`` makeEvent), so a repeated
        write of the same Event meets 409 AlreadyExists, which counts as written.
        RBAC: ("", events, create); the uid read uses the object's existing ``get``.
        """
        ref = event.regarding
        uid = ref.uid or self._object_uid(ref.kind, ref.namespace, ref.name)
        if uid is None:
            log.debug("no %s %s/%s: its Event is not written", ref.kind, ref.namespace, ref.name)
            return False
        now = self.clock.now().astimezone(UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{ref.name}.{int(now.timestamp() * 1e9):x}",
                "namespace": ref.namespace,
            },
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace,
                "name": ref.name,
                "uid": uid,
            },
            "type": event.type,
            "reason": event.reason,
            "action": event.action,
            "message": event.note,
            # core/v1 names reportingController "reportingComponent" (k8s.io/api core/v1
            # types.go); with eventTime set, both reporting fields and action are required
            # (pkg/apis/core/validation/events.go legacyValidateEvent).
            "reportingComponent": REPORTING_CONTROLLER,
            "reportingInstance": instance[:128],
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            # kubectl get events sorts and ages by these; core/v1 allows them with eventTime.
            "firstTimestamp": rfc3339(now),
            "lastTimestamp": rfc3339(now),
            "count": 1,
            "source": {"component": COMPONENT},
        }

        def create() -> None:
            try:
                self._core.create_namespaced_event(
                    ref.namespace,
                    body,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise

        self.request(f"record event {event.reason} on {ref.kind} {ref.namespace}/{ref.name}",
                     create, idempotent=True)  # fmt: skip
        return True

    def _object_uid(self, kind: str, namespace: str, name: str) -> str | None:
        if kind == "SealedSecret":
            obj = self._get_sealed_json(namespace, name)
        elif kind == "Deployment":
            obj = self._get_deployment_json(namespace, name)
        else:
            raise ValueError(f"no uid lookup for {kind}: give the reference its uid")
        uid = ((obj or {}).get("metadata") or {}).get("uid")
        return str(uid) if uid else None

    def _events_about(self, namespace: str, involved_name: str) -> list[Json]:
        """The Events about an object (best effort: a failure gives an empty list).
        RBAC: ("", events, list)."""
        try:
            obj = self.read_json(
                f"list events for {namespace}/{involved_name}",
                lambda: self._core.list_namespaced_event(
                    namespace,
                    field_selector=f"involvedObject.name={involved_name}",
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                ),
            )
        except KubeError as exc:
            log.debug("no events for %s/%s: %s", namespace, involved_name, exc)
            return []
        return [i for i in (obj or {}).get("items") or [] if isinstance(i, dict)]

    def recent_events(self, namespace: str, involved_name: str, *, limit: int = 3) -> list[str]:
        """The newest few events about an object, as ``Reason: message`` (best effort: any
        failure gives an empty list, the caller is already reporting an error).
        RBAC: ("", events, list)."""
        items = self._events_about(namespace, involved_name)

        def when(item: Mapping[str, Any]) -> str:
            return as_str(
                item.get("lastTimestamp") or item.get("eventTime") or item.get("firstTimestamp")
            )

        items.sort(key=when)
        return [
            truncate(f"{as_str(i.get('reason'))}: {as_str(i.get('message'))}", 200)
            for i in items[-limit:]
        ]

    # -- Lease (the run lock) -----------------------------------------------------------

    def _lease_path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"
        return base if name is None else f"{base}/{quote(name, safe='')}"

    def get_lease(self, namespace: str, name: str) -> LeaseState | None:
        """RBAC: (coordination.k8s.io, leases, get)."""
        obj = self.read_json(
            f"read lease {namespace}/{name}",
            lambda: self._coordination.read_namespaced_lease(
                name,
                namespace,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            ),
        )
        return None if obj is None else lease_from(obj)

    def _write_lease(self, method: str, namespace: str, name: str, body: Json, what: str) -> Json:
        path = self._lease_path(namespace, None if method == "POST" else name)
        data = json.dumps(body).encode()

        def run() -> Json:
            response = self.raw(method, path, body=data)
            if response.status >= 300:
                raise _response_error(what, response)
            return json_body(response)

        return self.request(what, run, idempotent=False)

    def _lease_body(
        self,
        namespace: str,
        name: str,
        *,
        holder: str,
        duration_s: int,
        acquired: datetime,
        renewed: datetime,
        transitions: int,
        resource_version: str | None,
    ) -> Json:
        metadata: Json = {"name": name, "namespace": namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version  # optimistic concurrency on PUT
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration_s,
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(renewed),
                "leaseTransitions": transitions,
            },
        }

    def acquire_lease(
        self, namespace: str, name: str, *, holder: str, duration_s: int
    ) -> LeaseState:
        """Take the run lock like client-go's leader election (tools/leaderelection/
        leaderelection.go ``tryAcquireOrRenew``): create the Lease, renew our own, take a
        released one, or take over another holder's only after observing its record unchanged
        for the lease duration on our own monotonic clock, with a resourceVersion-guarded
        replace (leaseTransitions + 1). The holder's renewTime is never compared with our wall
        clock to take over (a clock an hour ahead would take a live Lease); it only makes a
        Lease that looks live by our clock refused at once, so a locked run exits without
        waiting. A record that changes while we watch (renewed, taken) -> ``LockHeld``.
        A create that gets 409 (someone was faster) re-reads.
        RBAC: (coordination.k8s.io, leases, get, create, update).
        """
        with waiting(
            "lock",
            f"the Lease {namespace}/{name}",
            clock=self.clock,
            interval_s=self.waits.heartbeat_s,
        ) as progress:
            return self._acquire_lease(
                namespace, name, holder=holder, duration_s=duration_s, progress=progress
            )

    def _acquire_lease(
        self,
        namespace: str,
        name: str,
        *,
        holder: str,
        duration_s: int,
        progress: WaitProgress,
    ) -> LeaseState:
        observed: LeaseRecord | None = None
        observed_at = 0.0
        conflicts = 0
        while conflicts < 5:
            current = self.get_lease(namespace, name)
            if current is None:
                try:
                    return self._create_lease(namespace, name, holder, duration_s)
                except KubeError as exc:
                    if not is_conflict_or_lost(exc):
                        raise
                    conflicts += 1  # someone else created it, or our answer was lost: re-read
                    continue
            if current.holder and current.holder != holder:
                if observed is not None and current.record != observed:
                    raise _lock_held(current)  # renewed or taken while we watched: alive
                if observed is None:
                    if not current.is_expired(self.clock.now()):
                        raise _lock_held(current)
                    observed, observed_at = current.record, self.clock.monotonic()
                    wait_s = max(current.duration_s, duration_s)
                    log.info(
                        "lock %s/%s: the lease of %s looks expired; taking it over once its "
                        "record has stayed unchanged for %ss (client-go leader election)",
                        namespace,
                        name,
                        current.holder,
                        wait_s,
                    )
                remaining = max(current.duration_s, duration_s) - (
                    self.clock.monotonic() - observed_at
                )
                if remaining > 0:
                    progress.observe(
                        f"the lease of {current.holder} looks expired; taking it over once "
                        f"unchanged for {max(current.duration_s, duration_s)}s"
                    )
                    self.clock.sleep(min(self.waits.poll_interval_s, remaining))
                    continue
            try:
                return self._take_lease(current, holder, duration_s)
            except KubeError as exc:
                if not is_conflict_or_lost(exc):
                    raise
                conflicts += 1  # changed under us (or our answer was lost): read again, decide
        raise KubeError(f"lease {namespace}/{name}: kept changing while acquiring; try again")

    def _create_lease(self, namespace: str, name: str, holder: str, duration_s: int) -> LeaseState:
        now = self.clock.now()
        body = self._lease_body(
            namespace,
            name,
            holder=holder,
            duration_s=duration_s,
            acquired=now,
            renewed=now,
            transitions=0,
            resource_version=None,
        )
        obj = self._write_lease("POST", namespace, name, body, f"create lease {namespace}/{name}")
        log.info("lock %s/%s acquired by %s", namespace, name, holder)
        return lease_from(obj)

    def _take_lease(self, current: LeaseState, holder: str, duration_s: int) -> LeaseState:
        """Renew our own Lease or take another's (resourceVersion-guarded replace)."""
        namespace, name = current.namespace, current.name
        now = self.clock.now()
        taking_over = current.holder != holder
        body = self._lease_body(
            namespace,
            name,
            holder=holder,
            duration_s=duration_s,
            acquired=now if taking_over else (current.acquired_at or now),
            renewed=now,
            transitions=current.transitions + (1 if taking_over else 0),
            resource_version=current.resource_version,
        )
        obj = self._write_lease("PUT", namespace, name, body, f"take over lease {namespace}/{name}")
        if taking_over and current.holder:
            log.warning(
                "lock %s/%s: took over the expired lease of %s", namespace, name, current.holder
            )
        return lease_from(obj)

    def renew_lease(self, namespace: str, name: str, *, holder: str) -> LeaseState:
        """Move renewTime to now, resourceVersion-guarded. Lost lease -> KubeError.
        RBAC: (coordination.k8s.io, leases, get, update)."""
        for _attempt in range(3):
            current = self.get_lease(namespace, name)
            if current is None or current.holder != holder:
                who = "nobody" if current is None or not current.holder else current.holder
                raise KubeError(f"lost the lock {namespace}/{name}: now held by {who}")
            body = self._lease_body(
                namespace,
                name,
                holder=holder,
                duration_s=current.duration_s,
                acquired=current.acquired_at or self.clock.now(),
                renewed=self.clock.now(),
                transitions=current.transitions,
                resource_version=current.resource_version,
            )
            try:
                obj = self._write_lease(
                    "PUT", namespace, name, body, f"renew lease {namespace}/{name}"
                )
            except KubeError as exc:
                if is_conflict_or_lost(exc):
                    continue
                raise
            return lease_from(obj)
        raise KubeError(f"lost the lock {namespace}/{name}: it kept changing under us")

    def release_lease(self, namespace: str, name: str, *, holder: str) -> None:
        """Give the lock up if we still hold it: empty holderIdentity (like client-go's
        leaderelection release), so no ``delete`` right is needed.
        RBAC: (coordination.k8s.io, leases, get, update)."""
        current = self.get_lease(namespace, name)
        if current is None or current.holder != holder:
            # Someone took the Lease over while we held it (it expired, or was edited): an
            # anomaly the report must show, not a routine line.
            who = "nobody" if current is None or not current.holder else current.holder
            log.warning(
                "lock %s/%s: not ours any more (now held by %s); nothing to release",
                namespace,
                name,
                who,
            )
            return
        now = self.clock.now()
        body = self._lease_body(
            namespace,
            name,
            holder="",
            duration_s=max(current.duration_s, 1),
            acquired=current.acquired_at or now,
            renewed=now,
            transitions=current.transitions,
            resource_version=current.resource_version,
        )
        body["spec"].pop("holderIdentity")
        try:
            self._write_lease("PUT", namespace, name, body, f"release lease {namespace}/{name}")
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Someone wrote the Lease between our read and our release: an anomaly to report.
            log.warning("lock %s/%s changed while releasing; left as it is", namespace, name)
        else:
            log.info("lock %s/%s released by %s", namespace, name, holder)

    # -- the generic wait ----------------------------------------------------------------

    def wait(
        self,
        *,
        step: str,
        what: str,
        get: Callable[[], Json | None],
        watch: WatchTarget | None,
        check: Callable[[Json | None], WaitOutcome],
        deadline_s: float,
        error: type[ClientError] = KubeError,
    ) -> Any:
        """``_wait_loop`` with its heartbeat (``rotator.progress.waiting``)."""
        with waiting(
            step, what, clock=self.clock, deadline_s=deadline_s, interval_s=self.waits.heartbeat_s
        ) as heartbeat:
            return self._wait_loop(
                step=step,
                what=what,
                get=get,
                watch=watch,
                check=check,
                deadline_s=deadline_s,
                error=error,
                progress=_Progress(step, heartbeat),
            )

    def _wait_loop(
        self,
        *,
        step: str,
        what: str,
        get: Callable[[], Json | None],
        watch: WatchTarget | None,
        check: Callable[[Json | None], WaitOutcome],
        deadline_s: float,
        error: type[ClientError],
        progress: _Progress,
    ) -> Any:
        """GET, test; then watch from that resourceVersion (short ``timeout_seconds``) or poll,
        testing every new version, until ``check`` says done (its value is returned) or raises
        (fail fast), or the deadline passes (``WaitTimeout(step)`` with the last reason).

        The GET comes first because a watch may never fire for an object already in its final
        state; an ended watch -> GET again; 410 Gone -> LIST by name, pause, watch from the list's
        resourceVersion; a forbidden watch -> poll from then on.
        """
        deadline = Deadline(self.clock, deadline_s)
        obj = get()
        watch_from = _resource_version(obj)
        while True:
            outcome = check(obj)
            if outcome.done:
                return outcome.value
            progress.note(outcome)
            if deadline.expired:
                raise WaitTimeout(step, deadline.elapsed, f"{what} (last: {progress.last()})")
            # timeout_seconds is whole seconds: with under one second left, a poll keeps the
            # deadline
            if (
                not outcome.poll
                and watch is not None
                and watch_from
                and deadline.remaining >= 1
                and watch.key not in self._forbidden()
            ):
                end = self._watch_until(watch, watch_from, deadline, check, progress, error=error)
                if end.outcome is not None:
                    return end.outcome.value
                if end.gone:
                    obj, watch_from = self._relist(watch, obj, deadline, progress, error=error)
                    continue
                obj = self._reread(get, obj, deadline, progress)
                # An unchanged object keeps its old resourceVersion: resume from the newest
                # version the watch reported (a BOOKMARK's) instead, like a reflector.
                watch_from = end.resume_from or _resource_version(obj)
            else:
                self.clock.sleep(min(self.waits.poll_interval_s, deadline.remaining))
                obj = self._reread(get, obj, deadline, progress)
                watch_from = _resource_version(obj)

    def _relist(
        self,
        watch: WatchTarget,
        last: Json | None,
        deadline: Deadline,
        progress: _Progress,
        *,
        error: type[ClientError],
    ) -> tuple[Json | None, str]:
        """After 410 Gone: LIST the one object (name field selector) and watch next from the
        list's resourceVersion, after a pause (FACTS 6; client-go tools/cache/reflector.go
        relists on "too old resource version"). Re-watching from an unchanged object's own
        resourceVersion would get 410 again at once, in a loop at full speed."""
        log.info(
            "%s: the watch history has expired (410 Gone); listing %s to watch from the list",
            progress.step,
            watch.name,
        )
        try:
            listed = self.read_json(
                f"list {watch.name}",
                lambda: watch.list_func(
                    *watch.args,
                    field_selector=f"metadata.name={watch.name}",
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                ),
                error=error,
            )
        except ClientError as exc:
            if not exc.retryable:
                raise
            log.warning("%s: listing failed (%s); trying again", progress.step, exc)
            progress.error = str(exc)
            listed = None
        self.clock.sleep(min(self.waits.poll_interval_s, deadline.remaining))
        if listed is None:
            return last, ""  # poll once, then GET and watch from what it returns
        progress.error = ""
        items = [i for i in listed.get("items") or [] if isinstance(i, dict)]
        obj = next((i for i in items if dig(i, "metadata", "name") == watch.name), None)
        return obj, as_str(dig(listed, "metadata", "resourceVersion"))

    def _reread(
        self,
        get: Callable[[], Json | None],
        last: Json | None,
        deadline: Deadline,
        progress: _Progress,
    ) -> Json | None:
        """GET again; a transient failure (already retried by ``request``) does not end a long
        wait: keep the last observation and try again after a poll interval."""
        try:
            obj = get()
        except ClientError as exc:
            if not exc.retryable:
                raise
            log.warning(
                "%s: reading failed (%s); trying again until the deadline", progress.step, exc
            )
            progress.error = str(exc)
            self.clock.sleep(min(self.waits.poll_interval_s, deadline.remaining))
            return last
        progress.error = ""
        return obj

    def _watch_until(
        self,
        watch: WatchTarget,
        resource_version: str,
        deadline: Deadline,
        check: Callable[[Json | None], WaitOutcome],
        progress: _Progress,
        *,
        error: type[ClientError],
    ) -> _WatchEnd:
        """One watch request, checking each new version: the done outcome, or how the watch
        ended (timeout, 410, forbidden, a transient failure) so that the caller reads again."""
        seen = _WatchEnd()
        try:
            for obj in self._watch_events(watch, resource_version, deadline, seen, error=error):
                outcome = check(obj)
                if outcome.done:
                    seen.outcome = outcome
                    return seen
                progress.note(outcome)
                if deadline.expired or outcome.poll:
                    break
        except _WatchGone:
            seen.gone = True
        except ClientError as exc:
            if exc.status in (403, 405):
                log.info("%s: cannot watch (HTTP %s); polling instead", progress.step, exc.status)
                with self._lock:
                    self._watch_forbidden.add(watch.key)
            elif exc.status == 410:  # an API server that answers the watch itself with 410
                seen.gone = True
            elif exc.retryable:
                log.warning("%s: watch failed (%s); reading again", progress.step, exc)
                self.clock.sleep(min(self.waits.poll_interval_s, deadline.remaining))
            else:
                raise
        return seen

    def _forbidden(self) -> set[str]:
        with self._lock:
            return set(self._watch_forbidden)

    def _watch_events(
        self,
        target: WatchTarget,
        resource_version: str,
        deadline: Deadline,
        seen: _WatchEnd,
        *,
        error: type[ClientError],
    ) -> Iterator[Json | None]:
        """One watch request: yields the object after each change (None after DELETED), ends
        when the server closes it (``timeout_seconds``). ERROR 410 -> ``_WatchGone``. The
        newest resourceVersion reported (an event's or a BOOKMARK's) goes to ``seen``."""
        timeout_s = max(1, int(min(self.waits.watch_timeout_s, deadline.remaining)))
        what = f"watch {target.name}"
        response = self.request(
            what,
            lambda: target.list_func(
                *target.args,
                field_selector=f"metadata.name={target.name}",
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_s,
                watch=True,
                _preload_content=False,
                _request_timeout=(self.timeouts.connect_s, timeout_s + self.timeouts.read_s),
            ),
            idempotent=True,
            error=error,
        )
        try:
            lines = _iter_lines(response)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    return
                except Exception as exc:
                    raise translate_error(exc, what, error=error) from exc
                if not line.strip():
                    continue
                kind, obj = _watch_event(line, what, error=error)
                rv = as_str(dig(obj, "metadata", "resourceVersion"))
                if kind == "BOOKMARK" or dig(obj, "metadata", "name") == target.name:
                    seen.resume_from = rv or seen.resume_from
                if dig(obj, "metadata", "name") != target.name:
                    pass  # a BOOKMARK, or a server that ignored the field selector
                elif kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                    yield obj
                elif kind == "DELETED":
                    yield None
                if deadline.expired:
                    return
        finally:
            response.close()
            response.release_conn()


def _watch_event(line: str, what: str, *, error: type[ClientError]) -> tuple[object, Any]:
    """One watch line -> (type, object). ERROR 410 -> ``_WatchGone``; another ERROR raises."""
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise translate_error(exc, what, error=error) from exc
    kind = event.get("type") if isinstance(event, Mapping) else None
    obj = event.get("object") if isinstance(event, Mapping) else None
    if kind == "ERROR":
        code = _int(dig(obj, "code"))
        if code == 410:
            raise _WatchGone
        raise error(
            f"{what}: HTTP {code}: {_status_message(json.dumps(obj))}",
            retryable=code >= 500 or code == 429,
            status=code or None,
        )
    return kind, obj


def _lock_held(lease: LeaseState) -> LockHeld:
    since = lease.acquired_at or lease.renewed_at
    return LockHeld(lease.holder, rfc3339(since) if since else "unknown")


def is_conflict_or_lost(exc: ClientError) -> bool:
    """A guarded write that must be decided again from a fresh read: 409 Conflict (someone else
    wrote first), or a transport failure after which we cannot know whether it was applied."""
    return exc.status == 409 or (exc.status is None and exc.retryable)


class _WatchGone(Exception):
    """The watch's resourceVersion is too old (410): LIST again."""


@dataclass
class _WatchEnd:
    """How one watch request ended: done (``outcome``), 410 Gone, or else with the newest
    resourceVersion it reported (to resume from)."""

    outcome: WaitOutcome | None = None
    gone: bool = False
    resume_from: str = ""


def _resource_version(obj: Json | None) -> str:
    return as_str(dig(obj, "metadata", "resourceVersion"))


def _retry_after_s(response: urllib3.BaseHTTPResponse) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return min(max(float(raw), 0.0), MAX_BACKOFF_S) if raw else None
    except ValueError:
        return None


def _response_error(what: str, response: urllib3.BaseHTTPResponse, hint: str = "") -> KubeError:
    status = response.status
    detail = _status_message(bytes(response.data))
    if status == 429:
        return RateLimited(
            f"{what}: HTTP 429{hint}" + (f": {detail}" if detail else ""),
            retry_after_s=_retry_after_s(response),
        )
    return KubeError(
        f"{what}: HTTP {status}{hint}" + (f": {detail}" if detail else ""),
        retryable=status >= 500 or status == 429,
        status=status,
    )


def _proxy_error(what: str, response: urllib3.BaseHTTPResponse) -> KubeError:
    hint = ""
    if response.status == 403:
        hint = " (the ServiceAccount needs services/proxy get/create on that name)"
    elif response.status in (404, 503):
        hint = " (check the controller's name, namespace and port name in the cert settings)"
    return _response_error(what, response, hint)


def _iter_lines(response: Any) -> Iterator[str]:
    """Newline-delimited watch events from a streamed response (kubernetes.watch's framing)."""
    buffer = bytearray()
    for chunk in response.stream(amt=None, decode_content=False):
        buffer.extend(chunk if isinstance(chunk, bytes) else str(chunk).encode())
        while (end := buffer.find(b"\n")) != -1:
            line = buffer[:end].decode("utf-8", errors="replace")
            del buffer[: end + 1]
            yield line
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace")


def json_body(response: Any) -> Json:
    data = response.data if hasattr(response, "data") else response
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8")
    parsed = json.loads(data)
    if not isinstance(parsed, dict):
        raise TypeError("expected a JSON object")
    return parsed


def _load_kubeconfig(configuration: Any, path: Path | None, context: str | None) -> None:
    k8s_config.load_kube_config(
        config_file=str(path) if path is not None else None,
        context=context,
        client_configuration=configuration,
    )
