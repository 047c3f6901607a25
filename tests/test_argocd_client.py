"""rotator.clients.argocd: the "done for commit S" predicate (FACTS 4) as a table, the
Application parsing, and (against the Kubernetes API stand-in) refresh, sync and the wait."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.clients.argocd import AppState, app_from, app_status_for, needs_manual_sync

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
        pytest.param(
            app(conditions=(("ComparisonError", "rpc error: repository not found"),)),
            "failed",
            "ComparisonError: rpc error",
            id="comparison-error",
        ),
        pytest.param(
            app(conditions=(("InvalidSpecError", "spec.source.path does not exist"),)),
            "failed",
            "InvalidSpecError",
            id="invalid-spec",
        ),
        pytest.param(
            app(conditions=(("SyncError", "Failed sync attempt"),)),
            "failed",
            "SyncError",
            id="sync-error",
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
            app(sync_revision="", sync_revisions=(OLD, OLD), multi_source=True),
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
        assert phase == "failed"


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


def test_app_from_handles_a_bare_application() -> None:
    state = app_from({"metadata": {"name": "x", "namespace": "argocd"}, "operation": {"sync": {}}})
    assert state.has_operation
    assert state.sync_status == ""
    assert not state.auto_sync
    assert app_status_for(state, S)[0] == "waiting"
