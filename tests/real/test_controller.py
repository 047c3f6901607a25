"""The real sealed-secrets controller, against a real kube-apiserver, with rotator's own clients.

rotator (as its ServiceAccount, with exactly cronjob.yaml's Roles, RBAC authorization on) reads
the sealing cert and verifies through the real service proxy, seals with it, and its unseal wait
reads the real controller's status and Events: the current release and v0.24.2, whose status
never updates ``observedGeneration`` once ``Synced`` is True (pkg/controller/controller.go
``updateSealedSecretStatus`` of v0.24.2; fixed in v0.24.3). cronjob.yaml passes the real
server's validation (``kubectl apply --dry-run=server``).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from rotator.clients.kube import Kube
from rotator.clients.sealing import load_cert, seal_manifest, verify_with_controller
from rotator.config import ControllerRef, SealingScope, Timeouts, Waits
from rotator.errors import KubeError
from rotator.redact import fingerprint
from tests.go_tools import go_tool
from tests.real.cluster import CONTROLLER_NAME, CONTROLLER_NAMESPACE, Cluster
from tests.real.peers import peers
from tests.real.world import apply_rotator_rbac
from tests.sealing_fixtures import controller_keys

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
CRONJOB = ROOT / "cronjob.yaml"
NAMESPACE = "align-preview"
NAME = "align-posthog"
KEY_1 = "phc_RealTierFirstKey0123456789abcdefGHIJKLmn"  # fake project keys, for these tests only
KEY_2 = "phc_RealTierSecondKey123456789abcdefGHIJKLmn"
CONTROLLER = ControllerRef(name=CONTROLLER_NAME, namespace=CONTROLLER_NAMESPACE, port_name="http")
PEERS = peers()
OLD_RELEASE = "v0.24.2"


def rotator_kube(cluster: Cluster, who: str = "rotator") -> Kube:
    """rotator's own Kubernetes client, built as ``Kube.from_config`` builds it."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(cluster.kubeconfig(who)), client_configuration=configuration
    )
    configuration.retries = False
    return Kube(
        k8s.ApiClient(configuration),
        timeouts=Timeouts(connect_s=5, read_s=30, attempts=3),
        waits=Waits(poll_interval_s=0.2, watch_timeout_s=5),
    )


@pytest.fixture(scope="module")
def rbac(cluster: Cluster) -> Cluster:
    for ns in ("align-preview", "align-prod", "argocd", "kube-system"):
        cluster.ensure_namespace(ns)
    apply_rotator_rbac(cluster)
    return cluster


@pytest.fixture(params=PEERS.sealed_secrets_versions)
def controller(request: pytest.FixtureRequest, rbac: Cluster, inside: Cluster) -> Iterator[str]:
    """The real controller of one release, with the test's key; SealedSecrets cleared."""
    version = str(request.param)
    inside.http("DELETE", f"/apis/bitnami.com/v1alpha1/namespaces/{NAMESPACE}/sealedsecrets/{NAME}")
    inside.http("DELETE", f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}")
    inside.start_controller(version, controller_keys(4096))
    yield version
    inside.stop_controller()


