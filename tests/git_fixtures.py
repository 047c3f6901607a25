"""Real git for the tests: a bare origin, a second clone that pushes "concurrently", a loopback
``git http-backend`` that checks an HTTPS token, and a TCP server that never answers.

Plain ``subprocess`` git here on purpose: the fixtures play the other people and servers, not
rotator, so they do not go through the code under test.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "someone else",
    "GIT_AUTHOR_EMAIL": "else@example.invalid",
    "GIT_COMMITTER_NAME": "someone else",
    "GIT_COMMITTER_EMAIL": "else@example.invalid",
}


def run_git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=GIT_ENV,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass
class BareRemote:
    """A bare repo standing in for the ops repo, plus a scratch clone that pushes to it."""

    path: Path
    scratch: Path
    branch: str = "main"

    @property
    def file_url(self) -> str:
        return self.path.as_uri()

    def tip(self) -> str:
        return run_git("rev-parse", f"refs/heads/{self.branch}", cwd=self.path).strip()

    def read(self, path: str, rev: str | None = None) -> str | None:
        done = subprocess.run(
            ["git", "show", f"{rev or self.branch}:{path}"],
            cwd=self.path,
            env=GIT_ENV,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout if done.returncode == 0 else None

    def message(self, rev: str | None = None) -> str:
        return run_git("log", "-1", "--format=%B", rev or self.branch, cwd=self.path)

    def count(self) -> int:
        return int(run_git("rev-list", "--count", self.branch, cwd=self.path))

    def push_commit(self, files: Mapping[str, str], message: str = "someone else's change") -> str:
        """Commit ``files`` on top of the remote's tip from another clone and push it."""
        run_git("fetch", "-q", "origin", cwd=self.scratch)
        run_git("reset", "-q", "--hard", f"origin/{self.branch}", cwd=self.scratch)
        for name, content in files.items():
            target = self.scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        run_git("add", "-A", cwd=self.scratch)
        run_git("commit", "-q", "-m", message, cwd=self.scratch)
        run_git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.scratch)
        return self.tip()

    def copy_to(self, root: Path) -> BareRemote:
        """A copy of this remote and its scratch clone (cheaper than seeding a new one)."""
        root.mkdir(parents=True)
        bare = root / self.path.name
        scratch = root / self.scratch.name
        shutil.copytree(self.path, bare, symlinks=True)
        shutil.copytree(self.scratch, scratch, symlinks=True)
        run_git("remote", "set-url", "origin", str(bare), cwd=scratch)
        return BareRemote(path=bare, scratch=scratch, branch=self.branch)

    def reject_pushes(self, reason: str) -> None:
        """A pre-receive hook that refuses every push (like a protected branch)."""
        hook = self.path / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho '{reason}' >&2\nexit 1\n")
        hook.chmod(0o755)


def make_remote(
    root: Path, files: Mapping[str, str] | None = None, *, branch: str = "main"
) -> BareRemote:
    """A bare origin at ``root/ops.git`` with one seed commit holding ``files``."""
    bare = root / "ops.git"
    bare.mkdir(parents=True)
    run_git("init", "-q", "--bare", f"--initial-branch={branch}", cwd=bare)
    # Let rotator's blobless fetch (--filter=blob:none) really be partial, as on GitHub.
    run_git("config", "uploadpack.allowFilter", "true", cwd=bare)
    run_git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    scratch = root / "someone-else"
    run_git("clone", "-q", str(bare), str(scratch), cwd=root)
    run_git("checkout", "-q", "-B", branch, cwd=scratch)
    remote = BareRemote(path=bare, scratch=scratch, branch=branch)
    seed = dict(files or {"README.md": "ops repo\n"})
    for name, content in seed.items():
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    run_git("add", "-A", cwd=scratch)
    run_git("commit", "-q", "-m", "seed", cwd=scratch)
    run_git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=scratch)
    return remote


# --- a loopback smart-HTTP git server (git http-backend as CGI) -------------------------------


@dataclass
class HttpBackendState:
    project_root: Path
    token: str | None
    writable: bool = True
    seen_authorization: list[str] = field(default_factory=list)
    seen_paths: list[str] = field(default_factory=list)


class _GitCgiHandler(BaseHTTPRequestHandler):
    server: _GitHttpServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        state.seen_authorization.append(auth)
        state.seen_paths.append(parts.path)
        if state.token is not None and not _basic_password_is(auth, state.token):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="ops"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        pushing = "git-receive-pack" in parts.path or "git-receive-pack" in parts.query
        if pushing and not state.writable:
            body = b"Write access to repository not granted.\n"
            self.send_response(403)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = self._read_body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(state.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "rotator",  # enables receive-pack in http-backend
        }
        for header, var in (
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ("Git-Protocol", "GIT_PROTOCOL"),
        ):
            if self.headers.get(header):
                env[var] = self.headers[header]
        done = subprocess.run(
            ["git", "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


def _basic_password_is(header: str, token: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        _user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return False
    return password == token


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HttpBackendState) -> None:
        super().__init__(("127.0.0.1", 0), _GitCgiHandler)
        self.state = state


@contextmanager
def git_http_server(
    project_root: Path, *, token: str | None, writable: bool = True
) -> Iterator[tuple[str, HttpBackendState]]:
    """Serve the repos under ``project_root`` at ``http://127.0.0.1:<port>/<name>``."""
    state = HttpBackendState(project_root=project_root, token=token, writable=writable)
    server = _GitHttpServer(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers (a hung remote)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
