"""Object storage with one global resourceVersion, a bounded event history, and watches.

Stored objects are JSON dicts treated as immutable: every write stores a fresh dict, so readers
can serialise a stored object without copying it and the watch history can share it.

Semantics mirrored from the real API server (k8s.io/apiserver ``registry/generic/registry``,
``storage/cacher``, the per-kind strategies):
- create: 201; 409 AlreadyExists; 404 if the namespace does not exist; uid, resourceVersion,
  creationTimestamp, generation 1 (kinds that have one); status dropped or defaulted for kinds with
  a status subresource; ``generateName``; Secret ``stringData`` folded into ``data``.
- update (PUT) and patch: optimistic concurrency on ``metadata.resourceVersion`` (409 Conflict);
  custom resources refuse an update without a resourceVersion (422), built-ins allow it;
  the main resource ignores ``.status`` for kinds with a status subresource, ``/status`` ignores
  everything but ``.status``; generation per ``Generation``; a write that changes nothing keeps
  the resourceVersion and emits no watch event.
- delete: immediate (no finalizers), except a Pod bound to a node: it stays, Terminating, with
  ``deletionTimestamp`` = now + its grace period, until a delete with grace period 0 (the
  kubelet's) removes it; the DELETED event carries a fresh resourceVersion; objects
  whose ownerReferences name the deleted uid are deleted too (background cascade), unless
  ``propagationPolicy: Orphan``; deleting a Namespace deletes its contents.
- watch: from a resourceVersion (events after it) or from "now" with synthetic ADDED events for
  the current state; an expired resourceVersion -> ERROR event with a 410 Expired Status
  (apiserver pkg/storage/cacher/watch_cache.go: "too old resource version").
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rotator_sandbox.kubeapi.patch import clone
from rotator_sandbox.kubeapi.resources import Generation, Registry, ResourceType
from rotator_sandbox.kubeapi.status import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    gone,
    invalid,
    namespace_not_found,
    not_found,
)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apiserver names.SimpleNameGenerator


@dataclass(frozen=True)
class Event:
    rv: int
    key: str  # ResourceType.key
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    prev: Obj | None


@dataclass(frozen=True)
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str
    remaining: int | None


# k8s.io/apimachinery pkg/util/validation/validation.go dns1123SubdomainFmt
DNS1123_SUBDOMAIN_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _corrupt_base64_at(text: str) -> int:
    """Where Go's ``base64.StdEncoding`` stops: the first byte outside the alphabet (padding
    only at the end), else the start of an incomplete final quantum."""
    stripped = text.replace("\r", "").replace("\n", "")
    body = stripped.rstrip("=")
    for i, ch in enumerate(body):
        if ch not in _B64_ALPHABET:
            return i
    return len(stripped) - len(stripped) % 4 if len(stripped) % 4 else max(0, len(body) - 1)


def _pod_grace_period_s(pod: Obj, requested: int | None) -> int:
    """kubernetes ``pkg/registry/core/pod/strategy.go`` ``CheckGracefulDelete``: the requested
    grace period, else ``spec.terminationGracePeriodSeconds`` (default 30); 0 for a pod never
    bound to a node or already Failed/Succeeded (nothing runs it)."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName"):
        return 0
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return 0
    if requested is not None:
        return max(0, int(requested))
    grace = spec.get("terminationGracePeriodSeconds")
    return 30 if grace is None else max(0, int(grace))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


def encode_continue(rv: int, start: str) -> str:
    raw = f'{{"v":"meta.k8s.io/v1","rv":{rv},"start":"{start}"}}'
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise bad_request(f"continue key is not valid: {exc}") from exc


