"""``rotator bench``: measure the dark window of rotation strategies in the sandbox.

The dark window runs from the key reset in PostHog to the moment every gateway pod runs with the
new key (the last new-key pod Ready, every old-key pod gone). PostHog keeps ingesting old-key
events for ``ingestion_window_s`` after the reset; anything the gateway sends with the old key
after that is lost. This benchmark rotates the key repeatedly in the sandbox (real HTTP
stand-ins, simulated controllers) with realistic delays multiplied by ``time_scale``, and
reports every figure in real-world seconds (measured seconds / time scale).

Per run it measures, from the sandbox itself:

- the dark window: the reset time recorded by the PostHog stand-in, and pod Ready/deleted times
  with each pod's key fingerprint, seen by a pod watcher (an informer on the API stand-in);
- the floor: ArgoCD's sync + the unseal delay + the rollout's own duration (pod start-up and
  readiness x the number of waves the Deployment controller needs for the replicas and
  maxSurge/maxUnavailable, ``rollout_waves``);
- events sent, ingested and lost (old-key events dropped after the window), from the PostHog
  stand-in's event timeline;

and, from the job (a child process, as the CronJob's pod would be): rotator's own dark window
(its report), CPU time of the run, wall time, and wall time outside waits (the run's waits and
sleeps are timed by wrapping the client objects handed to ``run_once(..., clients=...)`` and the
injected clock; overlapping waits of parallel environments count once).

Strategies, side by side in the same sandbox (runs interleaved):

- ``passive``: the manual runbook. Reset, then fetch the cert and seal, commit and push, then
  for one environment after the other wait for ArgoCD's own poll (no refresh annotation),
  checking every ``passive_poll_s`` like a person re-running ``argocd app get``, then the
  unseal, then ``kubectl rollout restart`` and its rollout. Before each passive run the bench
  idles a random part of ArgoCD's poll cycle, so pushes land at a random phase of it.
- ``watch``: a person's reset (a logged-in session, as in PostHog's UI) at a random phase of
  ``rotator watch``'s read cycle (``watch_interval_s``), adopted by ``Watcher.tick`` (the
  ``run --no-reset`` path); the dark window counts the detection.
- ``default``: ``rotator.runner.run_once`` as shipped (everything checkable prepared before the
  reset, refresh at once, watches instead of polls, environments in parallel, then the
  verification of the key through PostHog's query API).

Caveat of the time scale: the simulated delays are scaled, the job's and the sandbox's own work
(HTTP, git, crypto, Python) is not, so dividing by the scale magnifies that overhead by
1 / time_scale. The real-world figures are therefore pessimistic for the job; a larger
``--time-scale`` is more faithful and slower.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from rotator.clock import Clock
    from rotator.config import Config, RunSwitches
    from rotator.names import ProjectId
    from rotator.redact import Secret
    from rotator.report import RunReport
    from rotator.runner import Clients
    from rotator_sandbox.world import Sandbox, SandboxTiming

Strategy = Literal["passive", "default", "watch"]
STRATEGIES: tuple[Strategy, ...] = ("passive", "default", "watch")
DEFAULT_TIME_SCALE = 0.2
DEFAULT_REPLICAS = (1, 3)
WORKER_FLAG = "--worker"
WORKER_TIMEOUT_S = 300.0


# --- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delays:
    """Real-world delays in seconds (defaults from the real systems, FACTS and the issue)."""

    argocd_poll_s: float = 120.0  # ArgoCD's timeout.reconciliation
    argocd_jitter_s: float = 60.0  # ... plus up to this much jitter
    sync_s: float = 3.0  # an ArgoCD sync operation of two small manifests
    unseal_s: float = 1.0  # the sealed-secrets controller's decrypt and write
    pod_start_s: float = 10.0  # image present, container start
    pod_ready_s: float = 5.0  # readiness probe passing after start
    ingestion_window_s: float = 150.0  # PostHog's token cache: 2 min + up to 30 s jitter
    ingestion_lag_s: float = 3.0  # capture -> queryable
    passive_poll_s: float = 10.0  # how often a person re-checks ArgoCD / kubectl (passive)
    watch_interval_s: float = 10.0  # rotator watch's read of PostHog's key (watch.interval_s)

    def timing(self, time_scale: float) -> SandboxTiming:
        from rotator_sandbox.world import SandboxTiming

        return SandboxTiming(
            time_scale=time_scale,
            argocd_poll_s=self.argocd_poll_s,
            argocd_jitter_s=self.argocd_jitter_s,
            sync_s=self.sync_s,
            unseal_s=self.unseal_s,
            pod_start_s=self.pod_start_s,
            pod_ready_s=self.pod_ready_s,
            ingestion_window_s=self.ingestion_window_s,
            ingestion_lag_s=self.ingestion_lag_s,
        )


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 5
    time_scale: float = DEFAULT_TIME_SCALE
    replicas: tuple[int, ...] = DEFAULT_REPLICAS
    strategies: tuple[Strategy, ...] = STRATEGIES
    delays: Delays = Delays()
    seed: int = 8
    key_bits: int = 4096
    cold_start: bool = True
    root: Path | None = None  # where the sandboxes live (default: a temp dir)


# --- the floor -----------------------------------------------------------------------------


def rollout_waves(replicas: int, max_surge: int, max_unavailable: int) -> int:
    """PURE. How many rounds of pod start-up a rolling update needs when every pod takes the
    same time, stepping the Deployment controller's ``rolloutRolling`` (``NewRSNewReplicas``:
    scale the new ReplicaSet up to replicas + maxSurge pods in all; ``reconcileOldReplicaSets``:
    scale old ones down while replicas - maxUnavailable stay available). ``max_surge`` and
    ``max_unavailable`` are already resolved to counts (``ResolveFenceposts``)."""
    if replicas <= 0:
        return 0
    if max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1
    new, new_ready, old = 0, 0, replicas
    min_available = replicas - max_unavailable
    for waves in range(4 * replicas + 4):
        changed = True
        while changed:
            changed = False
            if new < replicas and new + old < replicas + max_surge:
                new += min(replicas + max_surge - new - old, replicas - new)
                changed = True
            max_scaled_down = (new + old) - min_available - (new - new_ready)
            can_remove = min(old + new_ready - min_available, max_scaled_down, old)
            if can_remove > 0:
                old -= can_remove
                changed = True
        if new_ready == replicas and old == 0:
            return waves
        if new == new_ready:
            raise ValueError("the rollout cannot progress with these settings")
        new_ready = new  # one round of start-up: every pod started so far is Ready
    raise ValueError("the rollout did not finish")  # pragma: no cover


def resolve_surge(
    replicas: int, max_surge: str | int, max_unavailable: str | int
) -> tuple[int, int]:
    """PURE. ``ResolveFenceposts``: percentages of replicas, surge rounded up, unavailable down."""

    def count(value: str | int, *, up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            exact = float(value[:-1]) * replicas / 100
            return math.ceil(exact) if up else math.floor(exact)
        return int(value)

    return count(max_surge, up=True), count(max_unavailable, up=False)


@dataclass(frozen=True)
class Floor:
    sync_s: float
    unseal_s: float
    pod_s: float
    waves: int

    @property
    def total_s(self) -> float:
        return self.sync_s + self.unseal_s + self.pod_s * self.waves


def floor_for(
    delays: Delays, *, replicas: int, max_surge: str | int, max_unavailable: str | int
) -> Floor:
    """PURE. The unavoidable part of the dark window, in real-world seconds."""
    surge, unavailable = resolve_surge(replicas, max_surge, max_unavailable)
    return Floor(
        sync_s=delays.sync_s,
        unseal_s=delays.unseal_s,
        pod_s=delays.pod_start_s + delays.pod_ready_s,
        waves=rollout_waves(replicas, surge, unavailable),
    )


def sandbox_floor(sandbox: Sandbox, delays: Delays) -> Floor:
    """``floor_for`` the rollout strategy of the sandbox's first gateway Deployment."""
    spec = sandbox.deployment(sandbox.envs[0]).get("spec") or {}
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    return floor_for(
        delays,
        replicas=sandbox.replicas,
        max_surge=rolling.get("maxSurge", "25%"),
        max_unavailable=rolling.get("maxUnavailable", "25%"),
    )


