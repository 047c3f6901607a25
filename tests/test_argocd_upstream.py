"""ArgoCD as upstream behaves (issue 12, items 1-5): the stand-in reproduces argo-cd's
application controller (each behaviour cites its argo-cd file in
``rotator/sandbox/controllers/argocd.py``), and whole rotator runs against it.

Versions are a setting of the stand-in (``Sandbox(argocd_version=...)``): where ArgoCD 2.x and
3.x differ, the tests name the version they exercise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rotator.report import Outcome, StepStatus, to_text
from rotator.sandbox import manifests
from rotator.sandbox.controllers.argocd import (
    ArgoCDController,
    default_polling,
    is_auto_sync_enabled,
    parse_version,
)
from rotator.sandbox.controllers.base import APPLICATION
from rotator.sandbox.world import Sandbox
from rotator.steps import Step
from tests.e2e_fixtures import ENVS, MakeSandbox, e2e_key_pair, make_sandbox, resets, rotate
from tests.sandbox_fixtures import wait_for

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name


def patch_app(world: Sandbox, env: str, body: dict[str, Any]) -> None:
    assert world.client is not None
    world.client.patch(APPLICATION, manifests.ARGOCD_NAMESPACE, manifests.app_name(env), body)


def disable_auto_sync(world: Sandbox, env: str) -> None:
    """``syncPolicy.automated: {enabled: false}`` (ArgoCD 3.1+: auto-sync off)."""
    patch_app(world, env, {"spec": {"syncPolicy": {"automated": {"enabled": False}}}})


def history_initiators(world: Sandbox, env: str) -> list[Any]:
    status = world.application(env).get("status") or {}
    return [h.get("initiatedBy") for h in status.get("history") or []]


# --- item 1: automated.enabled ------------------------------------------------------------------


def test_enabled_false_turns_auto_sync_off_from_argocd_3_1_and_is_ignored_before() -> None:
    off = {"syncPolicy": {"automated": {"enabled": False, "prune": True}}}
    on = {"syncPolicy": {"automated": {"prune": True}}}
    explicit = {"syncPolicy": {"automated": {"enabled": True}}}
    assert not is_auto_sync_enabled(off, (3, 1))
    assert not is_auto_sync_enabled(off, (3, 6))
    assert is_auto_sync_enabled(off, (3, 0))  # no such field before 3.1
    assert is_auto_sync_enabled(on, (3, 6))
    assert is_auto_sync_enabled(explicit, (3, 6))
    assert not is_auto_sync_enabled({}, (3, 6))
    assert not is_auto_sync_enabled({"syncPolicy": {}}, (2, 14))


def test_the_default_polling_interval_is_180_s_in_2_x_and_120_s_plus_jitter_in_3_x() -> None:
    assert default_polling(parse_version("2.14")) == (180.0, 0.0)
    assert default_polling(parse_version("v3.0.0")) == (120.0, 60.0)
    assert default_polling(parse_version("3.6")) == (120.0, 60.0)


def test_an_unknown_version_names_the_form_it_takes() -> None:
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR, e\.g\. 3\.6"):
        ArgoCDController(Path("/nonexistent"), version="latest")


def test_the_stand_in_does_not_auto_sync_an_app_with_enabled_false_on_3_x(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(argocd_version="3.6", previous_rotation=False)
    disable_auto_sync(world, "prod")
    head = world.git.commit_directly({"NOTE.md": "a change\n"}, message="a change")
    world.refresh_app("prod")
    world.refresh_app("preview")
    wait_for(lambda: world.is_converged("preview", head), timeout=20, what="preview auto-sync")
    time.sleep(0.3)  # several reconciles of prod at FAST timing
    sync = (world.application("prod").get("status") or {}).get("sync") or {}
    assert sync.get("revision") == head  # compared ...
    op = (world.application("prod").get("status") or {}).get("operationState") or {}
    assert (op.get("syncResult") or {}).get("revision") == world.seed_revision  # ... not synced


def test_the_stand_in_still_auto_syncs_an_app_with_enabled_false_on_3_0(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(argocd_version="3.0", previous_rotation=False)
    disable_auto_sync(world, "prod")
    head = world.git.commit_directly({"NOTE.md": "a change\n"}, message="a change")
    world.refresh_app("prod")
    wait_for(lambda: world.is_converged("prod", head), timeout=20, what="prod auto-sync on 3.0")


def test_a_run_with_auto_sync_disabled_by_enabled_false_starts_the_sync_itself(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(argocd_version="3.6")
    for env in ENVS:
        disable_auto_sync(world, env)

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert resets(world) == 1
    for env in ENVS:
        assert history_initiators(world, env)[-1] == {"username": "rotator"}
        assert [r.status for r in report.steps if r.step is Step.ARGOCD and r.env == env] == [
            StepStatus.OK
        ]
