"""``rotator bench --envs 1 2 10 50``: how the job's cost grows with the number of environments.

One sandbox per environment count N: N environments (``env-01`` ...) on ONE shared PostHog
project, each with its own namespace, Deployment, SealedSecret and ArgoCD Application, in one
ops repo, time-scaled as ``rotator bench`` does. Per N, ``runs`` rotations (``run_once`` as
shipped, in a child process like the CronJob's pod) and per rotation, counted at the stand-ins:

- the dark window (reset -> every environment's pods on the new key, from a pod watcher) against
  the floor of the slowest environment (sync + unseal + rollout waves, ``bench.floor_for``,
  + the old pods' termination grace period: ``termination_grace_s``);
  every environment waits in parallel, so the floor does not grow with N;
- the job's requests to the Kubernetes API (the API stand-in's audit log, as rotator's
  ServiceAccount: watches apart), to PostHog (per route, the gateway's capture traffic left out;
  ``query`` = HogQL queries), to git (``upload-pack`` and ``receive-pack`` sessions the remote
  served, from git's own trace2 events: a fetch or clone, a push or a push dry run) and Slack;
- the job's CPU time, wall time and peak RSS (as ``rotator bench`` measures them).

What must not grow with N (issue 16): PostHog queries (one per project), git sessions (one
fetch, one push dry run, one push per rotation), watches (one per watched object, so O(N) but
no more: a polling storm shows as GETs per environment growing with the wait).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator_sandbox.bench import (
    DEFAULT_TIME_SCALE,
    WORKER_TIMEOUT_S,
    Delays,
    PodWatcher,
    fmt,
    median,
    options_from_args,
    sandbox_floor,
    settle,
    spawn_worker,
    stand_in_reset_time,
    wait_for_dark_end,
)

if TYPE_CHECKING:
    from rotator_sandbox.world import Sandbox

DEFAULT_ENV_RUNS = 3
# rotator's identity in the sandbox with rbac=True (world._start_kube)
ROTATOR_USER = "system:serviceaccount:align-prod:rotator"
GIT_SERVICES = ("upload-pack", "receive-pack")


@dataclass(frozen=True)
class EnvsOptions:
    counts: tuple[int, ...] = (1, 2, 10, 50)
    runs: int = DEFAULT_ENV_RUNS
    time_scale: float = DEFAULT_TIME_SCALE
    replicas: int = 1
    delays: Delays = field(default_factory=Delays)
    seed: int = 8
    key_bits: int = 4096
    root: Path | None = None


def env_names(count: int) -> tuple[str, ...]:
    """PURE. ``env-01`` ... (zero-padded to sort as numbers)."""
    width = max(2, len(str(count)))
    return tuple(f"env-{i:0{width}d}" for i in range(1, count + 1))


@dataclass(frozen=True)
class KubeCounts:
    """The job's requests to the Kubernetes API by verb (watches counted apart)."""

    total: int
    watches: int
    reads: int  # get + list
    writes: int  # create, update, patch, delete


def kube_counts(verbs: Sequence[str]) -> KubeCounts:
    """PURE. Verbs as RBAC saw them (``get``, ``list``, ``watch``, ``patch`` ...)."""
    return KubeCounts(
        total=len(verbs),
        watches=sum(v == "watch" for v in verbs),
        reads=sum(v in ("get", "list") for v in verbs),
        writes=sum(v in ("create", "update", "patch", "delete") for v in verbs),
    )


def git_sessions(trace_dir: Path) -> dict[str, int]:
    """``upload-pack`` / ``receive-pack`` processes in git trace2 event files (one per process):
    the sessions the remote served. git Documentation/api-trace2.adoc: with GIT_TRACE2_EVENT
    naming a directory every process writes its own file, starting with a ``version`` event and
    then ``start`` carrying its ``argv``."""
    counts = dict.fromkeys(GIT_SERVICES, 0)
    for path in sorted(trace_dir.iterdir()) if trace_dir.is_dir() else ():
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") != "start":
                continue
            argv = [str(a) for a in event.get("argv") or []][:2]
            for service in GIT_SERVICES:
                if any(a == service or a.endswith("git-" + service) for a in argv):
                    counts[service] += 1
            break
    return counts


