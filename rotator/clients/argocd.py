"""ArgoCD Applications (``argoproj.io/v1alpha1``) through the Kubernetes API: read, refresh, sync
and wait for one exact commit (FACTS section 4).

Talks to the Application custom resources with ``CustomObjectsApi`` (merge-patch), through
``Kube``'s request boundary (errors become ``ArgoCDError``) and its watch-or-poll wait helper.
No ArgoCD API server or token is needed: RBAC on ``applications`` in the argocd namespace is all.
``argocd app wait`` never checks the revision, so ``app_status_for`` does: a "Synced, Healthy"
from an older commit is not done.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Literal

from rotator.clients.kube import (
    Json,
    Kube,
    WaitOutcome,
    WatchTarget,
    as_str,
    dig,
    is_conflict_or_lost,
    json_body,
    parse_time,
)
from rotator.errors import ArgoCDError
from rotator.names import COMPONENT

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"
PROJECTS = "appprojects"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
# argo-cd pkg/apis/application/v1alpha1/application_annotations.go: a unique timestamp per refresh
# request (3.6+), so a refresh that lands while one is being processed is not lost.
REFRESH_TIMESTAMP_ANNOTATION = "argocd.argoproj.io/refresh-timestamp"
# argo-cd common/common.go AnnotationKeyAppSkipReconcile: the controller skips the app entirely.
SKIP_RECONCILE_ANNOTATION = "argocd.argoproj.io/skip-reconcile"
# Condition types that mean "this will not sync by itself" (argo-cd ApplicationConditionType).
ERROR_CONDITIONS = frozenset({"ComparisonError", "InvalidSpecError", "SyncError"})
FAILED_PHASES = frozenset({"Failed", "Error"})

AppPhase = Literal["done", "waiting", "failed"]
# "Is this revision our commit S (or, FACTS 4, a descendant of it)?"
Accepts = Callable[[str], bool]
# Indexes of the ops-repo sources in spec.sources (None: every source)
Positions = tuple[int, ...] | None
_SHA = re.compile(r"\b[0-9a-f]{40}\b")


@dataclass(frozen=True)
class AppSource:
    repo_url: str
    target_revision: str
    path: str
    chart: str


@dataclass(frozen=True)
class AppState:
    namespace: str
    name: str
    sync_status: str  # Synced | OutOfSync | Unknown | "" (never compared)
    sync_revision: str  # status.sync.revision, or "" (multi-source: see sync_revisions)
    sync_revisions: tuple[str, ...]
    health: str  # Healthy | Progressing | Degraded | Suspended | Missing | Unknown | ""
    health_message: str
    operation_phase: str  # status.operationState.phase, or ""
    operation_revision: str  # the revision the last operation synced (or was asked to)
    operation_revisions: tuple[str, ...]
    operation_message: str
    started_at: datetime | None
    finished_at: datetime | None
    reconciled_at: datetime | None
    has_operation: bool  # a top-level ``operation`` is pending or running
    conditions: tuple[tuple[str, str], ...]  # (type, message)
    resource_version: str
    auto_sync: bool
    repo_url: str
    paths: tuple[str, ...]
    target_revision: str
    multi_source: bool
    sources: tuple[AppSource, ...] = ()
    project: str = "default"
    skip_reconcile: str | None = None  # the annotation's value, when present
    destination: tuple[str, str, str] = ("", "", "")  # (server, name, namespace)
    refresh_pending: bool = False  # the refresh annotation is still there (not yet consumed)
    refresh_stamp: str | None = None  # its refresh-timestamp

    def _at(self, single: str, multi: tuple[str, ...], positions: Positions) -> tuple[str, ...]:
        """The revisions of the ops-repo sources: ``single`` for a one-source app; for a
        multi-source app the entries of ``multi`` (paired one-to-one with ``spec.sources``,
        FACTS 4) at ``positions`` (None: all of them)."""
        if not self.multi_source:
            return (single,) if single else ()
        if positions is None:
            return multi
        if len(multi) != len(self.sources):
            return ()
        return tuple(multi[i] for i in positions)

    def synced_revisions(self, positions: Positions = None) -> tuple[str, ...]:
        return self._at(self.sync_revision, self.sync_revisions, positions)

    def operation_revisions_at(self, positions: Positions = None) -> tuple[str, ...]:
        return self._at(self.operation_revision, self.operation_revisions, positions)

    def is_synced_to(self, accepts: Accepts, positions: Positions = None) -> bool:
        revisions = self.synced_revisions(positions)
        return bool(revisions) and all(accepts(r) for r in revisions)

    def operation_is_to(self, accepts: Accepts, positions: Positions = None) -> bool:
        revisions = self.operation_revisions_at(positions)
        return bool(revisions) and all(accepts(r) for r in revisions)

    def has_synced_revision(self, revision: str) -> bool:
        return self.is_synced_to(revision.__eq__)

    def operation_is_for(self, revision: str) -> bool:
        return self.operation_is_to(revision.__eq__)


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def app_from(obj: Mapping[str, Any]) -> AppState:
    """PURE: our view of an Application's JSON."""
    spec = dig(obj, "spec") or {}
    sources = [s for s in spec.get("sources") or [] if isinstance(s, Mapping)]
    single = spec.get("source") if isinstance(spec.get("source"), Mapping) else None
    all_sources = ([single] if single else []) + sources
    op_state = dig(obj, "status", "operationState") or {}
    sync_result = op_state.get("syncResult") or {}
    op_sync = dig(op_state, "operation", "sync") or {}
    conditions = tuple(
        (as_str(c.get("type")), as_str(c.get("message")))
        for c in dig(obj, "status", "conditions") or []
        if isinstance(c, Mapping)
    )
    return AppState(
        namespace=as_str(dig(obj, "metadata", "namespace")),
        name=as_str(dig(obj, "metadata", "name")),
        sync_status=as_str(dig(obj, "status", "sync", "status")),
        sync_revision=as_str(dig(obj, "status", "sync", "revision")),
        sync_revisions=_strs(dig(obj, "status", "sync", "revisions")),
        health=as_str(dig(obj, "status", "health", "status")),
        health_message=as_str(dig(obj, "status", "health", "message")),
        operation_phase=as_str(op_state.get("phase")),
        operation_revision=as_str(sync_result.get("revision")) or as_str(op_sync.get("revision")),
        operation_revisions=_strs(sync_result.get("revisions")) or _strs(op_sync.get("revisions")),
        operation_message=as_str(op_state.get("message")),
        started_at=parse_time(op_state.get("startedAt")),
        finished_at=parse_time(op_state.get("finishedAt")),
        reconciled_at=parse_time(dig(obj, "status", "reconciledAt")),
        has_operation=dig(obj, "operation") is not None,
        conditions=conditions,
        resource_version=as_str(dig(obj, "metadata", "resourceVersion")),
        auto_sync=is_auto_sync_enabled(spec),
        repo_url=as_str(all_sources[0].get("repoURL")) if all_sources else "",
        paths=tuple(as_str(s.get("path")) for s in all_sources if s.get("path")),
        target_revision=as_str(all_sources[0].get("targetRevision")) if all_sources else "",
        multi_source=bool(sources),
        # argo-cd types.go ApplicationSpec.GetSources: spec.sources wins over spec.source
        sources=tuple(
            AppSource(
                repo_url=as_str(s.get("repoURL")),
                target_revision=as_str(s.get("targetRevision")),
                path=as_str(s.get("path")),
                chart=as_str(s.get("chart")),
            )
            for s in (sources or ([single] if single else []))
        ),
        project=as_str(spec.get("project")) or "default",
        skip_reconcile=_annotation(obj, SKIP_RECONCILE_ANNOTATION),
        refresh_pending=_annotation(obj, REFRESH_ANNOTATION) is not None,
        refresh_stamp=_annotation(obj, REFRESH_TIMESTAMP_ANNOTATION),
        destination=(
            as_str(dig(spec, "destination", "server")),
            as_str(dig(spec, "destination", "name")),
            as_str(dig(spec, "destination", "namespace")),
        ),
    )


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    annotations = dig(obj, "metadata", "annotations")
    value = annotations.get(key) if isinstance(annotations, Mapping) else None
    return value if isinstance(value, str) else None


