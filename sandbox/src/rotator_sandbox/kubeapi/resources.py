"""The resource types the stand-in serves, and the discovery documents that describe them.

Each ``ResourceType`` mirrors what the real API server (or the upstream CRD) declares: scope,
short names, whether ``/status`` is a separate subresource, and how ``metadata.generation``
moves. Sources: kubernetes ``pkg/registry/*/strategy.go``, apiextensions'
``customresource/strategy.go``, bitnami-labs/sealed-secrets
``helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml`` (status subresource, no short names)
and argoproj/argo-cd ``manifests/crds/application-crd.yaml`` (short names app/apps, NO status
subresource: ArgoCD writes status on the main resource).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

SERVER_VERSION: Obj = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-rotator-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


class Generation(enum.StrEnum):
    """How ``metadata.generation`` moves on an update."""

    NONE = "none"  # the kind has no generation (Secret, ConfigMap, ...)
    SPEC = "spec"  # bumped when .spec changes (ReplicaSet, Job, CronJob)
    SPEC_ANNOTATIONS = "spec+annotations"  # Deployment: annotations are copied to ReplicaSets
    ALL_BUT_METADATA = "all-but-metadata"  # CR without status subresource (ArgoCD Application)
    ALL_BUT_METADATA_STATUS = "all-but-metadata-status"  # CR with status subresource


@dataclass(frozen=True)
class Column:
    """One column of the server-side ``Table`` kubectl prints."""

    name: str
    value: Callable[[Obj], Any]
    type: str = "string"
    fmt: str = ""
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class SubresourceDoc:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    generation: Generation = Generation.NONE
    custom: bool = False  # a CRD: no strategic merge, resourceVersion required on PUT
    return_deleted_object: bool = False
    extra_subresources: tuple[SubresourceDoc, ...] = ()
    field_labels: tuple[str, ...] = ()  # field selector labels beyond metadata.name/namespace
    columns: tuple[Column, ...] = ()
    age_column: bool = True  # a CRD with additionalPrinterColumns shows no Age unless declared

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def subresources(self) -> frozenset[str]:
        names = {s.name for s in self.extra_subresources}
        if self.status_subresource:
            names.add("status")
        return frozenset(names)

    def qualified(self) -> str:
        """``deployments.apps``, ``secrets``: how the real server names a resource in errors."""
        return self.key


def _get(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def field_value(obj: Obj, label: str) -> str:
    """The string a field selector compares against (missing -> empty, bools lowercase)."""
    value = _get(obj, label)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, dict | list) else 0


def _ready_pods(obj: Obj) -> str:
    statuses = _get(obj, "status.containerStatuses") or []
    total = len(_get(obj, "spec.containers") or [])
    ready = sum(1 for s in statuses if isinstance(s, dict) and s.get("ready"))
    return f"{ready}/{total}"


def _restarts(obj: Obj) -> int:
    statuses = _get(obj, "status.containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses if isinstance(s, dict))


def _containers(obj: Obj, attr: str) -> str:
    containers = _get(obj, "spec.template.spec.containers") or []
    return ",".join(str(c.get(attr, "")) for c in containers if isinstance(c, dict))


def _selector(obj: Obj) -> str:
    labels = _get(obj, "spec.selector.matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _deploy_ready(obj: Obj) -> str:
    return f"{_get(obj, 'status.readyReplicas') or 0}/{_get(obj, 'spec.replicas') or 0}"


def _int(path: str) -> Callable[[Obj], Any]:
    return lambda o: _get(o, path) or 0


def _str(path: str) -> Callable[[Obj], Any]:
    return lambda o: "" if _get(o, path) is None else str(_get(o, path))


def _service_ports(obj: Obj) -> str:
    ports = _get(obj, "spec.ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _endpoints(obj: Obj) -> str:
    out = []
    for subset in obj.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or []:
                out.append(f"{addr.get('ip')}:{port.get('port')}")
    return ",".join(out) or "<none>"


def _slice_ports(obj: Obj) -> str:
    ports = [str(p.get("port")) for p in obj.get("ports") or [] if p.get("port") is not None]
    return ",".join(ports) or "<unset>"


def _slice_endpoints(obj: Obj) -> str:
    addresses = [str(a) for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []]
    return ",".join(addresses) or "<unset>"


def _sealed_status(obj: Obj) -> str:
    for cond in _get(obj, "status.conditions") or []:
        if cond.get("type") == "Synced" and cond.get("status") == "False":
            return str(cond.get("message", ""))
    return ""


def _sealed_synced(obj: Obj) -> str:
    for cond in _get(obj, "status.conditions") or []:
        if cond.get("type") == "Synced":
            return str(cond.get("status", ""))
    return ""


def _role_ref(obj: Obj) -> str:
    ref = obj.get("roleRef") or {}
    return f"{ref.get('kind', '')}/{ref.get('name', '')}"


POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

_STATUS_VERBS = ("get", "patch", "update")

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        status_subresource=True,
        return_deleted_object=True,
        field_labels=("status.phase",),
        columns=(Column("Status", _str("status.phase")),),
    ),
    ResourceType(
        "",
        "v1",
        "secrets",
        "Secret",
        field_labels=("type",),
        columns=(
            Column("Type", _str("type")),
            Column("Data", lambda o: _count(o.get("data")), type="integer"),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        short_names=("cm",),
        columns=(
            Column(
                "Data",
                lambda o: _count(o.get("data")) + _count(o.get("binaryData")),
                type="integer",
            ),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        status_subresource=True,
        return_deleted_object=True,
        extra_subresources=(
            SubresourceDoc(
                "proxy", "ServiceProxyOptions", ("create", "delete", "get", "patch", "update")
            ),
        ),
        field_labels=("spec.clusterIP", "spec.type"),
        columns=(
            Column("Type", _str("spec.type")),
            Column("Cluster-IP", _str("spec.clusterIP")),
            Column("External-IP", lambda o: "<none>"),
            Column("Port(s)", _service_ports),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        short_names=("ep",),
        columns=(Column("Endpoints", _endpoints),),
    ),
    # discovery.k8s.io/v1 EndpointSlice: what the service proxy reads (kubernetes
    # pkg/registry/core/service/storage/storage.go ResourceLocation -> GetEndpointSlices).
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        columns=(
            Column("AddressType", _str("addressType")),
            Column("Ports", _slice_ports),
            Column("Endpoints", _slice_endpoints),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        status_subresource=True,
        return_deleted_object=True,
        extra_subresources=(
            SubresourceDoc("exec", "PodExecOptions", ("create", "get")),
            SubresourceDoc("log", "Pod", ("get",)),
        ),
        field_labels=POD_FIELDS,
        columns=(
            Column("Ready", _ready_pods),
            Column("Status", _str("status.phase")),
            Column("Restarts", _restarts, type="integer"),
        ),
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        short_names=("ev",),
        field_labels=EVENT_FIELDS,
        columns=(
            Column("Type", _str("type")),
            Column("Reason", _str("reason")),
            Column(
                "Object",
                lambda o: (
                    f"{str(_get(o, 'involvedObject.kind') or '').lower()}/"
                    f"{_get(o, 'involvedObject.name') or ''}"
                ),
            ),
            Column("Message", _str("message")),
        ),
    ),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status_subresource=True,
        generation=Generation.SPEC_ANNOTATIONS,
        extra_subresources=(
            SubresourceDoc("scale", "Scale", _STATUS_VERBS, group="autoscaling", version="v1"),
        ),
        columns=(
            Column("Ready", _deploy_ready),
            Column("Up-to-date", _int("status.updatedReplicas"), type="integer"),
            Column("Available", _int("status.availableReplicas"), type="integer"),
            Column("Containers", lambda o: _containers(o, "name"), priority=1),
            Column("Images", lambda o: _containers(o, "image"), priority=1),
            Column("Selector", _selector, priority=1),
        ),
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        status_subresource=True,
        generation=Generation.SPEC,
        extra_subresources=(
            SubresourceDoc("scale", "Scale", _STATUS_VERBS, group="autoscaling", version="v1"),
        ),
        field_labels=("status.replicas",),
        columns=(
            Column("Desired", _int("spec.replicas"), type="integer"),
            Column("Current", _int("status.replicas"), type="integer"),
            Column("Ready", _int("status.readyReplicas"), type="integer"),
        ),
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        columns=(Column("Holder", _str("spec.holderIdentity")),),
    ),
    ResourceType(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        short_names=("cj",),
        categories=("all",),
        status_subresource=True,
        generation=Generation.SPEC,
        columns=(
            Column("Schedule", _str("spec.schedule")),
            Column("Suspend", lambda o: "True" if _get(o, "spec.suspend") else "False"),
            Column("Active", lambda o: _count(_get(o, "status.active")), type="integer"),
            Column("Last Schedule", _str("status.lastScheduleTime")),
        ),
    ),
    ResourceType(
        "batch",
        "v1",
        "jobs",
        "Job",
        categories=("all",),
        status_subresource=True,
        generation=Generation.SPEC,
        field_labels=("status.successful",),
        columns=(
            Column(
                "Completions",
                lambda o: f"{_get(o, 'status.succeeded') or 0}/{_get(o, 'spec.completions') or 1}",
            ),
        ),
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        columns=(Column("Role", _role_ref),),
    ),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
        columns=(Column("Role", _role_ref),),
    ),
    ResourceType(
        "bitnami.com",
        "v1alpha1",
        "sealedsecrets",
        "SealedSecret",
        status_subresource=True,
        generation=Generation.ALL_BUT_METADATA_STATUS,
        custom=True,
        return_deleted_object=True,
        columns=(
            Column("Status", _sealed_status),
            Column("Synced", _sealed_synced),
        ),
    ),
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "applications",
        "Application",
        short_names=("app", "apps"),
        generation=Generation.ALL_BUT_METADATA,
        custom=True,
        return_deleted_object=True,
        # additionalPrinterColumns of the upstream CRD
        columns=(
            Column("Sync Status", _str("status.sync.status")),
            Column("Health Status", _str("status.health.status")),
            Column("Revision", _str("status.sync.revision"), priority=10),
            Column("Project", _str("spec.project"), priority=10),
        ),
        age_column=False,
    ),
    # argo-cd manifests/crds/appproject-crd.yaml: AppProject, short names appproj/appprojs
    ResourceType(
        "argoproj.io",
        "v1alpha1",
        "appprojects",
        "AppProject",
        short_names=("appproj", "appprojs"),
        generation=Generation.ALL_BUT_METADATA,
        custom=True,
        return_deleted_object=True,
    ),
)


@dataclass(frozen=True)
class Registry:
    types: tuple[ResourceType, ...] = RESOURCE_TYPES
    _by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rt in self.types:
            self._by_path[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType:
        for rt in self.types:
            if rt.key == key:
                return rt
        raise KeyError(key)

    def groups(self) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for rt in self.types:
            if rt.group and (rt.group, rt.version) not in seen:
                seen.append((rt.group, rt.version))
        return seen

    def in_group(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self.types if rt.group == group and rt.version == version]


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_doc(group: str, version: str) -> Obj:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list(registry: Registry) -> Obj:
    """The legacy ``/apis`` document. Answering aggregated-discovery requests with it makes
    client-go fall back to per-group discovery, as it does against older servers."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_doc(g, v) for g, v in registry.groups()],
    }


