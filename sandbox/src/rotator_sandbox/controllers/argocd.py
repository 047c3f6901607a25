"""An ArgoCD application controller: reads the git repo, applies manifests, keeps the status.

Field names follow argoproj/argo-cd ``pkg/apis/application/v1alpha1/types.go``
(``ApplicationStatus``: ``sync``, ``health``, ``operationState``, ``reconciledAt``,
``conditions``, ``history``, ``resources``; ``Operation``: ``sync.revision``, ``initiatedBy``).
Behaviour, as FACTS section 4 describes it:

- Each Application is compared with git when first seen, every poll interval
  (``(poll_s + uniform(0, jitter_s)) * time_scale``; by default 3.x's 120 s + up to 60 s
  jitter, 2.x's 180 s),
  and at once when the annotation ``argocd.argoproj.io/refresh`` appears (removed afterwards).
  A comparison resolves ``spec.source.targetRevision`` to a commit in the repository
  (``spec.source.repoURL``: a path or ``file://`` URL of a bare repo), renders the manifests
  under ``spec.source.path`` (``directory.recurse`` and ``directory.include`` honoured) and
  diffs them against the live objects: ``status.sync`` = Synced/OutOfSync at that revision,
  ``reconciledAt`` = now. A repo that cannot be read gives the ``ComparisonError`` condition
  and sync status Unknown.
- Auto-sync (``spec.syncPolicy.automated``; from 3.1 ``automated: {enabled: false}`` turns it
  off) runs inside that comparison when OutOfSync, at most once per revision
  (``alreadyAttemptedSync``; ``selfHeal`` re-syncs the same revision); a failed attempt
  leaves the ``SyncError`` condition "Failed sync attempt to <rev>: <message>".
- A manual ``operation: {sync: {revision}}`` is run when no operation is running.
- An operation is Running for ``sync_s * time_scale``, then applies every manifest like
  ``kubectl apply`` (create, or patch only the fields in the manifest: strategic merge for
  built-in kinds, merge patch for custom resources), so fields it does not manage (a rollout
  restart's ``kubectl.kubernetes.io/restartedAt``) survive; ArgoCD never restarts pods. Then
  ``operation`` is removed, ``operationState`` is Succeeded (or Failed/Error with a message)
  with ``syncResult.revision``, ``startedAt``, ``finishedAt``, and the app is compared again,
  so ``reconciledAt`` is not before ``finishedAt``.
- Health (gitops-engine order Healthy < Suspended < Progressing < Missing < Degraded < Unknown):
  a Deployment from its rollout (as ``kubectl rollout status``; ProgressDeadlineExceeded is
  Degraded, ``spec.paused`` Suspended), a SealedSecret from its Synced condition (ArgoCD's
  bundled ``bitnami.com/SealedSecret`` health check), anything else Healthy when present,
  Missing when absent. Re-evaluated whenever a Deployment or SealedSecret changes.

Versions (``version="3.6"``, a setting per sandbox): what differs between ArgoCD 2.x and 3.x
is selected by it (auto-sync's ``enabled``, the default polling interval); each such place cites
the upstream file at the version it follows.

Status is written with merge patches on the main resource: the Application CRD has no status
subresource. Differences from upstream: one source only (``spec.source``), no pruning, no sync
waves or hooks, no retry policy, comparison is a subset diff (no last-applied 3-way merge).

Fault hooks (per app name): ``sync_errors[app] = msg`` (operations fail), ``degraded[app] =
msg`` (health Degraded), ``stuck(app)`` (keeps comparing the revision it has, never picks up
new commits), ``unstick(app)``; ``poll_s`` / ``sync_s`` are plain attributes.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import yaml
from kubernetes.client.exceptions import ApiException

from rotator_sandbox.controllers.base import (
    APP_PROJECT,
    APPLICATION,
    DEPLOYMENT,
    SEALED_SECRET,
    Controller,
    Obj,
    kind_of,
    meta,
    now_rfc3339,
)

log = logging.getLogger(__name__)

REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
# argo-cd pkg/apis/application/v1alpha1/application_annotations.go (3.6+)
REFRESH_TIMESTAMP_ANNOTATION = "argocd.argoproj.io/refresh-timestamp"
# argo-cd common/common.go AnnotationKeyAppSkipReconcile
SKIP_RECONCILE_ANNOTATION = "argocd.argoproj.io/skip-reconcile"
INSTANCE_LABEL = "app.kubernetes.io/instance"
HEALTH_ORDER = ("Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown")
GIT_TIMEOUT_S = 20.0
_FULL_SHA = re.compile(r"[0-9a-f]{40}")


def parse_version(text: str) -> tuple[int, int]:
    """``"3.6"`` / ``"v2.14.1"`` -> (3, 6); a clear error for anything else."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    if match is None:
        raise ValueError(f"ArgoCD version {text!r}: give MAJOR.MINOR, e.g. 3.6 or 2.14")
    return int(match.group(1)), int(match.group(2))