# --- what silently stops a sync (FACTS 4), checked before a reset -------------------------------


def parse_go_bool(text: str) -> bool | None:
    """PURE. Go's ``strconv.ParseBool``: None when it is not a boolean (upstream then logs and
    ignores the annotation)."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def same_repo_url(left: str, right: str) -> bool:
    """PURE. argo-cd util/git/git.go ``SameURL`` / ``NormalizeGitURL``: case-insensitive, without a
    trailing ``.git``, scp-style ``git@host:path`` read as ``ssh://git@host/path``."""

    def normal(url: str) -> str:
        url = url.strip().lower()
        if re.match(r"^[\w.-]+@[\w.-]+:", url) and "://" not in url:
            url = "ssh://" + url.replace(":", "/", 1)
        url = url.removesuffix(".git").removesuffix("/").removesuffix(".git")
        return url.removeprefix("ssh://")

    return bool(left.strip()) and bool(right.strip()) and normal(left) == normal(right)


def ops_source_positions(state: AppState, repo_url: str | None) -> tuple[int, ...]:
    """PURE. The indexes of the sources that follow the ops repo (all non-chart sources when
    ``repo_url`` is None)."""
    return tuple(
        i
        for i, source in enumerate(state.sources)
        if (same_repo_url(source.repo_url, repo_url) if repo_url else not source.chart)
    )


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> timedelta:
    """PURE. Go's ``time.ParseDuration`` for the positive durations sync windows use (``1h``,
    ``30m``, ``1h30m``); ValueError otherwise."""
    if not text or _GO_DURATION.sub("", text) or not _GO_DURATION.search(text):
        raise ValueError(f"cannot parse duration {text!r}")
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(text))
    return timedelta(seconds=seconds)


