"""The ops repository: a bare git repo on disk, pushed to by path or ``file://`` URL.

Real git, real protocol (``git push`` runs ``git-receive-pack`` against the path), no server.

Fault hooks:
- ``commit_directly(files, message)``: a colleague's commit lands on the remote now, so the
  next push of an older checkout is rejected as non-fast-forward.
- ``arm_concurrent_commit()``: the NEXT push is rejected by a pre-receive hook that first
  commits a change of ``CONCURRENT.md`` to the branch, exactly as if someone had pushed a
  moment earlier (after a fetch the retry succeeds).
- ``arm_commit_on_top(files)``: right after the NEXT push lands, a post-receive hook commits
  ``files`` on top of it, as if a colleague pushed a moment later (before anyone refreshed).
- ``reject_pushes(reason)`` / ``accept_pushes()``: every push is declined by the hook.
- ``unreachable()`` (context manager) or ``make_unreachable()`` / ``make_reachable()``: the
  repository directory is moved away, so fetch and push fail as for a remote that is down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

GIT_TIMEOUT_S = 30.0

_HOOK = """#!/bin/sh
# rotator sandbox: fault injection for pushes (see sandbox/src/rotator_sandbox/gitremote.py)
if [ -f "$GIT_DIR/sandbox-reject" ]; then
  cat "$GIT_DIR/sandbox-reject" >&2
  exit 1
fi
if [ -f "$GIT_DIR/sandbox-concurrent" ]; then
  rm -f "$GIT_DIR/sandbox-concurrent"
  # Objects written in pre-receive go to a quarantine that is dropped when the hook fails:
  # write the colleague's commit to the real object store instead.
  unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
  branch="refs/heads/$(cat "$GIT_DIR/sandbox-branch")"
  parent=$(git rev-parse "$branch") || exit 1
  export GIT_INDEX_FILE="$GIT_DIR/sandbox-index"
  git read-tree "$parent" || exit 1
  blob=$(date +%s%N | git hash-object -w --stdin) || exit 1
  git update-index --add --cacheinfo 100644 "$blob" CONCURRENT.md || exit 1
  tree=$(git write-tree) || exit 1
  rm -f "$GIT_INDEX_FILE"
  commit=$(GIT_AUTHOR_NAME=colleague GIT_AUTHOR_EMAIL=colleague@example.invalid \\
    GIT_COMMITTER_NAME=colleague GIT_COMMITTER_EMAIL=colleague@example.invalid \\
    git commit-tree "$tree" -p "$parent" -m "colleague: concurrent change") || exit 1
  git update-ref "$branch" "$commit" "$parent" || exit 1
  echo "rejected: $branch moved on (a concurrent commit landed first); fetch and retry" >&2
  exit 1
fi
exit 0
"""


_POST_HOOK = """#!/bin/sh
# rotator sandbox: a colleague's commit right after the next push (see rotator_sandbox/gitremote.py)
if [ -f "$GIT_DIR/sandbox-on-top" ]; then
  mv "$GIT_DIR/sandbox-on-top" "$GIT_DIR/sandbox-on-top.taken"
  branch="refs/heads/$(cat "$GIT_DIR/sandbox-branch")"
  parent=$(git rev-parse "$branch") || exit 0
  export GIT_INDEX_FILE="$GIT_DIR/sandbox-index-on-top"
  git read-tree "$parent" || exit 0
  while IFS="$(printf '\t')" read -r blob path; do
    git update-index --add --cacheinfo 100644 "$blob" "$path" || exit 0
  done < "$GIT_DIR/sandbox-on-top.taken"
  tree=$(git write-tree) || exit 0
  rm -f "$GIT_INDEX_FILE" "$GIT_DIR/sandbox-on-top.taken"
  commit=$(GIT_AUTHOR_NAME=colleague GIT_AUTHOR_EMAIL=colleague@example.invalid \\
    GIT_COMMITTER_NAME=colleague GIT_COMMITTER_EMAIL=colleague@example.invalid \\
    git commit-tree "$tree" -p "$parent" -m "colleague: a change on top") || exit 0
  git update-ref "$branch" "$commit" "$parent"
fi
exit 0
"""


def git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run git with a timeout; return stdout (raises CalledProcessError with stderr)."""
    full_env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "sandbox",
        "GIT_AUTHOR_EMAIL": "sandbox@example.invalid",
        "GIT_COMMITTER_NAME": "sandbox",
        "GIT_COMMITTER_EMAIL": "sandbox@example.invalid",
        **(env or {}),
    }
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=True,
    )
    return done.stdout


