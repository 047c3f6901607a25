"""The ops git repository: fetch, read, commit the sealed files with trailers, push.

The only product module that imports GitPython (``git``). Every GitPython error is translated
into ``GitError`` here, at one boundary (``translate_git_error``), chained ``from`` the original,
with git's stderr truncated and scrubbed.

How the checkout is kept:

- ``workdir`` is rotator's own scratch checkout. ``OpsRepo.open`` creates it (``git init`` plus a
  blobless partial fetch, ``--filter=blob:none``: full history of commits and trees for
  ``history``/``is_ancestor``, file contents fetched only when read) or reuses the one a crashed
  run left behind: it fetches and hard-resets the local branch to ``origin/<branch>`` and cleans
  untracked files, so a stale local commit never survives. An ``flock`` on
  ``.git/rotator.lock`` (released by the kernel when the process dies) keeps two processes out of
  one workdir; with it held, a leftover ``index.lock`` is known to be stale and is removed.
- Credentials never appear in the remote URL, on a command line, in a log or in an error:
  an HTTPS token travels as an ``http.<origin>.extraHeader`` set through the environment
  (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``, git >= 2.31); an SSH deploy
  key through ``GIT_SSH_COMMAND`` with a pinned ``known_hosts`` and ``StrictHostKeyChecking=yes``.
  ``GIT_TERMINAL_PROMPT=0``, an empty ``GIT_ASKPASS`` and ssh ``BatchMode=yes`` mean git never
  waits for a human. System and global git config are ignored so a job behaves the same
  everywhere.
- Every git command runs under GitPython's ``kill_after_timeout`` (``timeout_s``; it kills the
  git process and its children, using ``pgrep``/``ps``), with ``GIT_HTTP_LOW_SPEED_*`` and ssh
  ``ConnectTimeout``/``ServerAlive*`` as a second bound, so a hung remote cannot hang the run.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final
from urllib.parse import urlsplit

import git

from rotator.clients.transport import truncate
from rotator.config import GitConfig, is_loopback
from rotator.errors import GitError
from rotator.names import TRAILER_KEY_FINGERPRINT
from rotator.redact import Secret, register, scrub

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

# The HTTP Basic user name sent with an HTTPS token. GitHub takes any name with a token
# (x-access-token is what its Apps use), GitLab any non-empty name, Gitea/Forgejo too.
HTTPS_TOKEN_USER: Final = "x-access-token"
DEFAULT_WORKDIR: Final = "rotator-ops-repo"

# Every library error this module can see; the meta-test checks each git.exc class is covered.
LIBRARY_ERRORS: Final = (git.exc.GitError, git.exc.ODBError, OSError)

_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_STDERR_NOISE = ("hint:", "warning: filtering not recognized by server")
_FIELD_SEP = "\x1f"
_RECORD_SEP = "\x1e"


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    authored_at: datetime
    subject: str
    trailers: Mapping[str, str]


@dataclass(frozen=True)
class PushResult:
    """``attempts`` is the number of pushes tried; 0 means nothing was pushed (a dry run, or
    the branch already held the commit)."""

    sha: str
    attempts: int
    reapplied: bool

    @property
    def pushed(self) -> bool:
        return self.attempts > 0


# --- error translation: the one boundary --------------------------------------------------


@dataclass(frozen=True)
class _Diagnosis:
    hint: str
    retryable: bool


# Ordered: the first pattern found in git's stderr (lower-cased) decides. Specific before
# generic ("could not read from remote repository" follows every ssh failure).
_DIAGNOSES: Final[tuple[tuple[tuple[str, ...], _Diagnosis], ...]] = (
    (
        ("did not complete in", "process killed because it timed out"),
        _Diagnosis("the remote did not answer in time; retry later", retryable=True),
    ),
    (
        ("couldn't find remote ref",),
        _Diagnosis("the branch does not exist on the remote: create it or fix git.branch", False),
    ),
    (
        ("host key verification failed", "remote host identification has changed"),
        _Diagnosis(
            "the server's SSH host key is not pinned: add it to git.known_hosts_file "
            "(ssh-keyscan HOST, then check the fingerprint out of band)",
            retryable=False,
        ),
    ),
    (
        ("unprotected private key file", "bad permissions", "load key"),
        _Diagnosis(
            "the SSH key cannot be used: mount it readable only by the job's user "
            "(chmod 600, or defaultMode: 0400 on the Secret volume)",
            retryable=False,
        ),
    ),
    (
        (
            "[remote rejected]",
            "pre-receive hook declined",
            "protected branch",
            "gh006",
        ),
        _Diagnosis(
            "the remote refused the push: allow rotator's credentials to push to the branch "
            "(branch protection rules or server hooks)",
            retryable=False,
        ),
    ),
    (
        (
            "returned error: 403",
            "write access to repository not granted",
            "marked as read only",
            "permission to",
        ),
        _Diagnosis(
            "the credentials may read but not push: give the deploy key write access or the "
            "token contents:write on the ops repo",
            retryable=False,
        ),
    ),
    (
        (
            "permission denied (publickey",
            "authentication failed",
            "could not read username",
            "could not read password",
            "returned error: 401",
            "invalid username or password",
            "terminal prompts disabled",
        ),
        _Diagnosis(
            "the remote did not accept rotator's credentials: check git.https_token (or that "
            "the deploy key in git.ssh_key_file is registered on the repo)",
            retryable=False,
        ),
    ),
    (
        ("read-only file system", "no space left on device", "disk quota exceeded"),
        _Diagnosis(
            "cannot write git.workdir: point it at a writable directory with free space "
            "(an emptyDir volume in the CronJob)",
            retryable=False,
        ),
    ),
    (
        ("dubious ownership",),
        _Diagnosis(
            "git.workdir is owned by another user: let the job's user own it (or use a fresh one)",
            retryable=False,
        ),
    ),
    (
        ("repository not found", "does not appear to be a git repository", "returned error: 404"),
        _Diagnosis(
            "the repository was not found: check git.remote (and that the credentials can see it)",
            retryable=False,
        ),
    ),
    (
        (
            "could not resolve host",
            "connection refused",
            "connection timed out",
            "couldn't connect",
            "failed to connect",
            "operation timed out",
            "connection reset",
            "the remote end hung up unexpectedly",
            "unable to access",
            "could not read from remote repository",
            "early eof",
            "returned error: 5",
        ),
        _Diagnosis("the remote is unreachable; retry later", retryable=True),
    ),
)


def _clean_stderr(stderr: str) -> str:
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.strip().lower().startswith(_STDERR_NOISE)
    ]
    return truncate(" | ".join(lines)) if lines else "(no output)"


def _unwrap(text: object, label: str) -> str:
    """GitPython stores output as ``"\\n  stderr: '<text>'"``; get ``<text>`` back."""
    if not isinstance(text, str):
        return ""
    prefix = f"\n  {label}: '"
    if text.startswith(prefix) and text.endswith("'"):
        return text[len(prefix) : -1]
    return text


def translate_git_error(exc: BaseException, what: str) -> GitError:
    """Map any GitPython (or OS) error to a ``GitError`` whose message names the fix.

    The caller raises the result ``from exc``; ``__cause__`` is set here too so the mapping is
    complete on its own.
    """
    retryable = False
    if isinstance(exc, git.exc.GitCommandNotFound):
        message = f"{what}: the git executable was not found: install git (>= 2.32)"
    elif isinstance(exc, git.exc.GitCommandError):
        stderr = _unwrap(exc.stderr, "stderr")
        stdout = _unwrap(exc.stdout, "stdout")
        lowered = f"{stdout}\n{stderr}".lower()
        detail = _clean_stderr(stderr or stdout)
        message = f"{what}: git exited with {exc.status}: {detail}"
        for needles, diagnosis in _DIAGNOSES:
            if any(needle in lowered for needle in needles):
                message += f"; {diagnosis.hint}"
                retryable = diagnosis.retryable
                break
    elif isinstance(exc, git.exc.InvalidGitRepositoryError | git.exc.NoSuchPathError):
        message = f"{what}: not a usable git checkout ({type(exc).__name__}: {scrub(str(exc))})"
    elif isinstance(exc, git.exc.ODBError):
        message = f"{what}: unknown or unreadable git object ({type(exc).__name__})"
    elif isinstance(exc, git.exc.GitError):
        message = f"{what}: {type(exc).__name__}: {truncate(str(exc))}"
    elif isinstance(exc, OSError):
        message = f"{what}: {exc.strerror or type(exc).__name__}"
    else:
        message = f"{what}: unexpected {type(exc).__name__}"
    error = GitError(scrub(message), retryable=retryable)
    error.__cause__ = exc
    return error


@contextmanager
def _translating(what: str) -> Iterator[None]:
    try:
        yield
    except LIBRARY_ERRORS as exc:
        raise translate_git_error(exc, what) from exc


# --- pure helpers ---------------------------------------------------------------------------


def format_message(message: str, trailers: Mapping[str, str]) -> str:
    """The commit message: ``message``, a blank line, then ``Key: value`` trailer lines."""
    body = message.strip()
    if not body:
        raise GitError("refusing to commit: the commit message is empty")
    for key, value in trailers.items():
        if not _TRAILER_KEY.match(key):
            raise GitError(f"refusing to commit: trailer name {key!r} is not a token")
        if "\n" in value or "\r" in value or not value.strip():
            raise GitError(f"refusing to commit: trailer {key} must be one non-empty line")
    lines = [f"{key}: {value.strip()}" for key, value in trailers.items()]
    return body + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


def ensure_no_secret(text: str, what: str) -> None:
    """Last line of defence: refuse to write anything that holds a registered secret value."""
    if scrub(text) != text:
        raise GitError(f"refusing to commit: {what} contains a secret value (only fingerprints)")


def parse_trailers(text: str) -> dict[str, str]:
    """``Key: value`` lines (git's ``%(trailers:only,unfold)``) -> mapping; the last one wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and _TRAILER_KEY.match(key.strip()):
            out[key.strip()] = value.strip()
    return out


def _check_repo_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or pure.parts[:1] == (".git",):
        raise GitError(f"{path!r}: a relative path inside the ops repo, without '..'")
    return pure.as_posix()


def _check_rev(rev: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise GitError(f"{rev!r} is not a git revision")
    return rev


def _is_ssh_remote(remote: str) -> bool:
    scheme = urlsplit(remote).scheme
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        return True
    return not scheme and re.match(r"^[\w.-]+@[\w.-]+:", remote) is not None


def git_environment(config: GitConfig, *, token: Secret | None, timeout_s: float) -> dict[str, str]:
    """The environment every git command runs with (credentials included, never logged)."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": config.author_name,
        "GIT_AUTHOR_EMAIL": config.author_email,
        "GIT_COMMITTER_NAME": config.author_name,
        "GIT_COMMITTER_EMAIL": config.author_email,
        # curl aborts a transfer slower than 1 kB/s for this long (a second bound on hangs).
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
        "GIT_HTTP_LOW_SPEED_TIME": str(max(5, int(timeout_s / 2))),
        # A trace switched on in the job's environment must not print headers into stderr.
        "GIT_TRACE": "0",
        "GIT_TRACE_CURL": "0",
        "GIT_TRACE_PACKET": "0",
        # GIT_CURL_VERBOSE switches on for any value, even "0", so it is left alone; redaction
        # of Authorization headers in curl traces stays on.
        "GIT_TRACE_REDACT": "1",
    }
    env["GIT_SSH_COMMAND"] = _ssh_command(config, timeout_s)
    settings: list[tuple[str, str]] = []
    parts = urlsplit(config.remote)
    if token is not None and parts.scheme in ("http", "https"):
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise GitError(
                f"refusing to send git.https_token over plain http to {parts.hostname}: "
                "use an https remote"
            )
        basic = base64.b64encode(f"{HTTPS_TOKEN_USER}:{token.reveal()}".encode()).decode()
        register(basic)  # the encoded form is as secret as the token
        # Scoped to the remote's origin so the header never goes to another host.
        settings.append(
            (f"http.{parts.scheme}://{parts.netloc}/.extraHeader", f"Authorization: Basic {basic}")
        )
    elif token is not None:
        log.info("git.https_token is set but git.remote is not http(s); not using it")
    # The scratch checkout runs no hooks and no background gc (a detached gc could outlive us).
    settings += [("core.hooksPath", os.devnull), ("gc.auto", "0"), ("maintenance.auto", "false")]
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for index, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def _ssh_command(config: GitConfig, timeout_s: float) -> str:
    connect = max(3, min(30, int(timeout_s / 2)))
    args = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={connect}",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=2",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    if config.ssh_key_file is not None:
        if not config.ssh_key_file.is_file():
            raise GitError(f"git.ssh_key_file {config.ssh_key_file} is not a readable file")
        args += ["-i", str(config.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        if config.known_hosts_file is None and _is_ssh_remote(config.remote):
            raise GitError(
                "git.ssh_key_file is set but git.known_hosts_file is not: pin the server's host "
                "key in a known_hosts file (ssh-keyscan HOST, checked out of band)"
            )
    if config.known_hosts_file is not None:
        if not config.known_hosts_file.is_file():
            raise GitError(f"git.known_hosts_file {config.known_hosts_file} is not a file")
        args += ["-o", f"UserKnownHostsFile={config.known_hosts_file}"]
    return shlex.join(args)


# --- the repository ----------------------------------------------------------------------


class OpsRepo:
    """A checkout of one branch of the ops repo. Use ``OpsRepo.open``; ``close()`` when done."""

    def __init__(
        self,
        repo: git.Repo,
        config: GitConfig,
        *,
        env: Mapping[str, str],
        lock: IO[bytes],
        timeout_s: float,
    ) -> None:
        self._repo = repo
        self._config = config
        self._env = dict(env)
        self._lock = lock
        self._timeout_s = timeout_s
        self.workdir = Path(repo.working_tree_dir or ".").resolve()
        self.branch = config.branch
        self._tracking = f"refs/remotes/origin/{config.branch}"

    # -- lifecycle

    @classmethod
    def open(
        cls,
        config: GitConfig,
        *,
        token: Secret | None,
        workdir: Path,
        timeout_s: float = 120,
    ) -> OpsRepo:
        """Fetch ``config.branch`` into ``workdir`` (a new or a leftover checkout), reset to it.

        A leftover checkout that cannot be brought to the branch (a corrupt index or object, a
        broken ref: any damage) is discarded and the branch cloned afresh into the emptied
        workdir, once, and the log says so; the error of the fresh attempt is the real one.
        """
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        env = git_environment(config, token=token, timeout_s=timeout_s)
        workdir = workdir.resolve()
        try:
            return cls._open_at(config, env=env, workdir=workdir, timeout_s=timeout_s, fresh=False)
        except _ReusedCheckoutFailed as exc:
            log.warning(
                "the checkout in %s is not usable (%s): discarding it and cloning afresh",
                workdir,
                exc.cause,
            )
        _empty_workdir(workdir)
        repo = cls._open_at(config, env=env, workdir=workdir, timeout_s=timeout_s, fresh=True)
        log.info("cloned %s afresh into %s", config.branch, workdir)
        return repo

    @classmethod
    def _open_at(
        cls,
        config: GitConfig,
        *,
        env: Mapping[str, str],
        workdir: Path,
        timeout_s: float,
        fresh: bool,
    ) -> OpsRepo:
        with _translating(f"prepare the checkout in {workdir}"):
            repo, reused = _init_or_reuse(workdir)
            lock = _lock_workdir(repo, workdir)  # held by another process: raised, never wiped
        self = cls(repo, config, env=env, lock=lock, timeout_s=timeout_s)
        try:
            self._ensure_branch_name()
            self._configure_remote()
            self.sync()
        except GitError as exc:
            self.close()
            if reused and not fresh:
                raise _ReusedCheckoutFailed(exc) from exc
            raise
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open_from_config(
        cls, config: Config, *, workdir: Path | None = None, timeout_s: float = 120
    ) -> OpsRepo:
        """``open`` with the configured token and workdir (default: a fixed directory under the
        temp dir, so the next run reuses and resets what a crashed run left)."""
        if "git.https_token" in config.secrets.missing:
            raise GitError(f"git.https_token: {config.secrets.missing['git.https_token']}")
        chosen = workdir or config.git.workdir or Path(tempfile.gettempdir()) / DEFAULT_WORKDIR
        return cls.open(
            config.git, token=config.secrets.git_https_token, workdir=chosen, timeout_s=timeout_s
        )

    def close(self) -> None:
        self._repo.close()
        if not self._lock.closed:
            self._lock.close()  # releases the flock

    def __enter__(self) -> OpsRepo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads

    def head(self) -> str:
        """The sha of ``origin/<branch>`` as last fetched (or pushed)."""
        return self._rev_parse(self._tracking)

    def local_head(self) -> str:
        """The sha of the checkout's HEAD (differs from ``head()`` after a local commit)."""
        return self._rev_parse("HEAD")

    def read_file(self, path: str, *, rev: str | None = None) -> str | None:
        """The file's text at ``rev`` (default: ``origin/<branch>``), or None when absent."""
        path = _check_repo_path(path)
        commit = self._rev_parse(_check_rev(rev) if rev is not None else self._tracking)
        listing = self._run(["ls-tree", "-z", commit, "--", path], what=f"read {path}")
        entry = listing.split("\0", 1)[0]
        if not entry:
            return None
        meta, _, _ = entry.partition("\t")
        _mode, kind, blob = meta.split()
        if kind != "blob":
            raise GitError(f"read {path} at {commit[:12]}: it is a {kind}, not a file")
        return self._run(["cat-file", "blob", blob], what=f"read {path}", strip_newline=False)

    def history(self, path: str, *, max_count: int = 20) -> list[CommitInfo]:
        """Commits on ``origin/<branch>`` touching ``path``, newest first, trailers parsed."""
        path = _check_repo_path(path)
        fmt = _FIELD_SEP.join(["%H", "%aI", "%s", "%(trailers:only=true,unfold=true)"])
        out = self._run(
            [
                "log",
                f"--max-count={max(1, max_count)}",
                f"--format={fmt}{_RECORD_SEP}",
                self._tracking,
                "--",
                path,
            ],
            what=f"read the history of {path}",
        )
        commits = []
        for record in out.split(_RECORD_SEP):
            fields = record.strip("\n").split(_FIELD_SEP)
            if len(fields) != 4:
                continue
            sha, authored, subject, trailers = fields
            commits.append(
                CommitInfo(
                    sha=sha,
                    authored_at=datetime.fromisoformat(authored),
                    subject=subject,
                    trailers=parse_trailers(trailers),
                )
            )
        return commits

    def last_rotation(self, path: str, *, max_count: int = 50) -> CommitInfo | None:
        """The newest commit touching ``path`` that carries a ``Rotator-Key-Fingerprint``."""
        for commit in self.history(path, max_count=max_count):
            if TRAILER_KEY_FINGERPRINT in commit.trailers:
                return commit
        return None

    def is_ancestor(self, older: str, newer: str) -> bool:
        """True when ``older`` is ``newer`` or one of its ancestors (both must be known)."""
        status, _out, err = self._execute(
            ["merge-base", "--is-ancestor", _check_rev(older), _check_rev(newer)]
        )
        if status in (0, 1):
            return status == 0
        raise translate_git_error(
            git.exc.GitCommandError(["git", "merge-base"], status, err),
            f"compare commits {older[:12]} and {newer[:12]}",
        )

    # -- writes

    def check_push_access(self, *, attempts: int = 3) -> None:
        """A ``git push --dry-run`` of the current tip: raises GitError (with the fix) if denied.

        A colleague's push between our fetch and the dry run makes the dry run non-fast-forward
        (or, on some servers, a ref-update failure with the tip moved): that is a lost race, not
        a permission problem, so fetch again and check the new tip (bounded by ``attempts``)."""
        for attempt in range(1, attempts + 1):
            tip = self.head()
            status, out, err = self._execute(
                ["push", "--dry-run", "--porcelain", "origin", f"{tip}:refs/heads/{self.branch}"]
            )
            if status == 0:
                log.info("push access to %s on %s: ok", self.branch, self._config.remote)
                return
            if not self._lost_race(out):
                raise translate_git_error(
                    git.exc.GitCommandError(["git", "push", "--dry-run"], status, err, out),
                    f"check push access to {self.branch} on {self._config.remote}",
                )
            log.warning(
                "check push access: %s moved on %s since the fetch (attempt %d/%d); fetching again",
                self.branch,
                self._config.remote,
                attempt,
                attempts,
            )
            self.sync()
        raise GitError(
            f"check push access to {self.branch}: the branch moved on every one of {attempts} "
            "attempts (others are pushing now); re-run in a minute",
            retryable=True,
        )

    def _lost_race(self, porcelain: str) -> bool:
        """Did a push (or dry run) fail because the branch moved, not because of a rule?"""
        line = next((ln for ln in porcelain.splitlines() if f"refs/heads/{self.branch}" in ln), "")
        behind = ("non-fast-forward", "fetch first", "stale info")
        if line.startswith("!") and "[rejected]" in line and any(b in line for b in behind):
            return True
        return line.startswith("!") and "[remote rejected]" in line and self._remote_moved()

    def commit_files(
        self, files: Mapping[str, str], *, message: str, trailers: Mapping[str, str]
    ) -> str | None:
        """Write ``files`` and commit them; the new sha, or None when nothing changed."""
        full = format_message(message, trailers)
        ensure_no_secret(full, "the commit message or a trailer")
        paths = [_check_repo_path(p) for p in files]
        if not paths:
            return None
        for path, content in files.items():
            ensure_no_secret(content, f"file {path}")
            target = self.workdir / path
            if not target.resolve().is_relative_to(self.workdir):
                raise GitError(f"refusing to write {path}: it leads outside the checkout")
            with _translating(f"write {path}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
        self._run(["add", "--", *paths], what="stage the files")
        status, _out, err = self._execute(["diff", "--cached", "--quiet", "--", *paths])
        if status == 0:
            log.info("nothing to commit: %s already hold this content", ", ".join(paths))
            return None
        if status != 1:
            raise translate_git_error(
                git.exc.GitCommandError(["git", "diff"], status, err), "compare the files"
            )
        self._run(
            ["commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-m", full, "--", *paths],
            what="commit the files",
        )
        sha = self.local_head()
        log.info("committed %s on %s: %s", sha[:12], self.branch, message.strip().splitlines()[0])
        return sha

    def push(
        self,
        *,
        reapply: Callable[[OpsRepo], Mapping[str, str] | None],
        message: str,
        trailers: Mapping[str, str],
        attempts: int,
    ) -> PushResult:
        """Push the local commit; on a non-fast-forward rejection re-apply onto the new tip.

        ``reapply(self)`` is called after a fetch and hard reset to the new tip and returns the
        files to commit again (None: nothing to do any more). A network failure is not retried
        here (``GitError.retryable`` says whether it may be): the caller decides.
        """
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        for attempt in range(1, attempts + 1):
            sha = self.local_head()
            if sha == self.head():
                return PushResult(sha=sha, attempts=attempt - 1, reapplied=attempt > 1)
            if self._push_once(sha):
                log.info(
                    "pushed %s to %s (attempt %d/%d)", sha[:12], self.branch, attempt, attempts
                )
                return PushResult(sha=sha, attempts=attempt, reapplied=attempt > 1)
            if attempt == attempts:
                break
            log.warning(
                "push attempt %d/%d rejected: %s moved on; fetching and re-applying",
                attempt,
                attempts,
                self.branch,
            )
            self.sync()
            files = reapply(self)
            if (
                files is None
                or self.commit_files(files, message=message, trailers=trailers) is None
            ):
                tip = self.head()
                log.info("the new tip %s already holds the change; nothing to push", tip[:12])
                return PushResult(sha=tip, attempts=attempt, reapplied=True)
        raise GitError(
            f"push to {self.branch}: still rejected as non-fast-forward after {attempts} "
            "attempts (the branch keeps moving); run again",
            retryable=True,
        )

    def commit_and_push(
        self,
        files_fn: Callable[[OpsRepo], Mapping[str, str] | None],
        *,
        message: str,
        trailers: Mapping[str, str],
        attempts: int,
        dry_run: bool = False,
    ) -> PushResult | None:
        """``files_fn(self)`` -> commit -> push (re-applying ``files_fn`` on a race).

        None when nothing needed changing (``head()`` already holds the files). In a dry run the
        commit is made locally and not pushed: the result has the local sha and ``attempts=0``.
        """
        files = files_fn(self)
        if files is None:
            return None
        sha = self.commit_files(files, message=message, trailers=trailers)
        if sha is None:
            return None
        if dry_run:
            log.info("dry run: skipping git push of %s to %s", sha[:12], self.branch)
            return PushResult(sha=sha, attempts=0, reapplied=False)
        return self.push(reapply=files_fn, message=message, trailers=trailers, attempts=attempts)

    def fetch(self) -> str:
        """Fetch the branch into ``origin/<branch>`` without touching the checkout; its sha."""
        self._fetch_branch()
        return self.head()

    def sync(self) -> str:
        """Fetch the branch and hard-reset the checkout to it (local commits are dropped)."""
        branch = self.branch
        self._fetch_branch()
        self._run(
            ["checkout", "--quiet", "--force", "-B", branch, self._tracking], what="check out"
        )
        self._run(["clean", "--quiet", "-ffdx"], what="clean the checkout")
        return self.head()

    def _fetch_branch(self) -> None:
        branch = self.branch
        self._run(
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--prune",
                "--filter=blob:none",
                "origin",
                f"+refs/heads/{branch}:{self._tracking}",
            ],
            what=f"fetch {branch} from {self._config.remote}",
        )

    # -- internals

    def _push_once(self, sha: str) -> bool:
        """True when pushed; False when rejected as non-fast-forward; GitError otherwise."""
        status, out, err = self._execute(
            ["push", "--porcelain", "origin", f"{sha}:refs/heads/{self.branch}"]
        )
        line = next((ln for ln in out.splitlines() if f"refs/heads/{self.branch}" in ln), "")
        if status == 0:
            self._run(["update-ref", self._tracking, sha], what="record the pushed commit")
            return True
        behind = ("non-fast-forward", "fetch first", "stale info")
        if line.startswith("!") and "[rejected]" in line and any(b in line for b in behind):
            return False
        if line.startswith("!") and "[remote rejected]" in line and self._remote_moved():
            # A server refuses a push that lost a race for the branch ("failed to update ref",
            # "cannot lock ref", a hook seeing a new tip): the tip moved, so re-apply on it.
            # A refusal with the tip where it was is a rule, and stays an error.
            return False
        raise translate_git_error(
            git.exc.GitCommandError(["git", "push"], status, err, out),
            f"push {sha[:12]} to {self.branch} on {self._config.remote}",
        )

    def _remote_moved(self) -> bool:
        """Has the branch on the remote moved away from the tip we last fetched?"""
        status, out, _err = self._execute(["ls-remote", "origin", f"refs/heads/{self.branch}"])
        fields = out.split()
        return status == 0 and bool(fields) and fields[0] != self.head()

    def _ensure_branch_name(self) -> None:
        status, _out, _err = self._execute(["check-ref-format", f"refs/heads/{self.branch}"])
        if status != 0 or self.branch.startswith("-"):
            raise GitError(f"git.branch {self.branch!r} is not a valid branch name")

    def _configure_remote(self) -> None:
        self._run(["config", "remote.origin.url", self._config.remote], what="configure the remote")
        self._run(
            ["config", "remote.origin.fetch", f"+refs/heads/{self.branch}:{self._tracking}"],
            what="configure the remote",
        )

    def _rev_parse(self, rev: str) -> str:
        status, out, err = self._execute(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"])
        if status == 1 and not err.strip():
            raise GitError(
                f"unknown revision {rev}: not a commit in the fetched history of {self.branch}"
            )
        if status != 0:
            raise translate_git_error(
                git.exc.GitCommandError(["git", "rev-parse"], status, err, out), f"resolve {rev}"
            )
        return out.strip()

    def _run(self, args: list[str], *, what: str, strip_newline: bool = True) -> str:
        status, out, err = self._execute(args, strip_newline=strip_newline)
        if status != 0:
            raise translate_git_error(
                git.exc.GitCommandError(["git", *args[:1]], status, err, out), what
            )
        return out

    def _execute(self, args: list[str], *, strip_newline: bool = True) -> tuple[int, str, str]:
        """Run ``git <args>`` in the checkout, bounded by the timeout; never raises on status."""
        with _translating(f"run git {args[0]}"):
            status, out, err = self._repo.git.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=self._timeout_s,
                env=self._env,
                strip_newline_in_stdout=strip_newline,
            )
        text = out.decode(errors="replace") if isinstance(out, bytes) else (out or "")
        return status if status is not None else -1, text, err


class _ReusedCheckoutFailed(GitError):
    """Preparing a leftover checkout failed: ``open`` discards it and tries a fresh one."""

    def __init__(self, cause: GitError) -> None:
        super().__init__(str(cause), retryable=cause.retryable)
        self.cause = cause


def _init_or_reuse(workdir: Path) -> tuple[git.Repo, bool]:
    """The checkout in ``workdir`` and whether it is a leftover one (reused)."""
    dot_git = workdir / ".git"
    if dot_git.exists():
        try:
            repo = git.Repo(workdir)
        except git.exc.InvalidGitRepositoryError:
            log.warning("discarding the broken checkout in %s", workdir)
            shutil.rmtree(dot_git)
        else:
            if Path(repo.working_tree_dir or "").resolve() == workdir:
                log.info("reusing the checkout in %s", workdir)
                return repo, True
            repo.close()
            raise GitError(f"{workdir} is inside another git checkout; use an empty git.workdir")
    elif workdir.exists() and any(workdir.iterdir()):
        raise GitError(
            f"{workdir} is not empty and not a rotator checkout; use an empty git.workdir"
        )
    # An empty template: no sample hooks and nothing from a global init.templateDir (GitPython
    # calls --template "unsafe" because a template can carry hooks; ours is empty).
    return git.Repo.init(workdir, mkdir=True, template="", allow_unsafe_options=True), False


def _empty_workdir(workdir: Path) -> None:
    """Remove everything in a discarded checkout (not the directory: it may be a mount)."""
    try:
        for child in workdir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    except OSError as exc:
        raise GitError(
            f"cannot empty the damaged checkout in {workdir} ({exc.strerror}): remove it by hand "
            "or point git.workdir at an empty directory"
        ) from exc


def _lock_workdir(repo: git.Repo, workdir: Path) -> IO[bytes]:
    lock = open(Path(repo.git_dir) / "rotator.lock", "wb")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        repo.close()
        raise GitError(f"another rotator process is using {workdir}; wait for it") from None
    # We hold the workdir: any *.lock a killed git left (index, HEAD, config, packed-refs, refs)
    # is stale and would make every later command fail with "File exists".
    git_dir = Path(repo.git_dir)
    for stale in [*git_dir.glob("*.lock"), *(git_dir / "refs").rglob("*.lock")]:
        if stale.name != "rotator.lock":
            log.warning("removing %s, left by an interrupted git command", stale.name)
            stale.unlink(missing_ok=True)
    return lock