@dataclass(frozen=True)
class EnvsRun:
    """One rotation over N environments; ``*_s`` in real-world seconds, ``*_measured_s`` not."""

    envs: int
    index: int
    outcome: str
    dark_s: float | None
    floor_s: float
    ratio: float | None
    job_wall_measured_s: float
    cpu_s: float
    max_rss_kb: int
    kube: KubeCounts
    posthog: Mapping[str, int]  # route -> requests (capture left out)
    git: Mapping[str, int]  # upload-pack / receive-pack sessions
    slack: int
    kube_by_request: Mapping[str, int] = field(default_factory=dict)  # "get deployments": n

    @property
    def posthog_total(self) -> int:
        return sum(self.posthog.values())


@dataclass(frozen=True)
class EnvsSummary:
    """Medians over the runs of one environment count."""

    envs: int
    runs: int
    failed: int
    dark_s: float | None
    floor_s: float
    ratio: float | None
    job_wall_measured_s: float
    cpu_s: float
    max_rss_kb: float
    kube_total: float
    kube_watches: float
    kube_reads: float
    kube_writes: float
    posthog_total: float
    posthog_queries: float
    git_fetches: float
    git_pushes: float
    slack: float
    sandbox_start_s: float = 0.0


def termination_grace_s(deployment_spec: Mapping[str, Any]) -> float:
    """PURE. The old pods' grace period: the dark window ends when the last old-key pod is
    gone, and a deleted pod keeps running for ``terminationGracePeriodSeconds`` (default 30,
    kubernetes pkg/apis/core/types.go DefaultTerminationGracePeriodSeconds; the sandbox's
    kubelet follows it), so the floor holds it once, after the last wave."""
    pod_spec = ((deployment_spec.get("template") or {}).get("spec")) or {}
    grace = pod_spec.get("terminationGracePeriodSeconds")
    return float(30 if grace is None else grace)


def summarize_envs(
    runs: Sequence[EnvsRun], *, started_s: Mapping[int, float] | None = None
) -> list[EnvsSummary]:
    """PURE. Medians per environment count, in the order first seen."""
    counts: list[int] = []
    for r in runs:
        if r.envs not in counts:
            counts.append(r.envs)
    out: list[EnvsSummary] = []
    for n in counts:
        rs = [r for r in runs if r.envs == n]

        def med(get: Callable[[EnvsRun], float], rs: list[EnvsRun] = rs) -> float:
            return statistics.median(get(r) for r in rs)

        out.append(
            EnvsSummary(
                envs=n,
                runs=len(rs),
                failed=sum(r.outcome != "succeeded" for r in rs),
                dark_s=median([r.dark_s for r in rs]),
                floor_s=max(r.floor_s for r in rs),
                ratio=median([r.ratio for r in rs]),
                job_wall_measured_s=med(lambda r: r.job_wall_measured_s),
                cpu_s=med(lambda r: r.cpu_s),
                max_rss_kb=med(lambda r: r.max_rss_kb),
                kube_total=med(lambda r: r.kube.total),
                kube_watches=med(lambda r: r.kube.watches),
                kube_reads=med(lambda r: r.kube.reads),
                kube_writes=med(lambda r: r.kube.writes),
                posthog_total=med(lambda r: r.posthog_total),
                posthog_queries=med(lambda r: r.posthog.get("query", 0)),
                git_fetches=med(lambda r: r.git.get("upload-pack", 0)),
                git_pushes=med(lambda r: r.git.get("receive-pack", 0)),
                slack=med(lambda r: r.slack),
                sandbox_start_s=(started_s or {}).get(n, 0.0),
            )
        )
    return out


ENVS_HEADER = (
    "| environments | runs | dark window s | floor s | dark/floor | job wall s (unscaled) "
    "| job CPU s | job peak RSS MiB | Kubernetes API requests (watches / gets+lists / writes) "
    "| PostHog requests | PostHog queries | git fetches / pushes | Slack posts |"
)


