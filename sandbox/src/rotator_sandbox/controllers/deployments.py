"""The Deployment and ReplicaSet controllers, and a kubelet that starts pods, in one API client.

Mirrors kubernetes ``pkg/controller/deployment`` (``rolling.go``, ``sync.go``,
``progress.go``) closely enough for ``kubectl rollout status`` and rotator's rollout wait:

- a pod-template change (generation bump, e.g. the ``kubectl.kubernetes.io/restartedAt``
  annotation of a rollout restart) makes a new ReplicaSet named ``<deployment>-<hash>`` with the
  ``pod-template-hash`` label; pods are replaced in waves: the new ReplicaSet scales up while
  all pods <= replicas + maxSurge, old ones scale down while available pods stay >=
  replicas - maxUnavailable (defaults 25%/25%; surge rounds up, unavailable down; both 0 means
  maxUnavailable 1);
- each pod turns Running ``pod_start_s`` after creation and Ready ``pod_ready_s`` later
  (scaled); the fault ``never_ready`` keeps chosen Deployments' new pods unready;
- status: ``observedGeneration``, ``replicas``, ``updatedReplicas``, ``readyReplicas``,
  ``availableReplicas``, ``unavailableReplicas``, conditions ``Available``
  (MinimumReplicasAvailable / MinimumReplicasUnavailable) and ``Progressing``
  (NewReplicaSetCreated, ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded
  after ``spec.progressDeadlineSeconds`` (x time scale) without progress, DeploymentPaused);
- ``spec.paused`` stops the rollout (no new ReplicaSet) but status is still observed.

The kubelet part: a pod resolves ``env[].valueFrom.secretKeyRef`` once, when it is created,
by reading the Secret through the API, and keeps the value for its life, as a container's
environment does. The value lives only in this process's memory (``pod_env``, used by the
gateway simulator); the pod carries only its fingerprint in the annotation
``sandbox.rotator/key-fingerprint``. A missing Secret or key of a non-optional ref keeps the
container waiting (``CreateContainerConfigError``, retried until the Secret appears), as the
kubelet does; an ``optional`` ref, or ``missing_secret="empty"``, starts it with the variable
empty (the gateway's PostHog bridge is then a no-op, FACTS section 1).

Pods are deleted gracefully: a deleted pod stays Terminating (not counted by the controllers,
still running its container) until its ``terminationGracePeriodSeconds`` x time scale has
passed, then the kubelet part removes it with a delete of grace period 0.

Differences from upstream: no minReadySeconds, Recreate strategy treated as RollingUpdate, no
revisionHistoryLimit clean-up, the progress deadline is measured in this process's monotonic
time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rotator.redact import fingerprint
from rotator_sandbox.controllers.base import (
    DEPLOYMENT,
    POD,
    REPLICASET,
    SECRET,
    Controller,
    Obj,
    api_status,
    meta,
    now_rfc3339,
)

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
KEY_FINGERPRINT_ANNOTATION = "sandbox.rotator/key-fingerprint"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery rand.SafeEncodeString alphabet


def template_hash(template: Obj) -> str:
    """A stable, DNS-safe hash of a pod template (like ``ComputeHash``, not bit-identical)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    n = int.from_bytes(digest[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_SAFE))
        out.append(_SAFE[r])
    return "".join(out)


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if value is None:
        value = "25%"
    if isinstance(value, str) and value.endswith("%"):
        exact = float(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def surge_and_unavailable(spec: Obj) -> tuple[int, int]:
    """``ResolveFenceposts``: maxSurge rounds up, maxUnavailable down; never both 0."""
    replicas = int(spec.get("replicas", 1))
    rolling = ((spec.get("strategy") or {}).get("rollingUpdate")) or {}
    surge = _int_or_percent(rolling.get("maxSurge"), replicas, round_up=True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def is_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _owner_uid(obj: Obj) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _selector(d: Obj) -> str:
    labels = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@dataclass
class _PodTimer:
    running_at: float | None  # None: waiting for its configuration (a missing Secret)
    ready_at: float | None
    never_ready: bool = False


@dataclass
class _Progress:
    snapshot: tuple[Any, ...] = ()
    last_progress: float = field(default_factory=time.monotonic)
    new_rs_created: bool = False


@dataclass(frozen=True)
class RolloutSample:
    """One observation after a reconcile: pods of the new and old ReplicaSets, and readiness."""

    at: float
    new_pods: int
    old_pods: int
    available: int
    new_ready: int


class RolloutController(Controller):
    name = "deployments"
    workers = 4  # Deployments roll out in parallel (--concurrent-deployment-syncs)

    def __init__(
        self,
        kubeconfig: Path,
        *,
        pod_start_s: float = 0.2,
        pod_ready_s: float = 0.1,
        time_scale: float = 1.0,
        missing_secret: str = "wait",  # noqa: S107 - a mode, not a password
    ) -> None:
        super().__init__(kubeconfig)
        if missing_secret not in ("wait", "empty"):
            raise ValueError("missing_secret is 'wait' (like the kubelet) or 'empty'")
        self.missing_secret = missing_secret
        self.pod_start_s = pod_start_s
        self.pod_ready_s = pod_ready_s
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._timers: dict[tuple[str, str], _PodTimer] = {}
        self._env: dict[tuple[str, str], dict[str, str]] = {}
        self._progress: dict[tuple[str, str], _Progress] = {}
        self.never_ready: set[tuple[str, str]] = set()
        self.history: dict[tuple[str, str], list[RolloutSample]] = {}
        self._deadline_cache: dict[tuple[str, str], float] = {}

    # -- public ----------------------------------------------------------------------------------

    def pod_env(self, namespace: str, pod: str) -> dict[str, str] | None:
        """The environment the pod's container started with (None for unknown pods)."""
        with self._lock:
            env = self._env.get((namespace, pod))
            return dict(env) if env is not None else None

    def set_never_ready(self, namespace: str, deployment: str, value: bool = True) -> None:
        """Fault: new pods of this Deployment never become Ready (ProgressDeadlineExceeded)."""
        key = (namespace, deployment)
        if value:
            self.never_ready.add(key)
        else:
            self.never_ready.discard(key)
        self.queue.add(key)

    # -- loop ------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.informer(DEPLOYMENT, self._on_deployment)

    def _on_deployment(self, etype: str, obj: Obj) -> None:
        self.queue.add((str(meta(obj).get("namespace")), str(meta(obj).get("name"))))

    def reconcile(self, key: Any) -> None:
        namespace, name = key
        d = self.kube.get(DEPLOYMENT, namespace, name)
        if d is None:
            self._progress.pop(key, None)
            return
        uid = str(meta(d).get("uid"))
        selector = _selector(d)
        rss = [
            rs
            for rs in self.kube.list(REPLICASET, namespace, label_selector=selector)[0]
            if _owner_uid(rs) == uid
        ]
        spec = d.get("spec") or {}
        template = spec.get("template") or {}
        thash = template_hash(template)
        new_rs = next((rs for rs in rss if _labels(rs).get(HASH_LABEL) == thash), None)
        paused = bool(spec.get("paused"))
        progress = self._progress.setdefault(key, _Progress())
        if new_rs is None and not paused:
            new_rs = self._create_rs(d, thash, rss)
            rss.append(new_rs)
            progress.new_rs_created = True
            progress.last_progress = time.monotonic()
        pods_by_rs, terminating = self._pods_by_rs(namespace, selector, rss)
        finish_in = self._finish_terminating(namespace, terminating)
        self._advance_pods(namespace, key, pods_by_rs, new_rs)
        old_rss = [rs for rs in rss if new_rs is None or rs is not new_rs]
        if new_rs is not None and not paused:
            self._roll(d, new_rs, old_rss, pods_by_rs)
        for rs in rss:
            self._sync_rs(rs, pods_by_rs, key)
        self._write_status(d, new_rs, old_rss, pods_by_rs, progress)
        self._requeue(key, pods_by_rs, finish_in)

    # -- ReplicaSets -----------------------------------------------------------------------------

    def _create_rs(self, d: Obj, thash: str, rss: list[Obj]) -> Obj:
        m = meta(d)
        template = json.loads(json.dumps((d.get("spec") or {}).get("template") or {}))
        tmeta = template.setdefault("metadata", {})
        tmeta.setdefault("labels", {})[HASH_LABEL] = thash
        revision = 1 + max(
            [int((meta(rs).get("annotations") or {}).get(REVISION_ANNOTATION, 0)) for rs in rss]
            or [0]
        )
        selector = json.loads(json.dumps((d.get("spec") or {}).get("selector") or {}))
        selector.setdefault("matchLabels", {})[HASH_LABEL] = thash
        body = {
            "metadata": {
                "name": f"{m['name']}-{thash}",
                "namespace": m["namespace"],
                "labels": dict(tmeta["labels"]),
                "annotations": {REVISION_ANNOTATION: str(revision)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": m["name"],
                        "uid": m.get("uid", ""),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        try:
            rs = self.kube.create(REPLICASET, str(m["namespace"]), body)
        except Exception as exc:
            if api_status(exc) != 409:
                raise
            got = self.kube.get(REPLICASET, str(m["namespace"]), body["metadata"]["name"])
            if got is None:
                raise
            rs = got
        self.kube.patch(
            DEPLOYMENT,
            str(m["namespace"]),
            str(m["name"]),
            {"metadata": {"annotations": {REVISION_ANNOTATION: str(revision)}}},
        )
        log.info("deployments: %s/%s: new ReplicaSet %s", m["namespace"], m["name"], rs_name(rs))
        return rs

    def _pods_by_rs(
        self, namespace: str, selector: str, rss: list[Obj]
    ) -> tuple[dict[str, list[Obj]], list[Obj]]:
        """Live pods per ReplicaSet uid, and the Terminating ones (not counted, as upstream's
        ``controller.FilterActivePods``)."""
        pods = self.kube.list(POD, namespace, label_selector=selector)[0]
        out: dict[str, list[Obj]] = {str(meta(rs).get("uid")): [] for rs in rss}
        terminating: list[Obj] = []
        for pod in pods:
            owner = _owner_uid(pod)
            if meta(pod).get("deletionTimestamp"):
                terminating.append(pod)
            elif owner in out:
                out[owner].append(pod)
        return out, terminating

    def _finish_terminating(self, namespace: str, pods: list[Obj]) -> float | None:
        """The kubelet's part of a graceful delete: a Terminating pod is removed (a delete with
        grace period 0) once its grace period x time scale has passed since the delete
        (kubernetes ``pkg/kubelet/status/status_manager.go``: ``canBeDeleted`` -> Delete with
        ``GracePeriodSeconds: 0``); seconds until the next one is due, or None."""
        due_in: list[float] = []
        for pod in pods:
            m = meta(pod)
            grace = float(m.get("deletionGracePeriodSeconds") or 0)
            try:
                deleted_at = datetime.fromisoformat(str(m["deletionTimestamp"])).timestamp()
            except (KeyError, ValueError):
                deleted_at = time.time()
            # deletionTimestamp = delete time + grace (k8s.io/apiserver pkg/registry/rest/delete.go)
            left = deleted_at - grace + grace * self.time_scale - time.time()
            if left > 0:
                due_in.append(left)
                continue
            self.kube.delete(POD, namespace, str(m["name"]), grace_period_s=0)
            with self._lock:
                self._env.pop((namespace, str(m["name"])), None)
                self._timers.pop((namespace, str(m["name"])), None)
        return min(due_in) if due_in else None

    def _roll(
        self, d: Obj, new_rs: Obj, old_rss: list[Obj], pods_by_rs: dict[str, list[Obj]]
    ) -> None:
        """``rolloutRolling``: scale the new ReplicaSet up, then the old ones down."""
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        surge, unavailable = surge_and_unavailable(spec)
        desired = {str(meta(rs)["uid"]): _rs_replicas(rs) for rs in [new_rs, *old_rss]}
        new_uid = str(meta(new_rs)["uid"])

        # reconcileNewReplicaSet / NewRSNewReplicas
        if desired[new_uid] > replicas:
            desired[new_uid] = replicas
        elif desired[new_uid] < replicas:
            current_total = sum(desired.values())
            max_total = replicas + surge
            if current_total < max_total:
                scale_up = min(max_total - current_total, replicas - desired[new_uid])
                desired[new_uid] += scale_up

        # reconcileOldReplicaSets
        def available_in(uid: str) -> int:
            return sum(1 for p in pods_by_rs.get(uid, []) if is_ready(p))

        old_total = sum(desired[str(meta(rs)["uid"])] for rs in old_rss)
        if old_total > 0:
            all_pods = sum(desired.values())
            min_available = replicas - unavailable
            new_unavailable = desired[new_uid] - available_in(new_uid)
            max_scaled_down = all_pods - min_available - new_unavailable
            if max_scaled_down > 0:
                # cleanupUnhealthyReplicas: old pods that are not available go first
                for rs in _oldest_first(old_rss):
                    uid = str(meta(rs)["uid"])
                    unhealthy = desired[uid] - available_in(uid)
                    cut = min(max_scaled_down, max(0, unhealthy))
                    desired[uid] -= cut
                    max_scaled_down -= cut
                # scaleDownOldReplicaSetsForRollingUpdate
                available_total = sum(
                    min(desired[uid], available_in(uid)) for uid in desired if uid != new_uid
                ) + available_in(new_uid)
                can_remove = min(available_total - min_available, max_scaled_down)
                for rs in _oldest_first(old_rss):
                    if can_remove <= 0:
                        break
                    uid = str(meta(rs)["uid"])
                    cut = min(desired[uid], can_remove)
                    desired[uid] -= cut
                    can_remove -= cut

        for rs in [new_rs, *old_rss]:
            uid = str(meta(rs)["uid"])
            if desired[uid] != _rs_replicas(rs):
                patched = self.kube.patch(
                    REPLICASET,
                    str(meta(rs)["namespace"]),
                    rs_name(rs),
                    {"spec": {"replicas": desired[uid]}},
                    strategic=True,
                )
                rs["spec"] = patched.get("spec", rs.get("spec"))
                rs.setdefault("spec", {})["replicas"] = desired[uid]

    def _sync_rs(self, rs: Obj, pods_by_rs: dict[str, list[Obj]], dkey: tuple[str, str]) -> None:
        """The ReplicaSet controller: make the pod count match, then write the RS status."""
        uid = str(meta(rs)["uid"])
        namespace = str(meta(rs)["namespace"])
        pods = pods_by_rs.setdefault(uid, [])
        want = _rs_replicas(rs)
        secrets_cache: dict[str, Obj | None] = {}
        while len(pods) < want:
            pods.append(self._create_pod(rs, dkey, secrets_cache))
        if len(pods) > want:
            # getPodsToDelete: not ready first, then the newest
            doomed = sorted(pods, key=lambda p: (is_ready(p), _neg_ts(p)))[: len(pods) - want]
            for pod in doomed:
                self._delete_pod(namespace, str(meta(pod)["name"]))
                pods.remove(pod)
        ready = sum(1 for p in pods if is_ready(p))
        status = {
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "fullyLabeledReplicas": len(pods),
            "observedGeneration": meta(rs).get("generation", 1),
        }
        current = rs.get("status") or {}
        if any(current.get(k, 0) != v for k, v in status.items()):
            self.kube.patch_status(REPLICASET, namespace, rs_name(rs), status)

    # -- pods (the kubelet part) -----------------------------------------------------------------

    def _create_pod(self, rs: Obj, dkey: tuple[str, str], cache: dict[str, Obj | None]) -> Obj:
        namespace = str(meta(rs)["namespace"])
        template = json.loads(json.dumps((rs.get("spec") or {}).get("template") or {}))
        tmeta = template.get("metadata") or {}
        pod_spec = template.get("spec") or {}
        resolved = self._resolve_env(namespace, pod_spec, cache)
        annotations = dict(tmeta.get("annotations") or {})
        if isinstance(resolved, tuple):
            annotations[KEY_FINGERPRINT_ANNOTATION] = resolved[1]
        name = f"{rs_name(rs)}-{_suffix()}"
        pod_spec.setdefault("nodeName", "sandbox-node")
        body = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": rs_name(rs),
                        "uid": meta(rs).get("uid", ""),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        pod = self.kube.create(POD, namespace, body)
        timer = _PodTimer(running_at=None, ready_at=None, never_ready=dkey in self.never_ready)
        with self._lock:
            self._timers[(namespace, name)] = timer
        if isinstance(resolved, tuple):
            self._started(namespace, name, timer, resolved[0])
            status = pod_status(pod_spec, phase="Pending", ready=False)
        else:
            status = pod_status(pod_spec, phase="Pending", ready=False, waiting=resolved)
        try:
            pod = self.kube.patch_status(POD, namespace, name, status)
        except Exception as exc:
            log.debug("deployments: pod %s status not set: %s", name, exc)
            pod["status"] = status
        return pod

    def _started(self, namespace: str, name: str, timer: _PodTimer, env: dict[str, str]) -> None:
        """The container's configuration resolved: the start-up clock runs from now."""
        now = time.monotonic()
        with self._lock:
            self._env[(namespace, name)] = env
            timer.running_at = now + self.pod_start_s
            timer.ready_at = None if timer.never_ready else timer.running_at + self.pod_ready_s

    def _resolve_env(
        self, namespace: str, pod_spec: Obj, cache: dict[str, Obj | None]
    ) -> tuple[dict[str, str], str] | str:
        """Read each secretKeyRef now (once per pod): (env, the key's fingerprint), or, when a
        non-optional Secret or key is missing, the kubelet's CreateContainerConfigError message.
        An optional ref to a missing Secret leaves the variable empty."""
        env: dict[str, str] = {}
        first_fp = ""
        for container in pod_spec.get("containers") or []:
            for var in container.get("env") or []:
                name = str(var.get("name"))
                if "value" in var:
                    env[name] = str(var["value"])
                    continue
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                secret_name, key = str(ref.get("name")), str(ref.get("key"))
                if secret_name not in cache:
                    cache[secret_name] = self.kube.get(SECRET, namespace, secret_name)
                secret = cache[secret_name]
                raw = ((secret or {}).get("data") or {}).get(key)
                if raw is None and not ref.get("optional") and self.missing_secret == "wait":
                    if secret is None:
                        return f'secret "{secret_name}" not found'
                    return f"couldn't find key {key} in Secret {namespace}/{secret_name}"
                value = base64.b64decode(raw).decode() if raw else ""
                env[name] = value
                if value and not first_fp:
                    first_fp = fingerprint(value)
        return env, first_fp

    def _delete_pod(self, namespace: str, name: str) -> None:
        """The ReplicaSet controller's delete: graceful, the pod turns Terminating and keeps
        its environment until the kubelet part removes it (``_finish_terminating``)."""
        self.kube.delete(POD, namespace, name)

    def _advance_pods(
        self,
        namespace: str,
        dkey: tuple[str, str],
        pods_by_rs: dict[str, list[Obj]],
        new_rs: Obj | None,
    ) -> None:
        """Waiting for config -> Pending -> Running -> Ready when each pod's step is due."""
        now = time.monotonic()
        cache: dict[str, Obj | None] = {}
        for pods in pods_by_rs.values():
            for i, pod in enumerate(pods):
                name = str(meta(pod)["name"])
                with self._lock:
                    timer = self._timers.get((namespace, name))
                    if timer is None:  # a pod from before this process: treat as started
                        timer = self._timers[(namespace, name)] = _PodTimer(now, now)
                        self._env.setdefault((namespace, name), {})
                if dkey in self.never_ready and not is_ready(pod):
                    timer.never_ready = True
                    timer.ready_at = None
                elif timer.never_ready and dkey not in self.never_ready:
                    # The fault was cleared: the readiness probe passes from now on.
                    timer.never_ready = False
                    if timer.running_at is not None:
                        timer.ready_at = max(now, timer.running_at) + self.pod_ready_s
                if timer.running_at is None:
                    resolved = self._resolve_env(namespace, pod.get("spec") or {}, cache)
                    if not isinstance(resolved, tuple):
                        continue
                    self.kube.patch(
                        POD,
                        namespace,
                        name,
                        {"metadata": {"annotations": {KEY_FINGERPRINT_ANNOTATION: resolved[1]}}},
                    )
                    self._started(namespace, name, timer, resolved[0])
                    assert timer.running_at is not None
                phase = (pod.get("status") or {}).get("phase")
                want_ready = timer.ready_at is not None and now >= timer.ready_at
                want_running = now >= timer.running_at
                if want_ready and not is_ready(pod):
                    status = pod_status(pod.get("spec") or {}, phase="Running", ready=True)
                elif want_running and phase != "Running":
                    status = pod_status(pod.get("spec") or {}, phase="Running", ready=False)
                else:
                    continue
                try:
                    pods[i] = self.kube.patch_status(POD, namespace, name, status)
                except Exception as exc:
                    if api_status(exc) != 404:
                        raise

    def _requeue(
        self, key: tuple[str, str], pods_by_rs: dict[str, list[Obj]], finish_in: float | None
    ) -> None:
        now = time.monotonic()
        waits = [1.0] if finish_in is None else [1.0, finish_in + 0.005]
        with self._lock:
            for pods in pods_by_rs.values():
                for pod in pods:
                    timer = self._timers.get((key[0], str(meta(pod)["name"])))
                    if timer is None:
                        continue
                    if timer.running_at is None:
                        waits.append(0.1)  # the kubelet retries the configuration
                    for due in (timer.running_at, timer.ready_at):
                        if due is not None and due > now:
                            waits.append(due - now)
        progress = self._progress.get(key)
        if progress is not None:
            waits.append(max(0.05, self._deadline_left(key)))
        self.queue.add(key, after=max(0.005, min(waits)))

    # -- Deployment status -----------------------------------------------------------------------

    def _deadline_s(self, d: Obj) -> float:
        return float((d.get("spec") or {}).get("progressDeadlineSeconds", 600)) * self.time_scale

    def _deadline_left(self, key: tuple[str, str]) -> float:
        return self._deadline_cache.get(key, 3600.0)

    def _write_status(
        self,
        d: Obj,
        new_rs: Obj | None,
        old_rss: list[Obj],
        pods_by_rs: dict[str, list[Obj]],
        progress: _Progress,
    ) -> None:
        key = (str(meta(d)["namespace"]), str(meta(d)["name"]))
        spec = d.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        _, max_unavailable = surge_and_unavailable(spec)
        all_pods = [p for pods in pods_by_rs.values() for p in pods]
        new_pods = pods_by_rs.get(str(meta(new_rs)["uid"]), []) if new_rs is not None else []
        ready = sum(1 for p in all_pods if is_ready(p))
        old_pods = len(all_pods) - len(new_pods)
        status_now = {
            "observedGeneration": meta(d).get("generation", 1),
            "replicas": len(all_pods),
            "updatedReplicas": len(new_pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, len(all_pods) - ready),
        }
        with self._lock:
            self.history.setdefault(key, []).append(
                RolloutSample(
                    at=time.monotonic(),
                    new_pods=len(new_pods),
                    old_pods=old_pods,
                    available=ready,
                    new_ready=sum(1 for p in new_pods if is_ready(p)),
                )
            )
            del self.history[key][:-500]
        now = time.monotonic()
        snapshot = (
            rs_name(new_rs) if new_rs else "",
            len(new_pods),
            sum(1 for p in new_pods if is_ready(p)),
            ready,
            old_pods,
        )
        if snapshot != progress.snapshot:
            progressed = bool(progress.snapshot) and (
                snapshot[0] != progress.snapshot[0]
                or snapshot[1] > progress.snapshot[1]
                or snapshot[2] > progress.snapshot[2]
                or snapshot[3] > progress.snapshot[3]
                or snapshot[4] < progress.snapshot[4]
            )
            if progressed or not progress.snapshot:
                progress.last_progress = now
            progress.snapshot = snapshot
        complete = (
            new_rs is not None
            and len(new_pods) == replicas
            and old_pods == 0
            and sum(1 for p in new_pods if is_ready(p)) == replicas
        )
        conditions = {
            c.get("type"): dict(c) for c in (d.get("status") or {}).get("conditions") or []
        }
        rs_label = rs_name(new_rs) if new_rs else ""
        if spec.get("paused"):
            progressing = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_label}" has successfully progressed.',
            )
        elif now - progress.last_progress > self._deadline_s(d):
            progressing = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_label}" has timed out progressing.',
            )
        elif progress.new_rs_created and len(new_pods) == 0:
            progressing = ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_label}"')
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_label}" is progressing.')
        if complete:
            progress.new_rs_created = False
            self._deadline_cache[key] = 3600.0
        else:
            self._deadline_cache[key] = self._deadline_s(d) - (now - progress.last_progress) + 0.01
        minimum = ready >= replicas - max_unavailable
        available = (
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            if minimum
            else (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        )
        stamp = now_rfc3339()
        changed_conditions = False
        for ctype, (cstatus, reason, message) in (
            ("Available", available),
            ("Progressing", progressing),
        ):
            cond = conditions.get(ctype)
            if cond is None or (cond.get("status"), cond.get("reason"), cond.get("message")) != (
                cstatus,
                reason,
                message,
            ):
                transition = (
                    cond.get("lastTransitionTime", stamp)
                    if cond is not None and cond.get("status") == cstatus
                    else stamp
                )
                conditions[ctype] = {
                    "type": ctype,
                    "status": cstatus,
                    "reason": reason,
                    "message": message,
                    "lastUpdateTime": stamp,
                    "lastTransitionTime": transition,
                }
                changed_conditions = True
        current = d.get("status") or {}
        if changed_conditions or any(current.get(k, 0) != v for k, v in status_now.items()):
            ordered = [conditions[t] for t in ("Available", "Progressing")] + [
                c for t, c in conditions.items() if t not in ("Available", "Progressing")
            ]
            self.kube.patch_status(
                DEPLOYMENT, key[0], key[1], {**status_now, "conditions": ordered}
            )


def rs_name(rs: Obj | None) -> str:
    return str(meta(rs).get("name")) if rs is not None else ""


def _labels(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def _rs_replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0) or 0)