def sealed_doc(
    kube: Kube, key: str, *, scope: SealingScope = SealingScope.STRICT
) -> dict[str, Any]:
    """rotator's cert fetch (service proxy, as rotator) and its sealing, as a dict."""
    pem = kube.get(CONTROLLER.namespace, CONTROLLER.name, CONTROLLER.port_name, "/v1/cert.pem")
    cert = load_cert(pem, source="the real controller", now=datetime.now(UTC))
    text = seal_manifest(
        {"POSTHOG_API_KEY": key.encode()},
        namespace=NAMESPACE,
        name=NAME,
        scope=scope,
        cert=cert,
        annotations={"rotator.align.dev/key-fingerprint": fingerprint(key)},
    )
    assert verify_with_controller(text, proxy=kube, controller=CONTROLLER)
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def apply_sealed(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    """Create or replace the SealedSecret as ArgoCD would (admin)."""
    out = cluster.apply(f"/apis/bitnami.com/v1alpha1/namespaces/{NAMESPACE}/sealedsecrets", doc)
    assert isinstance(out, dict)
    return out


def secret_value(cluster: Cluster) -> str | None:
    status, secret = cluster.http("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}")
    if status != 200:
        return None
    raw = (secret.get("data") or {}).get("POSTHOG_API_KEY")
    return base64.b64decode(raw).decode() if raw else None


def test_the_real_controller_unseals_what_rotator_sealed_and_rotators_wait_sees_it(
    controller: str, inside: Cluster
) -> None:
    kube = rotator_kube(inside)
    applied = apply_sealed(inside, sealed_doc(kube, KEY_1))
    state = kube.wait_for_unseal(NAMESPACE, NAME, fingerprint=fingerprint(KEY_1), deadline_s=90)
    assert state.synced is True
    assert state.observed_generation == applied["metadata"]["generation"]
    assert secret_value(inside) == KEY_1
    # The controller's own record of it, as rotator's error messages quote it.
    assert any(e.startswith("Unsealed:") for e in kube.recent_events(NAMESPACE, NAME))


def test_a_wrong_cert_fails_rotators_wait_fast_with_the_real_controllers_message(
    controller: str, inside: Cluster
) -> None:
    """Sealed for another key: the real Synced=False ("no key could decrypt secret") and its
    ErrUnsealFailed Event reach rotator's error, well before the deadline."""
    kube = rotator_kube(inside)
    doc = sealed_doc(kube, KEY_1)
    other = load_cert(controller_keys(2048).cert_pem, source="another key", now=datetime.now(UTC))
    doc["spec"]["encryptedData"] = yaml.safe_load(
        seal_manifest(
            {"POSTHOG_API_KEY": KEY_1.encode()},
            namespace=NAMESPACE,
            name=NAME,
            scope=SealingScope.STRICT,
            cert=other,
        )
    )["spec"]["encryptedData"]
    apply_sealed(inside, doc)
    with pytest.raises(KubeError) as caught:
        kube.wait_for_unseal(NAMESPACE, NAME, fingerprint=fingerprint(KEY_1), deadline_s=90)
    message = str(caught.value)
    assert "could not be unsealed" in message
    assert "no key could decrypt secret" in message
    assert "ErrUnsealFailed" in message
    assert KEY_1 not in message


@pytest.mark.parametrize("controller", [OLD_RELEASE], indirect=True)
def test_v0_24_2_leaves_observed_generation_stale_and_rotators_wait_goes_by_its_event(
    controller: str, inside: Cluster
) -> None:
    """The real v0.24.2: generation 2 is unsealed (the Secret holds the new key, an Unsealed
    Event is written) while status.observedGeneration stays 1, so status alone never proves
    it; rotator's wait takes the Unsealed Event newer than the apply (FACTS section 3)."""
    kube = rotator_kube(inside)
    apply_sealed(inside, sealed_doc(kube, KEY_1))
    kube.wait_for_unseal(NAMESPACE, NAME, fingerprint=fingerprint(KEY_1), deadline_s=90)
    doc = sealed_doc(kube, KEY_2)
    # As in production, the push comes in a later second than the previous unseal: core v1
    # Event times are whole seconds, so an Unsealed Event of the same second cannot be told
    # from one after the apply (rotator.clients.kube._unsealed_after compares whole seconds).
    time.sleep(1.0 - datetime.now(UTC).microsecond / 1e6)
    pushed_at = datetime.now(UTC)
    second = apply_sealed(inside, doc)
    assert second["metadata"]["generation"] == 2
    state = kube.wait_for_unseal(
        NAMESPACE, NAME, fingerprint=fingerprint(KEY_2), deadline_s=90, applied_after=pushed_at
    )
    assert state.template_fingerprint == fingerprint(KEY_2)
    assert secret_value(inside) == KEY_2
    # What the wait had to see through: the real release's stale status.
    state = kube.get_sealed_secret(NAMESPACE, NAME)
    assert state is not None
    assert (state.generation, state.observed_generation, state.synced) == (2, 1, True)
    assert not state.is_observed


def server_dry_run(cluster: Cluster, manifest: Path) -> set[str]:
    """``kubectl apply --dry-run=server -f manifest`` as admin; the kinds the server accepted."""
    proc = subprocess.run(
        [
            str(PEERS.kube("kubectl")),
            "--kubeconfig",
            str(cluster.kubeconfig("admin")),
            "apply",
            "--dry-run=server",
            "-f",
            str(manifest),
            "-o",
            "json",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    return {i["kind"] for i in out.get("items", [out])}


def test_cronjob_yaml_passes_the_real_servers_validation(rbac: Cluster, inside: Cluster) -> None:
    """``kubectl apply --dry-run=server``: schema, defaults and admission of a current server
    (batch/v1 CronJob with timeZone, the Roles), not a client-side guess."""
    kinds = server_dry_run(inside, CRONJOB)
    assert {"CronJob", "Role", "RoleBinding", "ServiceAccount", "ConfigMap"} <= kinds


def test_the_helm_chart_passes_the_real_servers_validation(
    rbac: Cluster, inside: Cluster, tmp_path: Path
) -> None:
    """The chart as ``helm template`` renders it for this server's version, applied with
    ``--dry-run=server``."""
    proc = subprocess.run(
        [
            str(go_tool("helm")),
            "template",
            "rotator",
            str(ROOT / "charts" / "rotator"),
            "--namespace",
            "rotator",
            "--kube-version",
            PEERS.kubernetes_version.lstrip("v"),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rendered = tmp_path / "chart.yaml"
    rendered.write_bytes(proc.stdout)
    assert {"CronJob", "Role", "RoleBinding", "ServiceAccount"} <= server_dry_run(inside, rendered)