def format_envs_table(summaries: Sequence[EnvsSummary], *, options: EnvsOptions) -> str:
    """PURE. One row per environment count; real-world seconds unless marked unscaled."""
    rule = "|" + "|".join("---" for _ in range(ENVS_HEADER.count("|") - 1)) + "|"
    lines = [ENVS_HEADER, rule]
    for s in summaries:
        failed = f" ({s.failed} failed)" if s.failed else ""
        lines.append(
            f"| {s.envs} | {s.runs}{failed} | {fmt(s.dark_s)} | {s.floor_s:.1f} "
            f"| {fmt(s.ratio, '.2f')} | {s.job_wall_measured_s:.1f} | {s.cpu_s:.2f} "
            f"| {s.max_rss_kb / 1024:.0f} "
            f"| {s.kube_total:.0f} ({s.kube_watches:.0f} / {s.kube_reads:.0f} / "
            f"{s.kube_writes:.0f}) | {s.posthog_total:.0f} | {s.posthog_queries:.0f} "
            f"| {s.git_fetches:.0f} / {s.git_pushes:.0f} | {s.slack:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Medians over {options.runs} run(s) per row; N environments on one PostHog project, "
        f"{options.replicas} replica(s) each; dark window and floor in real-world seconds "
        f"(measured / time scale {options.time_scale:g}), job wall and CPU as measured. "
        "Requests are the job's, counted at the stand-ins (git: upload-pack / receive-pack "
        "sessions, a push dry run included)."
    )
    return "\n".join(lines)


# --- running it ---------------------------------------------------------------------------


def _spawn(sandbox: Sandbox, workdir: Path, *, trace_dir: Path) -> dict[str, Any]:
    """One ``run_once`` in a child process (``bench.spawn_worker``), git traced."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "strategy": "default",
        "config": str(sandbox.config_path),
        "passive_poll_s": 1.0,
        "out": str(workdir / "result.json"),
    }
    result, _ = spawn_worker(
        sandbox,
        spec,
        workdir,
        extra_env={"GIT_TRACE2_EVENT": str(trace_dir)},
        # the job's work per environment (a gateway-event query each, paced by PostHog's
        # query budget) grows with N: so does the worker's deadline
        timeout_s=WORKER_TIMEOUT_S + 12.0 * len(sandbox.envs),
    )
    return result


def _job_requests(sandbox: Sandbox, since: int) -> list[tuple[str, str]]:
    """(verb, resource) of the job's requests since audit entry ``since``."""
    assert sandbox.kube is not None
    return [
        (e.verb, e.resource) for e in sandbox.kube.audit_log()[since:] if e.user == ROTATOR_USER
    ]


def _one_envs_run(
    sandbox: Sandbox,
    watcher: PodWatcher,
    *,
    index: int,
    floor_s: float,
    options: EnvsOptions,
    workdir: Path,
) -> EnvsRun:
    from rotator_sandbox.world import SHARED_PROJECT

    assert sandbox.kube is not None
    assert sandbox.posthog is not None
    assert sandbox.slack is not None
    timing = sandbox.timing
    settle(sandbox, timeout=max(60.0, timing.scaled(600)))
    workdir.mkdir(parents=True, exist_ok=True)
    audit0 = len(sandbox.kube.audit_log())
    routes0 = dict(sandbox.posthog.counters().requests)
    slack0 = sandbox.slack.attempts
    out = _spawn(sandbox, workdir, trace_dir=workdir / "git-trace")
    requests = _job_requests(sandbox, audit0)
    routes1 = sandbox.posthog.counters().requests
    posthog = {
        route: n - routes0.get(route, 0)
        for route, n in routes1.items()
        if route != "capture" and n - routes0.get(route, 0)
    }
    reset = stand_in_reset_time(sandbox, SHARED_PROJECT) or float(out["reset_after"])
    end = wait_for_dark_end(
        watcher,
        timing=timing,
        new_fp=str(out["new_fp"]),
        old_fp=str(out["old_fp"]),
        envs=sandbox.envs,
        since=reset,
    )
    dark = None if end is None else (end - reset) / options.time_scale
    return EnvsRun(
        envs=len(sandbox.envs),
        index=index,
        outcome=str(out["outcome"]),
        dark_s=dark,
        floor_s=floor_s,
        ratio=None if dark is None else dark / floor_s,
        job_wall_measured_s=float(out["wall_s"]),
        cpu_s=float(out["cpu_s"]),
        max_rss_kb=int(out["max_rss_kb"]),
        kube=kube_counts([verb for verb, _ in requests]),
        kube_by_request=dict(sorted(Counter(f"{v} {r}" for v, r in requests).items())),
        posthog=posthog,
        git=git_sessions(workdir / "git-trace"),
        slack=sandbox.slack.attempts - slack0,
    )


