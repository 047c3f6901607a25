"""The stand-in API server answers like the real kube-apiserver v1.37 (same request, both
servers, same status code, reason and message).

Each case is a difference the real server showed and the stand-in was fixed for; the ones not
fixed yet are listed in STANDINS.md.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.sandbox.kubeapi import KubeApiServer
from tests.real.cluster import Cluster

pytestmark = pytest.mark.real

NS = "parity"
CASES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "list-at-a-future-resource-version": (
        "GET",
        f"/api/v1/namespaces/{NS}/configmaps?resourceVersion=999999999",
        None,
    ),
    "secret-with-bad-base64": (
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {"metadata": {"name": "s"}, "data": {"k": "!!!"}},
    ),
    "secret-with-unpadded-base64": (
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        {"metadata": {"name": "s"}, "data": {"k": "YWJjZA"}},
    ),
    "name-not-a-dns-subdomain": (
        "POST",
        f"/api/v1/namespaces/{NS}/configmaps",
        {"metadata": {"name": "Bad_Name"}},
    ),
    "missing-object": ("GET", f"/api/v1/namespaces/{NS}/configmaps/nope", None),
}


@pytest.fixture(scope="module")
def stand_in(cluster: Cluster) -> Iterator[KubeApiServer]:
    """Started in the cluster's network namespace, where the tests run."""
    with cluster.netns.inside():
        server = KubeApiServer().start()
    yield server
    server.stop()


def _stand_in_http(server: KubeApiServer, method: str, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _answer(status: int, doc: Any) -> tuple[int, Any, Any]:
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        return status, doc.get("reason"), doc.get("message")
    return status, "object", None


@pytest.mark.parametrize("case", list(CASES))
def test_the_stand_in_answers_like_the_real_server(
    case: str, inside: Cluster, stand_in: KubeApiServer
) -> None:
    method, path, body = CASES[case]
    inside.ensure_namespace(NS)
    _stand_in_http(stand_in, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    real = _answer(*inside.http(method, path, body))
    ours = _answer(*_stand_in_http(stand_in, method, path, body))
    # The current resourceVersion differs between two servers; the rest must not.
    assert (real[0], real[1]) == (ours[0], ours[1]), (real, ours)
    assert _without_current_rv(str(real[2])) == _without_current_rv(str(ours[2])), (real, ours)


def _without_current_rv(text: str) -> str:
    return text.split(", current: ", maxsplit=1)[0]