def default_polling(version: tuple[int, int]) -> tuple[float, float]:
    """The application controller's ``--app-resync`` and ``--app-resync-jitter`` defaults.

    argo-cd cmd/argocd-application-controller/commands/argocd_application_controller.go:
    v2.14 ``defaultAppResyncPeriod = 180`` with jitter 0; from v3.0 120 s + up to 60 s jitter.
    """
    return (180.0, 0.0) if version < (3, 0) else (120.0, 60.0)


def is_auto_sync_enabled(spec: Obj, version: tuple[int, int]) -> bool:
    """Whether auto-sync runs for this Application spec at this ArgoCD version.

    argo-cd pkg/apis/application/v1alpha1/types.go ``SyncPolicy.IsAutomatedSyncEnabled``
    (v3.1+): ``automated`` present and ``automated.enabled`` unset or true; controller/
    appcontroller.go ``autoSync`` checks it. Before v3.1 ``SyncPolicyAutomated`` has no
    ``enabled`` field (v3.0.0 appcontroller.go: ``SyncPolicy.Automated == nil`` is the only
    test), so ``enabled: false`` is ignored and auto-sync stays on.
    """
    automated = (spec.get("syncPolicy") or {}).get("automated")
    if not isinstance(automated, dict):
        return False
    if version < (3, 1):
        return True
    return automated.get("enabled") is not False


class RepoError(Exception):
    """The repository or revision cannot be read."""


@dataclass
class _Op:
    operation: Obj
    revisions: list[str]  # one per source (one-source apps: one)
    started_at: str
    due: float
    automated: bool

    @property
    def revision(self) -> str:
        return self.revisions[0] if self.revisions else ""


@dataclass
class _AppState:
    next_poll: float = 0.0
    revisions: list[str] = field(default_factory=list)  # last compared, one per source
    manifests: list[Obj] = field(default_factory=list)
    op: _Op | None = None
    attempted: str = ""  # revision of the last sync attempt (alreadyAttemptedSync)
    attempt_ok: bool = True
    attempt_message: str = ""
    comparison_error: str = ""
    pinned: str | None = None  # "stuck" fault (first source)
    repo_error_since: float | None = None  # repoErrorCache: first repo error in a row
    compared_sources: str = ""  # the sources the last comparison was of

    @property
    def revision(self) -> str:
        return self.revisions[0] if self.revisions else ""