# --- one run's results ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One rotation; times in real-world seconds unless named ``*_measured_s``."""

    strategy: str
    replicas: int
    index: int
    outcome: str
    dark_s: float | None  # from the sandbox: reset -> last new-key pod Ready / old pod gone
    dark_report_s: float | None  # rotator's own view (report / the passive driver)
    floor_s: float
    ratio: float | None
    sent: int
    ingested: int
    lost: int
    pending: int
    cpu_s: float  # the job's process CPU time during the run (not scaled)
    wall_measured_s: float  # the job's wall time for the run (not scaled)
    waits_measured_s: float
    outside_waits_measured_s: float
    first_call_s: float  # process start -> first API call (not scaled)
    max_rss_kb: int
    dark_measured_s: float | None
    # dark_measured_s - floor x scale: the unscaled seconds the job and the sandbox's own work
    # (HTTP, git, Python) added; dividing it by the scale, as dark_s does, magnifies it.
    overhead_measured_s: float | None = None


@dataclass
class _Recorder:
    """Wait intervals (monotonic) of the job, nested waits counted once per thread."""

    intervals: list[tuple[float, float, str]] = field(default_factory=list)
    first_call_at: float | None = None  # wall clock
    reset_before: float | None = None
    reset_after: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)

    @contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        depth = getattr(self.local, "depth", 0)
        self.local.depth = depth + 1
        start = time.monotonic()
        try:
            yield
        finally:
            self.local.depth = depth
            if depth == 0:
                with self.lock:
                    self.intervals.append((start, time.monotonic(), what))

    def called(self) -> None:
        if self.first_call_at is None:
            self.first_call_at = time.time()

    def waited_s(self) -> float:
        """Length of the union of the wait intervals (parallel waits count once)."""
        total, end = 0.0, -math.inf
        for start, stop, _ in sorted(self.intervals):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total


class _Timed:
    """A client seen through the bench: ``waits`` are timed, the first call is noted."""

    def __init__(self, target: Any, recorder: _Recorder, *, waits: frozenset[str]) -> None:
        self._target = target
        self._recorder = recorder
        self._waits = waits

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        recorder = self._recorder
        if name in self._waits:

            def timed(*args: Any, **kwargs: Any) -> Any:
                recorder.called()
                with recorder.waiting(name):
                    return attr(*args, **kwargs)

            return timed
        if name == "reset_key":

            def reset(*args: Any, **kwargs: Any) -> Any:
                recorder.called()
                recorder.reset_before = time.time()
                try:
                    return attr(*args, **kwargs)
                finally:
                    recorder.reset_after = time.time()

            return reset

        def call(*args: Any, **kwargs: Any) -> Any:
            recorder.called()
            return attr(*args, **kwargs)

        return call


