"""Fixtures for tests that need the Kubernetes API stand-in.

Import the fixtures you use into your test module::

    from tests.kube_fixtures import kube_api, kube_client  # noqa: F401

``kube_api`` is a started ``KubeApiServer`` (stopped in the finalizer); ``kube_client`` an
official-client ``ApiClient`` logged in as the admin; ``kubeconfig`` a kubeconfig file for it.
``client_for(server, token)`` builds a client for any token (e.g. a ServiceAccount's).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from rotator.sandbox.kubeapi import KubeApiServer


def client_for(server: KubeApiServer, token: str | None = None) -> client.ApiClient:
    """An official-client ApiClient for ``server`` (HTTP or HTTPS) with ``token`` (admin's)."""
    return config.new_client_from_config_dict(server.kubeconfig(token=token))


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