def _oldest_first(rss: list[Obj]) -> list[Obj]:
    return sorted(rss, key=lambda rs: str(meta(rs).get("creationTimestamp", "")))


def _neg_ts(pod: Obj) -> str:
    ts = str(meta(pod).get("creationTimestamp", ""))
    return "".join(chr(0x10FFFF - ord(c)) for c in ts)


def _suffix() -> str:
    return "".join(secrets.choice(_SAFE) for _ in range(5))


def pod_status(pod_spec: Obj, *, phase: str, ready: bool, waiting: str = "") -> Obj:
    stamp = now_rfc3339()
    running = phase == "Running"
    flag = "True" if ready else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
        {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
    ]
    containers = [
        {
            "name": c.get("name"),
            "image": c.get("image"),
            "ready": ready,
            "started": running,
            "restartCount": 0,
            "state": {"running": {"startedAt": stamp}}
            if running
            else {
                "waiting": {"reason": "CreateContainerConfigError", "message": waiting}
                if waiting
                else {"reason": "ContainerCreating"}
            },
        }
        for c in pod_spec.get("containers") or []
    ]
    status: Obj = {"phase": phase, "conditions": conditions, "containerStatuses": containers}
    if running:
        status.update(podIP="127.0.0.1", hostIP="127.0.0.1", startTime=stamp)
    return status