def _recording_clock(recorder: _Recorder) -> Clock:
    from rotator.clock import SystemClock

    class RecordingClock(SystemClock):
        def sleep(self, seconds: float) -> None:
            with recorder.waiting("sleep"):
                super().sleep(seconds)

    return RecordingClock()


def _wrap_clients(clients: Clients, recorder: _Recorder) -> None:
    clients.posthog = cast(Any, _Timed(clients.posthog, recorder, waits=frozenset({"find_marker"})))
    clients.kube = cast(
        Any,
        _Timed(clients.kube, recorder, waits=frozenset({"wait_for_unseal", "wait_for_rollout"})),
    )
    clients.argocd = cast(
        Any, _Timed(clients.argocd, recorder, waits=frozenset({"wait_for_revision"}))
    )
    make_session = clients.posthog_session
    if make_session is not None:  # the reset goes through the service user's session

        def timed_session() -> Any:
            return _Timed(make_session(), recorder, waits=frozenset())

        clients.posthog_session = timed_session


# --- the worker: one run in a child process ------------------------------------------------


def _worker(spec_path: Path) -> int:
    """Run one rotation with the given strategy; write the measurements as JSON."""
    spec = json.loads(spec_path.read_text())
    from rotator.config import load_config
    from rotator.logs import setup_logging
    from rotator.runner import build_clients

    setup_logging(fmt="text", level=20)
    recorder = _Recorder()
    clock = _recording_clock(recorder)
    config = load_config(Path(spec["config"]))
    clients = build_clients(config, clock=clock)
    _wrap_clients(clients, recorder)
    cpu0, wall0 = time.process_time(), time.monotonic()
    out: dict[str, Any]
    if spec["strategy"] == "passive":
        out = _passive(config, clients, clock, poll_s=float(spec["passive_poll_s"]))
    elif spec["strategy"] == "watch":
        out = _watch(
            config,
            clients,
            clock,
            interval_s=float(spec["watch_interval_s"]),
            phase_s=float(spec["watch_phase_s"]),
        )
    else:
        out = _default(config, clients, clock)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    waited = recorder.waited_s()
    out.update(
        cpu_s=cpu,
        wall_s=wall,
        waits_s=waited,
        outside_waits_s=max(0.0, wall - waited),
        first_call_at=recorder.first_call_at,
        reset_before=recorder.reset_before,
        reset_after=recorder.reset_after,
        max_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


def _default(config: Config, clients: Clients, clock: Clock) -> dict[str, Any]:
    from rotator.config import RunSwitches
    from rotator.runner import run_once

    report = run_once(config, RunSwitches(trigger="test", force=True), clock=clock, clients=clients)
    fps = next(iter(report.fingerprints.values()), (None, None))
    return {
        "outcome": report.outcome.value,
        "error": report.error,
        "dark_report_s": report.dark_window_s,
        "old_fp": fps[0],
        "new_fp": fps[1],
    }


def _watch(
    config: Config, clients: Clients, clock: Clock, *, interval_s: float, phase_s: float
) -> dict[str, Any]:
    """A person resets the key (logged in, as in PostHog's UI) ``phase_s`` after one of
    ``rotator watch``'s reads; its next read, ``interval_s`` after the last, finds the key
    unexplained and runs the adopt rotation (``Watcher.tick``, the command's own path)."""
    from rotator.runner import run_once
    from rotator.watch import Watcher

    reports: list[RunReport] = []

    def run(cfg: Config, switches: RunSwitches) -> RunReport:
        report = run_once(cfg, switches, clock=clock, clients=clients)
        reports.append(report)
        return report

    project_id = config.project_groups()[0][0]
    watcher = Watcher(config, run=run, posthog=clients.posthog, clock=clock)
    try:
        if watcher.tick() is not None:  # a read: the key the sandbox converged on
            raise RuntimeError("watch: adopted before the reset (the sandbox was not converged)")
        read_at = time.monotonic()
        old_fp = clients.posthog.get_project(project_id).api_token.fingerprint
        time.sleep(max(0.0, read_at + phase_s - time.monotonic()))
        new_fp = _reset_as_a_person(config, clients, project_id).fingerprint
        time.sleep(max(0.0, read_at + interval_s - time.monotonic()))
        watcher.tick()
    finally:
        watcher.close()
    if not reports:
        raise RuntimeError("watch: the reset was not detected")
    report = reports[0]
    return {
        "outcome": report.outcome.value,
        "error": report.error,
        "dark_report_s": None,  # the adopt run did not reset: its report has no reset time
        "old_fp": old_fp,  # the report's "old" is the key PostHog had when the run began
        "new_fp": new_fp,
    }


def _reset_as_a_person(config: Config, clients: Clients, project_id: ProjectId) -> Secret:
    """The runbook's reset, as a person does it: logged in to PostHog (a session)."""
    from rotator.config import ResetMethod

    if config.posthog.reset.method is not ResetMethod.SESSION or clients.posthog_session is None:
        return clients.posthog.reset_key(project_id).api_token
    session = clients.posthog_session()
    session.login()
    try:
        return session.reset_key(project_id).api_token
    finally:
        session.logout()


def _passive(config: Config, clients: Clients, clock: Clock, *, poll_s: float) -> dict[str, Any]:
    """The manual runbook, driven through the same clients: reset, seal, push, then for each
    environment in turn: wait for ArgoCD's own poll, the unseal, restart, the rollout."""
    from rotator.clients.argocd import app_status_for
    from rotator.clients.kube import rollout_status, unseal_status
    from rotator.clients.sealing import fetch_cert, update_sealed_file
    from rotator.names import (
        FINGERPRINT_ANNOTATION,
        TRAILER_KEY_FINGERPRINT,
        TRAILER_RUN_ID,
        TRAILER_TRIGGER,
    )

    waits = config.waits
    timeout = (config.timeouts.connect_s, config.timeouts.read_s)
    (project_id, envs), *_ = config.project_groups()
    old = clients.posthog.get_project(project_id).api_token
    workdir = config.git.workdir or Path(tempfile.mkdtemp(prefix="rotator-bench-ops-"))
    repo = clients.open_repo(workdir)  # the person's checkout, up to date
    try:
        reset_at = clock.now()
        key = _reset_as_a_person(config, clients, project_id)
        files: dict[str, str] = {}
        for env in envs:
            cfg = config.environments[env]
            cert = fetch_cert(cfg.cert, proxy=clients.kube, timeout=timeout, now=clock.now())
            files[cfg.sealed_file] = update_sealed_file(
                repo.read_file(cfg.sealed_file),
                value=key,
                namespace=cfg.namespace,
                name=cfg.secret_name,
                data_key=cfg.secret_key,
                scope=cfg.scope,
                cert=cert,
            ).text
        result = repo.commit_and_push(
            lambda _repo: files,
            message=f"Rotate the PostHog project key ({key.fingerprint})",
            trailers={
                TRAILER_RUN_ID: "bench-passive",
                TRAILER_TRIGGER: "manual",
                TRAILER_KEY_FINGERPRINT: key.fingerprint,
            },
            attempts=3,
        )
        assert result is not None
        sha = result.sha
        done: list[datetime] = []
        for env in envs:
            cfg = config.environments[env]
            app = cfg.argocd_app

            def synced(app_ns: str = app.namespace, app_name: str = app.name) -> str:
                state = clients.argocd.get_app(app_ns, app_name)
                return "waiting" if state is None else app_status_for(state, sha)[0]

            def unsealed(ns: str = cfg.namespace, name: str = cfg.secret_name) -> str:
                return unseal_status(clients.kube.get_sealed_secret(ns, name), key.fingerprint)[0]

            _poll(clock, synced, every_s=poll_s, deadline_s=waits.argocd_s, what="argocd")
            _poll(clock, unsealed, every_s=poll_s, deadline_s=waits.unseal_s, what="unseal")
            dep = clients.kube.restart_deployment(
                cfg.namespace,
                cfg.deployment,
                at=clock.now(),
                annotations={FINGERPRINT_ANNOTATION: key.fingerprint},
            )

            def rolled(
                ns: str = cfg.namespace,
                name: str = cfg.deployment,
                generation: int = dep.generation,
            ) -> str:
                state = clients.kube.get_deployment(ns, name)
                if state is None:
                    return "waiting"
                return rollout_status(state, min_generation=generation)[0]

            _poll(clock, rolled, every_s=poll_s, deadline_s=waits.rollout_s, what="rollout")
            done.append(clock.now())
    finally:
        repo.close()
    return {
        "outcome": "succeeded",
        "error": None,
        "dark_report_s": (max(done) - reset_at).total_seconds(),
        "old_fp": old.fingerprint,
        "new_fp": key.fingerprint,
    }


def _poll(
    clock: Clock, phase: Callable[[], str], *, every_s: float, deadline_s: float, what: str
) -> None:
    """A person checking every ``every_s``: a fixed-interval poll (the runbook's way)."""
    start = clock.monotonic()
    while True:
        state = phase()
        if state == "done":
            return
        if state == "failed":
            raise RuntimeError(f"passive: {what} failed")
        if clock.monotonic() - start > deadline_s:
            raise TimeoutError(f"passive: {what} not done within {deadline_s:.0f}s")
        clock.sleep(every_s)


# --- the parent: sandboxes, pod watcher, accounting ----------------------------------------


@dataclass
class _PodRecord:
    env: str
    fingerprint: str = ""
    first_seen: float = 0.0
    ready_at: float | None = None
    deleted_at: float | None = None


class PodWatcher:
    """Every gateway pod's key fingerprint and the wall time it was first seen Ready / deleted,
    from an informer on the Kubernetes API stand-in (the sandbox's own view, not rotator's)."""

    def __init__(self, kubeconfig: Path) -> None:
        from rotator_sandbox.controllers.base import POD, Informer, Kube

        self._kube = Kube(kubeconfig)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.pods: dict[tuple[str, str], _PodRecord] = {}
        self._informer = Informer(
            self._kube,
            POD,
            self._on_pod,
            self._stop,
            label_selector="app=align-gateway",
            name="bench-pods",
        )

    def start(self) -> PodWatcher:
        self._informer.start()
        if not self._informer.synced.wait(30):
            raise TimeoutError("the pod watcher did not sync")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._kube.interrupt_watches()
        self._informer.join(5)
        self._kube.close()

    def _on_pod(self, etype: str, obj: dict[str, Any]) -> None:
        from rotator_sandbox.controllers.deployments import KEY_FINGERPRINT_ANNOTATION, is_ready

        now = time.time()
        m = obj.get("metadata") or {}
        key = (str(m.get("namespace")), str(m.get("name")))
        with self._lock:
            rec = self.pods.get(key)
            if rec is None:
                env = str((m.get("labels") or {}).get("env") or key[0])
                rec = self.pods[key] = _PodRecord(env=env, first_seen=now)
            fp = (m.get("annotations") or {}).get(KEY_FINGERPRINT_ANNOTATION)
            if fp:
                rec.fingerprint = str(fp)
            if etype == "DELETED":
                rec.deleted_at = rec.deleted_at or now
            elif rec.ready_at is None and is_ready(obj):
                rec.ready_at = now

    def dark_end(
        self, *, new_fp: str, old_fp: str, envs: Sequence[str], since: float
    ) -> float | None:
        """When every env's pods ran the new key: the last new-key pod Ready or old-key pod
        deleted after ``since`` (None if some env never got there)."""
        with self._lock:
            pods = list(self.pods.values())
        ends: list[float] = []
        for env in envs:
            ready = [
                p.ready_at for p in pods if p.env == env and p.fingerprint == new_fp and p.ready_at
            ]
            if not ready:
                return None
            if any(p.env == env and p.fingerprint == old_fp and p.deleted_at is None for p in pods):
                return None
            gone = [
                p.deleted_at
                for p in pods
                if p.env == env
                and p.fingerprint == old_fp
                and p.deleted_at
                and p.deleted_at >= since
            ]
            ends.append(max([t for t in ready if t is not None] + gone))
        return max(ends) if ends else None


def settle(sandbox: Sandbox, *, timeout: float) -> None:
    """Wait until every environment is synced at the branch tip, rolled out, its pods on one key."""

    def rolled(env: str) -> bool:
        d = sandbox.deployment(env)
        status = d.get("status") or {}
        n = sandbox.replicas
        return bool(
            int(status.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 0))
            and status.get("updatedReplicas") == n
            and status.get("replicas") == n
            and status.get("availableReplicas") == n
        )

    sandbox.wait_for(
        lambda: all(
            sandbox.is_converged(env)
            and rolled(env)
            and len(sandbox.pod_key_fingerprints(env)) == 1
            for env in sandbox.envs
        ),
        timeout=timeout,
        what=f"the {len(sandbox.envs)} environment(s) to settle between runs",
    )


