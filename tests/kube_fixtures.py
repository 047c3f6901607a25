"""Fixtures for tests that need the Kubernetes API stand-in.

Import the fixtures you use into your test module::

    from tests.kube_fixtures import kube_api, kube_client  # noqa: F401

``kube_api`` is a started ``KubeApiServer`` (stopped in the finalizer); ``kube_client`` an
official-client ``ApiClient`` logged in as the admin; ``kubeconfig`` a kubeconfig file for it.
``client_for(server, token)`` builds a client for any token (e.g. a ServiceAccount's);
``register_backend(api, port)`` puts a loopback HTTP server behind the Service
``kube-system/sealed-secrets-controller`` (port ``http``) as a real install looks: its Pod
and an EndpointSlice naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from rotator_sandbox.kubeapi import KubeApiServer


def client_for(server: KubeApiServer, token: str | None = None) -> client.ApiClient:
    """An official-client ApiClient for ``server`` (HTTP or HTTPS) with ``token`` (admin's)."""
    return config.new_client_from_config_dict(server.kubeconfig(token=token))


def register_backend(
    api: client.ApiClient, port: int, *, pod_ip: str = "127.0.0.1", target_ref: bool = True
) -> None:
    """The controller's Pod (``podIPs``) and an EndpointSlice naming it, as a real install has."""
    core = client.CoreV1Api(api)
    pod = core.create_namespaced_pod(
        "kube-system",
        {
            "metadata": {"name": "sealed-secrets-controller-0"},
            "spec": {"containers": [{"name": "c", "image": "controller"}]},
        },
        _preload_content=False,
    )
    uid = json.loads(pod.data)["metadata"]["uid"]
    core.patch_namespaced_pod_status(
        "sealed-secrets-controller-0",
        "kube-system",
        {"status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}},
        _preload_content=False,
    )
    endpoint: dict[str, Any] = {"addresses": ["127.0.0.1"], "conditions": {"ready": True}}
    if target_ref:
        endpoint["targetRef"] = {
            "kind": "Pod",
            "namespace": "kube-system",
            "name": "sealed-secrets-controller-0",
            "uid": uid,
        }
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(
        "kube-system",
        {
            "metadata": {
                "name": "sealed-secrets-controller-abcde",
                "labels": {"kubernetes.io/service-name": "sealed-secrets-controller"},
            },
            "addressType": "IPv4",
            "endpoints": [endpoint],
            "ports": [{"name": "http", "port": port}],
        },
        _preload_content=False,
    )


def namespace(api: client.ApiClient, name: str) -> None:
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})


@pytest.fixture
def kube_api() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_client(kube_api: KubeApiServer) -> Iterator[client.ApiClient]:
    api = client_for(kube_api)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def kubeconfig(kube_api: KubeApiServer, tmp_path: Path) -> Path:
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig")
