"""A whole ``rotator run`` against the real control plane.

The real kube-apiserver (RBAC authorization on, rotator as cronjob.yaml's ServiceAccount with
exactly its Roles), the real kube-controller-manager's Deployment and ReplicaSet controllers,
the real sealed-secrets controller behind the real service proxy, and the sandbox's PostHog,
git, Slack, ArgoCD and gateway stand-ins with the simulated kubelet as ordinary API clients.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from rotator.report import Outcome, to_text
from rotator_sandbox import manifests
from rotator_sandbox.world import FAST
from tests.e2e_fixtures import rotate
from tests.real.cluster import Cluster, wait_until
from tests.real.peers import peers
from tests.real.world import RealSandbox
from tests.sealing_fixtures import controller_keys

pytestmark = pytest.mark.real

PEERS = peers()
ENVS = tuple(manifests.ENVS)
# Twice FAST's delays, as the e2e suite uses: a loaded 2-core machine runs the real control
# plane besides the world.
TIMING = FAST.with_scale(2 * FAST.time_scale)


@pytest.fixture
def world(inside: Cluster, tmp_path: Path) -> Iterator[RealSandbox]:
    sandbox = RealSandbox(
        tmp_path / "world",
        cluster=inside,
        controller_version=PEERS.current,
        timing=TIMING,
        key_pair=controller_keys(2048),
        seed=1,
    )
    try:
        sandbox.start(wait_s=240)
        yield sandbox
    finally:
        sandbox.stop()


def test_a_whole_rotation_against_the_real_control_plane_succeeds(
    world: RealSandbox, inside: Cluster
) -> None:
    assert world.posthog is not None
    old_key = world.posthog.current_key(world.project_id("prod"))
    report = rotate(world, product_clients=True)  # exactly what the CronJob builds
    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)
    new_key = world.posthog.current_key(world.project_id("prod"))
    assert new_key != old_key
    assert world.posthog.calls("reset_token") == 1
    for env in ENVS:
        ns = manifests.namespace(env)
        # The real controller unsealed the new key into the Secret...
        _, secret = inside.http("GET", f"/api/v1/namespaces/{ns}/secrets/{manifests.SECRET_NAME}")
        value = base64.b64decode(secret["data"][manifests.DATA_KEY]).decode()
        assert value == new_key.reveal(), env
        # ...and the real Deployment controller rolled every Ready pod onto it (the replaced
        # pods finish terminating after their grace period).
        wait_until(
            lambda e=env: world.pod_key_fingerprints(e) == {new_key.fingerprint},
            timeout=60,
            what=f"only new-key pods in {env}",
        )
        assert report.events.gateway_events.get(env, 0) > 0, env
    assert report.slack == "sent"


def test_pods_that_never_get_ready_fail_the_run_on_the_real_progress_deadline_and_a_rerun_finishes(
    world: RealSandbox,
) -> None:
    """ProgressDeadlineExceeded written by the real Deployment controller (its own clock and
    progress rules, pkg/controller/deployment/progress.go), not by a stand-in: the run fails
    after the reset with resume instructions; once pods get Ready a re-run completes without
    a second reset."""
    assert world.posthog is not None
    assert world.kubelet is not None
    path = manifests.deployment_path("prod")
    doc = yaml.safe_load(world.git.read(path))
    doc["spec"]["progressDeadlineSeconds"] = 3
    revision = world.git.commit_directly({path: yaml.safe_dump(doc)}, message="short deadline")
    world.refresh_app("prod")
    wait_until(lambda: world.is_converged("prod", revision), timeout=60, what="ArgoCD to sync it")
    world.kubelet.set_never_ready("align-prod", "align-prod-gateway-")

    failed = rotate(world, "waits.rollout_s=120", product_clients=True)

    assert (failed.outcome, int(failed.exit_code)) == (Outcome.FAILED_AFTER_RESET, 1), to_text(
        failed
    )
    # The condition's message is the real controller's (util.ReplicaSetHasTimedOutProgressing).
    assert "exceeded its progress deadline" in (failed.error or ""), to_text(failed)
    assert "has timed out progressing" in (failed.error or ""), to_text(failed)
    assert failed.resume_command is not None
    key = world.posthog.current_key(world.project_id("prod"))

    # The cause fixed: the pods get Ready and the real controller reports the rollout done.
    world.kubelet.set_never_ready("align-prod", "align-prod-gateway-", False)
    wait_until(
        lambda: world._rolled_out("prod"), timeout=60, what="the real controller to finish it"
    )
    finished = rotate(world, product_clients=True)

    assert finished.outcome is Outcome.SUCCEEDED, to_text(finished)
    assert world.posthog.calls("reset_token") == 1
    assert world.posthog.current_key(world.project_id("prod")) == key
