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

from rotator_sandbox.kubeapi import KubeApiServer
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


def _stand_in_http(
    server: KubeApiServer, method: str, path: str, body: Any, *, accept: str = "application/json"
) -> tuple[int, Any]:
    req = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Accept": accept},
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


METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
SECRET = {
    "metadata": {"name": "meta", "annotations": {"rotator.align.dev/key-fingerprint": "fp"}},
    "stringData": {"k": "a-value-that-stays-home"},
}


def _shape(doc: Any) -> Any:
    """What must agree of a metadata-only answer (not uid, times, resourceVersion)."""
    meta = doc.get("metadata") or {}
    return (
        doc.get("kind"),
        doc.get("apiVersion"),
        sorted(doc),
        meta.get("name"),
        meta.get("namespace"),
        meta.get("annotations"),
        "a-value" in json.dumps(doc),
    )


def test_a_metadata_only_get_of_a_secret_is_answered_like_the_real_server(
    inside: Cluster, stand_in: KubeApiServer
) -> None:
    """secret-metadata-only: kind PartialObjectMetadata (meta.k8s.io/v1), metadata alone."""
    inside.ensure_namespace(NS)
    _stand_in_http(stand_in, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    inside.apply(f"/api/v1/namespaces/{NS}/secrets", SECRET)
    _stand_in_http(stand_in, "POST", f"/api/v1/namespaces/{NS}/secrets", SECRET)
    path = f"/api/v1/namespaces/{NS}/secrets/meta"

    real = inside.http("GET", path, accept=METADATA_ONLY)
    ours = _stand_in_http(stand_in, "GET", path, None, accept=METADATA_ONLY)
    assert real[0] == ours[0] == 200, (real, ours)
    assert _shape(real[1]) == _shape(ours[1]), (real, ours)
    assert _shape(ours[1])[-1] is False  # the value is not in the answer

    for accept in (
        "application/json;as=Secretish;g=meta.k8s.io;v=v1",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    ):
        real_406 = _answer(*inside.http("GET", path, accept=accept))
        ours_406 = _answer(*_stand_in_http(stand_in, "GET", path, None, accept=accept))
        assert (real_406[0], real_406[1]) == (ours_406[0], ours_406[1]) == (406, "NotAcceptable")
        # the stand-in leaves out the Go type the real message may end with
        assert str(real_406[2]).startswith(str(ours_406[2])), (real_406, ours_406)
