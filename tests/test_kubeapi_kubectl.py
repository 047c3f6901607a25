"""The API stand-in through kubectl (skipped where kubectl is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from rotator_sandbox.kubeapi import KubeApiServer
from tests.kube_fixtures import client_for, namespace
from tests.test_kubeapi import NS, application, deployment, sealed_secret

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


class World:
    def __init__(self, server: KubeApiServer, kubeconfig: Path) -> None:
        self.server = server
        self.kubeconfig = kubeconfig
        self.api = client_for(server)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def seed(api: client.ApiClient) -> None:
    namespace(api, NS)
    namespace(api, "argocd")
    client.AppsV1Api(api).create_namespaced_deployment(NS, deployment("align-prod-gateway"))
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        "bitnami.com", "v1alpha1", NS, "sealedsecrets", sealed_secret()
    )
    custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", application()
    )
    client.CoreV1Api(api).create_namespaced_secret(
        NS, {"metadata": {"name": "align-posthog"}, "stringData": {"POSTHOG_API_KEY": "phc_x"}}
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    server = KubeApiServer(tls=True, rbac=True).start()
    w = World(server, server.write_kubeconfig(tmp_path / "kubeconfig"))
    seed(w.api)
    try:
        yield w
    finally:
        w.api.close()
        server.stop()


def test_kubectl_gets_deployments_sealed_secrets_and_applications_across_namespaces(
    world: World,
) -> None:
    out = world.kubectl("get", "deploy,sealedsecrets,applications", "-A")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(
        "align-prod" in line and "deployment.apps/align-prod-gateway" in line for line in lines
    )
    assert any("sealedsecret.bitnami.com/align-posthog" in line for line in lines)
    assert any("application.argoproj.io/align-prod" in line for line in lines)
    assert "SYNC STATUS" in out.stdout


def test_kubectl_lists_secrets_with_type_and_data_count(world: World) -> None:
    out = world.kubectl("get", "secret", "-n", NS)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "TYPE", "DATA"]
    assert row.split()[:3] == ["align-posthog", "Opaque", "1"]


def test_kubectl_rollout_restart_bumps_the_generation_with_a_restarted_at_annotation(
    world: World,
) -> None:
    out = world.kubectl("rollout", "restart", "deploy/align-prod-gateway", "-n", NS)
    assert out.returncode == 0, out.stderr
    dep = client.AppsV1Api(world.api).read_namespaced_deployment("align-prod-gateway", NS)
    assert dep.metadata.generation == 2
    assert "kubectl.kubernetes.io/restartedAt" in dep.spec.template.metadata.annotations


def test_kubectl_rollout_status_waits_for_the_status_to_catch_up(world: World) -> None:
    apps = client.AppsV1Api(world.api)

    def roll_out() -> None:
        time.sleep(0.3)
        apps.patch_namespaced_deployment_status(
            "align-prod-gateway",
            NS,
            {
                "status": {
                    "observedGeneration": 1,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "readyReplicas": 2,
                    "availableReplicas": 2,
                }
            },
        )

    controller = threading.Thread(target=roll_out)
    controller.start()
    out = world.kubectl("rollout", "status", "deploy/align-prod-gateway", "-n", NS, "--timeout=60s")
    controller.join()
    assert out.returncode == 0, out.stderr
    assert 'deployment "align-prod-gateway" successfully rolled out' in out.stdout


def test_kubectl_apply_creates_then_leaves_unchanged(world: World, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: {NS}\n"
        "data:\n  a: b\n"
    )
    first = world.kubectl("apply", "-f", str(manifest))
    assert first.returncode == 0, first.stderr
    assert "configmap/applied created" in first.stdout
    again = world.kubectl("apply", "-f", str(manifest))
    assert "configmap/applied unchanged" in again.stdout


def test_kubectl_uses_a_service_account_token_and_rbac_applies(world: World) -> None:
    world.server.add_token("sa-token", user=f"system:serviceaccount:{NS}:rotator")
    rbac = client.RbacAuthorizationV1Api(world.api)
    rbac.create_namespaced_role(
        NS,
        {
            "metadata": {"name": "read-secret"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get"],
                    "resourceNames": ["align-posthog"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        NS,
        {
            "metadata": {"name": "read-secret"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-secret",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "rotator", "namespace": NS}],
        },
    )
    kubeconfig = world.server.write_kubeconfig(
        world.kubeconfig.with_name("sa"), token="sa-token", user="rotator", namespace=NS
    )
    got = world.kubectl("get", "secret", "align-posthog", "-o", "name", kubeconfig=kubeconfig)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "secret/align-posthog"
    listed = world.kubectl("get", "secrets", kubeconfig=kubeconfig)
    assert listed.returncode != 0
    assert 'User "system:serviceaccount:align-prod:rotator" cannot list resource "secrets"' in (
        listed.stderr
    )
    yes = world.kubectl("auth", "can-i", "get", "secret/align-posthog", kubeconfig=kubeconfig)
    assert yes.stdout.strip() == "yes"
    no = world.kubectl("auth", "can-i", "delete", "secret/align-posthog", kubeconfig=kubeconfig)
    assert no.stdout.strip() == "no"


def test_kubectl_over_plain_http_works_anonymously_without_rbac(tmp_path: Path) -> None:
    with KubeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kc")
        api = client_for(server)
        seed(api)
        api.close()
        world = World(server, kubeconfig)
        out = world.kubectl("get", "deploy", "-A", "-o", "name")
        world.api.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "deployment.apps/align-prod-gateway"


def test_kubectl_get_watch_prints_table_rows_as_things_change(world: World) -> None:
    # The change is made only after kubectl has printed the first row, so a slow kubectl start
    # on a loaded machine cannot make it list the changed object first (no timing in the test).
    assert KUBECTL is not None
    watcher = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(world.kubeconfig), "get", "deploy", "-n", NS, "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(60, watcher.kill)  # a deadline, never reached when all is well
    killer.start()
    try:
        assert watcher.stdout is not None
        rows = [watcher.stdout.readline().split()[:2] for _ in range(2)]
        client.AppsV1Api(world.api).patch_namespaced_deployment_status(
            "align-prod-gateway", NS, {"status": {"readyReplicas": 1}}
        )
        rows.append(watcher.stdout.readline().split()[:2])
    finally:
        killer.cancel()
        watcher.kill()
        watcher.communicate()
    assert rows == [
        ["NAME", "READY"],
        ["align-prod-gateway", "0/2"],
        ["align-prod-gateway", "1/2"],
    ]


def test_kubectl_create_namespace_secret_and_configmap_send_protobuf_the_server_reads(
    world: World,
) -> None:
    for args in (
        ("create", "namespace", "extra"),
        ("create", "secret", "generic", "s", "-n", "extra", "--from-literal=K=phc_x"),
        ("create", "configmap", "c", "-n", "extra", "--from-literal=a=b"),
        ("create", "serviceaccount", "rotator", "-n", "extra"),
    ):
        out = world.kubectl(*args)
        assert out.returncode == 0, out.stderr
    core = client.CoreV1Api(world.api)
    assert core.read_namespaced_secret("s", "extra").data == {"K": "cGhjX3g="}
    assert core.read_namespaced_config_map("c", "extra").data == {"a": "b"}
    assert core.read_namespaced_service_account("rotator", "extra").metadata.name == "rotator"