def stand_in_reset_time(sandbox: Sandbox, project_id: int) -> float | None:
    """The moment the PostHog stand-in replaced the key (its own record), if it can be read."""
    projects = getattr(sandbox.posthog, "_projects", {})
    project = projects.get(project_id)
    retired = getattr(project, "retired", None)
    return float(retired[-1][1]) if retired else None


def spawn_worker(
    sandbox: Sandbox,
    spec: Mapping[str, Any],
    workdir: Path,
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = WORKER_TIMEOUT_S,
) -> tuple[dict[str, Any], float]:
    """One run in a child process (``_worker``): its result and when it was spawned (unix s)."""
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, **sandbox.environ(), **(extra_env or {})}
    log_path = workdir / "worker.log"
    spawned = time.time()
    with log_path.open("w") as log_file:
        done = subprocess.run(
            [sys.executable, "-m", "rotator_sandbox.bench", WORKER_FLAG, str(spec_path)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    out_path = Path(spec["out"])
    if done.returncode != 0 or not out_path.exists():
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"bench worker failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result, spawned


def wait_for_dark_end(
    watcher: PodWatcher,
    *,
    timing: SandboxTiming,
    new_fp: str,
    old_fp: str,
    envs: Sequence[str],
    since: float,
) -> float | None:
    """When the last environment's pods all run the new key (``PodWatcher.dark_end``), waited
    for up to 300 simulated seconds (at least 10 s); None when they never did."""
    end = None
    settle_by = time.monotonic() + max(10.0, timing.scaled(300))
    while end is None and time.monotonic() < settle_by:
        end = watcher.dark_end(new_fp=new_fp, old_fp=old_fp, envs=envs, since=since)
        if end is None:
            time.sleep(0.02)
    return end


def _one_run(
    sandbox: Sandbox,
    watcher: PodWatcher,
    *,
    strategy: Strategy,
    index: int,
    options: BenchOptions,
    floor: Floor,
    workdir: Path,
    rng: random.Random,
) -> RunResult:
    from rotator_sandbox import manifests

    scale = options.time_scale
    delays = options.delays
    timing = sandbox.timing
    settle(sandbox, timeout=max(30.0, timing.scaled(600)))
    if strategy == "passive":
        # Land the push at a random phase of ArgoCD's poll cycle.
        time.sleep(rng.uniform(0, timing.scaled(delays.argocd_poll_s + delays.argocd_jitter_s)))
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "strategy": strategy,
        "config": str(sandbox.config_path),
        "passive_poll_s": timing.scaled(delays.passive_poll_s),
        "watch_interval_s": timing.scaled(delays.watch_interval_s),
        # The person's reset lands at a random phase of the watch's read cycle.
        "watch_phase_s": rng.uniform(0, timing.scaled(delays.watch_interval_s)),
        "out": str(workdir / "result.json"),
    }
    out, spawned = spawn_worker(sandbox, spec, workdir)
    reset = stand_in_reset_time(sandbox, sandbox.project_id("preview")) or out["reset_after"]
    old_fp, new_fp = str(out["old_fp"]), str(out["new_fp"])
    envs = list(manifests.ENVS)
    end = wait_for_dark_end(
        watcher, timing=timing, new_fp=new_fp, old_fp=old_fp, envs=envs, since=reset
    )
    # Count events once everything the old key could still send has been ingested or dropped.
    window = timing.scaled(delays.ingestion_window_s)
    lag = timing.scaled(delays.ingestion_lag_s)
    period_end = max(reset + window, end or 0.0) + 2 * lag + 0.2
    while time.time() < period_end + lag + 0.1:
        time.sleep(0.05)
    assert sandbox.posthog is not None
    events = [
        e
        for e in sandbox.posthog.events()
        if e.key_fingerprint in (old_fp, new_fp) and reset <= e.received_at <= period_end
    ]
    lost = sum(1 for e in events if e.key_fingerprint == old_fp and e.outcome == "dropped")
    dark_measured = None if end is None else end - reset
    dark = None if dark_measured is None else dark_measured / scale
    dark_report = out.get("dark_report_s")
    return RunResult(
        strategy=strategy,
        replicas=sandbox.replicas,
        index=index,
        outcome=str(out["outcome"]),
        dark_s=dark,
        dark_report_s=None if dark_report is None else float(dark_report) / scale,
        floor_s=floor.total_s,
        ratio=None if dark is None else dark / floor.total_s,
        sent=len(events),
        ingested=sum(1 for e in events if e.outcome == "ingested"),
        lost=lost,
        pending=sum(1 for e in events if e.outcome == "pending"),
        cpu_s=float(out["cpu_s"]),
        wall_measured_s=float(out["wall_s"]),
        waits_measured_s=float(out["waits_s"]),
        outside_waits_measured_s=float(out["outside_waits_s"]),
        first_call_s=float(out["first_call_at"] or spawned) - spawned,
        max_rss_kb=int(out["max_rss_kb"]),
        dark_measured_s=dark_measured,
        overhead_measured_s=None
        if dark_measured is None
        else dark_measured - floor.total_s * scale,
    )


@dataclass(frozen=True)
class Summary:
    """Medians over the runs of one strategy and replica count."""

    strategy: str
    replicas: int
    runs: int
    failed: int
    dark_s: float | None
    dark_report_s: float | None
    floor_s: float
    ratio: float | None
    dark_max_s: float | None
    overhead_measured_s: float | None
    sent: float
    ingested: float
    lost: float
    lost_max: int
    cpu_s: float
    wall_measured_s: float
    outside_waits_measured_s: float
    first_call_s: float
    max_rss_kb: float


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values present (None when none is)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: Sequence[RunResult]) -> list[Summary]:
    """PURE. Medians per (strategy, replicas), in the order first seen."""
    keys: list[tuple[str, int]] = []
    for r in results:
        if (r.strategy, r.replicas) not in keys:
            keys.append((r.strategy, r.replicas))
    out: list[Summary] = []
    for strategy, replicas in keys:
        rs = [r for r in results if r.strategy == strategy and r.replicas == replicas]
        darks = [r.dark_s for r in rs if r.dark_s is not None]
        out.append(
            Summary(
                strategy=strategy,
                replicas=replicas,
                runs=len(rs),
                failed=sum(1 for r in rs if r.outcome != "succeeded"),
                dark_s=median([r.dark_s for r in rs]),
                dark_report_s=median([r.dark_report_s for r in rs]),
                floor_s=rs[0].floor_s,
                ratio=median([r.ratio for r in rs]),
                dark_max_s=max(darks) if darks else None,
                overhead_measured_s=median([r.overhead_measured_s for r in rs]),
                sent=statistics.median(r.sent for r in rs),
                ingested=statistics.median(r.ingested for r in rs),
                lost=statistics.median(r.lost for r in rs),
                lost_max=max(r.lost for r in rs),
                cpu_s=statistics.median(r.cpu_s for r in rs),
                wall_measured_s=statistics.median(r.wall_measured_s for r in rs),
                outside_waits_measured_s=statistics.median(r.outside_waits_measured_s for r in rs),
                first_call_s=statistics.median(r.first_call_s for r in rs),
                max_rss_kb=statistics.median(r.max_rss_kb for r in rs),
            )
        )
    return out


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A figure for the table; "-" when it was not measured."""
    return "-" if value is None else format(value, spec)


def format_table(summaries: Sequence[Summary], *, options: BenchOptions) -> str:
    """PURE. The side-by-side table (real-world seconds; job CPU and wall as measured)."""
    header = (
        "| strategy | replicas | runs | dark window s | rotator's view s | floor s | dark/floor "
        "| worst dark s | overhead s (unscaled) | events sent | ingested | lost (worst) "
        "| job CPU s | job wall s | wall outside waits s |"
    )
    rule = "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"
    lines = [header, rule]
    for s in summaries:
        failed = f" ({s.failed} failed)" if s.failed else ""
        lines.append(
            f"| {s.strategy} | {s.replicas} | {s.runs}{failed} "
            f"| {fmt(s.dark_s)} | {fmt(s.dark_report_s)} | {s.floor_s:.1f} "
            f"| {fmt(s.ratio, '.2f')} | {fmt(s.dark_max_s)} "
            f"| {fmt(s.overhead_measured_s, '.2f')} | {s.sent:.0f} | {s.ingested:.0f} "
            f"| {s.lost:.0f} ({s.lost_max}) | {s.cpu_s:.2f} | {s.wall_measured_s:.2f} "
            f"| {s.outside_waits_measured_s:.2f} |"
        )
    d = options.delays
    lines.append("")
    lines.append(
        f"Medians over {options.runs} runs per row; dark window, floor and worst in real-world "
        f"seconds (measured / time scale {options.time_scale:g}); overhead = measured dark "
        "window - floor x scale, and job CPU and wall times, as measured (not scaled). "
        "Delays: ArgoCD poll "
        f"{d.argocd_poll_s:g} s + up to {d.argocd_jitter_s:g} s, sync {d.sync_s:g} s, unseal "
        f"{d.unseal_s:g} s, pod start {d.pod_start_s:g} s + ready {d.pod_ready_s:g} s, "
        f"ingestion window {d.ingestion_window_s:g} s, lag {d.ingestion_lag_s:g} s; passive "
        f"checks every {d.passive_poll_s:g} s; maxSurge/maxUnavailable 25%/25%."
    )
    return "\n".join(lines)


# --- cold start ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdStart:
    help_wall_s: float
    help_import_s: float
    help_max_rss_kb: int
    run_first_call_s: float | None
    run_wall_s: float
    run_max_rss_kb: int
    run_exit: int
    run_top_imports: tuple[tuple[str, float], ...]


# Measures a command from a small Python of its own: a child forked from the bench (whose
# sandbox makes it large) would report the bench's RSS as its peak, since ru_maxrss keeps the
# high-water mark from before exec.
_CHILD_WRAPPER = """
import json, resource, subprocess, sys, time
out, argv = sys.argv[1], sys.argv[2:]
spawned = time.time()
began = time.monotonic()
code = subprocess.run(argv, stdout=subprocess.DEVNULL, check=False).returncode
wall = time.monotonic() - began
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(out, "w") as f:
    json.dump({"exit": code, "wall_s": wall, "spawned": spawned, "max_rss_kb": rss}, f)