@dataclass
class EnvsResult:
    options: EnvsOptions
    runs: list[EnvsRun]
    summaries: list[EnvsSummary]
    wall_s: float
    started_s: dict[int, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        opts = asdict(self.options)
        opts["root"] = str(self.options.root) if self.options.root else None
        return {
            "options": opts,
            "summaries": [asdict(s) for s in self.summaries],
            "runs": [asdict(r) for r in self.runs],
            "wall_s": self.wall_s,
        }


def run_envs_bench(
    options: EnvsOptions, *, progress: Callable[[str], None] | None = None
) -> EnvsResult:
    """``options.runs`` rotations per environment count, one sandbox per count."""
    from rotator_sandbox.world import Sandbox, cached_key_pair

    say = progress or (lambda _msg: None)
    began = time.monotonic()
    rng = random.Random(options.seed)  # noqa: S311 - scheduling jitter, not crypto
    key_pair = cached_key_pair(options.key_bits)
    runs: list[EnvsRun] = []
    started: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="rotator-bench-envs-") as tmp:
        root = options.root or Path(tmp)
        for count in options.counts:
            sandbox = Sandbox(
                root / f"envs-{count}",
                timing=options.delays.timing(options.time_scale),
                replicas=options.replicas,
                rbac=True,  # the job has its own identity: its requests are told apart
                key_pair=key_pair,
                seed=rng.randrange(1 << 30),
                envs=env_names(count),
            )
            # start-up: a sync, an unseal and two rollouts per environment, all in parallel
            sandbox.start(wait_s=max(120.0, 300 * options.time_scale) + 2.0 * count)
            started[count] = sandbox.started_in_s
            say(f"{count} environment(s): sandbox up in {sandbox.started_in_s:.1f} s")
            watcher = PodWatcher(sandbox.admin_kubeconfig_path).start()
            try:
                spec = sandbox.deployment(sandbox.envs[0]).get("spec") or {}
                floor_s = sandbox_floor(sandbox, options.delays).total_s + termination_grace_s(spec)
                for index in range(options.runs):
                    run = _one_envs_run(
                        sandbox,
                        watcher,
                        index=index,
                        floor_s=floor_s,
                        options=options,
                        workdir=root / f"envs-{count}-runs" / f"run-{index}",
                    )
                    runs.append(run)
                    say(
                        f"{count} environment(s) #{index + 1}: dark {fmt(run.dark_s)} s, floor "
                        f"{floor_s:.1f} s, job wall {run.job_wall_measured_s:.1f} s, "
                        f"PostHog queries {run.posthog.get('query', 0)}, kube "
                        f"{run.kube.total}, {run.outcome}"
                    )
            finally:
                watcher.stop()
                sandbox.stop()
    return EnvsResult(
        options=options,
        runs=runs,
        summaries=summarize_envs(runs, started_s=started),
        wall_s=time.monotonic() - began,
        started_s=started,
    )


def envs_options_from_args(args: argparse.Namespace, *, counts: Sequence[int]) -> EnvsOptions:
    """``rotator bench --envs``: the delays, scale and seed as ``rotator bench`` reads them;
    replicas per environment the first ``--replicas`` (default 1)."""
    base = options_from_args(args)
    runs = getattr(args, "runs", None)
    replicas = getattr(args, "replicas", None) or [1]
    return EnvsOptions(
        counts=tuple(counts),
        runs=DEFAULT_ENV_RUNS if runs is None else int(runs),
        time_scale=base.time_scale,
        replicas=int(replicas[0]),
        delays=base.delays,
        seed=base.seed,
        key_bits=base.key_bits,
    )


def envs_bench_command(options: EnvsOptions, *, json_out: Path | None) -> int:
    if options.runs < 1 or not options.counts or min(options.counts) < 1:
        print(
            "rotator bench: --envs takes counts of at least 1 (e.g. --envs 1 2 10 50) and "
            "--runs at least 1",
            file=sys.stderr,
        )
        return 2
    result = run_envs_bench(options, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_envs_table(result.summaries, options=options))
    print(f"\nbench took {result.wall_s:.0f} s", file=sys.stderr)
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return 1 if any(s.failed for s in result.summaries) else 0
