"""`rotator status`: one table of where each environment stands; changes nothing.

Each cell is read independently, so a broken system shows as an error in its cell instead of
hiding the rest. The Secret itself is not read here: the SealedSecret's status says whether the
controller unsealed the recorded key (only the run's unseal wait, where that status is stale,
reads the Secret's metadata: ``Kube.secret_fingerprint``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rotator.clock import SystemClock
from rotator.config import Config, RunSwitches
from rotator.contract import EnvStatusDoc, LockDoc, StatusDoc
from rotator.errors import GitError, RotatorError
from rotator.interrupts import StopSignals
from rotator.names import FINGERPRINT_ANNOTATION, TRAILER_KEY_FINGERPRINT, TRAILER_RUN_ID
from rotator.redact import scrub
from rotator.report import RunReport
from rotator.runner import Clients, build_clients, verify_only

if TYPE_CHECKING:
    from rotator.clients.gitrepo import OpsRepo

T = TypeVar("T")


StatusRow = EnvStatusDoc  # one environment's row (the contract's model)


def _cell(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except RotatorError as exc:
        return f"error: {scrub(str(exc))[:120]}"


def ensure_known_envs(config: Config, envs: tuple[str, ...]) -> None:
    """An unknown ``--env`` is a config error (exit 2), never an empty table."""
    for name in envs:
        config.env(name)


def read_lock(config: Config, clients: Clients, *, now: datetime) -> LockDoc:
    """The run lock: a live holder means a rotation is running, and names its run id."""
    lock = config.lock
    try:
        lease = clients.kube.get_lease(lock.namespace, lock.name)
    except RotatorError as exc:
        return LockDoc(
            namespace=lock.namespace,
            name=lock.name,
            held=False,
            holder=None,
            error=scrub(str(exc))[:200],
        )
    if lease is None:
        return LockDoc(namespace=lock.namespace, name=lock.name, held=False, holder=None)
    return LockDoc(
        namespace=lock.namespace,
        name=lock.name,
        held=bool(lease.holder) and not lease.is_expired(now),
        holder=lease.holder or None,
        renewed_at=lease.renewed_at,
        expires_at=lease.expires_at(),
    )


def _open_repo(config: Config, clients: Clients) -> tuple[OpsRepo, Path]:
    """The configured checkout, or a fresh one while a running rotation holds it (its file
    lock): status reads git as it is on the remote either way."""
    workdir = config.git.workdir or Path(tempfile.mkdtemp(prefix="rotator-status-"))
    try:
        return clients.open_repo(workdir), workdir
    except GitError:
        if config.git.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    fresh = Path(tempfile.mkdtemp(prefix="rotator-status-"))
    try:
        return clients.open_repo(fresh), fresh
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def collect_status_doc(config: Config, *, envs: tuple[str, ...] = ()) -> StatusDoc:
    """``rotator status``: every environment's row and the run lock."""
    ensure_known_envs(config, envs)
    clock = SystemClock()
    clients = build_clients(config, clock=clock)
    rows = collect_status(config, envs=envs, clients=clients)
    return StatusDoc(
        in_sync=all(r.in_sync for r in rows),
        lock=read_lock(config, clients, now=clock.now()),
        environments=rows,
    )