"""


@dataclass(frozen=True)
class _Child:
    exit: int
    wall_s: float
    spawned: float  # wall clock, just before the command started
    max_rss_kb: int
    stderr: str


def _timed_child(argv: Sequence[str], *, env: Mapping[str, str]) -> _Child:
    """Run a command; its exit code, wall time, spawn time, peak RSS (KB) and stderr."""
    with tempfile.TemporaryDirectory(prefix="rotator-bench-child-") as tmp:
        out = Path(tmp) / "out.json"
        err_path = Path(tmp) / "stderr"
        with err_path.open("wb") as err:
            subprocess.run(
                [sys.executable, "-c", _CHILD_WRAPPER, str(out), *argv],
                env=dict(env),
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=WORKER_TIMEOUT_S,
                check=False,
            )
        data = json.loads(out.read_text())
        return _Child(
            exit=int(data["exit"]),
            wall_s=float(data["wall_s"]),
            spawned=float(data["spawned"]),
            max_rss_kb=int(data["max_rss_kb"]),
            stderr=err_path.read_text(errors="replace"),
        )


def _import_times(stderr: str) -> dict[str, float]:
    """``-X importtime`` lines -> cumulative seconds per top-level import."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (p.strip() for p in line[len("import time:") :].split("|"))
        if cumulative.isdigit() and not name.startswith(" "):
            raw = line.rsplit("|", 1)[1]
            if raw.startswith(" ") and not raw.startswith("  "):
                out[name] = int(cumulative) / 1e6
    return out