def _window_is_active(window: Mapping[str, Any], now: datetime) -> bool:
    """argo-cd types.go ``SyncWindow.active``: the window's cron schedule (5 fields, in its
    ``timeZone``, UTC when unset) last fired less than ``duration`` ago. ValueError when the
    schedule or duration cannot be read (upstream: such a window blocks every sync)."""
    from zoneinfo import ZoneInfo

    from rotator.cron import crontab_trigger

    schedule = as_str(window.get("schedule"))
    duration = parse_go_duration(as_str(window.get("duration")))
    tz = as_str(window.get("timeZone")) or "UTC"
    try:
        ZoneInfo(tz)
    except (KeyError, ValueError):
        tz = "UTC"  # upstream scheduleOffsetByTimeZone: an invalid time zone is UTC
    trigger = crontab_trigger(schedule, tz)
    # robfig/cron Schedule.Next(t): the first activation at or after t's next whole second
    start = (now.astimezone(UTC) - duration).replace(microsecond=0) + timedelta(seconds=1)
    fire = trigger.get_next_fire_time(None, start)
    return fire is not None and fire < now.astimezone(UTC)


def _window_matches(window: Mapping[str, Any], state: AppState) -> bool:
    """argo-cd types.go ``SyncWindows.Matches``: applications, clusters, namespaces globs, OR by
    default, AND with ``andOperator``."""
    server, dest_name, dest_namespace = state.destination
    use_and = bool(window.get("andOperator"))
    tests = []
    apps = _strs(window.get("applications"))
    if apps:
        tests.append(any(fnmatchcase(state.name, p) for p in apps))
    clusters = _strs(window.get("clusters"))
    if clusters:
        tests.append(
            any(
                (dest_name and fnmatchcase(dest_name, c)) or (server and fnmatchcase(server, c))
                for c in clusters
            )
        )
    namespaces = _strs(window.get("namespaces"))
    if namespaces:
        tests.append(any(fnmatchcase(dest_namespace, n) for n in namespaces))
    if not tests:
        return False
    return all(tests) if use_and else any(tests)


