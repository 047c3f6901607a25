"""A simulated kubelet: an ordinary API client that runs no containers but plays a node's part.

For a real kube-apiserver with the real kube-controller-manager (the real tier), where the
Deployment and ReplicaSet controllers are Kubernetes' own and only the node is missing. Follows
kubernetes ``pkg/kubelet`` and the scheduler's binding as far as the API shows them:

- registers its Node (``Ready``), and binds every unscheduled pod to it through the
  ``pods/binding`` subresource, as kube-scheduler does (``pkg/scheduler/framework/plugins/
  defaultbinder``);
- resolves ``env[].valueFrom.secretKeyRef`` once, when the container starts (``pkg/kubelet/
  kubelet_pods.go`` ``makeEnvironmentVariables``): a missing Secret or key of a non-optional ref
  keeps the container waiting with ``CreateContainerConfigError`` and is retried; the values
  stay in this process's memory (``pod_env``, for the gateway simulator) and the pod carries
  only their fingerprint (annotation ``sandbox.rotator/key-fingerprint``, as in the sandbox);
- writes the pod status like the status manager: Pending, Running ``pod_start_s`` after the
  start, Ready ``pod_ready_s`` later, with ``podIP``/``podIPs`` from its own range;
- a pod being deleted (``deletionTimestamp``) keeps running, Ready, until its grace period
  (``metadata.deletionGracePeriodSeconds`` x ``time_scale``) has passed, then the kubelet
  removes it with a delete of grace period 0 (``pkg/kubelet/status/status_manager.go``
  ``syncPod``: ``canBeDeleted`` -> Delete with ``GracePeriodSeconds: 0``).

Fault hook: ``set_never_ready(namespace, prefix)``: pods whose name starts with ``prefix``
never turn Ready (for ProgressDeadlineExceeded from the real Deployment controller).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator.redact import fingerprint
from rotator_sandbox.controllers.base import (
    POD,
    SECRET,
    Controller,
    Kind,
    Obj,
    api_status,
    meta,
    now_rfc3339,
)
from rotator_sandbox.controllers.deployments import (
    KEY_FINGERPRINT_ANNOTATION,
    is_ready,
    pod_status,
)

log = logging.getLogger(__name__)

NODE = Kind("v1", "Node", "nodes", "node", namespaced=False)
DEFAULT_GRACE_S = 30  # pkg/apis/core/types.go DefaultTerminationGracePeriodSeconds


@dataclass
class _Started:
    at: float
    env: dict[str, str]


class SimulatedKubelet(Controller):
    name = "kubelet"
    workers = 2

    def __init__(
        self,
        kubeconfig: Path,
        *,
        node_name: str = "sim-node",
        pod_cidr: str = "10.209.1.0/24",
        pod_start_s: float = 0.2,
        pod_ready_s: float = 0.1,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(kubeconfig)
        self.node_name = node_name
        self.pod_start_s = pod_start_s
        self.pod_ready_s = pod_ready_s
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._hosts = ipaddress.ip_network(pod_cidr).hosts()
        self._ips: dict[tuple[str, str], str] = {}
        self._started: dict[tuple[str, str], _Started] = {}
        self._never_ready: set[tuple[str, str]] = set()

    # -- public ----------------------------------------------------------------------------------

    def pod_env(self, namespace: str, pod: str) -> dict[str, str] | None:
        """The environment the pod's container started with (None before it started)."""
        with self._lock:
            started = self._started.get((namespace, pod))
            return dict(started.env) if started is not None else None

    def set_never_ready(self, namespace: str, prefix: str, value: bool = True) -> None:
        with self._lock:
            (self._never_ready.add if value else self._never_ready.discard)((namespace, prefix))

    # -- loop ------------------------------------------------------------------------------------

    def setup(self) -> None:
        self._register_node()
        self.informer(POD, self._on_pod)

    def _register_node(self) -> None:
        node = self.kube.get(NODE, "", self.node_name)
        if node is None:
            self.kube.create(NODE, "", {"metadata": {"name": self.node_name}})
        stamp = now_rfc3339()
        self.kube.patch_status(
            NODE,
            "",
            self.node_name,
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
            },
        )

    def _on_pod(self, etype: str, obj: Obj) -> None:
        key = (str(meta(obj).get("namespace")), str(meta(obj).get("name")))
        if etype == "DELETED":
            with self._lock:
                self._started.pop(key, None)
                self._ips.pop(key, None)
            return
        node = (obj.get("spec") or {}).get("nodeName")
        if node in (None, "", self.node_name):
            self.queue.add(key)

    def reconcile(self, key: Any) -> None:
        namespace, name = key
        pod = self.kube.get(POD, namespace, name)
        if pod is None:
            return
        spec = pod.get("spec") or {}
        if not spec.get("nodeName"):
            self._bind(namespace, name)
            self.queue.add(key)
            return
        if spec.get("nodeName") != self.node_name:
            return
        if meta(pod).get("deletionTimestamp"):
            self._terminate(pod, key)
            return
        self._run(pod, key)

    def _bind(self, namespace: str, name: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        core: Any = self.kube.core  # the stubs want a V1Binding; the dict is what is sent
        try:
            core.create_namespaced_pod_binding(
                name, namespace, body, _preload_content=False, _request_timeout=self.kube.timeout
            )
        except Exception as exc:
            if api_status(exc) not in (404, 409):  # gone, or bound meanwhile
                raise

    def _terminate(self, pod: Obj, key: tuple[str, str]) -> None:
        m = meta(pod)
        grace = m.get("deletionGracePeriodSeconds")
        grace_s = float(DEFAULT_GRACE_S if grace is None else grace) * self.time_scale
        deleted_at = _parse(str(m.get("deletionTimestamp")))
        # deletionTimestamp = request time + grace period (pkg/registry/rest/delete.go)
        left = deleted_at - time.time() - float(grace or 0) + grace_s
        if left > 0:
            self.queue.add(key, after=left)
            return
        self.kube.delete(POD, key[0], key[1], grace_period_s=0)

    def _run(self, pod: Obj, key: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            started = self._started.get(key)
        spec = pod.get("spec") or {}
        if started is None:
            resolved = self._resolve_env(key[0], spec)
            if isinstance(resolved, str):
                self._write_status(pod, key, "Pending", ready=False, waiting=resolved)
                self.queue.add(key, after=max(0.05, self.time_scale))
                return
            env, fp = resolved
            self.kube.patch(
                POD, key[0], key[1], {"metadata": {"annotations": {KEY_FINGERPRINT_ANNOTATION: fp}}}
            )
            with self._lock:
                started = self._started[key] = _Started(at=now, env=env)
        running_at = started.at + self.pod_start_s
        ready_at = running_at + self.pod_ready_s
        with self._lock:
            never = any(key[0] == ns and key[1].startswith(p) for ns, p in self._never_ready)
        phase = (pod.get("status") or {}).get("phase")
        if now >= ready_at and not never:
            if not is_ready(pod):
                self._write_status(pod, key, "Running", ready=True)
            return
        if now >= running_at:
            if phase != "Running":
                self._write_status(pod, key, "Running", ready=False)
        elif phase is None:
            self._write_status(pod, key, "Pending", ready=False)
        due = running_at if now < running_at else ready_at
        self.queue.add(key, after=max(0.01, due - now) if not never else 1.0)

    def _resolve_env(self, namespace: str, spec: Obj) -> tuple[dict[str, str], str] | str:
        env: dict[str, str] = {}
        first_fp = ""
        for container in spec.get("containers") or []:
            for var in container.get("env") or []:
                name = str(var.get("name"))
                if "value" in var:
                    env[name] = str(var["value"])
                    continue
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                secret_name, key = str(ref.get("name")), str(ref.get("key"))
                secret = self.kube.get(SECRET, namespace, secret_name)
                raw = ((secret or {}).get("data") or {}).get(key)
                if raw is None and not ref.get("optional"):
                    if secret is None:
                        return f'secret "{secret_name}" not found'
                    return f"couldn't find key {key} in Secret {namespace}/{secret_name}"
                value = base64.b64decode(raw).decode() if raw else ""
                env[name] = value
                if value and not first_fp:
                    first_fp = fingerprint(value)
        return env, first_fp

    def _ip(self, key: tuple[str, str]) -> str:
        with self._lock:
            if key not in self._ips:
                self._ips[key] = str(next(self._hosts))
            return self._ips[key]

    def _write_status(
        self, pod: Obj, key: tuple[str, str], phase: str, *, ready: bool, waiting: str = ""
    ) -> None:
        # The status a kubelet reports (shared with the sandbox's own pods), on this node's
        # address; a real API server also carries each container's imageID.
        status = pod_status(pod.get("spec") or {}, phase=phase, ready=ready, waiting=waiting)
        for container in status["containerStatuses"]:
            container["imageID"] = ""
        status.update(hostIP="10.209.0.1", hostIPs=[{"ip": "10.209.0.1"}])
        if phase == "Running":
            ip = self._ip(key)
            status.update(podIP=ip, podIPs=[{"ip": ip}])
        try:
            self.kube.patch_status(POD, key[0], key[1], status)
        except Exception as exc:
            if api_status(exc) != 404:
                raise


def _parse(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
