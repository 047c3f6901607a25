"""The sandbox world on the real control plane: ``RealSandbox``.

The same world as ``rotator_sandbox.world.Sandbox`` (PostHog, Slack, git, the ArgoCD stand-in
and the gateway simulator, all ordinary API clients), but Kubernetes is real: the real
kube-apiserver with RBAC authorization and cronjob.yaml's Roles for rotator, the real
kube-controller-manager's Deployment and ReplicaSet controllers, the real sealed-secrets
controller, and the simulated kubelet (``rotator_sandbox.controllers.kubelet``) in place of a
node. Rollout status, ProgressDeadlineExceeded and graceful pod termination come from
Kubernetes itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from rotator_sandbox import manifests
from rotator_sandbox.controllers.gateway import PodEnv
from rotator_sandbox.controllers.kubelet import SimulatedKubelet
from rotator_sandbox.world import (
    LOCK_NAMESPACE,
    Sandbox,
)
from tests.real.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CRONJOB = ROOT / "cronjob.yaml"

# The ArgoCD stand-in's Application as a schemaless CRD (ArgoCD's own CRD is not built here);
# like upstream's manifests/crds/application-crd.yaml it has no status subresource.
APPLICATION_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "applications.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {
            "kind": "Application",
            "listKind": "ApplicationList",
            "plural": "applications",
            "singular": "application",
            "shortNames": ["app", "apps"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}

APP_PROJECT_CRD: dict[str, Any] = {
    **APPLICATION_CRD,
    "metadata": {"name": "appprojects.argoproj.io"},
    "spec": {
        **APPLICATION_CRD["spec"],
        "names": {
            "kind": "AppProject",
            "listKind": "AppProjectList",
            "plural": "appprojects",
            "singular": "appproject",
            "shortNames": ["appproj", "appprojs"],
        },
    },
}

RBAC_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def apply_rotator_rbac(cluster: Cluster) -> None:
    """cronjob.yaml's Namespace, ServiceAccount, Roles and RoleBindings, applied as admin."""
    for doc in yaml.safe_load_all(CRONJOB.read_text()):
        if doc and doc.get("kind") in RBAC_PATHS:
            ns = doc["metadata"].get("namespace", "")
            if ns:
                cluster.ensure_namespace(ns)
            cluster.apply(RBAC_PATHS[doc["kind"]].format(ns=ns), doc)


def lock_namespace() -> str:
    """Where cronjob.yaml lets rotator hold its Lease (the Role ``rotator-lock``)."""
    for doc in yaml.safe_load_all(CRONJOB.read_text()):
        if doc and doc.get("kind") == "Role" and doc["metadata"]["name"] == "rotator-lock":
            return str(doc["metadata"]["namespace"])
    return LOCK_NAMESPACE


class RealSandbox(Sandbox):
    """``Sandbox`` whose Kubernetes is ``cluster`` (started, in its network namespace: call
    ``start()`` from inside it, ``cluster.netns.inside()``)."""

    def __init__(self, root: Path, *, cluster: Cluster, controller_version: str, **kw: Any):
        super().__init__(root, rbac=True, **kw)
        self.cluster = cluster
        self.controller_version = controller_version
        self.kubelet: SimulatedKubelet | None = None

    def _start_kube(self) -> None:
        """The real API server's kubeconfigs (admin, rotator's ServiceAccount), the CRDs the
        stand-in controllers need, and what a cluster's controllers would have created."""
        c = self.cluster
        shutil.copy(c.kubeconfig("admin"), self.admin_kubeconfig_path)
        shutil.copy(c.kubeconfig("rotator"), self.kubeconfig_path)
        for crd in (APPLICATION_CRD, APP_PROJECT_CRD):
            c.apply("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            c.wait_established(crd["metadata"]["name"])

    def _start_cluster_controllers(self) -> tuple[list[Any], PodEnv]:
        """The real sealed-secrets controller (started now, with the world's key) and the
        simulated kubelet; kube-controller-manager already runs."""
        t = self.timing
        c = self.cluster
        for env in manifests.ENVS:
            c.ensure_default_service_account(manifests.namespace(env))  # no SA controller
        c.start_controller(self.controller_version, self.key_pair)
        self._stoppers.append(c.stop_controller)
        self.kubelet = SimulatedKubelet(
            self.admin_kubeconfig_path,
            pod_start_s=t.scaled(t.pod_start_s),
            pod_ready_s=t.scaled(t.pod_ready_s),
            time_scale=t.time_scale,
        )
        return [self.kubelet], self.kubelet

    def _grant_rotator_rbac(self) -> None:
        """Exactly cronjob.yaml's Roles and RoleBindings (the real RBAC authorizer judges)."""
        apply_rotator_rbac(self.cluster)

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.request_stop()
        super().stop()
        self._clear_cluster()

    def _clear_cluster(self) -> None:
        """The shared cluster back to empty app namespaces for the next world."""
        c = self.cluster
        for plural in ("applications", "appprojects"):
            c.http(
                "DELETE",
                f"/apis/argoproj.io/v1alpha1/namespaces/{manifests.ARGOCD_NAMESPACE}/{plural}",
            )
        for env in manifests.ENVS:
            ns = manifests.namespace(env)
            for path in (
                f"/apis/apps/v1/namespaces/{ns}/deployments",
                f"/apis/apps/v1/namespaces/{ns}/replicasets",
                f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0",
                f"/apis/bitnami.com/v1alpha1/namespaces/{ns}/sealedsecrets",
                f"/api/v1/namespaces/{ns}/secrets",
                f"/api/v1/namespaces/{ns}/events",
            ):
                c.http("DELETE", path)

    def config_tree(self) -> dict[str, Any]:
        tree = super().config_tree()
        tree["lock"]["namespace"] = lock_namespace()
        return tree
