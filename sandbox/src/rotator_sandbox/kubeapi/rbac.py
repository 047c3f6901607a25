"""RBAC evaluation over the Role/RoleBinding/ClusterRole/ClusterRoleBinding objects in the store.

Mirrors k8s.io/kubernetes ``plugin/pkg/auth/authorizer/rbac`` (``rbac.go``, ``rule.go``):
- a request is allowed when some binding whose subjects include the user (User by name, Group by
  membership, ServiceAccount by ``system:serviceaccount:<ns>:<name>``, the namespace defaulting
  to the RoleBinding's) references a role with a matching rule; ClusterRoleBindings apply
  everywhere, RoleBindings only in their namespace (and may reference a ClusterRole);
- a rule matches on verbs (or ``*``), apiGroups (or ``*``), resources (``*``, exact
  ``resource/subresource``, or ``*/subresource``) and resourceNames; a rule with resourceNames
  never matches a request without a name: create, and list/watch/deletecollection unless a
  ``metadata.name=<x>`` field selector pins the request to one name (the request-info parser
  sets the name from it);
- non-resource URLs match exactly or by a trailing ``*`` prefix;
- the group ``system:masters`` bypasses RBAC; everyone (``system:anonymous`` too) may GET
  ``/version``, ``/healthz``, ``/livez``, ``/readyz``; every authenticated user may read the
  discovery documents and create self subject access reviews (the default
  ``system:public-info-viewer``, ``system:discovery`` and ``system:basic-user`` bindings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rotator_sandbox.kubeapi.store import Store

Obj = dict[str, Any]

MASTERS = "system:masters"
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
_DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Attributes:
    user: str
    groups: tuple[str, ...]
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def forbidden_message(attrs: Attributes) -> str:
    """The real server's wording (k8s.io/apiserver ``endpoints/handlers/responsewriters``)."""
    if not attrs.resource_request:
        return f'forbidden: User "{attrs.user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = attrs.combined_resource
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    head = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'{head} is forbidden: User "{attrs.user}" cannot {attrs.verb} resource "{resource}" '
        f'in API group "{attrs.api_group}" {scope}'
    )


def _has(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and (wanted in values or "*" in values)


def _resource_matches(rule: Obj, attrs: Attributes) -> bool:
    for res in rule.get("resources") or []:
        if res in ("*", attrs.combined_resource):
            return True
        if attrs.subresource and res == f"*/{attrs.subresource}":
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url in ("*", attrs.path):
                return True
            if url.endswith("*") and attrs.path.startswith(url[:-1]):
                return True
        return False
    if not _has(rule.get("apiGroups"), attrs.api_group):
        return False
    if not _resource_matches(rule, attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _subject_applies(subject: Obj, attrs: Attributes, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return bool(attrs.user == name)
    if kind == "Group":
        return name in attrs.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and attrs.user == f"system:serviceaccount:{namespace}:{name}"
    return False


def is_always_allowed(attrs: Attributes) -> bool:
    if MASTERS in attrs.groups:
        return True
    if not attrs.resource_request:
        if attrs.verb != "get":
            return False
        if attrs.path in PUBLIC_PATHS:
            return True
        authenticated = "system:authenticated" in attrs.groups
        return authenticated and attrs.path.startswith(_DISCOVERY_PREFIXES)
    return "system:authenticated" in attrs.groups and (
        attrs.api_group == "authorization.k8s.io"
        and attrs.resource in ("selfsubjectaccessreviews", "selfsubjectrulesreviews")
        and attrs.verb == "create"
    )


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store
        reg = store.registry
        self._roles = reg.by_key("roles.rbac.authorization.k8s.io")
        self._bindings = reg.by_key("rolebindings.rbac.authorization.k8s.io")
        self._cluster_roles = reg.by_key("clusterroles.rbac.authorization.k8s.io")
        self._cluster_bindings = reg.by_key("clusterrolebindings.rbac.authorization.k8s.io")

    def _rules(self, ref: Obj, binding_namespace: str) -> list[Obj]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self._store.find(self._cluster_roles, "", name)
        elif kind == "Role" and binding_namespace:
            role = self._store.find(self._roles, binding_namespace, name)
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def allowed(self, attrs: Attributes) -> bool:
        if is_always_allowed(attrs):
            return True
        everything = lambda _obj: True  # noqa: E731
        bindings = [
            (b, "") for b in self._store.list(self._cluster_bindings, None, everything).items
        ]
        if attrs.namespace:
            bindings += [
                (b, attrs.namespace)
                for b in self._store.list(self._bindings, attrs.namespace, everything).items
            ]
        for binding, namespace in bindings:
            subjects = binding.get("subjects") or []
            if not any(_subject_applies(s, attrs, namespace) for s in subjects):
                continue
            if any(
                rule_allows(r, attrs) for r in self._rules(binding.get("roleRef") or {}, namespace)
            ):
                return True
        return False
