"""Crash and resume (issue 7): a real ``python -m rotator run`` subprocess is killed with SIGKILL
right after the log line that ends each step, then rotator runs again. The second run must
finish the rotation with the key PostHog holds, never reset again, and take over the dead run's
Lease once it has expired (the sandbox's lock duration is 15 s, the shortest allowed).

The boundaries run concurrently, one sandbox each, in three tests: every one of them waits
out a Lease, and the waits overlap instead of adding up. A failure names its boundary.

Concurrency: two runs started together; exactly one rotates.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from rotator.report import Outcome
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    log_message,
    make_world,
    reliability_key_pair,
    run_and_kill,
)

# (id, the log message that ends the step: the child is killed right after it)
BOUNDARIES: tuple[tuple[str, str], ...] = (
    ("after-lock", "lock: done"),
    ("after-rotate", "rotate: done"),
    ("after-seal", "seal: done"),
    ("after-push", "push: done"),
    ("after-argocd", "argocd: done"),
    ("after-unseal", "unseal: done"),
    ("rollout-started", "rollout: started"),
    ("after-rollout", "rollout: done"),
    ("verify-started", "verify: started"),
)


@dataclass
class CrashResult:
    boundary: str
    killed: bool
    resets_at_kill: int
    key_at_kill: str
    dead_holder: str
    locked_outcome: Outcome | None
    outcome: Outcome
    error: str | None
    resets: int
    key_after: str
    converged: bool
    holder_after: str
    transitions: int
    seconds: float

    def problems(self) -> list[str]:
        out = []
        if not self.killed:
            out.append("the marker line never came: the child was not killed")
        if not self.dead_holder:
            out.append("the dead run held no Lease")
        if self.locked_outcome not in (Outcome.LOCKED, None):
            out.append(f"a run during the dead run's Lease was {self.locked_outcome}, not locked")
        if self.outcome is not Outcome.SUCCEEDED:
            out.append(f"the second run: {self.outcome.value}: {self.error}")
        if self.resets != 1:
            out.append(f"PostHog was reset {self.resets} times, not once")
        if self.resets_at_kill == 1 and self.key_after != self.key_at_kill:
            out.append("the second run finished with another key than PostHog held at the kill")
        if not self.converged:
            out.append("the environments did not converge on PostHog's key")
        if self.holder_after not in ("",):
            out.append(f"the Lease is still held by {self.holder_after!r}")
        if self.transitions < 1:
            out.append("the second run did not take the Lease over (leaseTransitions 0)")
        return out


def _crash_and_resume(world: World, boundary: str, marker: str) -> CrashResult:
    began = time.monotonic()
    proc = world.popen("run")
    finished = run_and_kill(proc, kill_after=lambda line: log_message(line).startswith(marker))
    lease = world.lease() or {}
    dead_holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
    resets_at_kill = world.resets
    key_at_kill = world.current_key().fingerprint
    # While the dead run's Lease is live, another run is turned away (exit 4), changing nothing.
    locked = None
    expires = world.lease_expires_at()
    if dead_holder and expires is not None and (expires.timestamp() - time.time()) > 3:
        locked = world.run().outcome
    assert world.sb.gateway is not None
    world.sb.gateway.paused = True  # no traffic while nothing happens: saves CPU for the others
    world.wait_lease_expired()
    world.sb.gateway.paused = False
    report = world.run()
    lease = world.lease() or {}
    return CrashResult(
        boundary=boundary,
        killed=finished.killed_after is not None and finished.returncode == -9,
        resets_at_kill=resets_at_kill,
        key_at_kill=key_at_kill,
        dead_holder=dead_holder,
        locked_outcome=locked,
        outcome=report.outcome,
        error=report.error,
        resets=world.resets,
        key_after=world.current_key().fingerprint,
        converged=world.converged_on(world.current_key()),
        holder_after=str((lease.get("spec") or {}).get("holderIdentity") or ""),
        transitions=int((lease.get("spec") or {}).get("leaseTransitions") or 0),
        seconds=time.monotonic() - began,
    )


# Three tests, so that pytest -n 2 can spread them; inside each, the boundaries run at once.
GROUPS = {
    "before-the-converge": BOUNDARIES[:4],
    "during-the-converge": BOUNDARIES[4:7],
    "after-the-rollout": BOUNDARIES[7:],
}


@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUPS))
def test_a_run_killed_at_a_step_boundary_is_completed_by_the_next_run_without_a_second_reset(
    group: str,
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    lock = threading.Lock()
    boundaries = GROUPS[group]

    def one(boundary: str, marker: str) -> CrashResult:
        with lock:
            world = make_world()
        return _crash_and_resume(world, boundary, marker)

    with ThreadPoolExecutor(max_workers=len(boundaries)) as pool:
        futures = [pool.submit(one, b, m) for b, m in boundaries]
        results = [f.result(timeout=110) for f in futures]

    failures = {r.boundary: r.problems() for r in results if r.problems()}
    assert not failures, json.dumps(failures, indent=2)
    for r in results:
        # Killed before the point of no return, the first run never reset; after it, it had.
        assert r.resets_at_kill == (0 if r.boundary == "after-lock" else 1), r.boundary


def test_two_runs_started_together_rotate_exactly_once(
    make_world: Callable[..., World],  # noqa: F811
) -> None:
    world = make_world()
    old = world.current_key()
    # Two pods of the CronJob: each has its own filesystem, so its own git checkout. (Two
    # runs on one host share the configured checkout and the second stops at its file lock,
    # exit 3, before the Lease: nothing changes either way.)
    procs = [
        world.popen("run", "--json", extra_env={"ROTATOR_GIT__WORKDIR": str(world.tmp / f"pod{i}")})
        for i in range(2)
    ]
    finished = [run_and_kill(p, kill_after=None) for p in procs]

    reports = [json.loads(f.stdout) for f in finished]
    outcomes = sorted(r["outcome"] for r in reports)
    codes = sorted(f.returncode for f in finished)
    assert world.resets == 1, outcomes
    assert world.current_key() != old
    assert world.converged_on(world.current_key())
    # One rotated; the other was turned away by the Lease (exit 4) or, if it came after the
    # first had finished, found the key freshly rotated and only verified it.
    assert outcomes in (["locked", "succeeded"], ["succeeded", "succeeded"]), [
        r["error"] for r in reports
    ]
    assert codes in ([0, 4], [0, 0]), codes
    commits = [c for c in world.sb.git.log() if c.startswith("Rotate the PostHog project key")]
    assert len(commits) == 1