class GitRemote:
    """A bare repository at ``root / "ops.git"`` with a branch (default ``main``)."""

    def __init__(self, root: Path, *, branch: str = "main", name: str = "ops.git") -> None:
        self.root = root.absolute()
        self.branch = branch
        self.path = self.root / name
        self._offline = self.root / f"{name}.offline"

    @property
    def url(self) -> str:
        """``file://`` URL of the repository (a plain path works too: ``str(self.path)``)."""
        return self.path.absolute().as_uri()

    def create(self, files: Mapping[str, str], *, message: str = "Seed the ops repo") -> str:
        """Initialise the bare repo with one commit holding ``files``; return its sha."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raise FileExistsError(self.path)
        git("init", "--bare", "--quiet", f"--initial-branch={self.branch}", str(self.path))
        git("config", "receive.denyNonFastForwards", "true", cwd=self.path)
        (self.path / "sandbox-branch").write_text(self.branch)
        hook = self.path / "hooks" / "pre-receive"
        hook.write_text(_HOOK)
        hook.chmod(0o755)
        post = self.path / "hooks" / "post-receive"
        post.write_text(_POST_HOOK)
        post.chmod(0o755)
        with tempfile.TemporaryDirectory(prefix="ops-seed-") as tmp:
            work = Path(tmp)
            git("init", "--quiet", f"--initial-branch={self.branch}", str(work))
            _write(work, files)
            git("add", "--all", cwd=work)
            git("commit", "--quiet", "-m", message, cwd=work)
            git("push", "--quiet", str(self.path), f"HEAD:refs/heads/{self.branch}", cwd=work)
        return self.head()

    # -- reading -------------------------------------------------------------------------------

    def head(self, ref: str | None = None) -> str:
        return git("rev-parse", f"{ref or 'refs/heads/' + self.branch}^{{commit}}", cwd=self.path)[
            :40
        ]

    def read(self, path: str, *, rev: str | None = None) -> str:
        return git("show", f"{rev or self.head()}:{path}", cwd=self.path)

    def log(self, *, limit: int = 20) -> list[str]:
        """Subjects of the newest commits, newest first."""
        out = git("log", f"-{limit}", "--format=%s", self.branch, cwd=self.path)
        return out.splitlines()

    def files_changed(self, rev: str) -> list[str]:
        out = git("show", "--name-only", "--format=", rev, cwd=self.path)
        return [line for line in out.splitlines() if line]

    # -- writing and faults --------------------------------------------------------------------

    def commit_directly(
        self, files: Mapping[str, str], *, message: str = "colleague: concurrent change"
    ) -> str:
        """Commit ``files`` (path -> content) on top of the branch, as another pusher would."""
        with tempfile.TemporaryDirectory(prefix="ops-colleague-") as tmp:
            work = Path(tmp) / "w"
            git("clone", "--quiet", "--branch", self.branch, str(self.path), str(work))
            _write(work, files)
            git("add", "--all", cwd=work)
            git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
            self.accept_pushes_once_for(work)
        return self.head()

    def accept_pushes_once_for(self, work: Path) -> None:
        reject = self.path / "sandbox-reject"
        concurrent = self.path / "sandbox-concurrent"
        on_top = self.path / "sandbox-on-top"
        saved = [(p, p.read_text()) for p in (reject, concurrent, on_top) if p.exists()]
        for p, _ in saved:
            p.unlink()
        try:
            git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=work)
        finally:
            for p, text in saved:
                p.write_text(text)

    def arm_concurrent_commit(self) -> None:
        """The next push is rejected after a colleague's commit lands on the branch."""
        (self.path / "sandbox-concurrent").write_text("1")

    def arm_commit_on_top(self, files: Mapping[str, str]) -> None:
        """Right after the next push lands, a colleague's commit of ``files`` goes on top."""
        lines = []
        for path, text in files.items():
            blob = subprocess.run(
                ["git", "hash-object", "-w", "--stdin"],
                cwd=self.path,
                input=text,
                capture_output=True,
                text=True,
                check=True,
                timeout=GIT_TIMEOUT_S,
            ).stdout.strip()
            lines.append(f"{blob}\t{path}\n")
        (self.path / "sandbox-on-top").write_text("".join(lines))

    def reject_pushes(self, reason: str = "rejected by policy (sandbox)") -> None:
        (self.path / "sandbox-reject").write_text(reason + "\n")

    def accept_pushes(self) -> None:
        for name in ("sandbox-reject", "sandbox-concurrent", "sandbox-on-top"):
            (self.path / name).unlink(missing_ok=True)

    def make_unreachable(self) -> None:
        if self.path.exists():
            self.path.rename(self._offline)

    def make_reachable(self) -> None:
        if self._offline.exists():
            self._offline.rename(self.path)

    @contextmanager
    def unreachable(self) -> Iterator[None]:
        self.make_unreachable()
        try:
            yield
        finally:
            self.make_reachable()

    def remove(self) -> None:
        self.make_reachable()
        shutil.rmtree(self.path, ignore_errors=True)


def _write(work: Path, files: Mapping[str, str]) -> None:
    for rel, content in files.items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