def repo_path(repo_url: str) -> Path:
    parts = urlsplit(repo_url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme:
        raise RepoError(f"repository {repo_url} is not a local path or file:// URL")
    return Path(repo_url)


def _git(repo: Path, *args: str) -> str:
    if not repo.exists():
        raise RepoError(f"repository not found: {repo}")
    try:
        done = subprocess.run(
            ["git", f"--git-dir={repo}", *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RepoError(f"git {args[0]} timed out") from exc
    if done.returncode != 0:
        raise RepoError(done.stderr.strip() or f"git {args[0]} failed")
    return done.stdout


def resolve_revision(repo: Path, revision: str) -> str:
    """A branch, tag, HEAD or (abbreviated) sha -> the full commit sha."""
    rev = revision or "HEAD"
    candidates: tuple[str, ...] = (f"refs/heads/{rev}", f"refs/tags/{rev}", rev)
    if _FULL_SHA.fullmatch(rev):
        candidates = (rev,)  # a full commit sha names that commit (git warns if a ref looks alike)
    for candidate in candidates:
        try:
            return _git(repo, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}")[:40]
        except RepoError:
            continue
    raise RepoError(f"unable to resolve '{rev}' to a commit SHA")


def _expand_braces(pattern: str) -> list[str]:
    start = pattern.find("{")
    end = pattern.find("}", start)
    if start < 0 or end < 0:
        return [pattern]
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    return [p for alt in body.split(",") for p in _expand_braces(head + alt + tail)]


def render_manifests(repo: Path, revision: str, source: Obj) -> list[Obj]:
    """Every object under the source path at ``revision`` (directory source semantics)."""
    base = str(source.get("path") or ".").strip("/")
    base = "" if base in ("", ".") else base + "/"
    directory = source.get("directory") or {}
    recurse = bool(directory.get("recurse"))
    include = (
        _expand_braces(str(directory.get("include") or "")) if directory.get("include") else []
    )
    exclude = (
        _expand_braces(str(directory.get("exclude") or "")) if directory.get("exclude") else []
    )
    files = _git(repo, "ls-tree", "-r", "--name-only", revision).splitlines()
    objects: list[Obj] = []
    for path in sorted(files):
        if not path.startswith(base) or not path.endswith((".yaml", ".yml", ".json")):
            continue
        rel = path[len(base) :]
        if "/" in rel and not recurse:
            continue
        name = rel.rsplit("/", 1)[-1]
        if include and not any(
            fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in include
        ):
            continue
        if exclude and any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in exclude):
            continue
        text = _git(repo, "show", f"{revision}:{path}")
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise RepoError(f"failed to unmarshal {path}: {exc}") from exc
        objects.extend(d for d in docs if isinstance(d, dict) and d.get("kind"))
    return objects


def is_subset(want: Any, have: Any) -> bool:
    """Whether every field of ``want`` is in ``have`` with the same value (pure)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and is_subset(v, have[k]) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return float(want) == float(have)
    return bool(want == have) or (str(want) == str(have) and not isinstance(want, bool))


def merge_patch_for(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None when equal)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None if old == new else new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        else:
            sub = merge_patch_for(old[key], value)
            if sub is not None or (old[key] != value and value is None):
                patch[key] = sub
    return patch or None


def deployment_health(obj: Obj) -> tuple[str, str]:
    """gitops-engine ``getDeploymentHealth`` (as ``kubectl rollout status``)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if spec.get("paused"):
        return "Suspended", "Deployment is paused"
    if int(meta(obj).get("generation", 0)) > int(status.get("observedGeneration", 0)):
        return (
            "Progressing",
            "Waiting for rollout to finish: observed deployment generation less than desired "
            "generation",
        )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return (
                "Degraded",
                f'Deployment "{meta(obj).get("name")}" exceeded its progress deadline',
            )
    replicas = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    waiting = "Waiting for rollout to finish:"
    if updated < replicas:
        return "Progressing", (
            f"{waiting} {updated} out of {replicas} new replicas have been updated..."
        )
    if total > updated:
        return "Progressing", f"{waiting} {total - updated} old replicas are pending termination..."
    if available < updated:
        return "Progressing", (
            f"{waiting} {available} of {updated} updated replicas are available..."
        )
    return "Healthy", ""


def sealed_secret_health(obj: Obj) -> tuple[str, str]:
    """ArgoCD's bundled ``resource_customizations/bitnami.com/SealedSecret/health.lua``."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Synced" and cond.get("status") == "False":
            return "Degraded", str(cond.get("message") or "")
        if cond.get("type") == "Synced" and cond.get("status") == "True":
            return "Healthy", str(cond.get("message") or "")
    return "Progressing", "Waiting for Sealed Secret to be decrypted"


def worst(statuses: list[str]) -> str:
    return max(statuses, key=HEALTH_ORDER.index) if statuses else "Healthy"


class ArgoCDController(Controller):
    name = "argocd"
    workers = 4  # applications are reconciled in parallel, as ArgoCD's processors do

    def __init__(
        self,
        kubeconfig: Path,
        *,
        namespace: str = "argocd",
        version: str = "3.6",
        poll_s: float | None = None,
        jitter_s: float | None = None,
        sync_s: float = 3.0,
        time_scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.version = parse_version(version)  # a bad setting fails before any connection
        super().__init__(kubeconfig)
        self.namespace = namespace
        default_poll, default_jitter = default_polling(self.version)
        self.poll_s = default_poll if poll_s is None else poll_s
        self.jitter_s = default_jitter if jitter_s is None else jitter_s
        self.sync_s = sync_s
        self.time_scale = time_scale
        self._random = random.Random(seed)  # noqa: S311 - jitter, not crypto
        self._lock = threading.Lock()
        self._apps: dict[tuple[str, str], _AppState] = {}
        self._destinations: dict[tuple[str, str], str] = {}
        self._rendered: dict[tuple[str, str, str], list[Obj]] = {}
        self.sync_errors: dict[str, str] = {}
        self.degraded: dict[str, str] = {}
        # app -> how many more repo-server reads fail (a hiccup; see _compare)
        self.repo_hiccups: dict[str, int] = {}
        # --repo-error-grace-period-seconds: defaultAppResyncPeriod + jitter = 180 s (3.x),
        # defaultAppResyncPeriod = 180 s (2.x): cmd/argocd-application-controller
        self.repo_error_grace_s = 180.0
        self.syncs = 0

    # -- fault hooks -----------------------------------------------------------------------------

    def stuck(self, app: str) -> None:
        """The app keeps comparing the revision it has now and never picks up new commits."""
        state = self._apps.setdefault((self.namespace, app), _AppState())
        state.pinned = state.revision or "HEAD"

    def unstick(self, app: str) -> None:
        state = self._apps.setdefault((self.namespace, app), _AppState())
        state.pinned = None
        self.queue.add((self.namespace, app))

    def refresh(self, app: str) -> None:
        """Re-evaluate now (as if a watch event arrived)."""
        self.queue.add((self.namespace, app))

    # -- loop ------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.informer(APPLICATION, self._on_app, namespace=self.namespace)
        self.informer(DEPLOYMENT, self._on_resource)
        self.informer(SEALED_SECRET, self._on_resource)

    def _on_app(self, etype: str, obj: Obj) -> None:
        key = (str(meta(obj).get("namespace")), str(meta(obj).get("name")))
        if etype == "DELETED":
            with self._lock:
                self._destinations.pop(key, None)
            return
        dest = ((obj.get("spec") or {}).get("destination") or {}).get("namespace") or ""
        with self._lock:
            self._destinations[key] = str(dest)
        self.queue.add(key)

    def _on_resource(self, etype: str, obj: Obj) -> None:
        namespace = str(meta(obj).get("namespace"))
        with self._lock:
            keys = [k for k, dest in self._destinations.items() if dest == namespace]
        for key in keys:
            self.queue.add(key, after=0.01)

    def _poll_interval(self) -> float:
        return (self.poll_s + self._random.uniform(0, self.jitter_s)) * self.time_scale

    def reconcile(self, key: Any) -> None:
        namespace, name = key
        app = self.kube.get(APPLICATION, namespace, name)
        if app is None:
            self._apps.pop(key, None)
            return
        annotations = meta(app).get("annotations") or {}
        if _go_bool(annotations.get(SKIP_RECONCILE_ANNOTATION)):
            # argo-cd controller/appcontroller.go canProcessApp: skip-reconcile "true" (Go
            # strconv.ParseBool) -> the app is not processed at all: no compare, no sync.
            return
        state = self._apps.setdefault(key, _AppState())
        old_status = app.get("status") or {}
        status: Obj = _deep_copy(old_status)
        top: Obj = {}  # top-level merge patch fields besides status
        now = time.monotonic()
        spec = app.get("spec") or {}
        windows = self._sync_windows(app)

        compare = False
        if state.op is not None and now >= state.op.due:
            if self._window_blocks(app, windows, manual=not state.op.automated):
                # argo-cd controller/sync.go SyncAppState: syncWindowPreventsSync -> the
                # operation stays Running with this message until the window allows it.
                (status.get("operationState") or {})["message"] = (
                    "Sync operation blocked by sync window"
                )
                state.op.due = now + self._poll_interval() / 4
            else:
                self._finish_operation(app, state, status, top)
                compare = True
        elif state.op is None and isinstance(app.get("operation"), dict):
            self._start_operation(app, state, status, app["operation"], automated=False)
        refresh_requested = REFRESH_ANNOTATION in annotations
        if refresh_requested:
            if self.version < (3, 6):
                # argo-cd controller/appcontroller.go (v3.5) persistReconciliationStatus: the
                # refresh annotation is deleted in the status patch, even when a new refresh
                # was requested meanwhile (that one is lost until the next poll).
                top["metadata"] = {"annotations": {REFRESH_ANNOTATION: None}}
            compare = True
        if now >= state.next_poll or not state.revisions:
            compare = True
        sources_now = json.dumps(app_sources(app), sort_keys=True, default=str)
        if state.compared_sources and sources_now != state.compared_sources:
            # argo-cd controller/appcontroller.go needRefreshAppStatus: "spec.source differs"
            # (or "at least one of the spec.sources differs") -> compare at once
            compare = True
        ignored = False
        if compare:
            ignored = self._compare(app, state, status, refreshed=refresh_requested)
            state.compared_sources = sources_now
            state.next_poll = now + self._poll_interval()
        self._diff_live(app, state, status)
        automated = (spec.get("syncPolicy") or {}).get("automated") or {}
        auto = is_auto_sync_enabled(spec, self.version)
        # argo-cd controller/appcontroller.go processAppRefreshQueueItem: autoSync runs only when
        # project.Spec.SyncWindows.Matches(app).CanSync(false) allows it.
        can_auto_sync = not self._window_blocks(app, windows, manual=False)
        compared = compare and not ignored
        if compared and auto and can_auto_sync and state.op is None and not app.get("operation"):
            self._auto_sync(app, state, status, top, automated)
        if state.op is None and "operation" not in top and app.get("operation") is None:
            _set_condition(status, "SyncError", self._sync_error_message(state))
        else:
            # Upstream autoSync returns no condition while an operation is in progress
            # ("Skipping auto-sync: another operation is in progress"), which clears SyncError.
            _set_condition(status, "SyncError", "")
        patch = merge_patch_for(old_status, status)
        body = dict(top)
        if patch is not None:
            body["status"] = patch
        if body:
            self.kube.patch(APPLICATION, namespace, name, body)
        if refresh_requested and self.version >= (3, 6) and self._consume_refresh(app):
            state.next_poll = 0.0  # a new refresh arrived while this one ran: compare again
        waits = [max(0.01, state.next_poll - time.monotonic())]
        if state.op is not None:
            waits.append(max(0.0, state.op.due - time.monotonic()))
        self.queue.add(key, after=min(waits))

    def _sync_error_message(self, state: _AppState) -> str:
        """controller/appcontroller.go autoSync, a failed attempt at the compared revision(s):
        "Failed sync attempt to <sha>: ..." before 3.2, "Failed last sync attempt to [<sha>]:
        ..." (Go's %s of the revisions slice) from v3.2.0."""
        attempt = ",".join(state.revisions)
        if not (state.attempted and not state.attempt_ok and state.attempted == attempt):
            return ""
        if self.version < (3, 2):
            return f"Failed sync attempt to {state.revision}: {state.attempt_message}"
        listed = " ".join(state.revisions)
        return f"Failed last sync attempt to [{listed}]: {state.attempt_message}"

    def _consume_refresh(self, app: Obj, *, retry: bool = True) -> bool:
        """Remove the refresh annotations of the request this reconcile served (3.6+).

        argo-cd controller/appcontroller.go handleRefreshAnnotation / removeRefreshAnnotationCombo:
        one JSON patch that tests ``refresh-timestamp`` against the value read at the start of
        the reconcile, then removes it and ``refresh``. A 422 (the timestamp changed: a new
        request arrived meanwhile) leaves both for the next reconcile. Returns True then."""
        annotations = meta(app).get("annotations") or {}
        ops: list[Obj] = []
        stamp = annotations.get(REFRESH_TIMESTAMP_ANNOTATION)
        if stamp is not None:
            path = "/metadata/annotations/" + _rfc6901(REFRESH_TIMESTAMP_ANNOTATION)
            ops += [{"op": "test", "path": path, "value": stamp}, {"op": "remove", "path": path}]
        if REFRESH_ANNOTATION in annotations:
            path = "/metadata/annotations/" + _rfc6901(REFRESH_ANNOTATION)
            ops.append({"op": "remove", "path": path})
        if not ops:
            return False
        name, namespace = str(meta(app).get("name")), str(meta(app).get("namespace"))
        try:
            self.kube.json_patch(APPLICATION, namespace, name, list(ops))
        except ApiException as exc:
            if exc.status != 422 or not retry:
                raise
            now = self.kube.get(APPLICATION, namespace, name) or {}
            fresh = meta(now).get("annotations") or {}
            if REFRESH_ANNOTATION in fresh and fresh.get(REFRESH_TIMESTAMP_ANNOTATION) != stamp:
                log.info("argocd: %s: a new refresh arrived while processing", name)
                return True
            # something else changed (e.g. the annotation was removed): retry on what is there
            return self._consume_refresh(now, retry=False)
        return False

    def _sync_windows(self, app: Obj) -> list[Obj]:
        """The sync windows of the app's AppProject (``spec.syncWindows``)."""
        project = str((app.get("spec") or {}).get("project") or "default")
        obj = self.kube.get(APP_PROJECT, str(meta(app).get("namespace")), project) or {}
        windows = (obj.get("spec") or {}).get("syncWindows") or []
        return [w for w in windows if isinstance(w, dict)]

    def _window_blocks(self, app: Obj, windows: list[Obj], *, manual: bool) -> bool:
        return not can_sync(windows, app, manual=manual, now=datetime.now(UTC))

    # -- comparison ------------------------------------------------------------------------------

    def _render(self, repo: Path, revision: str, source: Obj) -> list[Obj]:
        """``render_manifests``, cached per commit and source like ArgoCD's repo-server caches
        generated manifests per revision (a commit's content never changes)."""
        key = (str(repo), revision, json.dumps(source, sort_keys=True, default=str))
        with self._lock:
            cached = self._rendered.get(key)
        if cached is None:
            cached = render_manifests(repo, revision, source)
            with self._lock:
                self._rendered[key] = cached
                while len(self._rendered) > 64:
                    self._rendered.pop(next(iter(self._rendered)))
        return _deep_copy(cached)  # type: ignore[no-any-return]

    def _compare(self, app: Obj, state: _AppState, status: Obj, *, refreshed: bool) -> bool:
        """Resolve every source's targetRevision and render it. Returns True when a repo error
        is ignored (the reconcile leaves the status as it was).

        argo-cd controller/state.go CompareAppState: a repo error is ignored (and remembered in
        repoErrorCache) on its first occurrence and within the grace period after it, unless
        the comparison was requested by a refresh (``noRevisionCache``): then it shows at once
        as ``ComparisonError`` and sync status Unknown. A successful read forgets it."""
        sources, multi = app_sources(app)
        name = str(meta(app).get("name"))
        revisions: list[str] = []
        manifests: list[Obj] = []
        try:
            for i, source in enumerate(sources):
                self._maybe_hiccup(name)
                target = str(source.get("targetRevision") or "HEAD")
                pinned = state.pinned if i == 0 and not multi else None
                repo = repo_path(str(source.get("repoURL") or ""))
                revision = resolve_revision(repo, pinned or target)
                if i == 0 and state.pinned == "HEAD":
                    state.pinned = revision
                revisions.append(revision)
                manifests.extend(self._render(repo, revision, source))
        except RepoError as exc:
            now = time.monotonic()
            if not refreshed:
                since = state.repo_error_since
                if since is None or now - since <= self.repo_error_grace_s * self.time_scale:
                    if since is None:
                        state.repo_error_since = now
                    log.info("argocd: %s: ignoring repo error (grace period): %s", name, exc)
                    return True
            state.comparison_error = (
                "Failed to load target state: failed to generate manifest for source "
                f"{len(revisions) + 1} of {len(sources)}: rpc error: code = Unknown desc = {exc}"
            )
            log.info("argocd: %s: comparison error: %s", name, exc)
        else:
            state.repo_error_since = None
            state.comparison_error = ""
            state.revisions = revisions
            state.manifests = manifests
        status["reconciledAt"] = now_rfc3339()
        _set_condition(status, "ComparisonError", state.comparison_error)
        return False

    def _maybe_hiccup(self, name: str) -> None:
        """The ``repo_hiccups`` fault: this repo-server call fails, as when it restarts."""
        if self.repo_hiccups.get(name, 0) > 0:
            self.repo_hiccups[name] -= 1
            raise RepoError(
                "rpc error: code = Unavailable desc = connection error: dial tcp "
                "argocd-repo-server:8081: connect: connection refused (injected)"
            )

    def _target_namespace(self, app: Obj, obj: Obj) -> str:
        dest = ((app.get("spec") or {}).get("destination") or {}).get("namespace") or ""
        return str(meta(obj).get("namespace") or dest)

    def _diff_live(self, app: Obj, state: _AppState, status: Obj) -> None:
        """Sync status and health of the live objects against the last rendered manifests."""
        spec = app.get("spec") or {}
        source = spec.get("source") or {}
        resources: list[Obj] = []
        healths: list[str] = []
        messages: list[str] = []
        in_sync = True
        for manifest in state.manifests:
            ns = self._target_namespace(app, manifest)
            name = str(meta(manifest).get("name"))
            try:
                kind = kind_of(manifest)
                live = self.kube.get(kind, ns, name)
            except ValueError:
                live = None
            want = {k: v for k, v in manifest.items() if k != "status"}
            synced = live is not None and is_subset(_without_ns(want), live)
            in_sync = in_sync and synced
            if live is None:
                health, message = "Missing", ""
            elif manifest.get("kind") == "Deployment":
                health, message = deployment_health(live)
            elif manifest.get("kind") == "SealedSecret":
                health, message = sealed_secret_health(live)
            else:
                health, message = "Healthy", ""
            healths.append(health)
            if message and health != "Healthy":
                messages.append(message)
            group, _, version = str(manifest.get("apiVersion")).rpartition("/")
            entry: Obj = {
                "group": group,
                "version": version,
                "kind": manifest.get("kind"),
                "namespace": ns,
                "name": name,
                "status": "Synced" if synced else "OutOfSync",
                "health": {"status": health, **({"message": message} if message else {})},
            }
            if not group:
                entry.pop("group")
            resources.append(entry)
        app_name = str(meta(app).get("name"))
        if app_name in self.degraded:
            healths.append("Degraded")
            messages.insert(0, self.degraded[app_name])
        health = worst(healths)
        status["health"] = {"status": health}
        if health != "Healthy" and messages:
            status["health"]["message"] = messages[0]
        status["resources"] = resources
        sync_status = (
            "Unknown" if state.comparison_error else ("Synced" if in_sync else "OutOfSync")
        )
        sources, multi = app_sources(app)
        compared: Obj = {"destination": _deep_copy(spec.get("destination") or {})}
        status["sync"] = {"status": sync_status, "comparedTo": compared}
        if multi:
            # types.go SyncStatus.Revisions / ComparedTo.Sources: one entry per spec.sources
            compared["sources"] = _deep_copy(sources)
            if state.revisions:
                status["sync"]["revisions"] = list(state.revisions)
        else:
            compared["source"] = _deep_copy(source)
            if state.revision:
                status["sync"]["revision"] = state.revision
        status["sourceType"] = "Directory"

    # -- sync operations -------------------------------------------------------------------------

    def _auto_sync(self, app: Obj, state: _AppState, status: Obj, top: Obj, automated: Obj) -> None:
        if state.comparison_error or (status.get("sync") or {}).get("status") != "OutOfSync":
            return
        attempt = ",".join(state.revisions)
        if state.attempted == attempt and not (automated.get("selfHeal") and state.attempt_ok):
            return  # alreadyAttemptedSync: a failed attempt is reported as SyncError
        sources, multi = app_sources(app)
        # argo-cd controller/appcontroller.go autoSync: Revision, or for multi-source Revisions
        # (syncStatus.Revisions) with Sources
        sync: Obj = (
            {"revisions": list(state.revisions), "sources": _deep_copy(sources)}
            if multi
            else {"revision": state.revision}
        )
        operation = {"sync": sync, "initiatedBy": {"automated": True}, "retry": {"limit": 5}}
        top["operation"] = operation
        self._start_operation(app, state, status, operation, automated=True)

    def _start_operation(
        self, app: Obj, state: _AppState, status: Obj, operation: Obj, *, automated: bool
    ) -> None:
        """controller/sync.go newSyncOperationResult: the operation's revision(s), each source's
        targetRevision where none is given (state.go CompareAppState: a ``revisions`` list of
        another length than ``spec.sources`` is replaced by the targetRevisions)."""
        sources, multi = app_sources(app)
        sync = operation.get("sync") or {}
        if multi:
            asked = [str(r) for r in sync.get("revisions") or []]
            if len(asked) != len(sources):
                asked = [str(src.get("targetRevision") or "HEAD") for src in sources]
        else:
            asked = [str(sync.get("revision") or sources[0].get("targetRevision") or "HEAD")]
        started = now_rfc3339()
        revisions: list[str] = []
        for source, wanted in zip(sources, asked, strict=True):
            try:
                revisions.append(
                    resolve_revision(repo_path(str(source.get("repoURL") or "")), wanted)
                )
            except RepoError:
                revisions.append(wanted)
        state.op = _Op(
            operation=_deep_copy(operation),
            revisions=revisions,
            started_at=started,
            due=time.monotonic() + self.sync_s * self.time_scale,
            automated=automated,
        )
        status["operationState"] = {
            "operation": _deep_copy(operation),
            "phase": "Running",
            "message": "one or more tasks are running",
            "startedAt": started,
            "syncResult": _sync_result(sources, multi, revisions),
        }
        log.info("argocd: %s: sync to %s started", meta(app).get("name"), _short(revisions))

    def _finish_operation(self, app: Obj, state: _AppState, status: Obj, top: Obj) -> None:
        op = state.op
        assert op is not None
        state.op = None
        app_name = str(meta(app).get("name"))
        sources, multi = app_sources(app)
        results: list[Obj] = []
        phase, message = "Succeeded", "successfully synced (all tasks run)"
        if app_name in self.sync_errors:
            phase = "Failed"
            message = f"one or more objects failed to apply, reason: {self.sync_errors[app_name]}"
        else:
            try:
                resolved: list[str] = []
                manifests: list[Obj] = []
                for source, wanted in zip(sources, op.revisions, strict=True):
                    repo = repo_path(str(source.get("repoURL") or ""))
                    resolved.append(resolve_revision(repo, wanted))
                    manifests.extend(self._render(repo, resolved[-1], source))
            except (RepoError, ValueError) as exc:
                phase = "Error"
                message = f"ComparisonError: {exc}"
            else:
                op.revisions = resolved
                try:
                    for manifest in manifests:
                        results.append(self._apply(app, manifest))
                except Exception as exc:
                    phase = "Failed"
                    message = f"one or more objects failed to apply, reason: {exc}"
        finished = now_rfc3339()
        state.attempted = ",".join(op.revisions)
        state.attempt_ok = phase == "Succeeded"
        state.attempt_message = message
        self.syncs += 1
        status["operationState"] = {
            "operation": op.operation,
            "phase": phase,
            "message": message,
            "startedAt": op.started_at,
            "finishedAt": finished,
            "syncResult": {**_sync_result(sources, multi, op.revisions), "resources": results},
        }
        if phase == "Succeeded":
            history = list(status.get("history") or [])
            history.append(
                {
                    "id": (history[-1]["id"] + 1) if history else 0,
                    **_sync_result(sources, multi, op.revisions),
                    "deployStartedAt": op.started_at,
                    "deployedAt": finished,
                    "initiatedBy": op.operation.get("initiatedBy") or {},
                }
            )
            status["history"] = history[-10:]
        top["operation"] = None
        log.info("argocd: %s: sync to %s %s", app_name, _short(op.revisions), phase)

    def _apply(self, app: Obj, manifest: Obj) -> Obj:
        """``kubectl apply`` of one object: create, or patch just the manifest's fields."""
        kind = kind_of(manifest)
        ns = self._target_namespace(app, manifest)
        name = str(meta(manifest).get("name"))
        body = _deep_copy({k: v for k, v in manifest.items() if k != "status"})
        m = meta(body)
        if kind.namespaced:
            m["namespace"] = ns
        m.setdefault("labels", {})[INSTANCE_LABEL] = str(meta(app).get("name"))
        live = self.kube.get(kind, ns, name)
        if live is None:
            self.kube.create(kind, ns, body)
            outcome = "created"
        else:
            after = self.kube.patch(kind, ns, name, body, strategic=not kind.custom)
            same = meta(after).get("resourceVersion") == meta(live).get("resourceVersion")
            outcome = "unchanged" if same else "configured"
        group, _, version = kind.api_version.rpartition("/")
        return {
            "group": group,
            "version": version,
            "kind": kind.kind,
            "namespace": ns,
            "name": name,
            "status": "Synced",
            "message": f"{kind.kind.lower()}.{group or 'core'}/{name} {outcome}",
            "hookPhase": "Running",
            "syncPhase": "Sync",
        }


# --- sync windows: argo-cd pkg/apis/application/v1alpha1/types.go (SyncWindows) ----------------
# Written from upstream apart from rotator's client (which has its own reading), so that the
# stand-in can catch the client's mistakes.

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_NAMES = {**{m: i + 1 for i, m in enumerate(_MONTHS)}, **{d: i for i, d in enumerate(_DAYS)}}
_CRON_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _cron_field(text: str, low: int, high: int) -> set[int]:
    """robfig/cron parser.go getField: lists of ``*``, ``n``, ``a-b``, each with ``/step``."""
    values: set[int] = set()
    for part in text.lower().split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if spec in ("*", "?"):
            start, end = low, high
        else:
            a, _, b = spec.partition("-")
            start = int(_CRON_NAMES.get(a, a))
            end = int(_CRON_NAMES.get(b, b)) if b else (high if step_text else start)
        if start < low or end > high or start > end or step < 1:
            raise ValueError(f"cron field {part!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _cron_fires_at(schedule: str, at: datetime) -> bool:
    """Whether a 5-field schedule fires at minute ``at`` (robfig/cron spec.go ``dayMatches``:
    day of month and day of week are ANDed when either is ``*``, else ORed)."""
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"cron schedule {schedule!r} has {len(fields)} fields, not 5")
    sets = [_cron_field(f, lo, hi) for f, (lo, hi) in zip(fields, _CRON_BOUNDS, strict=True)]
    minute, hour, dom, month, dow = sets
    dom_ok, dow_ok = at.day in dom, (at.isoweekday() % 7) in dow
    star = fields[2].startswith(("*", "?")) or fields[4].startswith(("*", "?"))
    day_ok = (dom_ok and dow_ok) if star else (dom_ok or dow_ok)
    return at.minute in minute and at.hour in hour and at.month in month and day_ok


def window_is_active(window: Obj, now: datetime) -> bool:
    """``SyncWindow.active``: the schedule fired within the last ``duration`` (in the window's
    ``timeZone``; an unknown zone is UTC, ``scheduleOffsetByTimeZone``). ValueError when the
    schedule or the duration cannot be read."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str(window.get("duration") or ""))
    if not match or not any(match.groups()):
        raise ValueError(f"cannot parse duration {window.get('duration')!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    duration = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    try:
        zone: tzinfo = ZoneInfo(str(window.get("timeZone") or "UTC"))
    except (KeyError, ValueError):
        zone = UTC
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    schedule = str(window.get("schedule") or "")
    steps = int(duration.total_seconds() // 60) + 1
    # activations in (now - duration, now]: walk back minute by minute (cron's resolution)
    return any(
        _cron_fires_at(schedule, local - timedelta(minutes=i))
        and local - timedelta(minutes=i) > now.astimezone(zone) - duration
        for i in range(steps)
    )


def _window_applies(window: Obj, app: Obj) -> bool:
    """``SyncWindows.Matches``: applications, clusters or namespaces (globs), OR unless
    ``andOperator``."""
    spec = app.get("spec") or {}
    dest = spec.get("destination") or {}
    checks: list[bool] = []
    if window.get("applications"):
        name = str(meta(app).get("name"))
        checks.append(any(fnmatch.fnmatchcase(name, p) for p in window["applications"]))
    if window.get("clusters"):
        targets = [str(dest.get(k)) for k in ("name", "server") if dest.get(k)]
        checks.append(any(fnmatch.fnmatchcase(t, c) for c in window["clusters"] for t in targets))
    if window.get("namespaces"):
        ns = str(dest.get("namespace") or "")
        checks.append(any(fnmatch.fnmatchcase(ns, n) for n in window["namespaces"]))
    if not checks:
        return False
    return all(checks) if window.get("andOperator") else any(checks)


def can_sync(windows: list[Obj], app: Obj, *, manual: bool, now: datetime) -> bool:
    """``SyncWindows.CanSync`` for the app's matching windows, no operation overrun. A window
    that cannot be read blocks (upstream ignores the error and sees false)."""
    matching = [w for w in windows if _window_applies(w, app)]
    if not matching:
        return True
    try:
        active = [w for w in matching if window_is_active(w, now)]
    except ValueError:
        return False
    denies = [w for w in active if w.get("kind") == "deny"]
    if denies:
        return manual and all(w.get("manualSync") for w in denies)
    if any(w.get("kind") == "allow" for w in active):
        return True
    inactive_allows = [w for w in matching if w.get("kind") == "allow" and w not in active]
    if inactive_allows:
        return manual and all(w.get("manualSync") for w in inactive_allows)
    return True


def app_sources(app: Obj) -> tuple[list[Obj], bool]:
    """argo-cd types.go ``ApplicationSpec.GetSources``/``HasMultipleSources``: ``spec.sources``
    when set (multi-source), else the one ``spec.source``."""
    spec = app.get("spec") or {}
    sources = [s for s in spec.get("sources") or [] if isinstance(s, dict)]
    if sources:
        return sources, True
    return [spec.get("source") or {}], False


def _go_bool(value: Any) -> bool:
    """Go ``strconv.ParseBool`` true values (anything unparseable is not true)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _rfc6901(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _sync_result(sources: list[Obj], multi: bool, revisions: list[str]) -> Obj:
    """types.go SyncOperationResult / RevisionHistory: revision + source, or for a
    multi-source app revisions + sources (paired one-to-one)."""
    if multi:
        return {"revisions": list(revisions), "sources": _deep_copy(sources)}
    return {"revision": revisions[0] if revisions else "", "source": _deep_copy(sources[0])}


def _short(revisions: list[str]) -> str:
    return ",".join(r[:12] for r in revisions)


def _set_condition(status: Obj, ctype: str, message: str) -> None:
    """Set (message non-empty) or clear an application condition of this type."""
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != ctype]
    existing = next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)
    if message:
        if existing is not None and existing.get("message") == message:
            conditions.append(existing)
        else:
            conditions.append(
                {"type": ctype, "message": message, "lastTransitionTime": now_rfc3339()}
            )
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def _without_ns(obj: Obj) -> Obj:
    out = dict(obj)
    m = dict(out.get("metadata") or {})
    m.pop("namespace", None)
    out["metadata"] = m
    return out


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj
