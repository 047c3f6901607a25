"""The API surface of the stand-in: routing, authentication, RBAC, resources, discovery.

Routing follows k8s.io/apiserver ``endpoints/request/requestinfo.go`` (namespace subresources
``status``/``finalize``, the legacy ``/watch/`` prefix, a ``metadata.name`` field selector naming
a list/watch for RBAC). Watches are chunked HTTP/1.1 streams of one JSON event per chunk.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

from rotator_sandbox.kubeapi import patch as patches
from rotator_sandbox.kubeapi import protobuf
from rotator_sandbox.kubeapi.negotiation import (
    PARTIAL,
    TABLE,
    negotiate,
    partial_events,
    partial_list,
    partial_single,
)
from rotator_sandbox.kubeapi.proxy import (
    SERVICE_NAME_LABEL,
    forward,
    pick_backend,
    split_scheme_name_port,
)
from rotator_sandbox.kubeapi.rbac import (
    MASTERS,
    Attributes,
    Authorizer,
    Identity,
    forbidden_message,
)
from rotator_sandbox.kubeapi.resources import (
    SERVER_VERSION,
    Registry,
    ResourceType,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    openapi_v3_group_version,
    openapi_v3_root,
)
from rotator_sandbox.kubeapi.selectors import (
    Matcher,
    build_matcher,
    exact_name,
    parse_field_selector,
)
from rotator_sandbox.kubeapi.status import (
    ApiError,
    bad_request,
    invalid,
    method_not_allowed,
    path_not_found,
    unauthorized,
    unsupported_patch,
)
from rotator_sandbox.kubeapi.store import Store
from rotator_sandbox.kubeapi.tables import table, table_events
from rotator_sandbox.kubeapi.tls import make_serving_certificate
from rotator_sandbox.kubeapi.transport import (
    Handler,
    HTTPServer,
    Request,
    Response,
    json_response,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
DEFAULT_WATCH_TIMEOUT_S = 1800.0  # the real server's --min-request-timeout
AUTH_GROUP = "authorization.k8s.io"
SSAR_PATH = f"/apis/{AUTH_GROUP}/v1/selfsubjectaccessreviews"


ANONYMOUS = Identity("system:anonymous", ("system:unauthenticated",))


@dataclass(frozen=True)
class AuditEntry:
    """One authorisation decision: what RBAC saw and what it said."""

    user: str
    verb: str
    resource: str  # "deployments", "pods/exec", or the path of a non-resource request
    namespace: str
    name: str
    allowed: bool
    api_group: str = ""
    # The request's Accept header: the stand-in's own record (a real audit Event has no such
    # field), so that tests can tell a metadata-only read (as=PartialObjectMetadata) from a
    # full one, which RBAC cannot.
    accept: str = ""


@dataclass(frozen=True)
class Target:
    """A parsed resource path."""

    rt: ResourceType
    namespace: str | None  # None: all namespaces (list/watch) or cluster-scoped
    name: str
    subresource: str
    rest: str  # the path after a proxy subresource
    legacy_watch: bool


def _verb(method: str, *, has_name: bool, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if has_name else "list"
    if method == "DELETE":
        return "delete" if has_name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


class KubeApiServer:
    """A Kubernetes API server stand-in on a loopback port.

    Identities: ``token`` is the admin bearer token (user ``admin``, group ``system:masters``,
    which RBAC never restricts); when omitted a random one is generated (``admin_token``).
    ``add_token`` adds more (a ServiceAccount is ``system:serviceaccount:<ns>:<name>``). A
    request without credentials is ``system:anonymous`` (as with ``--anonymous-auth=true``); a
    wrong token is 401.

    Authorization: with ``rbac=False`` (default) everything is allowed; with ``rbac=True`` every
    identity outside ``system:masters`` is checked against the Role/RoleBinding/ClusterRole/
    ClusterRoleBinding objects stored in the server (see ``rbac``). ``audit_log()`` lists every
    decision.

    Transport: plain HTTP by default. kubectl sends kubeconfig credentials only over TLS, so
    use ``tls=True`` (a throwaway CA, embedded in ``kubeconfig()``) when kubectl must act as a
    token's user; over HTTP kubectl is anonymous.

    Service proxy: resolved like the real server (1.37), through the Service's EndpointSlices
    (label ``kubernetes.io/service-name``; the slice port whose name is the Service port's name)
    to an endpoint whose ``targetRef`` Pod lists the address in ``status.podIPs`` (see
    ``proxy.pick_backend``). A controller serving on ADDRESS:PORT has a Pod with ``podIPs:
    [{ip: ADDRESS}]``, a Service with a named port and an EndpointSlice with ``endpoints:
    [{addresses: [ADDRESS], targetRef: {kind: Pod, namespace, name}}]`` and ``ports: [{name,
    port: PORT}]`` (``controllers.sealedsecrets.register_service``). Unlike the real server,
    a loopback ADDRESS is accepted.

    Watch history: at least ``watch_history`` events are kept; a watch or continue token older
    than that gets 410 Expired (``expire_watch_history()`` forces it).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        rbac: bool = False,
        watch_history: int = 1000,
        tls: bool = False,
    ) -> None:
        self._registry = Registry()
        self._store = Store(self._registry, history=watch_history)
        self._host = host
        self._port = port
        self._rbac = rbac
        self._authorizer = Authorizer(self._store)
        self.admin_token = token or secrets.token_urlsafe(24)
        self._tokens: dict[str, Identity] = {
            self.admin_token: Identity("admin", (MASTERS, "system:authenticated"))
        }
        self._tokens_lock = threading.Lock()
        self._audit: deque[AuditEntry] = deque(maxlen=100_000)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._certificate = make_serving_certificate(host) if tls else None
        self._seed()

    def _seed(self) -> None:
        """What every cluster has: the cluster-admin role and default service accounts."""
        cluster_roles = self._registry.by_key("clusterroles.rbac.authorization.k8s.io")
        self._store.create(
            cluster_roles,
            "",
            {
                "metadata": {"name": "cluster-admin"},
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]},
                ],
            },
        )
        service_accounts = self._registry.by_key("serviceaccounts")
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._store.create(service_accounts, ns, {"metadata": {"name": "default"}})

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        if self._httpd is not None:
            return self
        httpd = HTTPServer((self._host, self._port), Handler)
        if self._certificate is not None:
            httpd.tls = self._certificate.server_context()
        httpd.api = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="kubeapi", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        address = (self._host, int(httpd.server_address[1]))
        self._httpd = None
        self._store.stop()
        stopper = threading.Thread(target=httpd.shutdown, daemon=True)
        stopper.start()
        # wake the accept loop's select() at once instead of waiting out its poll interval
        with contextlib.suppress(OSError), socket.create_connection(address, 1):
            pass
        stopper.join(timeout=5)
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._certificate is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def ca_pem(self) -> bytes | None:
        """The CA that signed the serving certificate (``tls=True`` only)."""
        return None if self._certificate is None else self._certificate.ca_pem

    # --- identities -------------------------------------------------------------------------

    def add_token(self, token: str, *, user: str, groups: Sequence[str] = ()) -> None:
        """Accept ``token`` as ``user``. A ServiceAccount user (``system:serviceaccount:<ns>:<n>``)
        also gets the groups ``system:serviceaccounts`` and ``system:serviceaccounts:<ns>``."""
        all_groups = list(groups)
        if user.startswith("system:serviceaccount:"):
            namespace = user.split(":")[2]
            all_groups += ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
        all_groups.append("system:authenticated")
        with self._tokens_lock:
            self._tokens[token] = Identity(user, tuple(dict.fromkeys(all_groups)))

    def kubeconfig(
        self, *, token: str | None = None, user: str = "admin", namespace: str | None = None
    ) -> Obj:
        """A kubeconfig document for this server; ``token`` defaults to the admin's."""
        cluster: Obj = {"server": self.url}
        if self._certificate is not None:
            ca = base64.b64encode(self._certificate.ca_pem).decode()
            cluster["certificate-authority-data"] = ca
        context: Obj = {"cluster": "rotator-sandbox", "user": user}
        if namespace:
            context["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "rotator-sandbox", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "rotator-sandbox", "context": context}],
            "current-context": "rotator-sandbox",
            "preferences": {},
        }

    def write_kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        user: str = "admin",
        namespace: str | None = None,
    ) -> Path:
        """Write ``kubeconfig(...)`` to ``path`` (mode 0600: it holds a token)."""
        doc = self.kubeconfig(token=token, user=user, namespace=namespace)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def audit_log(self) -> list[AuditEntry]:
        return list(self._audit)

    def expire_watch_history(self) -> None:
        """Forget all watch history, as an etcd compaction would: older resourceVersions get 410."""
        self._store.compact()

    # --- request handling -------------------------------------------------------------------

    def authenticate(self, req: Request) -> Identity | None:
        """The caller's identity; anonymous without credentials; None for a bad token."""
        header = req.headers.get("authorization", "")
        if not header:
            return ANONYMOUS
        if not header.lower().startswith("bearer "):
            return None
        with self._tokens_lock:
            return self._tokens.get(header[7:].strip())

    def authorize(self, attrs: Attributes, *, accept: str = "") -> None:
        allowed = not self._rbac or self._authorizer.allowed(attrs)
        resource = attrs.combined_resource if attrs.resource_request else attrs.path
        entry = AuditEntry(
            attrs.user,
            attrs.verb,
            resource,
            attrs.namespace,
            attrs.name,
            allowed,
            attrs.api_group,
            accept,
        )
        self._audit.append(entry)
        if not allowed:
            details: Obj = {}
            if attrs.resource_request:
                details = {"name": attrs.name, "kind": attrs.resource}
                if attrs.api_group:
                    details["group"] = attrs.api_group
            raise ApiError(403, "Forbidden", forbidden_message(attrs), details=details)

    def parse_target(self, req: Request) -> Target | None:
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:2] == ["apis", AUTH_GROUP]:
            return None
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        legacy_watch = bool(rest) and rest[0] == "watch"
        if legacy_watch:
            rest = rest[1:]
        if not rest:
            return None
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        rt = self._registry.lookup(group, version, rest[0])
        if rt is None:
            raise path_not_found(req.path)
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        tail = "/".join(rest[3:])
        if len(rest) > 3 and subresource != "proxy":
            raise path_not_found(req.path)
        if rt.namespaced and namespace is None and name:
            raise path_not_found(req.path)
        if not rt.namespaced and namespace is not None:
            raise path_not_found(req.path)
        if subresource and subresource not in rt.subresources:
            raise path_not_found(req.path)
        return Target(rt, namespace, name, subresource, tail, legacy_watch)

    def handle(self, req: Request) -> Response | Iterator[Obj]:
        path = req.path.rstrip("/") or "/"
        identity = self.authenticate(req)
        if identity is None:
            raise unauthorized()
        req.identity = identity
        if path == SSAR_PATH:
            self.authorize(
                Attributes(
                    user=identity.user,
                    groups=identity.groups,
                    verb=_verb(req.method, has_name=False, watch=False),
                    api_group=AUTH_GROUP,
                    resource="selfsubjectaccessreviews",
                )
            )
            if req.method != "POST":
                raise method_not_allowed(req.method)
            return self._self_subject_access_review(req)
        target = self.parse_target(req)
        if target is None:
            return self._non_resource(req, path)
        watch = target.legacy_watch or req.flag("watch")
        name = target.name
        if not name and req.method in ("GET", "HEAD"):  # list/watch only, as requestinfo.go
            # a malformed selector is reported after authorization, by the handler
            with contextlib.suppress(ApiError):
                fields = parse_field_selector(req.param("fieldSelector"), target.rt)
                name = exact_name(fields) or ""
        namespace = target.namespace or ""
        if target.rt.key == "namespaces":
            namespace = target.name
        attrs = Attributes(
            user=identity.user,
            groups=identity.groups,
            verb=_verb(req.method, has_name=bool(target.name), watch=watch),
            api_group=target.rt.group,
            resource=target.rt.plural,
            subresource=target.subresource,
            namespace=namespace,
            name=name,
        )
        self.authorize(attrs, accept=req.headers.get("accept", ""))
        return self._resource(req, target, watch)

    def _non_resource(self, req: Request, path: str) -> Response:
        assert req.identity is not None
        self.authorize(
            Attributes(
                user=req.identity.user,
                groups=req.identity.groups,
                verb="get" if req.method == "HEAD" else req.method.lower(),
                path=path,
                resource_request=False,
            )
        )
        if req.method not in ("GET", "HEAD"):
            raise method_not_allowed(req.method)
        if path == "/version":
            return json_response(200, SERVER_VERSION)
        if path == "/openapi/v3":
            return json_response(200, openapi_v3_root(self._registry))
        if path.startswith("/openapi/v3/"):
            parts = path.split("/")[3:]
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[-1])
            spec = openapi_v3_group_version(self._registry, group, version)
            if spec is None or len(parts) not in (2, 3):
                raise path_not_found(path)
            return json_response(200, spec)
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if path == "/api":
            return json_response(200, api_versions(f"{self._host}:{self.port}"))
        if path == "/apis":
            doc = api_group_list(self._registry)
            gv = {"groupVersion": f"{AUTH_GROUP}/v1", "version": "v1"}
            doc["groups"].append({"name": AUTH_GROUP, "versions": [gv], "preferredVersion": gv})
            return json_response(200, doc)
        if path == f"/apis/{AUTH_GROUP}/v1":
            return json_response(200, _authorization_resources())
        parts = path.strip("/").split("/")
        found: Obj | None = None
        if parts == ["api", "v1"]:
            found = api_resource_list(self._registry, "", "v1")
        elif len(parts) == 2 and parts[0] == "apis":
            found = api_group(self._registry, parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            found = api_resource_list(self._registry, parts[1], parts[2])
        if found is None:
            raise path_not_found(path)
        return json_response(200, found)

    def _self_subject_access_review(self, req: Request) -> Response:
        assert req.identity is not None
        if _content_type(req) == protobuf.PROTOBUF:
            try:
                _, _, raw_review = protobuf.unwrap(req.body)
                body = protobuf.self_subject_access_review(raw_review)
            except protobuf.ProtobufError as exc:
                raise bad_request(f"cannot decode the protobuf body: {exc}") from exc
        else:
            body = _parse_json(req.body)
        spec = body.get("spec") or {}
        res = spec.get("resourceAttributes")
        if isinstance(res, dict):
            attrs = Attributes(
                user=req.identity.user,
                groups=req.identity.groups,
                verb=str(res.get("verb", "")),
                api_group=str(res.get("group", "")),
                resource=str(res.get("resource", "")),
                subresource=str(res.get("subresource", "")),
                namespace=str(res.get("namespace", "")),
                name=str(res.get("name", "")),
            )
        else:
            non = spec.get("nonResourceAttributes") or {}
            attrs = Attributes(
                user=req.identity.user,
                groups=req.identity.groups,
                verb=str(non.get("verb", "")),
                path=str(non.get("path", "")),
                resource_request=False,
            )
        allowed = not self._rbac or self._authorizer.allowed(attrs)
        body.update(
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": f"{AUTH_GROUP}/v1",
                "status": {"allowed": allowed},
            }
        )
        body.setdefault("metadata", {})
        return json_response(201, body)

    # --- resources --------------------------------------------------------------------------

    def _resource(self, req: Request, target: Target, watch: bool) -> Response | Iterator[Obj]:
        rt = target.rt
        sub = target.subresource
        if req.body and _content_type(req) == protobuf.PROTOBUF and sub != "proxy":
            req.body = _protobuf_to_json(req, rt)
        if sub == "proxy":
            return self._proxy(req, target)
        if sub == "exec":
            raise bad_request("Upgrade request required")  # never executes anything
        if sub == "log":
            if req.method != "GET":
                raise method_not_allowed(req.method)
            self._store.get(rt, target.namespace or "", target.name)
            return Response(200, b"", "text/plain")
        if sub == "scale":
            return self._scale(req, target)
        # handlers/get.go, create.go ...: NegotiateOutputMediaType comes before storage, so an
        # Accept nothing can answer is 406 even for an object that does not exist
        negotiate(req.headers.get("accept", ""))
        namespace = target.namespace or ""
        method = req.method
        dry_run = req.param("dryRun") == "All"
        if method in ("GET", "HEAD"):
            if target.name and not watch:
                obj = self._store.get(rt, namespace, target.name)
                return self._single(req, rt, obj, 200)
            return self._list_or_watch(req, target, watch)
        if method == "POST":
            if target.name:
                raise method_not_allowed(method)
            obj = self._store.create(rt, namespace, _parse_json(req.body), dry_run=dry_run)
            return self._single(req, rt, obj, 201)
        if not target.name:
            if method == "DELETE":
                return self._delete_collection(req, target)
            raise method_not_allowed(method)
        if method == "PUT":
            obj = self._store.update(
                rt, namespace, target.name, _parse_json(req.body), subresource=sub, dry_run=dry_run
            )
            return self._single(req, rt, obj, 200)
        if method == "PATCH":
            obj = self._patch(req, target, dry_run=dry_run)
            return self._single(req, rt, obj, 200)
        if method == "DELETE" and not sub:
            return self._delete(req, target, dry_run=dry_run)
        raise method_not_allowed(method)

    def _delete(self, req: Request, target: Target, *, dry_run: bool) -> Response:
        rt = target.rt
        options = _parse_json(req.body) if req.body.strip() else {}
        pre = options.get("preconditions") or {}
        orphan = (
            options.get("propagationPolicy") == "Orphan"
            or req.param("propagationPolicy") == "Orphan"
            or options.get("orphanDependents") is True
        )
        grace = options.get("gracePeriodSeconds", req.param("gracePeriodSeconds"))
        obj = self._store.delete(
            rt,
            target.namespace or "",
            target.name,
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
            orphan=orphan,
            dry_run=dry_run or "All" in (options.get("dryRun") or []),
            grace_period_s=None if grace in (None, "") else int(grace),
        )
        if rt.return_deleted_object:
            return self._single(req, rt, obj, 200)
        return json_response(200, _success(rt, obj))

    def _ensure_not_too_large(self, req: Request) -> None:
        """A LIST at a resourceVersion the server has not reached: 504 Timeout (k8s.io/apiserver
        pkg/storage/cacher/watch_cache.go ``waitUntilFreshAndBlock`` ->
        pkg/storage/errors.go ``NewTooLargeResourceVersionError``). The real server first waits
        up to 3 s for the version to arrive; the stand-in, whose versions are all local,
        answers at once."""
        rv_param = req.param("resourceVersion")
        if rv_param in ("", "0") or req.param("resourceVersionMatch") not in ("", "NotOlderThan"):
            return
        try:
            wanted = int(rv_param)
        except ValueError as exc:
            raise bad_request(f"invalid resource version: {rv_param}") from exc
        current = self._store.resource_version
        if wanted > current:
            raise ApiError(
                504,
                "Timeout",
                f"Timeout: Too large resource version: {wanted}, current: {current}",
                details={
                    "causes": [
                        {
                            "reason": "ResourceVersionTooLarge",
                            "message": "Too large resource version",
                        }
                    ],
                    "retryAfterSeconds": 1,
                },
            )

    def _single(self, req: Request, rt: ResourceType, obj: Obj, code: int) -> Response:
        convert = negotiate(req.headers.get("accept", ""))
        if convert is not None and convert.kind == TABLE and req.method == "GET":
            rv = str(obj["metadata"].get("resourceVersion", ""))
            doc = table(
                rt, [obj], rv=rv, version=convert.version, include=req.param("includeObject")
            )
            return json_response(code, doc)
        if convert is not None and convert.kind != TABLE:
            # response.go transformResponseObject: writes are answered converted too
            return json_response(code, partial_single(obj, convert))
        return json_response(code, obj)

    def _matcher(self, req: Request, rt: ResourceType) -> Matcher:
        return build_matcher(req.param("labelSelector"), req.param("fieldSelector"), rt)

    def _list_or_watch(self, req: Request, target: Target, watch: bool) -> Response | Iterator[Obj]:
        rt = target.rt
        match = self._matcher(req, rt)
        if target.name:  # the deprecated watch of one named object
            selected, wanted = match, target.name
            match = lambda o: o["metadata"]["name"] == wanted and selected(o)  # noqa: E731
        namespace = target.namespace if rt.namespaced else None
        if watch:
            rv_param = req.param("resourceVersion")
            since: int | None = None
            if rv_param not in ("", "0") and not req.flag("sendInitialEvents"):
                try:
                    since = int(rv_param)
                except ValueError as exc:
                    raise bad_request(f"invalid resource version: {rv_param}") from exc
            timeout = req.param("timeoutSeconds")
            try:
                seconds = float(timeout) if timeout else DEFAULT_WATCH_TIMEOUT_S
            except ValueError as exc:
                raise bad_request(f"invalid timeoutSeconds: {timeout}") from exc
            events = self._store.watch(
                rt,
                namespace,
                match,
                since=since,
                deadline=time.monotonic() + seconds,
                bookmarks=req.flag("allowWatchBookmarks"),
                initial_events_end=req.flag("sendInitialEvents"),
            )
            convert = negotiate(req.headers.get("accept", ""))
            if convert is not None and convert.kind == TABLE:
                return table_events(events, rt, convert.version, req.param("includeObject"))
            if convert is not None and convert.kind == PARTIAL:
                return partial_events(events, convert.version)
            # response.go watchEmbeddedEncoder.doEncode: a PartialObjectMetadataList conversion
            # fails on each single object, is logged, and the object goes out unconverted
            return events
        try:
            limit = int(req.param("limit") or 0)
        except ValueError as exc:
            raise bad_request("limit must be an integer") from exc
        self._ensure_not_too_large(req)
        result = self._store.list(
            rt, namespace, match, limit=max(0, limit), continue_token=req.param("continue")
        )
        convert = negotiate(req.headers.get("accept", ""))
        doc: Obj
        if convert is not None and convert.kind == TABLE:
            doc = table(
                rt,
                result.items,
                rv=str(result.resource_version),
                version=convert.version,
                include=req.param("includeObject"),
            )
        elif convert is not None:
            doc = partial_list(
                result.items, {"resourceVersion": str(result.resource_version)}, convert
            )
        else:
            items = result.items
            if not rt.custom:  # typed lists carry no kind/apiVersion per item
                items = [
                    {k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items
                ]
            doc = {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(result.resource_version)},
                "items": items,
            }
        if result.continue_token:
            doc["metadata"]["continue"] = result.continue_token
            if result.remaining is not None:
                doc["metadata"]["remainingItemCount"] = result.remaining
        return json_response(200, doc)

    def _delete_collection(self, req: Request, target: Target) -> Response:
        rt = target.rt
        match = self._matcher(req, rt)
        namespace = target.namespace if rt.namespaced else None
        result = self._store.list(rt, namespace, match)
        deleted = []
        for obj in result.items:
            meta = obj["metadata"]
            with contextlib.suppress(ApiError):
                deleted.append(self._store.delete(rt, meta.get("namespace", ""), meta["name"]))
        doc = {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._store.resource_version)},
            "items": deleted,
        }
        return json_response(200, doc)

    def _patch(self, req: Request, target: Target, *, dry_run: bool) -> Obj:
        rt = target.rt
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        # server-side apply (application/apply-patch+yaml) is not implemented: 415 for it too
        accepted = [JSON_PATCH, MERGE_PATCH]
        if not rt.custom:
            accepted.append(STRATEGIC_PATCH)
        if content_type not in accepted:
            raise unsupported_patch(accepted)
        body = _parse_json(req.body, any_value=True)
        namespace = target.namespace or ""
        pinned_by_caller = _pins_resource_version(body, content_type)
        # retry the read-modify-write on a concurrent change, like the real patcher, unless the
        # patch itself pins a resourceVersion (then the conflict is the caller's)
        for _ in range(5):
            current = self._store.get(rt, namespace, target.name)
            try:
                if content_type == JSON_PATCH:
                    patched = patches.json_patch(current, body)
                elif content_type == MERGE_PATCH:
                    patched = patches.merge_patch(current, body)
                else:
                    patched = patches.strategic_merge(current, body, kind=rt.kind)
            except patches.PatchError as exc:
                raise bad_request(str(exc)) from exc
            except patches.PatchConflict as exc:
                raise invalid(rt, target.name, [("patch", str(exc))]) from exc
            if not isinstance(patched, dict):
                raise bad_request("the patch produced something other than an object")
            meta = patched.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            if meta.get("resourceVersion") is None:
                meta["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                return self._store.update(
                    rt,
                    namespace,
                    target.name,
                    patched,
                    subresource=target.subresource,
                    dry_run=dry_run,
                    from_patch=True,
                )
            except ApiError as exc:
                if exc.reason != "Conflict" or pinned_by_caller:
                    raise
        raise ApiError(409, "Conflict", "too many concurrent changes; retry the patch")

    def _scale(self, req: Request, target: Target) -> Response:
        rt = target.rt
        namespace = target.namespace or ""
        obj = self._store.get(rt, namespace, target.name)
        if req.method == "GET":
            return json_response(200, _scale_doc(obj))
        if req.method == "PUT":
            scale = _parse_json(req.body)
        elif req.method == "PATCH":
            content_type = req.headers.get("content-type", "").split(";")[0].strip()
            body = _parse_json(req.body, any_value=True)
            current = _scale_doc(obj)
            try:
                if content_type == JSON_PATCH:
                    scale = patches.json_patch(current, body)
                elif content_type in (MERGE_PATCH, STRATEGIC_PATCH):
                    scale = patches.merge_patch(current, body)
                else:
                    raise unsupported_patch([JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH])
            except (patches.PatchError, patches.PatchConflict) as exc:
                raise bad_request(str(exc)) from exc
        else:
            raise method_not_allowed(req.method)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(rt, target.name, [("spec.replicas", "Invalid value: must be >= 0")])
        new = patches.clone(obj)
        new["spec"]["replicas"] = replicas
        want_rv = (scale.get("metadata") or {}).get("resourceVersion")
        new["metadata"]["resourceVersion"] = want_rv or obj["metadata"]["resourceVersion"]
        updated = self._store.update(rt, namespace, target.name, new, from_patch=True)
        return json_response(200, _scale_doc(updated))

    # --- service proxy ----------------------------------------------------------------------

    def _proxy(self, req: Request, target: Target) -> Response:
        """Resolve like ``pkg/registry/core/service/storage`` ``ResourceLocation``: a numeric
        port picks the Service port's name; the name is matched against the Endpoints ports."""
        if target.rt.key != "services":
            raise path_not_found(req.path)
        namespace = target.namespace or ""
        scheme, name, port = split_scheme_name_port(target.name)
        if scheme not in ("", "http"):
            raise ApiError(
                503, "ServiceUnavailable", f"unsupported scheme {scheme!r} for {target.name!r}"
            )
        service = self._store.get(self._registry.by_key("services"), namespace, name)
        if port.isdigit():
            for svc_port in (service.get("spec") or {}).get("ports") or []:
                if str(svc_port.get("port")) == port:
                    port = str(svc_port.get("name", ""))
                    break
            else:
                raise ApiError(
                    503, "ServiceUnavailable", f'no service port {port} found for service "{name}"'
                )
        slices = self._store.list(
            self._registry.by_key("endpointslices.discovery.k8s.io"),
            namespace,
            lambda o: (o["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == name,
        ).items
        pods = self._registry.by_key("pods")

        def pod_ips(ns: str, pod_name: str) -> list[str] | None:
            pod = self._store.find(pods, ns, pod_name)
            if pod is None:
                return None
            return [str(i.get("ip")) for i in (pod.get("status") or {}).get("podIPs") or []]

        backend = pick_backend(slices, port, pod_ips, namespace)
        if backend is None:
            # proxy.RandomEndpoint names the bare Service, not the scheme:name:port segment
            raise ApiError(
                503, "ServiceUnavailable", f'no endpoints available for service "{name}"'
            )
        return forward(req, backend, "/" + target.rest)


def _scale_doc(obj: Obj) -> Obj:
    meta = obj["metadata"]
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def _success(rt: ResourceType, obj: Obj) -> Obj:
    meta = obj["metadata"]
    details: Obj = {"name": meta["name"], "kind": rt.plural, "uid": meta["uid"]}
    if rt.group:
        details["group"] = rt.group
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _pins_resource_version(body: Any, content_type: str) -> bool:
    if content_type == JSON_PATCH:
        return isinstance(body, list) and any(
            isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in body
        )
    meta = body.get("metadata") if isinstance(body, dict) else None
    return isinstance(meta, dict) and "resourceVersion" in meta


def _protobuf_to_json(req: Request, rt: ResourceType) -> bytes:
    unsupported = ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml",
    )
    if req.method != "POST" or rt.key not in (
        "namespaces",
        "serviceaccounts",
        "secrets",
        "configmaps",
    ):
        raise unsupported
    try:
        return json.dumps(protobuf.decode_object(req.body)).encode()
    except protobuf.ProtobufError as exc:
        raise unsupported from exc


def _content_type(req: Request) -> str:
    return req.headers.get("content-type", "").split(";")[0].strip().lower()


def _parse_json(raw: bytes, *, any_value: bool = False) -> Any:
    try:
        doc = json.loads(raw or b"null")
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc
    if not any_value and not isinstance(doc, dict):
        raise bad_request("the body of the request must be a JSON object")
    return doc


def _authorization_resources() -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{AUTH_GROUP}/v1",
        "resources": [
            {
                "name": "selfsubjectaccessreviews",
                "singularName": "selfsubjectaccessreview",
                "namespaced": False,
                "kind": "SelfSubjectAccessReview",
                "verbs": ["create"],
            }
        ],
    }