def _describe_window(window: Mapping[str, Any]) -> str:
    tz = as_str(window.get("timeZone")) or "UTC"
    return (
        f"{as_str(window.get('kind')) or '?'} window '{as_str(window.get('schedule'))}' for "
        f"{as_str(window.get('duration'))} ({tz})"
    )


def sync_window_denial(  # noqa: PLR0911 - upstream CanSync, one answer per branch
    windows: Sequence[Mapping[str, Any]], state: AppState, *, manual: bool, now: datetime
) -> str | None:
    """PURE. Why the AppProject's sync windows deny a sync of this app now, or None.

    argo-cd types.go ``SyncWindows.CanSync`` (no operation running, so no overrun): an active
    matching deny window denies unless the sync is manual and every active deny window has
    ``manualSync``; else an active allow window allows; else inactive allow windows deny
    (unless manual with ``manualSync`` on all of them). A window that cannot be read denies
    (upstream ignores CanSync's error and sees false)."""
    matching = [w for w in windows if isinstance(w, Mapping) and _window_matches(w, state)]
    if not matching:
        return None
    active: list[Mapping[str, Any]] = []
    for window in matching:
        try:
            if _window_is_active(window, now):
                active.append(window)
        except ValueError as exc:
            return f"its sync window cannot be read ({exc}), which blocks every sync"
    denies = [w for w in active if w.get("kind") == "deny"]
    if denies:
        if manual and all(w.get("manualSync") for w in denies):
            return None
        return f"the {_describe_window(denies[0])} is active"
    if any(w.get("kind") == "allow" for w in active):
        return None
    inactive_allows = [w for w in matching if w.get("kind") == "allow" and w not in active]
    if inactive_allows:
        if manual and all(w.get("manualSync") for w in inactive_allows):
            return None
        return f"it is outside its {_describe_window(inactive_allows[0])}"
    return None


def sync_stoppers(
    state: AppState,
    *,
    repo_url: str,
    branch: str,
    windows: Sequence[Mapping[str, Any]],
    now: datetime,
) -> list[str]:
    """PURE. What would silently stop ArgoCD from syncing our commit (FACTS 4), each with its fix:
    ``skip-reconcile`` (argo-cd controller/appcontroller.go ``canProcessApp``), a source that is
    not the ops repo's branch, a sync window that denies syncs now."""
    problems: list[str] = []
    if state.skip_reconcile is not None and parse_go_bool(state.skip_reconcile):
        problems.append(
            f"it has the annotation {SKIP_RECONCILE_ANNOTATION}={state.skip_reconcile!r}, so "
            "ArgoCD ignores it: remove the annotation"
        )
    positions = ops_source_positions(state, repo_url)
    if not positions:
        followed = ", ".join(s.repo_url for s in state.sources) or "no repository"
        problems.append(
            f"it follows {followed}, not the ops repo {repo_url} (git.remote): fix the "
            "Application's repoURL or git.remote"
        )
    for i in positions:
        target = state.sources[i].target_revision
        if target not in (branch, f"refs/heads/{branch}", "HEAD", ""):
            problems.append(
                f"its source {i + 1} tracks {target!r}, not the branch {branch!r} (git.branch) "
                "that rotator pushes to: fix targetRevision or git.branch"
            )
    denial = sync_window_denial(windows, state, manual=not state.auto_sync, now=now)
    if denial:
        problems.append(
            f"its AppProject {state.project} denies syncs now: {denial}; run outside the window"
        )
    return problems


def is_auto_sync_enabled(spec: Mapping[str, Any]) -> bool:
    """PURE. argo-cd pkg/apis/application/v1alpha1/types.go ``IsAutomatedSyncEnabled`` (3.1+):
    ``syncPolicy.automated`` present and its ``enabled`` unset or true. ``automated: {enabled:
    false}`` means auto-sync is OFF, so nobody but us will sync. (Before 3.1 the CRD has no
    ``enabled`` field, so the API server prunes it and this reads the same as upstream.)"""
    automated = dig(spec, "syncPolicy", "automated")
    return isinstance(automated, Mapping) and automated.get("enabled") is not False


