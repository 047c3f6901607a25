"""rotator.clients.argocd: the "done for commit S" predicate (FACTS 4) as a table, the
Application parsing, and (against the Kubernetes API stand-in) refresh, sync and the wait."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.clients.argocd import AppState, ArgoCD, app_from, app_status_for, needs_manual_sync
from rotator.clients.kube import Json, Kube, json_body, required_rbac
from rotator.clock import rfc3339
from rotator.errors import ArgoCDError, WaitTimeout
from rotator_sandbox.kubeapi import KubeApiServer
from tests.test_kube_client import (  # the stand-in fixtures and the test controller
    Seed,
    api_server,
    grant,
    kube,
    kube_as,
    kubeconfig,
    seed,
    unique,
)

__all__ = ["api_server", "kube", "kubeconfig", "seed"]  # fixtures, used by name

S = "a" * 40
OLD = "b" * 40
T0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


def app(**changes: Any) -> AppState:
    """An Application done for S; each test breaks one thing."""
    base = AppState(
        namespace="argocd",
        name="align-prod",
        sync_status="Synced",
        sync_revision=S,
        sync_revisions=(),
        health="Healthy",
        health_message="",
        operation_phase="Succeeded",
        operation_revision=S,
        operation_revisions=(),
        operation_message="successfully synced (all tasks run)",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=5),
        reconciled_at=T0 + timedelta(seconds=6),
        has_operation=False,
        conditions=(),
        resource_version="100",
        auto_sync=True,
        repo_url="file:///srv/ops.git",
        paths=("deploy/prod",),
        target_revision="main",
        multi_source=False,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("state", "phase", "words"),
    [
        pytest.param(app(), "done", "Synced and Healthy", id="done"),
        pytest.param(
            app(reconciled_at=T0 + timedelta(seconds=5)), "done", "Healthy", id="reconciled-at-end"
        ),
        # an older revision, Synced and Healthy, is NOT done for S
        pytest.param(
            app(sync_revision=OLD, operation_revision=OLD),
            "waiting",
            "no successful sync",
            id="old",
        ),
        pytest.param(app(sync_revision=OLD), "waiting", "not Synced at", id="compared-old"),
        pytest.param(app(sync_status="OutOfSync"), "waiting", "OutOfSync", id="out-of-sync"),
        pytest.param(app(has_operation=True), "waiting", "operation is running", id="operation"),
        pytest.param(
            app(has_operation=True, operation_phase="Running"), "waiting", "Running", id="running"
        ),
        pytest.param(
            app(reconciled_at=T0 + timedelta(seconds=4)),
            "waiting",
            "not reconciled since",
            id="reconciled-before-finish",
        ),
        pytest.param(app(reconciled_at=None), "waiting", "not reconciled", id="never-reconciled"),
        pytest.param(app(health="Progressing"), "waiting", "health Progressing", id="progressing"),
        pytest.param(app(health="Missing"), "waiting", "health Missing", id="missing"),
        pytest.param(
            app(health="Degraded", health_message="Deployment exceeded its progress deadline"),
            "failed",
            "Degraded after syncing",
            id="degraded",
        ),
        # Degraded seen before the post-sync reconcile is about the old state: keep waiting
        pytest.param(
            app(health="Degraded", reconciled_at=T0),
            "waiting",
            "not reconciled",
            id="degraded-stale",
        ),
        pytest.param(
            app(health="Degraded", sync_revision=OLD, operation_revision=OLD),
            "waiting",
            "no successful sync",
            id="degraded-old-revision",
        ),
        # an error seen for the first time is waited out: the next reconcile may clear it
        pytest.param(
            app(conditions=(("ComparisonError", "rpc error: repository not found"),)),
            "waiting",
            "ComparisonError: rpc error: repository not found; waiting for a reconcile",
            id="comparison-error",
        ),
        pytest.param(
            app(conditions=(("InvalidSpecError", "spec.source.path does not exist"),)),
            "waiting",
            "InvalidSpecError",
            id="invalid-spec",
        ),
        pytest.param(
            app(conditions=(("SyncError", f"Failed last sync attempt to [{OLD}]: boom"),)),
            "waiting",
            "(about bbbbbbbbbbbb, not ours)",
            id="sync-error-of-an-older-revision",
        ),
        # ... unless it names our commit
        pytest.param(
            app(conditions=(("SyncError", f"Failed last sync attempt to [{S}]: boom"),)),
            "failed",
            "SyncError: Failed last sync attempt",
            id="sync-error-of-our-commit",
        ),
        pytest.param(
            app(conditions=(("ComparisonError", f"unable to resolve {S} to a commit SHA"),)),
            "failed",
            "ComparisonError: unable to resolve",
            id="comparison-error-naming-our-commit",
        ),
        pytest.param(
            app(conditions=(("OrphanedResourceWarning", "1 orphaned"),)),
            "done",
            "Healthy",
            id="warning-is-not-error",
        ),
        pytest.param(
            app(operation_phase="Failed", operation_message="one or more objects failed"),
            "failed",
            "sync of aaaaaaaaaaaa failed: one or more objects failed",
            id="failed",
        ),
        pytest.param(app(operation_phase="Error"), "failed", "error", id="error-phase"),
        pytest.param(
            app(operation_phase="Failed", has_operation=True),
            "waiting",
            "operation is running",
            id="failed-then-retried",
        ),
        # a failed sync of an OLDER revision does not doom S
        pytest.param(
            app(operation_phase="Failed", operation_revision=OLD, sync_status="OutOfSync"),
            "waiting",
            "no successful sync",
            id="failed-old",
        ),
        pytest.param(
            app(operation_phase="", operation_revision="", finished_at=None, started_at=None),
            "waiting",
            "last operation: none",
            id="never-synced",
        ),
        # multi-source: the revisions lists carry S
        pytest.param(
            app(
                sync_revision="",
                sync_revisions=(S, S),
                operation_revision="",
                operation_revisions=(S, S),
                multi_source=True,
            ),
            "done",
            "Healthy",
            id="multi-source",
        ),
        pytest.param(
            app(
                sync_revision="",
                sync_revisions=(OLD, OLD),
                operation_revision="",
                operation_revisions=(S, S),
                multi_source=True,
            ),
            "waiting",
            "not Synced at",
            id="multi-source-old",
        ),
    ],
)
def test_app_status_for(state: AppState, phase: str, words: str) -> None:
    got, reason = app_status_for(state, S)
    assert got == phase, reason
    assert words in reason


@given(
    sync_status=st.sampled_from(["Synced", "OutOfSync", "Unknown", ""]),
    sync_revision=st.sampled_from([S, OLD, ""]),
    health=st.sampled_from(["Healthy", "Progressing", "Degraded", "Suspended", "Missing", ""]),
    op_phase=st.sampled_from(["Succeeded", "Running", "Failed", "Error", "Terminating", ""]),
    op_revision=st.sampled_from([S, OLD, ""]),
    has_operation=st.booleans(),
    reconciled_delta=st.one_of(st.none(), st.integers(-10, 10)),
    conditions=st.lists(
        st.sampled_from(["ComparisonError", "SyncError", "OrphanedResourceWarning"]), max_size=2
    ),
)
def test_done_is_never_claimed_without_every_part_of_the_predicate(
    sync_status: str,
    sync_revision: str,
    health: str,
    op_phase: str,
    op_revision: str,
    has_operation: bool,
    reconciled_delta: int | None,
    conditions: list[str],
) -> None:
    finished = T0 + timedelta(seconds=5)
    state = app(
        sync_status=sync_status,
        sync_revision=sync_revision,
        health=health,
        operation_phase=op_phase,
        operation_revision=op_revision,
        has_operation=has_operation,
        finished_at=finished,
        reconciled_at=None
        if reconciled_delta is None
        else finished + timedelta(seconds=reconciled_delta),
        conditions=tuple((c, "m") for c in conditions),
    )
    phase, reason = app_status_for(state, S)
    assert reason
    if phase == "done":
        assert sync_status == "Synced"
        assert sync_revision == S
        assert op_revision == S
        assert op_phase == "Succeeded"
        assert not has_operation
        assert health == "Healthy"
        assert reconciled_delta is not None
        assert reconciled_delta >= 0
        assert not {"ComparisonError", "SyncError"} & set(conditions)
    if {"ComparisonError", "SyncError"} & set(conditions):
        assert phase != "done"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (app(auto_sync=False, sync_status="OutOfSync", operation_revision=OLD), True),
        (app(auto_sync=True, sync_status="OutOfSync", operation_revision=OLD), False),
        # has not compared against S yet: a refresh comes first
        (app(auto_sync=False, sync_status="OutOfSync", sync_revision=OLD), False),
        (app(auto_sync=False, sync_status="OutOfSync", has_operation=True), False),
        (app(auto_sync=False), False),
    ],
)
def test_a_manual_app_is_synced_only_once_it_has_seen_the_revision(
    state: AppState, expected: bool
) -> None:
    assert needs_manual_sync(state, S) is expected


def test_app_from_reads_an_application() -> None:
    state = app_from(
        {
            "metadata": {"name": "align-prod", "namespace": "argocd", "resourceVersion": "7"},
            "spec": {
                "source": {
                    "repoURL": "file:///r.git",
                    "path": "deploy/prod",
                    "targetRevision": "main",
                },
                "syncPolicy": {"automated": {"prune": True}},
            },
            "status": {
                "sync": {"status": "Synced", "revision": S},
                "health": {"status": "Healthy"},
                "reconciledAt": "2026-11-27T20:00:06Z",
                "operationState": {
                    "phase": "Succeeded",
                    "message": "ok",
                    "startedAt": "2026-11-27T20:00:00Z",
                    "finishedAt": "2026-11-27T20:00:05Z",
                    "syncResult": {"revision": S},
                    "operation": {"sync": {"revision": S}},
                },
                "conditions": [{"type": "SyncError", "message": "boom"}],
            },
        }
    )
    assert state.sync_status == "Synced"
    assert state.operation_revision == S
    assert state.finished_at == T0 + timedelta(seconds=5)
    assert state.reconciled_at == T0 + timedelta(seconds=6)
    assert state.auto_sync
    assert not state.has_operation
    assert state.conditions == (("SyncError", "boom"),)
    assert state.paths == ("deploy/prod",)
    assert state.repo_url == "file:///r.git"


@pytest.mark.parametrize(
    ("automated", "auto"),
    [
        ({"prune": True}, True),
        ({}, True),
        ({"enabled": True}, True),
        ({"enabled": False, "prune": True}, False),  # ArgoCD 3.1+: auto-sync OFF
        (None, False),
    ],
)
def test_auto_sync_is_on_only_when_automated_is_present_and_not_disabled(
    automated: Any, auto: bool
) -> None:
    state = app_from(
        {
            "metadata": {"name": "x", "namespace": "argocd"},
            "spec": {"syncPolicy": {"automated": automated}},
        }
    )
    assert state.auto_sync is auto


def test_app_from_handles_a_bare_application() -> None:
    state = app_from({"metadata": {"name": "x", "namespace": "argocd"}, "operation": {"sync": {}}})
    assert state.has_operation
    assert state.sync_status == ""
    assert not state.auto_sync
    assert app_status_for(state, S)[0] == "waiting"


# =============================================================================================
# Against the Kubernetes API stand-in, with a small ArgoCD application controller played by the
# test through the official client (Applications have no status subresource: ArgoCD patches
# the whole object, and so does this one).
# =============================================================================================


class FakeArgo:
    """Enough of argocd-application-controller for one Application: refresh -> compare against
    ``head``; auto-sync; run an operation (Running -> outcome); then reconcile health."""

    def __init__(
        self,
        seed: Seed,
        name: str,
        *,
        head: str,
        outcome: str = "Succeeded",
        health_after: str = "Healthy",
    ) -> None:
        self.seed = seed
        self.name = name
        self.head = head
        self.outcome = outcome
        self.health_after = health_after
        self.initiated_by: list[Json] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeArgo:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def _read(self) -> Json:
        return json_body(
            self.seed.custom.get_namespaced_custom_object(
                "argoproj.io",
                "v1alpha1",
                "argocd",
                "applications",
                self.name,
                _preload_content=False,
            )
        )

    def _patch(self, body: Json) -> None:
        self.seed.custom.patch_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            "argocd",
            "applications",
            self.name,
            body,
            _preload_content=False,
        )

    def _run(self) -> None:
        while not self.stop_event.wait(0.05):
            self.tick()

    def tick(self) -> None:
        app = self._read()
        status = app.get("status") or {}
        now = rfc3339(datetime.now(UTC))
        annotations = app["metadata"].get("annotations") or {}
        op_state = status.get("operationState") or {}
        if app.get("operation"):
            if op_state.get("phase") != "Running":
                self.initiated_by.append(app["operation"].get("initiatedBy") or {})
                self._patch(
                    {
                        "status": {
                            "operationState": {
                                "phase": "Running",
                                "startedAt": now,
                                "operation": app["operation"],
                            }
                        }
                    }
                )
                return
            revision = app["operation"]["sync"]["revision"]
            finished: Json = {
                "phase": self.outcome,
                "message": "successfully synced" if self.outcome == "Succeeded" else "boom",
                "finishedAt": now,
                "syncResult": {"revision": revision},
            }
            status_patch: Json = {"operationState": finished}
            if self.outcome == "Succeeded":
                status_patch["sync"] = {"status": "Synced", "revision": revision}
                status_patch["health"] = {"status": "Progressing"}
            self._patch({"operation": None, "status": status_patch})
            return
        if REFRESH in annotations:
            self._patch(
                {
                    "metadata": {"annotations": {REFRESH: None}},
                    "status": {
                        "sync": {
                            "status": "Synced"
                            if status["sync"]["revision"] == self.head
                            else "OutOfSync",
                            "revision": self.head,
                        },
                        "reconciledAt": now,
                    },
                }
            )
            return
        synced = status.get("sync", {})
        if (
            (app["spec"].get("syncPolicy") or {}).get("automated") is not None
            and synced.get("status") == "OutOfSync"
            and synced.get("revision") == self.head
            and (op_state.get("syncResult") or {}).get("revision") != self.head
        ):
            self._patch(
                {
                    "operation": {
                        "sync": {"revision": self.head},
                        "initiatedBy": {"automated": True},
                    }
                }
            )
            return
        finished_at = op_state.get("finishedAt") or ""
        if (
            op_state.get("phase") == "Succeeded"
            and status.get("health", {}).get("status") == "Progressing"
            and status.get("reconciledAt", "") <= finished_at
        ):
            time.sleep(0.01)
            self._patch(
                {
                    "status": {
                        "health": {"status": self.health_after, "message": "after sync"},
                        "reconciledAt": max(now, finished_at),
                    }
                }
            )


REFRESH = "argocd.argoproj.io/refresh"
REFRESH_TIMESTAMP = "argocd.argoproj.io/refresh-timestamp"


def seed_app(seed: Seed, *, auto: bool, at: str = OLD, conditions: list[Json] | None = None) -> str:
    seed.namespace("argocd")
    name = unique("align-prod")
    body: Json = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "file:///srv/ops.git",
                "path": "deploy/prod",
                "targetRevision": "main",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "align-prod"},
            "syncPolicy": {"automated": {"prune": True}} if auto else {},
        },
        "status": {
            "sync": {"status": "Synced", "revision": at},
            "health": {"status": "Healthy"},
            "reconciledAt": "2026-11-27T19:00:10Z",
            "operationState": {
                "phase": "Succeeded",
                "startedAt": "2026-11-27T19:00:00Z",
                "finishedAt": "2026-11-27T19:00:05Z",
                "syncResult": {"revision": at},
            },
            "conditions": conditions or [],
        },
    }
    seed.custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", body, _preload_content=False
    )
    return name


@pytest.fixture
def argocd(kube: Kube) -> ArgoCD:
    return ArgoCD(kube)


def test_get_app_reads_the_application_and_none_when_missing(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=True)
    state = argocd.get_app("argocd", name)
    assert state is not None
    assert (state.sync_status, state.sync_revision, state.health) == ("Synced", OLD, "Healthy")
    assert state.auto_sync
    assert argocd.get_app("argocd", unique("missing")) is None


def test_refresh_sets_the_refresh_annotation_and_a_new_refresh_timestamp(
    argocd: ArgoCD, seed: Seed
) -> None:
    name = seed_app(seed, auto=True)
    argocd.refresh("argocd", name)
    first = FakeArgo(seed, name, head=S)._read()["metadata"]["annotations"]
    assert first[REFRESH] == "normal"
    stamp = first[REFRESH_TIMESTAMP]
    assert datetime.fromisoformat(stamp).tzinfo is not None  # RFC 3339, as argo-cd RefreshApp
    time.sleep(0.01)
    argocd.refresh("argocd", name, hard=True)
    second = FakeArgo(seed, name, head=S)._read()["metadata"]["annotations"]
    assert second[REFRESH] == "hard"
    assert second[REFRESH_TIMESTAMP] != stamp  # each request is told apart (argo-cd 3.6)


def test_sync_sets_the_operation_only_when_none_is_running(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=False)
    assert argocd.sync("argocd", name, revision=S, username="rotator") is True
    raw = FakeArgo(seed, name, head=S)._read()
    assert raw["operation"] == {"initiatedBy": {"username": "rotator"}, "sync": {"revision": S}}
    assert argocd.sync("argocd", name, revision=S, username="rotator") is False
    with pytest.raises(ArgoCDError) as info:
        argocd.sync("argocd", unique("missing"), revision=S, username="rotator")
    assert info.value.status == 404


def test_wait_for_revision_with_auto_sync(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=True)
    with FakeArgo(seed, name, head=S) as controller:
        argocd.refresh("argocd", name)
        state = argocd.wait_for_revision("argocd", name, revision=S, deadline_s=20)
    assert state.sync_revision == S
    assert state.health == "Healthy"
    assert state.operation_phase == "Succeeded"
    assert controller.initiated_by == [{"automated": True}]  # we did not sync ourselves


def test_a_manual_app_is_synced_by_us_once_it_has_seen_the_commit(
    argocd: ArgoCD, seed: Seed
) -> None:
    name = seed_app(seed, auto=False)
    with FakeArgo(seed, name, head=S) as controller:
        argocd.refresh("argocd", name)
        state = argocd.wait_for_revision("argocd", name, revision=S, deadline_s=20)
    assert state.sync_revision == S
    assert controller.initiated_by == [{"username": "rotator"}]


def test_a_manual_app_is_not_synced_when_asked_not_to(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=False)
    with FakeArgo(seed, name, head=S) as controller:
        argocd.refresh("argocd", name)
        with pytest.raises(WaitTimeout) as info:
            argocd.wait_for_revision("argocd", name, revision=S, deadline_s=1, sync_if_manual=False)
    assert controller.initiated_by == []
    assert info.value.step == "argocd"


def test_a_failed_sync_of_the_commit_fails_fast(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=True)
    started = time.monotonic()
    with FakeArgo(seed, name, head=S, outcome="Failed"):
        argocd.refresh("argocd", name)
        with pytest.raises(ArgoCDError) as info:
            argocd.wait_for_revision("argocd", name, revision=S, deadline_s=30)
    assert "failed: boom" in str(info.value)
    assert time.monotonic() - started < 10


def test_degraded_after_the_sync_fails_fast(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=True)
    with FakeArgo(seed, name, head=S, health_after="Degraded"):
        argocd.refresh("argocd", name)
        with pytest.raises(ArgoCDError, match="Degraded after syncing"):
            argocd.wait_for_revision("argocd", name, revision=S, deadline_s=30)


def test_an_older_revision_synced_and_healthy_is_not_done(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(seed, auto=True, at=OLD)
    with pytest.raises(WaitTimeout) as info:
        argocd.wait_for_revision("argocd", name, revision=S, deadline_s=0.5)
    assert "no successful sync of aaaaaaaaaaaa" in str(info.value)


def test_an_error_condition_still_there_after_the_next_reconcile_fails_fast(
    argocd: ArgoCD, seed: Seed
) -> None:
    name = seed_app(
        seed,
        auto=True,
        conditions=[{"type": "ComparisonError", "message": "repository not accessible"}],
    )
    started = time.monotonic()
    with (
        FakeArgo(seed, name, head=OLD) as controller,  # reconciles on refresh, the error stays
        pytest.raises(ArgoCDError, match=r"repository not accessible \(still there after"),
    ):
        argocd.wait_for_revision("argocd", name, revision=S, deadline_s=30)
    assert controller.initiated_by == []
    assert time.monotonic() - started < 20


def test_an_error_condition_naming_our_commit_fails_at_once(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(
        seed,
        auto=True,
        conditions=[{"type": "SyncError", "message": f"Failed last sync attempt to [{S}]: x"}],
    )
    with pytest.raises(ArgoCDError, match="SyncError: Failed last sync attempt"):
        argocd.wait_for_revision("argocd", name, revision=S, deadline_s=30)


def test_a_timeout_names_the_error_condition_it_waited_out(argocd: ArgoCD, seed: Seed) -> None:
    name = seed_app(
        seed,
        auto=True,
        conditions=[{"type": "ComparisonError", "message": "rpc error: connection refused"}],
    )  # nobody reconciles: the error is never confirmed, and never cleared
    with pytest.raises(WaitTimeout) as info:
        argocd.wait_for_revision("argocd", name, revision=S, deadline_s=1)
    assert "ComparisonError: rpc error: connection refused" in str(info.value)


@pytest.mark.parametrize(
    ("seen", "reconciled", "phase"),
    [
        ({}, T0, "waiting"),  # first sight
        ({"ComparisonError": T0}, T0, "waiting"),  # no reconcile since
        ({"ComparisonError": T0}, T0 + timedelta(seconds=1), "failed"),  # survived one
        ({"ComparisonError": None}, T0, "failed"),  # first seen before any reconcile
        ({"SyncError": T0}, T0 + timedelta(seconds=1), "waiting"),  # another kind
    ],
)
def test_an_error_fails_only_once_it_survived_a_reconcile(
    seen: dict[str, datetime | None], reconciled: datetime, phase: str
) -> None:
    state = app(
        conditions=(("ComparisonError", "rpc error: code = Unavailable"),),
        reconciled_at=reconciled,
        sync_status="Unknown",
    )
    assert app_status_for(state, S, seen_errors=seen)[0] == phase


def test_a_missing_application_fails_at_once(argocd: ArgoCD, seed: Seed) -> None:
    seed.namespace("argocd")
    with pytest.raises(ArgoCDError, match="not found"):
        argocd.wait_for_revision("argocd", unique("missing"), revision=S, deadline_s=30)


def test_api_errors_on_applications_are_argocd_errors(
    kubeconfig: Path, tmp_path: Path, api_server: KubeApiServer, seed: Seed
) -> None:
    seed.namespace("argocd")
    token = grant(api_server, seed, {}, {"argocd": "argocd"})
    argocd = ArgoCD(kube_as(kubeconfig, token, tmp_path))
    with pytest.raises(ArgoCDError) as info:
        argocd.get_app("argocd", "align-prod")
    assert info.value.status == 403
    assert info.value.system == "argocd"


def test_required_rbac_covers_every_argocd_call(
    kubeconfig: Path, tmp_path: Path, api_server: KubeApiServer, seed: Seed
) -> None:
    name = seed_app(seed, auto=False)
    rules = required_rbac(applications=(name,), projects=("default",))
    token = grant(api_server, seed, dict(rules), {"argocd": "argocd"})
    kube = kube_as(kubeconfig, token, tmp_path)
    argocd = ArgoCD(kube)
    started = len(api_server.audit_log())
    with FakeArgo(seed, name, head=S):
        assert argocd.get_project("argocd", "default") is None  # allowed, and not there
        assert argocd.get_app("argocd", name) is not None
        argocd.refresh("argocd", name)
        argocd.wait_for_revision("argocd", name, revision=S, deadline_s=20)
    denied = [e for e in api_server.audit_log()[started:] if not e.allowed]
    assert not denied, denied
    with pytest.raises(ArgoCDError) as info:
        argocd.get_app("argocd", unique("another-app"))
    assert info.value.status == 403
    with pytest.raises(ArgoCDError) as info:
        argocd.get_project("argocd", "another-project")
    assert info.value.status == 403
    kube.close()


def test_a_multi_source_sync_gives_our_commit_only_to_the_ops_repo_sources() -> None:
    from rotator.clients.argocd import _sync_operation

    obj = {
        "spec": {
            "sources": [
                {
                    "repoURL": "https://git.example/ops.git",
                    "path": "apps",
                    "targetRevision": "main",
                },
                {"repoURL": "https://git.example/platform", "path": "x", "targetRevision": "v2"},
                {"repoURL": "https://charts.example", "chart": "gw", "targetRevision": "1.2.3"},
                {"repoURL": "https://GIT.example/ops", "path": "sealed", "targetRevision": "main"},
            ]
        }
    }
    body = _sync_operation(obj, S, repo_url="https://git.example/ops")
    assert body == {"revisions": [S, "v2", "1.2.3", S]}  # no sourcePositions (not in the CRD)
    assert _sync_operation({"spec": {"source": {}}}, S, repo_url=None) == {"revision": S}
