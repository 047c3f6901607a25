"""`rotator status`: one table of where each environment stands; changes nothing.

Each cell is read independently, so a broken system shows as an error in its cell instead of
hiding the rest. The Secret itself is not read: the job has no `get` on Secrets by design (least
privilege); the SealedSecret's status says whether the controller unsealed the recorded key.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rotator.clock import SystemClock
from rotator.config import Config, RunSwitches
from rotator.errors import RotatorError
from rotator.redact import scrub
from rotator.report import RunReport
from rotator.runner import (
    DEPLOYMENT_FINGERPRINT_ANNOTATION,
    TRAILER_FINGERPRINT,
    TRAILER_RUN_ID,
    build_clients,
    verify_only,
)

if TYPE_CHECKING:
    from rotator.clients.gitrepo import OpsRepo

T = TypeVar("T")


@dataclass(frozen=True)
class StatusRow:
    env: str
    project: str
    posthog: str
    git: str
    sealed_secret: str
    argocd: str
    rollout: str
    last_rotation: str


def _cell(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except RotatorError as exc:
        return f"error: {scrub(str(exc))[:120]}"


def collect_status(config: Config, *, envs: tuple[str, ...] = ()) -> list[StatusRow]:
    from rotator.clients.sealing import read_sealed_file

    clock = SystemClock()
    clients = build_clients(config, clock=clock)
    workdir = config.git.workdir or Path(tempfile.mkdtemp(prefix="rotator-status-"))
    rows: list[StatusRow] = []
    repo: OpsRepo | None = None
    try:
        repo_error = ""
        try:
            repo = clients.open_repo(workdir)
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
                fp = dep.template_annotations.get(DEPLOYMENT_FINGERPRINT_ANNOTATION, "unknown key")
                return f"{fp}, {'rolled out' if done else why}"

            def last_cell(path: str = cfg.sealed_file) -> str:
                if repo is None:
                    return repo_error
                for commit in repo.history(path, max_count=20):
                    if TRAILER_FINGERPRINT in commit.trailers:
                        return (
                            f"{commit.authored_at:%Y-%m-%d %H:%M} "
                            f"{commit.trailers.get(TRAILER_RUN_ID, '?')}"
                        )
                return "never by rotator"

            rows.append(
                StatusRow(
                    env=name,
                    project=str(pid),
                    posthog=keys[pid],
                    git=_cell(git_cell),
                    sealed_secret=_cell(sealed_cell),
                    argocd=_cell(argocd_cell),
                    rollout=_cell(rollout_cell),
                    last_rotation=_cell(last_cell),
                )
            )
    finally:
        if repo is not None:
            repo.close()  # releases the checkout's lock file
        if config.git.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def status_table(rows: list[StatusRow], *, as_json: bool = False) -> str:
    if as_json:
        return json.dumps([asdict(r) for r in rows], indent=2)
    lines = []
    for row in rows:
        data = asdict(row)
        in_sync = row.posthog.startswith("sha256:") and all(
            str(data[k]).startswith(row.posthog) for k in ("git", "sealed_secret", "rollout")
        )
        lines.append(
            f"{row.env} (PostHog project {row.project}): {'in sync' if in_sync else 'NOT in sync'}"
        )
        for key in ("posthog", "git", "sealed_secret", "argocd", "rollout", "last_rotation"):
            lines.append(f"  {key.replace('_', ' '):<14} {data[key]}")
    return "\n".join(lines)


def verify_current_key(config: Config, switches: RunSwitches) -> RunReport:
    return verify_only(config, switches)
