"""The gateway's PostHog bridge, simulated: every Ready gateway pod sends events with its key.

Each Ready pod (label ``app=align-gateway`` by default, read through the API) posts
``gateway_heartbeat`` events to the PostHog stand-in's capture endpoint (``/i/v0/e/``) with the
key its container started with (from ``RolloutController.pod_env``, i.e. what the pod resolved
from the Secret at creation), every ``interval_s``. Properties: ``environment`` (the pod's
``env`` label), ``source: gateway``, ``pod``, ``key_fingerprint``; ``distinct_id`` is per pod.
A pod whose key is empty sends nothing (the bridge is a no-op, FACTS section 1).

``sent`` counts answered posts per key fingerprint; ``skipped_no_key`` counts the ticks of pods
without a key. Fault hook: ``paused`` (no pod sends).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Protocol

import requests

from rotator.redact import fingerprint
from rotator_sandbox.controllers.base import POD, Kube, Obj, meta, now_rfc3339
from rotator_sandbox.controllers.deployments import is_ready

log = logging.getLogger(__name__)

EVENT = "gateway_heartbeat"
CAPTURE_PATH = "/i/v0/e/"
POD_RELIST_S = 0.25
HTTP_TIMEOUT = (1.0, 3.0)


class PodEnv(Protocol):
    """Whoever starts the pods' containers and knows their environment (the sandbox's
    RolloutController, or the simulated kubelet against a real control plane)."""

    def pod_env(self, namespace: str, pod: str) -> dict[str, str] | None: ...


class GatewaySimulator:
    def __init__(
        self,
        kubeconfig: Path,
        *,
        rollout: PodEnv,
        ingest_url: str,
        interval_s: float = 1.0,
        env_var: str = "POSTHOG_API_KEY",
        label_selector: str = "app=align-gateway",
    ) -> None:
        self.kube = Kube(kubeconfig)
        self.rollout = rollout
        self.capture_url = ingest_url.rstrip("/") + CAPTURE_PATH
        self.interval_s = interval_s
        self.env_var = env_var
        self.label_selector = label_selector
        self.paused = False
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.skipped_no_key = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._session = requests.Session()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._pods: list[Obj] = []
        self._listed_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._session.close()
        self.kube.close()

    def sent_with(self, key_fingerprint: str) -> int:
        with self._lock:
            return self.sent[key_fingerprint]

    def _ready_pods(self) -> list[Obj]:
        now = time.monotonic()
        if now - self._listed_at >= min(POD_RELIST_S, self.interval_s):
            try:
                pods = self.kube.list(POD, None, label_selector=self.label_selector)[0]
            except Exception as exc:
                log.debug("gateway: pod list failed: %s", exc)
                pods = self._pods
            self._pods = [p for p in pods if is_ready(p) and not meta(p).get("deletionTimestamp")]
            self._listed_at = now
        return self._pods

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if not self.paused:
                for pod in self._ready_pods():
                    if self._stop.is_set():
                        return
                    self._send(pod)
            next_tick += self.interval_s
            delay = next_tick - time.monotonic()
            if delay < 0:
                next_tick = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def _send(self, pod: Obj) -> None:
        m = meta(pod)
        namespace, name = str(m.get("namespace")), str(m.get("name"))
        env = self.rollout.pod_env(namespace, name)
        key = (env or {}).get(self.env_var, "")
        if not key:
            with self._lock:
                self.skipped_no_key += 1
            return
        fp = fingerprint(key)
        body = {
            "api_key": key,
            "event": EVENT,
            "distinct_id": f"gateway-{name}",
            "properties": {
                "environment": (m.get("labels") or {}).get("env", namespace),
                "source": "gateway",
                "pod": name,
                "key_fingerprint": fp,
                "$insert_id": str(uuid.uuid4()),
            },
            "timestamp": now_rfc3339(),
        }
        try:
            resp = self._session.post(self.capture_url, json=body, timeout=HTTP_TIMEOUT)
            ok = resp.status_code == 200
        except requests.RequestException:
            ok = False
        with self._lock:
            (self.sent if ok else self.failed)[fp] += 1