def collect_status(
    config: Config, *, envs: tuple[str, ...] = (), clients: Clients | None = None
) -> list[StatusRow]:
    from rotator.clients.sealing import read_sealed_file

    ensure_known_envs(config, envs)
    clients = clients or build_clients(config, clock=SystemClock())
    rows: list[StatusRow] = []
    repo: OpsRepo | None = None
    workdir: Path | None = None
    try:
        repo_error = ""
        try:
            repo, workdir = _open_repo(config, clients)
        except RotatorError as exc:
            repo_error = f"error: {scrub(str(exc))[:120]}"
        keys: dict[int, str] = {}
        for name in config.env_names():
            if envs and name not in envs:
                continue
            cfg = config.environments[name]
            pid = cfg.posthog_project_id
            if pid not in keys:
                keys[pid] = _cell(
                    lambda pid=pid: clients.posthog.get_project(pid).api_token.fingerprint  # type: ignore[misc]
                )

            def git_cell(path: str = cfg.sealed_file) -> str:
                if repo is None:
                    return repo_error
                text = repo.read_file(path)
                if text is None:
                    return "no sealed file"
                return read_sealed_file(text, path=path).fingerprint or "no fingerprint"

            def sealed_cell(ns: str = cfg.namespace, n: str = cfg.secret_name) -> str:
                state = clients.kube.get_sealed_secret(ns, n)
                if state is None:
                    return "missing"
                trusted = state.observed_generation == state.generation
                synced = (
                    "unsealed"
                    if state.synced and trusted
                    else (f"NOT unsealed: {state.message or 'pending'}")
                )
                return f"{state.template_fingerprint or 'no fingerprint'} ({synced})"

            def argocd_cell(
                ns: str = cfg.argocd_app.namespace, n: str = cfg.argocd_app.name
            ) -> str:
                app = clients.argocd.get_app(ns, n)
                if app is None:
                    return "missing"
                rev = (app.sync_revision or "?")[:12]
                return f"{app.sync_status}/{app.health} at {rev}"

            def rollout_cell(ns: str = cfg.namespace, n: str = cfg.deployment) -> str:
                dep = clients.kube.get_deployment(ns, n)
                if dep is None:
                    return "missing"
                done, why = clients.kube.is_rolled_out(dep)
                fp = dep.template_annotations.get(FINGERPRINT_ANNOTATION, "unknown key")
                return f"{fp}, {'rolled out' if done else why}"

            def last_cell(path: str = cfg.sealed_file) -> str:
                if repo is None:
                    return repo_error
                for commit in repo.history(path, max_count=20):
                    if TRAILER_KEY_FINGERPRINT in commit.trailers:
                        return (
                            f"{commit.authored_at:%Y-%m-%d %H:%M} "
                            f"{commit.trailers.get(TRAILER_RUN_ID, '?')}"
                        )
                return "never by rotator"

            cells = {
                "posthog": keys[pid],
                "git": _cell(git_cell),
                "sealed_secret": _cell(sealed_cell),
                "argocd": _cell(argocd_cell),
                "rollout": _cell(rollout_cell),
            }
            rows.append(
                StatusRow(
                    env=name,
                    project=str(pid),
                    in_sync=is_in_sync(cells),
                    last_rotation=_cell(last_cell),
                    **cells,
                )
            )
    finally:
        if repo is not None:
            repo.close()  # releases the checkout's lock file
        if workdir is not None and workdir != config.git.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def is_in_sync(cells: dict[str, str]) -> bool:
    """PURE: PostHog's key is known and git, the SealedSecret (unsealed) and the pods have it."""
    key = cells["posthog"]
    return (
        key.startswith("sha256:")
        and cells["git"] == key
        and cells["sealed_secret"] == f"{key} (unsealed)"
        and cells["rollout"] == f"{key}, rolled out"
    )


def lock_line(lock: LockDoc | None) -> str:
    if lock is None:
        return "run lock: not read"
    where = f"Lease {lock.namespace}/{lock.name}"
    if lock.error:
        return f"run lock: cannot read {where}: {lock.error}"
    if lock.held:
        until = f", expires {lock.expires_at:%Y-%m-%d %H:%M:%S %Z}" if lock.expires_at else ""
        return (
            f"ROTATION IN PROGRESS: run {lock.holder} holds {where}{until}; "
            "what follows may be mid-rotation"
        )
    last = f" (last holder {lock.holder})" if lock.holder else ""
    return f"run lock: free ({where}){last}"


def status_text(doc: StatusDoc) -> str:
    lines = [lock_line(doc.lock)]
    for row in doc.environments:
        data = row.model_dump()
        lines.append(
            f"{row.env} (PostHog project {row.project}): "
            f"{'in sync' if row.in_sync else 'NOT in sync'}"
        )
        for key in ("posthog", "git", "sealed_secret", "argocd", "rollout", "last_rotation"):
            lines.append(f"  {key.replace('_', ' '):<14} {data[key]}")
    return "\n".join(lines)


def render_status(doc: StatusDoc, *, output: str = "text") -> str:
    """``rotator status -o text|json|yaml``."""
    if output == "json":
        return json.dumps(doc.model_dump(mode="json"), indent=2)
    if output == "yaml":
        import yaml

        return yaml.safe_dump(doc.model_dump(mode="json"), sort_keys=False).rstrip("\n")
    return status_text(doc)


def verify_current_key(
    config: Config, switches: RunSwitches, *, signals: StopSignals | None = None
) -> RunReport:
    return verify_only(config, switches, signals=signals)