def api_group(registry: Registry, group: str) -> Obj | None:
    for g, v in registry.groups():
        if g == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(g, v)}
    return None


def api_resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    types = registry.in_group(group, version)
    if not types:
        return None
    resources: list[Obj] = []
    for rt in types:
        doc: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(STANDARD_VERBS),
        }
        if rt.short_names:
            doc["shortNames"] = list(rt.short_names)
        if rt.categories:
            doc["categories"] = list(rt.categories)
        resources.append(doc)
        subs = list(rt.extra_subresources)
        if rt.status_subresource:
            subs.insert(0, SubresourceDoc("status", rt.kind, _STATUS_VERBS))
        for sub in subs:
            sdoc: Obj = {
                "name": f"{rt.plural}/{sub.name}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group is not None:
                sdoc["group"] = sub.group
                sdoc["version"] = sub.version
            resources.append(sdoc)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root(registry: Registry) -> Obj:
    """``/openapi/v3``: one entry per group version, like the real server."""
    pairs = [("", "v1"), *registry.groups()]
    return {
        "paths": {
            _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash=0"}
            for g, v in pairs
        }
    }


def openapi_v3_group_version(registry: Registry, group: str, version: str) -> Obj | None:
    """A skeletal OpenAPI v3 document: per kind, the item path with a PATCH operation tagged
    with its GVK and the ``fieldValidation`` query parameter. That is what kubectl's
    QueryParamVerifierV3 reads to choose server-side field validation, which spares it the
    client-side schema validation that would need full schemas (k8s.io/cli-runtime
    ``query_param_verifier_v3.go``). No requestBody is declared, so ``kubectl apply`` computes
    its patches from compiled-in types (built-ins) or as JSON merge patches (CRDs)."""
    types = registry.in_group(group, version)
    if not types:
        return None
    paths: Obj = {}
    for rt in types:
        base = f"/{_gv_path(group, version)}"
        item = (
            f"{base}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
            if rt.namespaced
            else f"{base}/{rt.plural}/{{name}}"
        )
        gvk = {"group": group, "version": version, "kind": rt.kind}
        paths[item] = {
            "patch": {
                "operationId": f"patch{rt.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "OK"}},
            },
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