class Store:
    def __init__(self, registry: Registry, *, history: int = 1000) -> None:
        self.registry = registry
        self._cond = threading.Condition(threading.RLock())
        self._rv = 0
        self._objects: dict[str, dict[Key, Obj]] = {rt.key: {} for rt in registry.types}
        self._history: list[Event] = []
        self._history_rvs: list[int] = []
        self._history_cap = max(1, history)
        self._compacted = 0  # every event with rv <= this has been dropped
        self._stopped = False
        self._ns_rt = registry.by_key("namespaces")
        for name in DEFAULT_NAMESPACES:
            self.create(self._ns_rt, "", {"metadata": {"name": name}})

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def compact(self) -> None:
        """Drop the whole watch history (tests use it to provoke 410 Gone)."""
        with self._cond:
            self._compacted = self._rv
            self._history.clear()
            self._history_rvs.clear()

    def _record(self, rt: ResourceType, type_: str, obj: Obj, prev: Obj | None) -> None:
        event = Event(self._rv, rt.key, type_, obj, prev)
        self._history.append(event)
        self._history_rvs.append(event.rv)
        if len(self._history) > 2 * self._history_cap:
            drop = len(self._history) - self._history_cap
            self._compacted = self._history_rvs[drop - 1]
            del self._history[:drop]
            del self._history_rvs[:drop]
        self._cond.notify_all()

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    # --- reads ----------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        with self._cond:
            obj = self._objects[rt.key].get((namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self._cond:
            return self._objects[rt.key].get((namespace, name))

    def namespace_exists(self, namespace: str) -> bool:
        with self._cond:
            return ("", namespace) in self._objects["namespaces"]

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        match: Callable[[Obj], bool],
        *,
        limit: int = 0,
        continue_token: str = "",
    ) -> ListResult:
        start = ""
        with self._cond:
            rv = self._rv
            if continue_token:
                token_rv, start = decode_continue(continue_token)
                if token_rv < self._compacted:
                    raise gone(
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter, "
                        "or use the continue token in this response to retrieve the remainder "
                        "of the results. Continuing with the provided token results in an "
                        "inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in "
                        "the list."
                    )
                rv = token_rv
            bucket = self._objects[rt.key]
            keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
            if start:
                ns, _, nm = start.partition("/")
                keys = [k for k in keys if k > (ns, nm)]
            items: list[Obj] = []
            token = ""
            remaining: int | None = None
            for i, key in enumerate(keys):
                obj = bucket[key]
                if not match(obj):
                    continue
                if limit and len(items) == limit:
                    last = items[-1]["metadata"]
                    token = encode_continue(rv, f"{last.get('namespace', '')}/{last['name']}")
                    remaining = sum(1 for k in keys[i:] if match(bucket[k]))
                    break
                items.append(obj)
        return ListResult(items, rv, token, remaining)

    # --- writes ---------------------------------------------------------------------------

    def _check_name(self, rt: ResourceType, name: str) -> None:
        if len(name) > 253 or not _NAME_RE.match(name):
            raise invalid(
                rt,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                        "of lower case alphanumeric characters, '-' or '.', and must start and "
                        "end with an alphanumeric character (e.g. 'example.com', regex used for "
                        f"validation is '{DNS1123_SUBDOMAIN_FMT}')",
                    )
                ],
            )

    def _check_type(self, rt: ResourceType, obj: Obj) -> None:
        api_version = obj.get("apiVersion")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})"
            )
        kind = obj.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )

    def _normalise(self, rt: ResourceType, obj: Obj) -> None:
        """Per-kind defaulting and conversion applied on every write (in place)."""
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if rt.key == "secrets":
            string_data = obj.pop("stringData", None) or {}
            data = obj.get("data") or {}
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            for v in data.values():
                try:
                    base64.b64decode(str(v), validate=True)
                except (ValueError, binascii.Error) as exc:
                    # Decoding the body, before any validation: 400, not 422 (the []byte field
                    # is base64 in JSON; Go's encoding/base64 CorruptInputError names the byte).
                    raise bad_request(
                        f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                        f"illegal base64 data at input byte {_corrupt_base64_at(str(v))}"
                    ) from exc
            if data:
                obj["data"] = data
            obj.setdefault("type", "Opaque")

    def _defaults_on_create(self, rt: ResourceType, obj: Obj) -> None:
        spec = obj.get("spec")
        if rt.key == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            labels = _meta(obj).setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = _meta(obj)["name"]
        elif rt.key == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            if isinstance(spec, dict):
                spec.setdefault("restartPolicy", "Always")
                spec.setdefault("serviceAccountName", "default")
                spec.setdefault("terminationGracePeriodSeconds", 30)
        elif rt.key == "services" and isinstance(spec, dict):
            spec.setdefault("type", "ClusterIP")
            n = self._rv % 65000
            spec.setdefault("clusterIP", f"10.96.{n // 250}.{n % 250 + 2}")
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            spec.setdefault("sessionAffinity", "None")
        elif rt.key == "deployments.apps" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy["type"] = "RollingUpdate"
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxSurge", "25%")
                rolling.setdefault("maxUnavailable", "25%")
        elif rt.key == "replicasets.apps" and isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            obj["status"] = {"replicas": 0}  # not omitempty in apps/v1 ReplicaSetStatus

    def create(self, rt: ResourceType, namespace: str, body: Obj, *, dry_run: bool = False) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        self._check_type(rt, body)
        obj: Obj = clone(body)
        meta = _meta(obj)
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError(
                500, "InternalError", "resourceVersion should not be set on objects to be created"
            )
        with self._cond:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise invalid(
                        rt,
                        "",
                        [("metadata.name", "Required value: name or generateName is required")],
                    )
                suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
                meta["name"] = f"{prefix}{suffix}"
            name = meta["name"]
            self._check_name(rt, name)
            if rt.namespaced and ("", namespace) not in self._objects["namespaces"]:
                raise namespace_not_found(namespace)
            bucket = self._objects[rt.key]
            key = (namespace if rt.namespaced else "", name)
            if key in bucket:
                raise already_exists(rt, name)
            self._normalise(rt, obj)
            if rt.status_subresource and rt.custom:
                obj.pop("status", None)  # apiextensions drops status on create
            elif rt.status_subresource:
                obj["status"] = {}  # built-in strategies reset status on create
            self._defaults_on_create(rt, obj)
            self._validate(rt, obj, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if rt.generation is not Generation.NONE:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            meta.pop("deletionTimestamp", None)
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                return obj
            meta["resourceVersion"] = str(self._next_rv())
            bucket[key] = obj
            self._record(rt, "ADDED", obj, None)
            return obj

    def _next_generation(self, rt: ResourceType, old: Obj, new: Obj) -> int:
        gen = int((old.get("metadata") or {}).get("generation") or 1)
        policy = rt.generation
        if policy is Generation.SPEC:
            changed = old.get("spec") != new.get("spec")
        elif policy is Generation.SPEC_ANNOTATIONS:
            changed = old.get("spec") != new.get("spec") or (
                (old.get("metadata") or {}).get("annotations") or {}
            ) != ((new.get("metadata") or {}).get("annotations") or {})
        elif policy is Generation.ALL_BUT_METADATA:
            changed = _without(old, "metadata") != _without(new, "metadata")
        else:
            changed = _without(old, "metadata", "status") != _without(new, "metadata", "status")
        return gen + 1 if changed else gen

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        """The few validation rules the rotation can run into (k8s.io/kubernetes
        ``pkg/apis/core/validation``, ``pkg/apis/apps/validation``)."""
        name = _meta(obj).get("name", "")
        if rt.key in ("secrets", "configmaps") and old is not None and old.get("immutable"):
            for fld in ("data", "binaryData"):
                if obj.get(fld) != old.get(fld):
                    raise invalid(
                        rt, name, [(fld, "Forbidden: field is immutable when `immutable` is set")]
                    )
            if not obj.get("immutable"):
                raise invalid(
                    rt,
                    name,
                    [("immutable", "Forbidden: field is immutable when `immutable` is set")],
                )
        if rt.key == "events" and old is None:
            causes = _event_errors(obj)
            if causes:
                raise invalid(rt, name, causes)
        if rt.key in ("deployments.apps", "replicasets.apps"):
            spec = obj.get("spec") or {}
            selector = spec.get("selector") or {}
            match_labels = selector.get("matchLabels") or {}
            template_labels = ((spec.get("template") or {}).get("metadata") or {}).get(
                "labels"
            ) or {}
            if not match_labels and not selector.get("matchExpressions"):
                raise invalid(rt, name, [("spec.selector", "Required value")])
            if any(template_labels.get(k) != v for k, v in match_labels.items()):
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "spec.template.metadata.labels",
                            f"Invalid value: {json.dumps(template_labels)}: "
                            "`selector` does not match template `labels`",
                        )
                    ],
                )
            if old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
                raise invalid(rt, name, [("spec.selector", "Invalid value: field is immutable")])

    def _prepare_update(self, rt: ResourceType, old: Obj, obj: Obj, subresource: str) -> Obj:
        """Apply the strategy: which parts of ``obj`` the write may change (in place)."""
        if subresource == "status":
            status = obj.get("status")
            obj = clone(old)
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
            return obj
        self._normalise(rt, obj)
        if rt.status_subresource:
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        meta = _meta(obj)
        old_meta = old["metadata"]
        for fixed in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        if rt.generation is not Generation.NONE:
            meta["generation"] = self._next_generation(rt, old, obj)
        if rt.key == "namespaces":
            labels = meta.setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = old_meta["name"]
        return obj

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
        from_patch: bool = False,
    ) -> Obj:
        """PUT semantics. ``from_patch`` marks an object built by patching the current one."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        self._check_type(rt, body)
        obj = body if from_patch else clone(body)
        meta = _meta(obj)
        body_name = meta.get("name")
        if body_name and body_name != name:
            raise bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
        with self._cond:
            key = (namespace if rt.namespaced else "", name)
            old = self._objects[rt.key].get(key)
            if old is None:
                raise not_found(rt, name)
            old_meta = old["metadata"]
            want_rv = meta.get("resourceVersion")
            if not want_rv and rt.custom and not from_patch:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            if want_rv and want_rv != old_meta["resourceVersion"]:
                raise conflict(rt, name)
            body_uid = meta.get("uid")
            if body_uid and body_uid != old_meta["uid"]:
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {old_meta['uid']}, "
                    f"UID in object meta: {body_uid}",
                )
            obj = self._prepare_update(rt, old, obj, subresource)
            self._validate(rt, obj, old)
            _meta(obj)["resourceVersion"] = old_meta["resourceVersion"]
            if obj == old:
                return old  # a no-op write: same resourceVersion, no watch event
            if dry_run:
                return obj
            _meta(obj)["resourceVersion"] = str(self._next_rv())
            self._objects[rt.key][key] = obj
            self._record(rt, "MODIFIED", obj, old)
            return obj

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
        orphan: bool = False,
        dry_run: bool = False,
        grace_period_s: int | None = None,
    ) -> Obj:
        with self._cond:
            key = (namespace if rt.namespaced else "", name)
            old = self._objects[rt.key].get(key)
            if old is None:
                raise not_found(rt, name)
            meta = old["metadata"]
            if precondition_uid and precondition_uid != meta["uid"]:
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {precondition_uid}, "
                    f"UID in object meta: {meta['uid']}",
                )
            if precondition_rv and precondition_rv != meta["resourceVersion"]:
                raise conflict(
                    rt,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{precondition_rv}, ResourceVersion in object meta: {meta['resourceVersion']}",
                )
            if dry_run:
                return old
            grace = _pod_grace_period_s(old, grace_period_s) if rt.key == "pods" else 0
            if grace > 0:
                return self._delete_gracefully(rt, key, old, grace)
            gone_obj = self._remove(rt, key, old)
            if rt.key == "namespaces":
                for other in self.registry.types:
                    if other.namespaced:
                        for okey in sorted(k for k in self._objects[other.key] if k[0] == name):
                            self._remove(other, okey, self._objects[other.key][okey])
            if not orphan:
                self._collect_dependents(meta["uid"])
            if rt.key == "namespaces":
                gone_obj = clone(gone_obj)
                gone_obj["status"] = {"phase": "Terminating"}
            return gone_obj

    def _delete_gracefully(self, rt: ResourceType, key: Key, old: Obj, grace: int) -> Obj:
        """k8s.io/apiserver ``pkg/registry/rest/delete.go`` ``BeforeDelete``: set
        ``deletionTimestamp`` (now + grace) and ``deletionGracePeriodSeconds``; a second delete
        may only shorten the grace period. The object stays until the kubelet's final delete."""
        meta = old["metadata"]
        current = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and current is not None and grace >= int(current):
            return old
        when = datetime.fromtimestamp(time.time() + grace, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = {
            **old,
            "metadata": {
                **meta,
                "deletionTimestamp": when,
                "deletionGracePeriodSeconds": grace,
                "resourceVersion": str(self._next_rv()),
            },
        }
        self._objects[rt.key][key] = new
        self._record(rt, "MODIFIED", new, old)
        return new

    def _remove(self, rt: ResourceType, key: Key, old: Obj) -> Obj:
        del self._objects[rt.key][key]
        gone_obj = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self._next_rv())}}
        self._record(rt, "DELETED", gone_obj, old)
        return gone_obj

    def _collect_dependents(self, uid: str) -> None:
        """Background cascading deletion: the garbage collector's job, done synchronously."""
        pending = [uid]
        while pending:
            owner = pending.pop()
            for rt in self.registry.types:
                bucket = self._objects[rt.key]
                for key, obj in list(bucket.items()):
                    refs = obj["metadata"].get("ownerReferences") or []
                    owned = any(isinstance(r, dict) and r.get("uid") == owner for r in refs)
                    if owned and key in bucket:
                        self._remove(rt, key, obj)
                        pending.append(obj["metadata"]["uid"])

    # --- watch ----------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        match: Callable[[Obj], bool],
        *,
        since: int | None,
        deadline: float,
        bookmarks: bool = False,
        initial_events_end: bool = False,
    ) -> Iterator[Obj]:
        """Yield watch events (``{"type", "object"}``) until ``deadline`` (monotonic).

        ``since=None`` starts with synthetic ADDED events for the current state, like a watch
        without resourceVersion or with "0". Bookmarks, when allowed, come every minute and
        just before the deadline (the real cacher sends one ahead of the timeout).
        """
        initial: list[Obj] = []
        pos = since or 0
        with self._cond:
            if since is None:
                pos = self._rv
                for key in sorted(self._objects[rt.key]):
                    if namespace is None or key[0] == namespace:
                        obj = self._objects[rt.key][key]
                        if match(obj):
                            initial.append({"type": "ADDED", "object": obj})
            elif since < self._compacted:
                initial.append(self._expired(since))
        yield from initial
        if initial and initial[-1]["type"] == "ERROR":
            return
        if initial_events_end:
            yield self._bookmark(rt, pos, initial_end=True)
        next_bookmark = time.monotonic() + 60.0
        final_bookmark_sent = False
        while True:
            batch: list[Event] = []
            bookmark: Obj | None = None
            expired: Obj | None = None
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if pos < self._compacted:
                        expired = self._expired(pos)
                        break
                    start = bisect.bisect_right(self._history_rvs, pos)
                    if start < len(self._history):
                        batch = self._history[start:]
                        pos = batch[-1].rv
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        return
                    if bookmarks:
                        if not final_bookmark_sent and deadline - now <= 1.0:
                            final_bookmark_sent = True
                            bookmark = self._bookmark(rt, self._rv)
                            break
                        if now >= next_bookmark:
                            next_bookmark = now + 60.0
                            bookmark = self._bookmark(rt, self._rv)
                            break
                        wake = (
                            min(deadline - 1.0, next_bookmark)
                            if not final_bookmark_sent
                            else deadline
                        )
                        self._cond.wait(max(0.001, min(wake, deadline) - now))
                    else:
                        self._cond.wait(deadline - now)
            if expired is not None:
                yield expired
                return
            if bookmark is not None:
                yield bookmark
                continue
            for event in batch:
                if event.key != rt.key:
                    continue
                translated = self._translate(event, namespace, match)
                if translated is not None:
                    yield translated
            if time.monotonic() >= deadline:  # a busy stream still ends on time
                return

    @staticmethod
    def _translate(event: Event, namespace: str | None, match: Callable[[Obj], bool]) -> Obj | None:
        obj = event.obj
        if namespace is not None and obj["metadata"].get("namespace", "") != namespace:
            return None
        if event.type == "MODIFIED" and event.prev is not None:
            now_in, was_in = match(obj), match(event.prev)
            if now_in and was_in:
                return {"type": "MODIFIED", "object": obj}
            if now_in:
                return {"type": "ADDED", "object": obj}
            if was_in:
                return {"type": "DELETED", "object": obj}
            return None
        return {"type": event.type, "object": obj} if match(obj) else None

    def _expired(self, since: int) -> Obj:
        status = gone(f"too old resource version: {since} ({self._compacted + 1})").status()
        return {"type": "ERROR", "object": status}

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
        }


