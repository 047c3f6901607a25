"""What every simulated controller shares: a dict-level Kubernetes client, informers, a queue.

The controllers are ordinary API clients: they build their own ``kubernetes`` ApiClient from a
kubeconfig and talk HTTP to whatever server it names (the sandbox stand-in or a real cluster).
They never touch the stand-in's storage. Objects travel as plain dicts (the JSON the server
sent), which keeps the simulators short and makes strategic-merge and merge patches explicit.

``Informer`` is a tiny client-go informer: list, then watch from the list's resourceVersion
with a short ``timeoutSeconds``, re-watch from the last seen version, and re-list on 410 Gone
or on any error (FACTS section 6). ``WorkQueue`` is a de-duplicating queue with delayed adds
(client-go's ``workqueue.AddAfter``), which the controllers use for their timers.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# (connect, read) seconds for every call; a watch's read timeout is its timeoutSeconds + this.
REQUEST_TIMEOUT = (3.0, 15.0)
WATCH_TIMEOUT_S = 1

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """One resource type: enough to pick the typed API function or the custom-objects call."""

    api_version: str
    kind: str
    plural: str
    snake: str = ""  # the typed API's name part (``replica_set``); empty for custom resources
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def custom(self) -> bool:
        return not self.snake


NAMESPACE = Kind("v1", "Namespace", "namespaces", "namespace", namespaced=False)
SECRET = Kind("v1", "Secret", "secrets", "secret")
POD = Kind("v1", "Pod", "pods", "pod")
SERVICE = Kind("v1", "Service", "services", "service")
ENDPOINTS = Kind("v1", "Endpoints", "endpoints", "endpoints")
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", "endpoint_slice")
EVENT = Kind("v1", "Event", "events", "event")
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps", "config_map")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments", "deployment")
REPLICASET = Kind("apps/v1", "ReplicaSet", "replicasets", "replica_set")
SEALED_SECRET = Kind("bitnami.com/v1alpha1", "SealedSecret", "sealedsecrets")
APPLICATION = Kind("argoproj.io/v1alpha1", "Application", "applications")
APP_PROJECT = Kind("argoproj.io/v1alpha1", "AppProject", "appprojects")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases", "lease")
ROLE = Kind("rbac.authorization.k8s.io/v1", "Role", "roles", "role")
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", "role_binding")

KINDS = {
    (k.api_version, k.kind): k
    for k in (
        NAMESPACE,
        SECRET,
        POD,
        SERVICE,
        ENDPOINTS,
        ENDPOINT_SLICE,
        EVENT,
        CONFIGMAP,
        DEPLOYMENT,
        REPLICASET,
        SEALED_SECRET,
        APPLICATION,
        APP_PROJECT,
        LEASE,
        ROLE,
        ROLE_BINDING,
    )
}


def kind_of(obj: Obj) -> Kind:
    try:
        return KINDS[(str(obj.get("apiVersion")), str(obj.get("kind")))]
    except KeyError:
        raise ValueError(f"unsupported kind {obj.get('apiVersion')}/{obj.get('kind')}") from None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Obj) -> Obj:
    m = obj.setdefault("metadata", {})
    assert isinstance(m, dict)
    return m


def key_of(obj: Obj) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return (str(m.get("namespace") or ""), str(m.get("name") or ""))


class Kube:
    """Dict-in, dict-out calls through the official client; one ApiClient per controller."""

    def __init__(self, kubeconfig: Path, *, timeout: tuple[float, float] = REQUEST_TIMEOUT):
        self.api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.timeout = timeout
        self.core = k8s.CoreV1Api(self.api_client)
        self.apps = k8s.AppsV1Api(self.api_client)
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self._typed_apis: dict[str, Any] = {
            "": self.core,
            "apps": self.apps,
            "coordination.k8s.io": k8s.CoordinationV1Api(self.api_client),
            "discovery.k8s.io": k8s.DiscoveryV1Api(self.api_client),
            "rbac.authorization.k8s.io": k8s.RbacAuthorizationV1Api(self.api_client),
        }
        self._watches: set[Any] = set()
        self._watches_lock = threading.Lock()

    def interrupt_watches(self) -> None:
        """Close every open watch stream now (a clean stop need not wait for its timeout)."""
        with self._watches_lock:
            watches = list(self._watches)
        for w in watches:
            w.stop()
            resp = getattr(w, "_resp", None)
            if resp is not None:
                with contextlib.suppress(Exception):
                    resp.shutdown() if hasattr(resp, "shutdown") else resp.close()

    def close(self) -> None:
        self.api_client.close()  # type: ignore[attr-defined]  # missing from the stubs

    # -- plumbing --------------------------------------------------------------------------

    def _typed(self, kind: Kind) -> Any:
        return self._typed_apis[kind.group]

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
        resp = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        data = resp.data
        if not data:
            return {}
        out = json.loads(data)
        assert isinstance(out, dict)
        return out

    # -- verbs -----------------------------------------------------------------------------

    def list(
        self, kind: Kind, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        kw: dict[str, Any] = {}
        if label_selector:
            kw["label_selector"] = label_selector
        if kind.custom:
            if namespace:
                out = self._call(
                    self.custom.list_namespaced_custom_object,
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    **kw,
                )
            else:
                out = self._call(
                    self.custom.list_cluster_custom_object,
                    kind.group,
                    kind.version,
                    kind.plural,
                    **kw,
                )
        elif not kind.namespaced:
            out = self._call(getattr(self.core, f"list_{kind.snake}"), **kw)
        elif namespace:
            out = self._call(
                getattr(self._typed(kind), f"list_namespaced_{kind.snake}"), namespace, **kw
            )
        else:
            out = self._call(
                getattr(self._typed(kind), f"list_{kind.snake}_for_all_namespaces"), **kw
            )
        items = [dict(i, apiVersion=kind.api_version, kind=kind.kind) for i in out["items"]]
        return items, str((out.get("metadata") or {}).get("resourceVersion") or "")

    def _object_call(
        self,
        kind: Kind,
        verb: str,
        namespace: str,
        name: str | None = None,
        body: Obj | Sequence[Obj] | None = None,
        *,
        suffix: str = "",
        **kwargs: Any,
    ) -> Obj:
        """One object verb through the generated API that serves ``kind``.

        The generated methods differ in name and argument order: custom objects take
        (group, version, namespace, plural, [name], [body]); built-ins ([name], namespace,
        [body]), or ([name], [body]) when cluster-scoped, and say ``read`` for ``get``.
        """
        named = [name] if name is not None else []
        bodied = [body] if body is not None else []
        if kind.custom:
            fn = getattr(self.custom, f"{verb}_namespaced_custom_object{suffix}")
            args = [kind.group, kind.version, namespace, kind.plural, *named, *bodied]
        else:
            typed_verb = "read" if verb == "get" else verb
            if kind.namespaced:
                fn = getattr(self._typed(kind), f"{typed_verb}_namespaced_{kind.snake}{suffix}")
                args = [*named, namespace, *bodied]
            else:
                fn = getattr(self.core, f"{typed_verb}_{kind.snake}{suffix}")
                args = [*named, *bodied]
        return self._call(fn, *args, **kwargs)

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return self._object_call(kind, "get", namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, kind: Kind, namespace: str, body: Obj) -> Obj:
        body = dict(body, apiVersion=kind.api_version, kind=kind.kind)
        return self._object_call(kind, "create", namespace, body=body)

    def replace(self, kind: Kind, namespace: str, name: str, body: Obj) -> Obj:
        body = dict(body, apiVersion=kind.api_version, kind=kind.kind)
        return self._object_call(kind, "replace", namespace, name, body)

    def patch(
        self, kind: Kind, namespace: str, name: str, body: Obj, *, strategic: bool = False
    ) -> Obj:
        """Merge patch (custom resources and by default) or strategic merge (built-ins)."""
        content_type = STRATEGIC if strategic and not kind.custom else MERGE
        return self._object_call(kind, "patch", namespace, name, body, _content_type=content_type)

    def json_patch(self, kind: Kind, namespace: str, name: str, ops: Sequence[Obj]) -> Obj:
        """RFC 6902 JSON patch (a failed ``test`` op is 422 from the server)."""
        return self._object_call(
            kind, "patch", namespace, name, ops, _content_type="application/json-patch+json"
        )

    def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        """Merge-patch ``status`` through the status subresource."""
        return self._object_call(
            kind,
            "patch",
            namespace,
            name,
            {"status": status},
            suffix="_status",
            _content_type=MERGE,
        )

    def replace_status(self, kind: Kind, namespace: str, name: str, body: Obj) -> Obj:
        """PUT the status subresource (``UpdateStatus``); ``body`` carries the resourceVersion
        it was read at, so a write by anyone since is a 409 Conflict."""
        body = dict(body, apiVersion=kind.api_version, kind=kind.kind)
        return self._object_call(kind, "replace", namespace, name, body, suffix="_status")

    def delete(
        self, kind: Kind, namespace: str, name: str, *, grace_period_s: int | None = None
    ) -> bool:
        """Delete (``grace_period_s``: DeleteOptions.gracePeriodSeconds, e.g. the kubelet's 0);
        False when it was already gone."""
        kw: dict[str, Any] = {}
        if grace_period_s is not None:
            kw["grace_period_seconds"] = grace_period_s
        try:
            self._object_call(kind, "delete", namespace, name, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def ensure_namespace(self, name: str) -> None:
        if self.get(NAMESPACE, "", name) is None:
            try:
                self.create(NAMESPACE, "", {"metadata": {"name": name}})
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        timeout_s: int = WATCH_TIMEOUT_S,
    ) -> Iterator[tuple[str, Obj]]:
        """One short watch: yields (type, object) until the server closes it."""
        kw: dict[str, Any] = {
            "resource_version": resource_version,
            "timeout_seconds": timeout_s,
            "allow_watch_bookmarks": False,
            "_request_timeout": (self.timeout[0], timeout_s + self.timeout[1]),
            "deserialize": False,
        }
        if label_selector:
            kw["label_selector"] = label_selector
        w = k8s_watch.Watch()
        with self._watches_lock:
            self._watches.add(w)
        if kind.custom:
            if namespace:
                args: tuple[Any, ...] = (kind.group, kind.version, namespace, kind.plural)
                fn: Any = self.custom.list_namespaced_custom_object
            else:
                args = (kind.group, kind.version, kind.plural)
                fn = self.custom.list_cluster_custom_object
        elif not kind.namespaced:
            args, fn = (), getattr(self.core, f"list_{kind.snake}")
        elif namespace:
            args, fn = (namespace,), getattr(self._typed(kind), f"list_namespaced_{kind.snake}")
        else:
            args = ()
            fn = getattr(self._typed(kind), f"list_{kind.snake}_for_all_namespaces")
        try:
            for event in w.stream(fn, *args, **kw):
                if not isinstance(event, dict):
                    continue
                obj = event.get("object")
                if isinstance(obj, dict):
                    obj.setdefault("apiVersion", kind.api_version)
                    obj.setdefault("kind", kind.kind)
                    yield str(event.get("type")), obj
        finally:
            w.stop()  # type: ignore[attr-defined]  # missing from the stubs
            with self._watches_lock:
                self._watches.discard(w)


def api_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiException) else None


class Informer:
    """List + short watches in a daemon thread; calls ``handler(type, obj)`` for each change.

    ``handler`` gets ``("SYNC", obj)`` for every object of each (re-)list, so level-triggered
    controllers see every object at start, after a 410 and after an error.
    """

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        handler: Callable[[str, Obj], None],
        stop: threading.Event,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        relist_s: float = 30.0,
        name: str = "",
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.handler = handler
        self.stop_event = stop
        self.namespace = namespace
        self.label_selector = label_selector
        self.relist_s = relist_s
        self.synced = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=name or f"informer-{kind.plural}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stop_event.is_set():
            try:
                items, rv = self.kube.list(
                    self.kind, self.namespace, label_selector=self.label_selector
                )
                for item in items:
                    self._handle("SYNC", item)
                self.synced.set()
                listed_at = time.monotonic()
                while not self.stop_event.is_set():
                    if time.monotonic() - listed_at > self.relist_s:
                        break
                    for etype, obj in self.kube.watch(
                        self.kind, self.namespace, rv, label_selector=self.label_selector
                    ):
                        new_rv = str(meta(obj).get("resourceVersion") or "")
                        if new_rv:
                            rv = new_rv
                        self._handle(etype, obj)
                        if self.stop_event.is_set():
                            break
                backoff = 0.1
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                if api_status(exc) == 410:
                    log.debug("%s watch expired (410); re-listing", self.kind.plural)
                    continue
                log.debug("%s informer error, re-listing: %s", self.kind.plural, exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _handle(self, etype: str, obj: Obj) -> None:
        try:
            self.handler(etype, obj)
        except Exception:
            log.exception("%s handler failed", self.kind.plural)


class WorkQueue:
    """De-duplicating work queue with delayed adds; keys are hashable tuples.

    Like client-go's workqueue, a key handed out by ``get`` is never handed out again until
    ``done(key)``: an ``add`` meanwhile is kept and queued at ``done``, so several workers can
    drain one queue without reconciling the same object twice at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._due: dict[Any, float] = {}
        self._processing: set[Any] = set()
        self._deferred: dict[Any, float] = {}
        self._seq = 0

    def add(self, key: Any, after: float = 0.0) -> None:
        when = time.monotonic() + max(0.0, after)
        with self._cond:
            if key in self._processing:
                self._deferred[key] = min(when, self._deferred.get(key, when))
                return
            self._push(key, when)

    def _push(self, key: Any, when: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._cond.notify()

    def get(self, timeout: float) -> Any | None:
        """The next due key, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded entry
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._processing.add(key)
                    return key
                wait = deadline - now
                if self._heap:
                    wait = min(wait, self._heap[0][0] - now)
                if deadline <= now:
                    return None
                self._cond.wait(max(0.001, wait))

    def done(self, key: Any) -> None:
        """The worker finished ``key``; an ``add`` that came meanwhile is queued now."""
        with self._cond:
            self._processing.discard(key)
            when = self._deferred.pop(key, None)
            if when is not None:
                self._push(key, when)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Controller:
    """A worker thread draining a WorkQueue, plus informers feeding it; clean ``stop()``."""

    name = "controller"
    # Worker threads draining the queue (a key is never reconciled by two at once). Real
    # controllers run several: kube-controller-manager --concurrent-deployment-syncs=5,
    # ArgoCD --status-processors=20 / --operation-processors=10.
    workers = 1

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.kube = Kube(kubeconfig)
        self.stop_event = threading.Event()
        self.queue = WorkQueue()
        self.informers: list[Informer] = []
        self._threads: list[threading.Thread] = []
        self.errors = 0

    def informer(
        self,
        kind: Kind,
        handler: Callable[[str, Obj], None],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> Informer:
        inf = Informer(
            self.kube,
            kind,
            handler,
            self.stop_event,
            namespace=namespace,
            label_selector=label_selector,
            name=f"{self.name}-{kind.plural}",
        )
        self.informers.append(inf)
        return inf

    def setup(self) -> None:
        """Create informers (and anything else) before the threads start."""

    def reconcile(self, key: Any) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.setup()
        for inf in self.informers:
            inf.start()
        for i in range(max(1, self.workers)):
            name = self.name if i == 0 else f"{self.name}-{i}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def wait_synced(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(inf.synced.wait(max(0.0, deadline - time.monotonic())) for inf in self.informers)

    def request_stop(self) -> None:
        """Signal the threads without waiting (stop several controllers in parallel)."""
        self.stop_event.set()
        self.queue.wake()
        self.kube.interrupt_watches()

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        for thread in self._threads:
            thread.join(timeout)
        for inf in self.informers:
            inf.join(timeout)
        self.kube.close()

    def _work(self) -> None:
        failures: dict[Any, int] = {}
        while not self.stop_event.is_set():
            key = self.queue.get(timeout=0.2)
            if key is None or self.stop_event.is_set():
                continue
            try:
                self.reconcile(key)
                failures.pop(key, None)
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                self.errors += 1
                n = failures[key] = failures.get(key, 0) + 1
                log.warning("%s: reconcile %s failed (%d): %s", self.name, key, n, exc)
                log.debug("traceback", exc_info=True)
                self.queue.add(key, after=min(0.05 * 2**n, 2.0))
            finally:
                self.queue.done(key)