def measure_cold_start(sandbox: Sandbox) -> ColdStart:
    """``rotator --help`` (start-up and imports) and a real ``rotator run`` against the
    sandbox: time from spawn to its first request at the PostHog stand-in, peak RSS."""
    py = sys.executable
    base_env = dict(os.environ)
    helps = [_timed_child([py, "-m", "rotator", "--help"], env=base_env) for _ in range(3)]
    traced = _timed_child([py, "-X", "importtime", "-m", "rotator", "--help"], env=base_env)
    help_import = sum(_import_times(traced.stderr).values())

    assert sandbox.posthog is not None
    env = {**base_env, **sandbox.environ(), "ROTATOR_FORCE": "true"}
    first: list[float] = []
    stop = threading.Event()
    before = sandbox.posthog.calls("project")

    def watch() -> None:
        assert sandbox.posthog is not None
        while not stop.is_set():
            if sandbox.posthog.calls("project") > before:
                first.append(time.time())
                return
            time.sleep(0.001)

    settle(sandbox, timeout=60)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    run = _timed_child([py, "-m", "rotator", "--log-format", "text", "run"], env=env)
    stop.set()
    watcher.join(2)
    settle(sandbox, timeout=60)
    traced_run = _timed_child(
        [py, "-X", "importtime", "-m", "rotator", "--log-format", "text", "run"], env=env
    )
    imports = sorted(_import_times(traced_run.stderr).items(), key=lambda kv: -kv[1])[:6]
    return ColdStart(
        help_wall_s=statistics.median(h.wall_s for h in helps),
        help_import_s=help_import,
        help_max_rss_kb=max(h.max_rss_kb for h in helps),
        run_first_call_s=(first[0] - run.spawned) if first else None,
        run_wall_s=run.wall_s,
        run_max_rss_kb=run.max_rss_kb,
        run_exit=run.exit,
        run_top_imports=tuple(imports),
    )


