"""The sandbox's own controllers, unchanged, against the real kube-apiserver.

The stand-ins are specifications of upstream; here the real server is the judge of what they
write and of how they are reached. The sandbox's sealed-secrets controller registers itself as
a real install looks (its Pod with ``podIPs``, a Service, an EndpointSlice with ``targetRef``),
so the real service proxy reaches it; the loopback address the sandbox uses in the host's
network namespace is refused by the real server, which is the one deliberate difference of
the stand-in API server (sandbox/src/rotator_sandbox/kubeapi/proxy.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rotator_sandbox.controllers.sealedsecrets import SealedSecretsController
from tests.real.cluster import ADDRESS, CONTROLLER_NAME, CONTROLLER_NAMESPACE, Cluster
from tests.real.test_controller import rotator_kube
from tests.sealing_fixtures import controller_keys

pytestmark = pytest.mark.real

SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{CONTROLLER_NAMESPACE}/endpointslices"


@pytest.fixture
def sandbox_controller(inside: Cluster) -> Iterator[SealedSecretsController]:
    inside.stop_controller()
    inside.ensure_namespace(CONTROLLER_NAMESPACE)
    status, _ = inside.http(
        "GET", f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/serviceaccounts/default"
    )
    if status == 404:
        inside.ok(
            "POST",
            f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/serviceaccounts",
            {"metadata": {"name": "default"}},
        )
    for item in inside.ok("GET", SLICES).get("items") or []:
        inside.http("DELETE", f"{SLICES}/{item['metadata']['name']}")
    controller = SealedSecretsController(
        inside.kubeconfig("admin"), key_pairs=[controller_keys(2048)], address=ADDRESS
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()
        inside.http("DELETE", f"{SLICES}/{CONTROLLER_NAME}-sandbox")
        inside.http(
            "DELETE", f"/api/v1/namespaces/{CONTROLLER_NAMESPACE}/pods/{CONTROLLER_NAME}-sandbox"
        )


def test_the_real_service_proxy_reaches_the_sandbox_sealed_secrets_controller(
    sandbox_controller: SealedSecretsController, inside: Cluster
) -> None:
    kube = rotator_kube(inside, "admin")
    pem = kube.get(CONTROLLER_NAMESPACE, CONTROLLER_NAME, "http", "/v1/cert.pem")
    assert pem == controller_keys(2048).cert_pem


def test_the_real_server_refuses_a_loopback_endpoint_address(inside: Cluster) -> None:
    """Why the sandbox's 127.0.0.1 registration cannot work against a real server (and why
    the real tier runs in a private network namespace)."""
    status, out = inside.http(
        "POST",
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "loopback", "labels": {"kubernetes.io/service-name": "loopback"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"]}],
            "ports": [{"name": "http", "port": 8080}],
        },
    )
    assert status == 422, out
    assert "may not be in the loopback range" in str(out)
