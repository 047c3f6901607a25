"""ArgoCD as upstream behaves (issue 12, items 1-5): the stand-in reproduces argo-cd's
application controller (each behaviour cites its argo-cd file in
``sandbox/src/rotator_sandbox/controllers/argocd.py``), and whole rotator runs against it.

Versions are a setting of the stand-in (``Sandbox(argocd_version=...)``): where ArgoCD 2.x and
3.x differ, the tests name the version they exercise.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.clients.argocd import (
    AppSource,
    AppState,
    app_from,
    parse_go_duration,
    same_repo_url,
    sync_stoppers,
    sync_window_denial,
)
from rotator.redact import Secret
from rotator.report import Outcome, StepStatus, to_text
from rotator.steps import Step
from rotator_sandbox import manifests
from rotator_sandbox.controllers.argocd import (
    ArgoCDController,
    can_sync,
    default_polling,
    is_auto_sync_enabled,
    parse_version,
)
from rotator_sandbox.controllers.base import APP_PROJECT, APPLICATION, CONFIGMAP
from rotator_sandbox.gitremote import GitRemote, git
from rotator_sandbox.posthog import generate_token
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import ENVS, MakeSandbox, e2e_key_pair, make_sandbox, resets, rotate
from tests.sandbox_fixtures import wait_for

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name

REFRESH = "argocd.argoproj.io/refresh"
STAMP = "argocd.argoproj.io/refresh-timestamp"
SKIP = "argocd.argoproj.io/skip-reconcile"


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


# --- item 5: refresh-timestamp, and what silently stops a sync, checked before the reset ------

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)  # a Friday
ALWAYS = {"schedule": "* * * * *", "duration": "1h"}  # fired a minute ago: active
NEW_YEAR = {"schedule": "0 0 1 1 *", "duration": "1m"}  # active only on 1 January
RAW_APP: dict[str, Any] = {
    "metadata": {"name": "align-prod", "namespace": "argocd"},
    "spec": {
        "project": "default",
        "source": {"repoURL": "https://git.example/ops.git", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": "align-prod"},
        "syncPolicy": {"automated": {}},
    },
}
APP = app_from(RAW_APP)


def window(kind: str, when: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"kind": kind, **when, "applications": ["align-*"], **extra}


@pytest.mark.parametrize(
    ("windows", "manual", "denied"),
    [
        pytest.param([], False, None, id="no-windows"),
        pytest.param([window("deny", ALWAYS)], False, "deny window", id="active-deny"),
        pytest.param([window("deny", NEW_YEAR)], False, None, id="inactive-deny"),
        pytest.param([window("allow", ALWAYS)], False, None, id="active-allow"),
        pytest.param([window("allow", NEW_YEAR)], False, "outside its allow", id="inactive-allow"),
        pytest.param(
            [window("deny", ALWAYS), window("allow", ALWAYS)], False, "deny", id="deny-wins"
        ),
        pytest.param([window("deny", ALWAYS, manualSync=True)], True, None, id="manual-allowed"),
        pytest.param(
            [window("deny", ALWAYS, manualSync=True)], False, "deny", id="manual-only-for-manual"
        ),
        pytest.param(
            [{"kind": "deny", **ALWAYS, "applications": ["other-*"]}], False, None, id="no-match"
        ),
        pytest.param(
            [{"kind": "deny", **ALWAYS, "namespaces": ["align-prod"]}], False, "deny", id="by-ns"
        ),
        pytest.param(
            [
                {
                    "kind": "deny",
                    **ALWAYS,
                    "applications": ["align-*"],
                    "namespaces": ["elsewhere"],
                    "andOperator": True,
                }
            ],
            False,
            None,
            id="and-operator",
        ),
        pytest.param(
            [window("deny", {"schedule": "not cron", "duration": "1h"})],
            False,
            "cannot be read",
            id="unreadable",
        ),
        pytest.param(
            [window("deny", {"schedule": "0 2 * * *", "duration": "30m"}, timeZone="UTC")],
            False,
            "deny window '0 2 * * *'",
            id="started-at-two",
        ),
        pytest.param(
            [window("deny", {"schedule": "0 2 * * *", "duration": "30m"}, timeZone="Asia/Tokyo")],
            False,
            None,
            id="another-time-zone",
        ),
    ],
)
def test_sync_windows_deny_a_sync_as_argocd_can_sync_does_in_the_client_and_the_stand_in(
    windows: list[dict[str, Any]], manual: bool, denied: str | None
) -> None:
    now = NOW + timedelta(minutes=1)
    got = sync_window_denial(windows, APP, manual=manual, now=now)
    assert can_sync(windows, RAW_APP, manual=manual, now=now) is (denied is None)
    if denied is None:
        assert got is None
    else:
        assert got is not None
        assert denied in got


def test_go_durations_parse_as_time_parse_duration_does() -> None:
    assert parse_go_duration("1h30m") == timedelta(minutes=90)
    assert parse_go_duration("90s") == timedelta(seconds=90)
    for bad in ("", "1", "1d", "h"):
        with pytest.raises(ValueError, match="cannot parse duration"):
            parse_go_duration(bad)


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ("https://git.example/ops.git", "https://git.example/ops", True),
        ("https://Git.Example/Ops", "https://git.example/ops.git", True),
        ("git@git.example:team/ops.git", "ssh://git@git.example/team/ops", True),
        ("https://git.example/ops", "https://git.example/other", False),
        ("", "", False),
    ],
)
def test_repo_urls_compare_as_argocd_same_url_does(left: str, right: str, same: bool) -> None:
    assert same_repo_url(left, right) is same


def stoppers(state: AppState, windows: list[dict[str, Any]] | None = None) -> list[str]:
    return sync_stoppers(
        state,
        repo_url="https://git.example/ops",
        branch="main",
        windows=windows or [],
        now=NOW,
    )


def test_a_healthy_app_on_the_ops_repo_branch_has_nothing_that_stops_its_sync() -> None:
    assert stoppers(APP) == []
    assert stoppers(replace(APP, skip_reconcile="false")) == []
    assert stoppers(replace(APP, skip_reconcile="maybe")) == []  # ParseBool error: ignored


def test_skip_reconcile_another_repo_or_branch_and_a_deny_window_stop_a_sync() -> None:
    (skip,) = stoppers(replace(APP, skip_reconcile="true"))
    assert "skip-reconcile" in skip
    assert "remove the annotation" in skip
    other = replace(APP, sources=(AppSource("https://git.example/other", "main", ".", ""),))
    (repo,) = stoppers(other)
    assert "not the ops repo https://git.example/ops (git.remote)" in repo
    branch = replace(APP, sources=(AppSource("https://git.example/ops", "release", ".", ""),))
    (tracks,) = stoppers(branch)
    assert "tracks 'release', not the branch 'main' (git.branch)" in tracks
    (windowed,) = stoppers(APP, [window("deny", ALWAYS)])
    assert "AppProject default denies syncs now" in windowed


def add_window(world: Sandbox, env: str, kind: str = "deny", **extra: Any) -> None:
    """A sync window in the ``default`` AppProject, active now, for ``env``'s app."""
    assert world.client is not None
    body = {"kind": kind, **ALWAYS, "applications": [manifests.app_name(env)], **extra}
    world.client.patch(
        APP_PROJECT,
        manifests.ARGOCD_NAMESPACE,
        manifests.APP_PROJECT,
        {"spec": {"syncWindows": [body]}},
    )


