"""The service proxy's backend resolution and forwarding (loopback backends only)."""

from __future__ import annotations

import http.client
from typing import Any

from rotator.sandbox.kubeapi.status import ApiError, bad_request
from rotator.sandbox.kubeapi.transport import Request, Response

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


def pick_backend(endpoints: Obj, port_name: str) -> tuple[str, int] | None:
    for subset in endpoints.get("subsets") or []:
        addresses = [
            str(a.get("ip", ""))
            for a in subset.get("addresses") or []
            if is_loopback(str(a.get("ip", "")))
        ]
        if not addresses:
            continue
        for ep_port in subset.get("ports") or []:
            if ep_port.get("name", "") == port_name:
                return addresses[0], int(ep_port.get("port", 0))
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
        return Response(resp.status, body, content_type)
    except OSError as exc:
        raise ApiError(
            503,
            "ServiceUnavailable",
            f"error trying to reach service: dial tcp {backend[0]}:{backend[1]}: {exc}",
        ) from exc
    finally:
        conn.close()