def format_cold_start(cold: ColdStart) -> str:
    imports = ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in cold.run_top_imports)
    return "\n".join(
        [
            f"cold start: `rotator --help` {cold.help_wall_s * 1000:.0f} ms wall "
            f"({cold.help_import_s * 1000:.0f} ms of imports), peak RSS "
            f"{cold.help_max_rss_kb / 1024:.0f} MiB",
            f"`rotator run` in the sandbox: first API call {fmt(cold.run_first_call_s, '.2f')} s "
            f"after spawn, whole run {cold.run_wall_s:.1f} s (exit {cold.run_exit}), peak RSS "
            f"{cold.run_max_rss_kb / 1024:.0f} MiB",
            f"  biggest imports of the run (cumulative, with -X importtime): {imports}",
        ]
    )


# --- the command ---------------------------------------------------------------------------


@dataclass
class BenchResult:
    options: BenchOptions
    runs: list[RunResult]
    summaries: list[Summary]
    cold_start: ColdStart | None
    wall_s: float

    def as_json(self) -> dict[str, Any]:
        opts = asdict(self.options)
        opts["root"] = str(self.options.root) if self.options.root else None
        return {
            "options": opts,
            "summaries": [asdict(s) for s in self.summaries],
            "runs": [asdict(r) for r in self.runs],
            "cold_start": asdict(self.cold_start) if self.cold_start else None,
            "wall_s": self.wall_s,
        }