def error_verdict(
    state: AppState, accepts: Accepts, seen: Mapping[str, datetime | None]
) -> tuple[str, str] | None:
    """PURE. The first error condition that dooms the wait: ("failed", reason), or one to wait
    out: ("waiting", reason), or None.

    A requested refresh bypasses ArgoCD's repo-error grace period (argo-cd controller/state.go
    ``CompareAppState``: ``repoErrorCache`` is skipped when ``noRevisionCache``), so one
    repo-server hiccup shows as a ``ComparisonError`` that the next reconcile clears; right
    after a push a ``SyncError`` can still describe an older revision (controller/
    appcontroller.go ``autoSync``: "Failed last sync attempt to [<sha>]"). So an error fails
    only when it names our commit, or when it is still there on a later reconcile than the one
    where it was first seen (``seen``: condition type -> ``reconciledAt`` then)."""
    app = f"application {state.namespace}/{state.name}"
    for kind, message in state.conditions:
        if kind not in ERROR_CONDITIONS:
            continue
        text = f"{app}: {kind}: {message or 'no message'}"
        named = _SHA.findall(message)
        if any(accepts(sha) for sha in named):
            return "failed", text
        if kind in seen:
            first = seen[kind]
            now = state.reconciled_at
            if now is not None and (first is None or now > first):
                return "failed", f"{text} (still there after a reconcile)"
        about = f" (about {', '.join(sha[:12] for sha in named)}, not ours)" if named else ""
        return "waiting", f"{text}{about}; waiting for a reconcile to clear it"
    return None


def app_status_for(  # noqa: PLR0911 - the FACTS 4 predicate, one reason per branch
    state: AppState,
    revision: str,
    *,
    degraded_fails: bool = True,
    accepts: Accepts | None = None,
    positions: Positions = None,
    seen_errors: Mapping[str, datetime | None] | None = None,
) -> tuple[AppPhase, str]:
    """PURE. Is the Application done for commit ``revision`` (FACTS 4), still on its way, or
    failed so that waiting longer cannot help? Returns the phase and a human reason.

    done: no top-level operation; operationState Succeeded with syncResult revision S; sync
    Synced at S; reconciledAt not before finishedAt (health is about the synced state); Healthy;
    no error conditions. "At S" means ``accepts`` (default: exactly S; the caller accepts
    descendants of S too, FACTS 4) for every ops-repo source (``positions`` of a multi-source
    app). failed: an error condition that names S or survived a reconcile (``error_verdict``);
    the operation for S Failed/Error; Degraded after a finished sync of S (unless
    ``degraded_fails`` is False: then Degraded is waited out, e.g. while a SealedSecret still
    shows the failure of the spec the sync replaced; ArgoCD's SealedSecret health ignores
    observedGeneration).
    """
    ok = accepts or revision.__eq__
    app = f"application {state.namespace}/{state.name}"
    short = revision[:12]
    verdict = error_verdict(state, ok, seen_errors or {})
    if verdict is not None and verdict[0] == "failed":
        return "failed", verdict[1]
    # (a new operation already queued after the failure gets its chance)
    failed_op = state.operation_phase in FAILED_PHASES and not state.has_operation
    if failed_op and state.operation_is_to(ok, positions):
        return "failed", (
            f"{app}: sync of {short} {state.operation_phase.lower()}: "
            f"{state.operation_message or 'no message'}"
        )
    reconciled_after_sync = (
        state.reconciled_at is not None
        and state.finished_at is not None
        and state.reconciled_at >= state.finished_at
    )
    synced_s = (
        not state.has_operation
        and state.operation_phase == "Succeeded"
        and state.operation_is_to(ok, positions)
        and state.sync_status == "Synced"
        and state.is_synced_to(ok, positions)
    )
    if synced_s and reconciled_after_sync and state.health == "Degraded" and degraded_fails:
        return "failed", (
            f"{app}: Degraded after syncing {short}: {state.health_message or 'no message'}"
        )
    if verdict is not None:
        return "waiting", verdict[1]
    if state.has_operation:
        return "waiting", f"{app}: an operation is running ({state.operation_phase or 'pending'})"
    if not (state.operation_phase == "Succeeded" and state.operation_is_to(ok, positions)):
        last = ",".join(r[:12] for r in state.operation_revisions_at(positions)) or "none"
        return "waiting", (
            f"{app}: no successful sync of {short} yet "
            f"(last operation: {state.operation_phase or 'none'} at {last})"
        )
    if not (state.sync_status == "Synced" and state.is_synced_to(ok, positions)):
        at = ",".join(r[:12] for r in state.synced_revisions(positions)) or "?"
        return "waiting", f"{app}: {state.sync_status or 'Unknown'} at {at}, not Synced at {short}"
    if not reconciled_after_sync:
        return "waiting", f"{app}: not reconciled since the sync of {short} finished"
    if state.health != "Healthy":
        return "waiting", f"{app}: health {state.health or 'Unknown'}"
    at = ",".join(r[:12] for r in state.synced_revisions(positions))
    descendant = "" if at == short else f" ({at}, which descends from it)"
    return "done", f"{app}: Synced and Healthy at {short}{descendant}"


