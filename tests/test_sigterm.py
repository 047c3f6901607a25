"""SIGTERM (how Kubernetes stops a Job's pod) ends a run cleanly: Lease released, report out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rotator_sandbox.controllers.base import LEASE
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import LEASE_NAME, LEASE_NAMESPACE, MakeSandbox, e2e_key_pair, make_sandbox

__all__ = ["e2e_key_pair", "make_sandbox"]


def test_sigterm_mid_run_releases_the_lease_and_reports_the_resume(
    make_sandbox: MakeSandbox,
) -> None:
    world: Sandbox = make_sandbox()
    world.stick_argocd("prod")  # keep the run waiting after the reset, where SIGTERM lands
    env = {**os.environ, **world.environ()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotator", "--log-format", "text", "run", "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if "unseal: done" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, "".join(seen[-20:]) + out
    assert "FAILED-AFTER-RESET" in out
    assert "interrupted (SIGTERM or SIGINT)" in out
    assert "resume with: rotator run" in out
    assert world.client is not None
    lease = world.client.get(LEASE, LEASE_NAMESPACE, LEASE_NAME)
    assert lease is not None
    assert not lease["spec"].get("holderIdentity")