def run_bench(
    options: BenchOptions, *, progress: Callable[[str], None] | None = None
) -> BenchResult:
    """Every strategy ``options.runs`` times per replica count, interleaved in one sandbox per
    replica count; then the cold-start figures."""
    from rotator_sandbox.world import Sandbox, cached_key_pair

    say = progress or (lambda _msg: None)
    began = time.monotonic()
    rng = random.Random(options.seed)  # noqa: S311 - scheduling jitter, not crypto
    key_pair = cached_key_pair(options.key_bits)
    results: list[RunResult] = []
    cold: ColdStart | None = None
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        root = options.root or Path(tmp)
        for replicas in options.replicas:
            sandbox = Sandbox(
                root / f"replicas-{replicas}",
                timing=options.delays.timing(options.time_scale),
                replicas=replicas,
                key_pair=key_pair,
                seed=rng.randrange(1 << 30),
            )
            sandbox.start(wait_s=max(60.0, 200 * options.time_scale))
            watcher = PodWatcher(sandbox.admin_kubeconfig_path).start()
            try:
                floor = sandbox_floor(sandbox, options.delays)
                for index in range(options.runs):
                    for strategy in options.strategies:
                        result = _one_run(
                            sandbox,
                            watcher,
                            strategy=strategy,
                            index=index,
                            options=options,
                            floor=floor,
                            workdir=root / f"replicas-{replicas}-runs" / f"{strategy}-{index}",
                            rng=rng,
                        )
                        results.append(result)
                        say(
                            f"replicas {replicas} {strategy} #{index + 1}: dark "
                            f"{fmt(result.dark_s)} s (rotator {fmt(result.dark_report_s)} s), "
                            f"floor {floor.total_s:.1f} s, lost {result.lost}/{result.sent}, "
                            f"{result.outcome}"
                        )
                if options.cold_start and cold is None:
                    cold = measure_cold_start(sandbox)
            finally:
                watcher.stop()
                sandbox.stop()
    return BenchResult(
        options=options,
        runs=results,
        summaries=summarize(results),
        cold_start=cold,
        wall_s=time.monotonic() - began,
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The parser's values (any option it lacks keeps its default)."""
    d = Delays()

    def get(name: str, default: Any) -> Any:
        value = getattr(args, name, None)
        return default if value is None else value

    delays = Delays(
        argocd_poll_s=get("argocd_poll", d.argocd_poll_s),
        argocd_jitter_s=get("argocd_jitter", d.argocd_jitter_s),
        sync_s=get("sync", d.sync_s),
        unseal_s=get("unseal", d.unseal_s),
        pod_start_s=get("pod_start", d.pod_start_s),
        pod_ready_s=get("pod_ready", d.pod_ready_s),
        ingestion_window_s=get("window", d.ingestion_window_s),
        ingestion_lag_s=get("lag", d.ingestion_lag_s),
        passive_poll_s=get("passive_poll", d.passive_poll_s),
        watch_interval_s=get("watch_interval", d.watch_interval_s),
    )
    strategies = tuple(get("strategies", None) or STRATEGIES)
    return BenchOptions(
        runs=int(get("runs", 5)),
        time_scale=float(get("time_scale", DEFAULT_TIME_SCALE)),
        replicas=tuple(get("replicas", None) or DEFAULT_REPLICAS),
        strategies=cast(tuple[Strategy, ...], strategies),
        delays=delays,
        seed=int(get("seed", 8)),
        key_bits=int(get("key_bits", 4096)),
        cold_start=not bool(getattr(args, "no_cold_start", False)),
    )


def bench_command(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if options.runs < 1:
        print("rotator bench: --runs must be at least 1", file=sys.stderr)
        return 2
    result = run_bench(options, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_table(result.summaries, options=options))
    if result.cold_start is not None:
        print()
        print(format_cold_start(result.cold_start))
    print(f"\nbench took {result.wall_s:.0f} s", file=sys.stderr)
    json_out = getattr(args, "json_out", None)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result.as_json(), indent=2) + "\n")
    failed = sum(s.failed for s in result.summaries)
    return 1 if failed else 0


def main(argv: Sequence[str]) -> int:
    """``python -m rotator_sandbox.bench --worker SPEC``: one run in a child process (internal)."""
    if len(argv) == 2 and argv[0] == WORKER_FLAG:
        return _worker(Path(argv[1]))
    print("usage: rotator bench [options] (this module's entry point is internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