def manual_sync_revision(
    state: AppState, revision: str, *, accepts: Accepts | None = None, positions: Positions = None
) -> str | None:
    """PURE. Without auto-sync, ArgoCD has compared against S (or a descendant: sync revision
    accepted, OutOfSync) but nobody syncs it: the revision we must sync ourselves (FACTS 4), or
    None. That is the compared revision, like ``argocd app sync`` of the branch does."""
    ok = accepts or revision.__eq__
    if (
        state.auto_sync
        or state.has_operation
        or state.sync_status != "OutOfSync"
        or not state.is_synced_to(ok, positions)
        or (state.operation_is_to(ok, positions) and state.operation_phase == "Succeeded")
    ):
        return None
    compared = state.synced_revisions(positions)
    return compared[0] if compared else None


def needs_manual_sync(state: AppState, revision: str) -> bool:
    """PURE. ``manual_sync_revision`` for exactly S."""
    return manual_sync_revision(state, revision) is not None


class ArgoCD:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._custom: Any = kube.custom_objects
        # AppProjects as read by this client (one per run, runner.build_clients): every
        # environment whose app is in the same project shares one read.
        self._projects: dict[tuple[str, str], Json | None] = {}

    def _get_json(self, namespace: str, name: str) -> Json | None:
        return self.kube.read_json(
            f"read application {namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                _preload_content=False,
                _request_timeout=self.kube.request_timeout,
            ),
            error=ArgoCDError,
        )

    def _patch(self, namespace: str, name: str, body: Json, *, what: str, idempotent: bool) -> Json:
        return self.kube.request(
            what,
            lambda: json_body(
                self._custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self.kube.request_timeout,
                )
            ),
            idempotent=idempotent,
            error=ArgoCDError,
        )

    def get_app(self, namespace: str, name: str) -> AppState | None:
        """RBAC: (argoproj.io, applications, get)."""
        obj = self._get_json(namespace, name)
        return None if obj is None else app_from(obj)

    def get_project(self, namespace: str, name: str) -> Json | None:
        """The AppProject (for its sync windows), read once by this client: the run's preflight
        checks each environment's app against it, and its windows do not change within the
        checks of one run (a failed read is not kept). RBAC: (argoproj.io, appprojects, get)."""
        key = (namespace, name)
        if key not in self._projects:
            self._projects[key] = self.kube.read_json(
                f"read AppProject {namespace}/{name}",
                lambda: self._custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PROJECTS,
                    name,
                    _preload_content=False,
                    _request_timeout=self.kube.request_timeout,
                ),
                error=ArgoCDError,
            )
        return self._projects[key]

    def refresh(self, namespace: str, name: str, *, hard: bool = False) -> str:
        """Ask the controller to compare now (it removes the annotations when done; auto-sync
        runs inside that refresh), like argo-cd util/argo/argo.go ``RefreshApp``: the refresh
        annotation plus ``refresh-timestamp`` (RFC3339Nano), so that a refresh landing while the
        controller processes an earlier one is kept for the next reconcile (3.6+; older
        versions ignore it). A merge patch of annotations only, so safe to retry.
        RBAC: (argoproj.io, applications, patch)."""
        value = "hard" if hard else "normal"
        stamp = self.kube.clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        annotations = {REFRESH_ANNOTATION: value, REFRESH_TIMESTAMP_ANNOTATION: stamp}
        self._patch(
            namespace,
            name,
            {"metadata": {"annotations": annotations}},
            what=f"refresh application {namespace}/{name}",
            idempotent=True,
        )
        return stamp

    def sync(
        self,
        namespace: str,
        name: str,
        *,
        revision: str,
        username: str,
        repo_url: str | None = None,
    ) -> bool:
        """Start a sync of ``revision`` like ``argocd app sync`` does: set ``operation``, only
        when no operation is running, guarded by resourceVersion (a merge patch carrying
        ``metadata.resourceVersion`` is rejected with 409 if the app changed). 409 -> read again
        and decide again. Returns True if we started it, False if an operation was already
        there (the caller's wait observes it). Sent once per decision, never blindly retried.
        RBAC: (argoproj.io, applications, get, patch)."""
        for _attempt in range(3):
            obj = self._get_json(namespace, name)
            if obj is None:
                raise ArgoCDError(f"application {namespace}/{name} not found", status=404)
            state = app_from(obj)
            if state.has_operation:
                log.info(
                    "application %s/%s: an operation is already running; not syncing",
                    namespace,
                    name,
                )
                return False
            body: Json = {
                "metadata": {"resourceVersion": state.resource_version},
                "operation": {
                    "initiatedBy": {"username": username},
                    "sync": _sync_operation(obj, revision, repo_url=repo_url),
                },
            }
            try:
                self._patch(
                    namespace,
                    name,
                    body,
                    what=f"sync application {namespace}/{name} to {revision[:12]}",
                    idempotent=False,
                )
            except ArgoCDError as exc:
                if is_conflict_or_lost(exc):
                    continue  # read again: if our operation landed, it is "already running"
                raise
            log.info("application %s/%s: sync of %s started", namespace, name, revision[:12])
            return True
        raise ArgoCDError(f"application {namespace}/{name} kept changing; could not start a sync")

    def wait_for_revision(
        self,
        namespace: str,
        name: str,
        *,
        revision: str,
        deadline_s: float,
        sync_if_manual: bool = True,
        degraded_fails: bool = True,
        repo_url: str | None = None,
        descends_from_revision: Accepts | None = None,
    ) -> AppState:
        """Wait until the Application is done for commit ``revision`` (``app_status_for``);
        fail fast (``ArgoCDError``) when it says failed; ``WaitTimeout("argocd")`` at the
        deadline, naming the last state (an error condition being waited out included).
        Without auto-sync, start a sync once ArgoCD has compared against S.
        Call ``refresh`` first to skip ArgoCD's polling interval.

        ``repo_url``: the ops repo; of a multi-source app only its sources must reach S.
        ``descends_from_revision(r)``: whether commit ``r`` descends from S (someone pushed on
        top before the refresh: auto-sync syncs the branch tip and never reports S itself).
        An error condition seen for the first time gets one more refresh: if the next
        reconcile still shows it, it is real.
        RBAC: (argoproj.io, applications, get, list, watch, patch)."""
        synced_once = False
        seen_errors: dict[str, datetime | None] = {}
        awaiting: set[str] = set()  # error kinds we asked a refresh for, not yet consumed
        our_refresh: dict[str, Any] = {"stamp": None, "seen": False}
        verdicts: dict[str, bool] = {}

        def accepts(candidate: str) -> bool:
            if candidate == revision:
                return True
            if not candidate or descends_from_revision is None:
                return False
            if candidate not in verdicts:
                verdicts[candidate] = descends_from_revision(candidate)
            return verdicts[candidate]

        def check(obj: Json | None) -> WaitOutcome:
            nonlocal synced_once
            if obj is None:
                raise ArgoCDError(f"application {namespace}/{name} not found", status=404)
            state = app_from(obj)
            positions = ops_source_positions(state, repo_url) if state.multi_source else None
            present = {kind for kind, _ in state.conditions if kind in ERROR_CONDITIONS}
            for kind in list(seen_errors):
                if kind not in present:
                    del seen_errors[kind]  # cleared: a later one is judged afresh
            awaiting.intersection_update(present)
            if state.refresh_pending and state.refresh_stamp == our_refresh["stamp"]:
                our_refresh["seen"] = True  # our request is in; its removal comes after
            if awaiting and our_refresh["seen"] and not state.refresh_pending:
                # The reconcile that consumed OUR refresh still shows the error. reconciledAt
                # has whole seconds, so two reconciles within one second look alike: this is
                # the sure sign (None: "seen before that reconcile").
                for kind in awaiting:
                    seen_errors[kind] = None
                awaiting.clear()
            phase, reason = app_status_for(
                state,
                revision,
                degraded_fails=degraded_fails,
                accepts=accepts,
                positions=positions,
                seen_errors=seen_errors,
            )
            if phase == "failed":
                raise ArgoCDError(f"{reason}; fix it in git or ArgoCD, then re-run")
            if phase == "done":
                return WaitOutcome(True, state)
            fresh = present - seen_errors.keys()
            if fresh:
                for kind in fresh:
                    seen_errors[kind] = state.reconciled_at
                awaiting.update(fresh)
                log.info(
                    "application %s/%s: %s; refreshing once to see if it lasts",
                    namespace,
                    name,
                    reason,
                )
                our_refresh.update(stamp=self.refresh(namespace, name), seen=False)
            target = manual_sync_revision(state, revision, accepts=accepts, positions=positions)
            if sync_if_manual and not synced_once and target is not None:
                synced_once = True
                self.sync(namespace, name, revision=target, username=COMPONENT, repo_url=repo_url)
            return WaitOutcome(reason=reason)

        state: AppState = self.kube.wait(
            step="argocd",
            what=f"application {namespace}/{name} to be Synced and Healthy at {revision[:12]}",
            get=lambda: self._get_json(namespace, name),
            watch=WatchTarget(
                self._custom.list_namespaced_custom_object,
                (GROUP, VERSION, namespace, PLURAL),
                name,
            ),
            check=check,
            deadline_s=deadline_s,
            error=ArgoCDError,
        )
        return state


def _sync_operation(obj: Mapping[str, Any], revision: str, *, repo_url: str | None) -> Json:
    """``operation.sync`` for S: ``revision`` for one source; for a multi-source app
    ``revisions``, paired one-to-one with ``spec.sources`` (argo-cd types.go ``SyncOperation``;
    controller/sync.go ``SyncAppState``): the ops repo's sources get S, every other source
    keeps its own targetRevision. There is no ``sourcePositions`` on the Application (that is
    a field of the API server's sync request, not of ``SyncOperation``). Without ``repo_url``,
    every git (non-chart) source gets S."""
    sources = [s for s in dig(obj, "spec", "sources") or [] if isinstance(s, Mapping)]
    if not sources:
        return {"revision": revision}

    def is_ops(source: Mapping[str, Any]) -> bool:
        if repo_url is None:
            return not source.get("chart")
        return same_repo_url(as_str(source.get("repoURL")), repo_url)

    return {
        "revisions": [revision if is_ops(s) else as_str(s.get("targetRevision")) for s in sources]
    }