def synced_revision(world: Sandbox, env: str) -> str:
    op = (world.application(env).get("status") or {}).get("operationState") or {}
    return str((op.get("syncResult") or {}).get("revision") or "")


def test_the_stand_in_ignores_an_app_with_skip_reconcile_even_when_refreshed(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(previous_rotation=False)
    patch_app(world, "prod", {"metadata": {"annotations": {SKIP: "true"}}})
    head = world.git.commit_directly({"NOTE.md": "a change\n"}, message="a change")
    world.refresh_app("prod")
    world.refresh_app("preview")
    wait_for(lambda: world.is_converged("preview", head), timeout=20, what="preview sync")
    time.sleep(0.3)
    prod = world.application("prod")
    assert meta_annotations(prod).get(REFRESH) == "normal"  # never even consumed
    assert (prod["status"]["sync"]).get("revision") == world.seed_revision


def test_the_stand_in_does_not_auto_sync_during_a_deny_window_and_holds_a_manual_sync(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(previous_rotation=False)
    add_window(world, "prod")
    head = world.git.commit_directly({"NOTE.md": "a change\n"}, message="a change")
    world.refresh_app("prod")
    wait_for(
        lambda: (
            (world.application("prod").get("status") or {}).get("sync", {}).get("revision") == head
        ),
        timeout=20,
        what="prod compared",
    )
    time.sleep(0.3)
    assert synced_revision(world, "prod") == world.seed_revision  # no auto-sync
    patch_app(world, "prod", {"operation": {"sync": {"revision": head}, "initiatedBy": {}}})
    wait_for(
        lambda: (
            ((world.application("prod").get("status") or {}).get("operationState") or {}).get(
                "message"
            )
            == "Sync operation blocked by sync window"
        ),
        timeout=20,
        what="the blocked operation",
    )
    assert world.application("prod")["status"]["operationState"]["phase"] == "Running"
    add_window(world, "prod", kind="deny", applications=["nothing"])  # window lifted
    wait_for(lambda: synced_revision(world, "prod") == head, timeout=20, what="the sync")


def test_on_3_6_a_refresh_requested_while_one_is_processed_is_kept_for_the_next_reconcile(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(previous_rotation=False)
    assert world.argocd is not None
    world.argocd.stuck("prod")  # keep the controller's own reconciles out of the way
    first = {REFRESH: "normal", STAMP: "2026-12-04T02:00:00.000000001Z"}
    second = {REFRESH: "normal", STAMP: "2026-12-04T02:00:00.000000002Z"}
    seen = world.application("prod")
    seen["metadata"]["annotations"] = dict(first)  # what the reconcile read
    patch_app(world, "prod", {"metadata": {"annotations": second}})  # a new request since

    assert world.argocd._consume_refresh(seen) is True  # the test op failed: keep both
    assert meta_annotations(world.application("prod")) == second

    patch_app(world, "prod", {"metadata": {"annotations": first}})
    seen["metadata"]["annotations"] = dict(first)
    assert world.argocd._consume_refresh(seen) is False  # nothing new: both removed
    assert REFRESH not in meta_annotations(world.application("prod"))
    assert STAMP not in meta_annotations(world.application("prod"))


def meta_annotations(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def test_a_run_against_an_app_with_skip_reconcile_aborts_before_the_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    patch_app(world, "prod", {"metadata": {"annotations": {SKIP: "true"}}})

    report = rotate(world)

    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert resets(world) == 0
    assert "skip-reconcile" in (report.error or "")


def test_a_run_during_a_deny_sync_window_aborts_before_the_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    add_window(world, "prod")

    report = rotate(world)

    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert resets(world) == 0
    assert "denies syncs now" in (report.error or "")


def test_a_run_whose_app_tracks_another_branch_aborts_before_the_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    git("branch", "release", world.seed_revision, cwd=world.git.path)
    patch_app(world, "prod", {"spec": {"source": {"targetRevision": "release"}}})
    world.refresh_app("prod")
    wait_for(lambda: world.is_converged("prod", world.seed_revision), timeout=20, what="prod")

    report = rotate(world)

    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert resets(world) == 0
    assert "tracks 'release'" in (report.error or "")


def test_a_run_naming_another_app_project_aborts_with_the_setting_to_fix(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()

    report = rotate(world, "environments.prod.argocd_app.project=platform")

    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert "environments.prod.argocd_app.project" in (report.error or "")


# --- item 2: an error condition fails the wait only if it names our commit or survives -------


def conditions_of(world: Sandbox, env: str) -> dict[str, str]:
    status = world.application(env).get("status") or {}
    return {c["type"]: c.get("message", "") for c in status.get("conditions") or []}


def test_the_stand_in_ignores_a_repo_error_on_a_poll_but_shows_it_on_a_requested_refresh(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(previous_rotation=False)
    assert world.argocd is not None
    world.argocd.poll_s, world.argocd.jitter_s = 10.0, 0.0  # a poll every 0.2 s (FAST)
    reconciled = world.application("prod")["status"]["reconciledAt"]
    world.inject_repo_hiccup("prod")
    wait_for(lambda: world.argocd.repo_hiccups["align-prod"] == 0, what="a polled comparison")
    assert "ComparisonError" not in conditions_of(world, "prod")  # within the grace period
    wait_for(
        lambda: world.application("prod")["status"]["reconciledAt"] != reconciled,
        what="the next poll, which reads the repo fine",
    )
    world.argocd.poll_s = 10_000.0  # from now on only refreshes compare
    world.inject_repo_hiccup("prod")
    world.refresh_app("prod")
    wait_for(lambda: "ComparisonError" in conditions_of(world, "prod"), what="ComparisonError")
    assert "connection refused" in conditions_of(world, "prod")["ComparisonError"]
    assert world.application("prod")["status"]["sync"]["status"] == "Unknown"
    world.refresh_app("prod")
    wait_for(lambda: "ComparisonError" not in conditions_of(world, "prod"), what="cleared")


def test_a_repo_server_hiccup_on_our_refresh_does_not_fail_the_run(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.argocd is not None
    world.argocd.poll_s = 10_000.0  # only the run's refreshes compare
    world.inject_repo_hiccup("prod")

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert world.argocd.repo_hiccups["align-prod"] == 0  # the run did see the error


def test_a_repo_error_that_outlasts_a_reconcile_fails_the_run_with_its_message(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.argocd is not None
    world.argocd.poll_s = 10_000.0
    world.inject_repo_hiccup("prod", times=1000)

    report = rotate(world)

    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    assert "connection refused" in (report.error or "")
    assert "still there after a reconcile" in (report.error or "")


# --- item 3: a commit pushed on top of ours before the refresh --------------------------------


def test_a_commit_pushed_on_top_of_ours_before_the_refresh_is_accepted(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    world.git.arm_commit_on_top({"NOTES.md": "a colleague's note\n"})

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    tip = world.git.head()
    assert world.git.log(limit=1) == ["colleague: a change on top"]
    for env in ENVS:
        assert synced_revision(world, env) == tip  # ArgoCD synced the descendant, not ours
    details = [r.detail for r in report.steps if r.step is Step.ARGOCD]
    assert all("descends from" in d for d in details), details


def test_a_commit_on_top_that_seals_another_key_is_caught_by_the_unseal_check(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    other = Secret(generate_token("phc_"))
    sealed = manifests.sealed_posthog("prod", key=other, cert=world.cert())
    world.git.arm_commit_on_top({manifests.sealed_path("prod"): sealed})

    report = rotate(world, "waits.unseal_s=3")

    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    failed = [(r.step, r.env) for r in report.steps if r.status is StepStatus.FAILED]
    assert (Step.UNSEAL, "prod") in failed, failed
    assert (Step.ARGOCD, "prod") not in failed


# --- item 4: multi-source Applications --------------------------------------------------------

PLATFORM_CONFIG = """apiVersion: v1
kind: ConfigMap
metadata:
  name: platform-settings
data:
  region: eu-west-1
"""


def make_multi_source(world: Sandbox, env: str) -> str:
    """``env``'s app with two sources: the ops repo (as before) and a platform repo that
    rotator never commits to. Returns the platform repo's head."""
    platform = GitRemote(world.root, name="platform.git")
    if not platform.path.exists():
        platform.create({"platform/settings.yaml": PLATFORM_CONFIG})
    ops_source = world.application(env)["spec"]["source"]
    patch_app(
        world,
        env,
        {
            "spec": {
                "source": None,
                "sources": [
                    ops_source,
                    {"repoURL": platform.url, "targetRevision": "main", "path": "platform"},
                ],
            }
        },
    )
    return platform.head()


def is_multi_converged(world: Sandbox, env: str, revisions: list[str]) -> bool:
    app = world.application(env)
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    return (
        app.get("operation") is None
        and status.get("sync", {}).get("status") == "Synced"
        and status.get("sync", {}).get("revisions") == revisions
        and (op.get("syncResult") or {}).get("revisions") == revisions
        and status.get("health", {}).get("status") == "Healthy"
    )


def test_the_stand_in_compares_and_syncs_every_source_of_a_multi_source_app(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(previous_rotation=False)
    platform_head = make_multi_source(world, "prod")
    want = [world.seed_revision, platform_head]
    wait_for(lambda: is_multi_converged(world, "prod", want), timeout=20, what="multi-source")
    status = world.application("prod")["status"]
    assert "revision" not in status["sync"]
    assert [s["path"] for s in status["sync"]["comparedTo"]["sources"]] == [".", "platform"]
    assert status["history"][-1]["revisions"] == want
    assert world.client is not None
    assert world.client.get(CONFIGMAP, "align-prod", "platform-settings") is not None


def test_a_multi_source_app_gets_our_commit_only_for_the_ops_repo_source(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    platform_head = make_multi_source(world, "prod")
    disable_auto_sync(world, "prod")  # rotator writes the operation itself
    wait_for(
        lambda: is_multi_converged(world, "prod", [world.seed_revision, platform_head]),
        timeout=20,
        what="multi-source prod",
    )

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    pushed = world.git.head()
    assert is_multi_converged(world, "prod", [pushed, platform_head])
    last = world.application("prod")["status"]["operationState"]["operation"]
    assert last["sync"] == {"revisions": [pushed, "main"]}  # no sourcePositions
    assert last["initiatedBy"] == {"username": "rotator"}