# k8s.io/kubernetes pkg/apis/core/validation/events.go: the limits of legacyValidateEvent.
EVENT_REASON_LIMIT = EVENT_ACTION_LIMIT = EVENT_REPORTING_INSTANCE_LIMIT = 128
EVENT_NOTE_LIMIT = 1024
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _event_errors(obj: Obj) -> list[tuple[str, str]]:
    """core/v1 Event create (pkg/apis/core/validation/events.go ValidateEventCreate for the
    core/v1 request version: legacyValidateEvent only). An old-style Event (no eventTime) must
    sit in its involvedObject's namespace; a new-style one (eventTime set) also needs
    reportingController (json: reportingComponent, a qualified name), reportingInstance, action
    and reason, each within its limit, and a message of at most 1024 characters."""
    causes: list[tuple[str, str]] = []
    namespace = _meta(obj).get("namespace", "")
    involved = obj.get("involvedObject") or {}
    involved_ns = involved.get("namespace") or ""
    if not obj.get("eventTime"):
        if (involved_ns and involved_ns != namespace) or (
            not involved_ns and namespace not in ("", "default")
        ):
            causes.append(
                (
                    "involvedObject.namespace",
                    f'Invalid value: "{involved_ns}": does not match event.namespace',
                )
            )
        return causes
    if not involved_ns and namespace not in ("default", "kube-system"):
        causes.append(
            (
                "involvedObject.namespace",
                f'Invalid value: "{involved_ns}": does not match event.namespace',
            )
        )
    controller = obj.get("reportingComponent") or ""
    if not controller:
        causes.append(("reportingController", "Required value"))
    elif not _QUALIFIED_NAME.match(controller):
        causes.append(
            ("reportingController", f'Invalid value: "{controller}": not a qualified name')
        )
    for fld, value, limit in (
        ("reportingInstance", obj.get("reportingInstance") or "", EVENT_REPORTING_INSTANCE_LIMIT),
        ("action", obj.get("action") or "", EVENT_ACTION_LIMIT),
        ("reason", obj.get("reason") or "", EVENT_REASON_LIMIT),
    ):
        if not value:
            causes.append((fld, "Required value"))
        elif len(value) > limit:
            causes.append((fld, f'Invalid value: "": can have at most {limit} characters'))
    if len(obj.get("message") or "") > EVENT_NOTE_LIMIT:
        causes.append(
            ("message", f'Invalid value: "": can have at most {EVENT_NOTE_LIMIT} characters')
        )
    return causes
