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

from rotator.report import Outcome, to_text
from rotator.sandbox import manifests
from rotator.sandbox.world import FAST
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
