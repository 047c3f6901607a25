"""The service proxy's backend resolution (EndpointSlices -> a Pod's IP) and forwarding."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from typing import Any

from rotator_sandbox.kubeapi.status import ApiError, bad_request
from rotator_sandbox.kubeapi.transport import Request, Response

Obj = dict[str, Any]
PROXY_TIMEOUT_S = 30.0


def split_scheme_name_port(text: str) -> tuple[str, str, str]:
    """k8s.io/apimachinery ``net.SplitSchemeNamePort``."""
    parts = text.split(":")
    if len(parts) == 1:
        return "", parts[0], ""
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise bad_request(f"invalid service request {text!r}")


SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # discovery/v1 LabelServiceName


def pick_backend(
    slices: list[Obj],
    port_name: str,
    pod_ips: Callable[[str, str], list[str] | None],
    namespace: str,
) -> tuple[str, int] | None:
    """k8s.io/apiserver ``pkg/util/proxy/proxy.go`` ``RandomEndpoint`` with kubernetes
    ``pkg/registry/core/service/storage/storage.go`` ``isValidAddress``: from the Service's
    EndpointSlices, a port named ``port_name``, then a Ready endpoint (``conditions.ready`` not
    false) whose ``targetRef`` is a Pod of this namespace that lists ``addresses[0]`` in
    ``status.podIPs`` (the API server proxies only to pods). ``pod_ips(namespace, name)`` reads
    a Pod's IPs (None: no such Pod). Upstream picks at random; the first match is taken here.

    Deliberate difference: a loopback address is accepted (the sandbox runs in the host's
    network namespace, where everything listens on 127.0.0.1); the real server refuses it when
    the EndpointSlice is written (pkg/apis/discovery/validation: "may not be in the loopback
    range"), which is why the real tier runs in a private network namespace.
    """
    for slice_ in slices:
        for slice_port in slice_.get("ports") or []:
            if slice_port.get("name", "") != port_name or slice_port.get("port") is None:
                continue
            for ep in slice_.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                addresses = [str(a) for a in ep.get("addresses") or []]
                ref = ep.get("targetRef") or {}
                if not addresses or ref.get("kind", "Pod") != "Pod" or not ref.get("name"):
                    continue  # "endpoint has no target ref, skipping"
                if ref.get("namespace") != namespace:
                    continue  # "endpoint namespace doesn't match context namespace"
                ips = pod_ips(namespace, str(ref["name"]))
                if ips is None or addresses[0] not in ips:
                    continue  # "pod ip(s) doesn't match endpoint ip, skipping"
                return addresses[0], int(slice_port["port"])
    return None


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def forward(req: Request, backend: tuple[str, int], path: str) -> Response:
    target = path + (f"?{req.raw_query}" if req.raw_query else "")
    wanted = ("content-type", "accept", "user-agent")
    headers = {k: v for k, v in req.headers.items() if k in wanted and v}
    conn = http.client.HTTPConnection(backend[0], backend[1], timeout=PROXY_TIMEOUT_S)
    try:
        conn.request(req.method, target, body=req.body or None, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        content_type = resp.getheader("Content-Type") or "application/octet-stream"
        # apimachinery pkg/util/proxy/upgradeaware.go: the backend's response headers are
        # copied to the client (here the one a client acts on: a 429's Retry-After).
        passed = tuple((h, v) for h in ("Retry-After",) if (v := resp.getheader(h)))
        return Response(resp.status, body, content_type, passed)
    except OSError as exc:
        raise ApiError(
            503,
            "ServiceUnavailable",
            f"error trying to reach service: dial tcp {backend[0]}:{backend[1]}: {exc}",
        ) from exc
    finally:
        conn.close()
