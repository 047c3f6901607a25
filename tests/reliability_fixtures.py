"""Shared pieces of the reliability suite (issue 7): a sandbox world per test, runs of rotator
against it (in-process through ``run_once``, or as a real subprocess), and what to look at
afterwards (PostHog resets, the git remote, Slack payloads, the Lease).

Import the fixtures you use into your test module::

    from tests.reliability_fixtures import make_world  # noqa: F401

``make_world(**sandbox_kwargs)`` starts a ``Sandbox`` with ``TIMING`` (every real-world delay x
0.01) and the session's 2048-bit controller key pair, and stops it in the finalizer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rotator.clients.posthog import PostHogClient
from rotator.clock import SystemClock
from rotator.config import Config, RunSwitches, load_config
from rotator.redact import Secret
from rotator.report import RunReport
from rotator.runner import Clients, build_clients, run_once
from rotator_sandbox.controllers.base import LEASE
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import FAST, Sandbox, cached_key_pair

# Every simulated delay of the sandbox x 0.005: ArgoCD syncs in ~0.015 s, pods start in 0.05 s,
# PostHog's token cache lasts 0.75 s, a Deployment's progress deadline (600 s) is 3 s.
TIMING = FAST.with_scale(0.005)
PROJECT = 1
LOCK_NAMESPACE = "rotator"
LOCK_NAME = "rotator-posthog"
# The reliability rows change no deadline the success path needs; failure rows shorten theirs.
DEFAULT_OVERRIDES: tuple[str, ...] = ("timeouts.attempts=2", "timeouts.read_s=5")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class World:
    """One sandbox plus helpers to run rotator against it and to read back what happened."""

    sb: Sandbox
    tmp: Path
    runs: list[RunReport] = field(default_factory=list)
    # Extra servers a row starts (closed after the sandbox stops).
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # -- config and runs ---------------------------------------------------------------------

    def environ(self, **extra: str) -> dict[str, str]:
        return {**self.sb.environ(), **extra}

    def config(self, *overrides: str, environ: Mapping[str, str] | None = None) -> Config:
        return load_config(
            self.sb.config_path,
            overrides=[*DEFAULT_OVERRIDES, *overrides],
            environ=self.environ() if environ is None else environ,
        )

    def clients(self, config: Config) -> Clients:
        """The real clients, with PostHog's query pacing shortened (the stand-in has no limit
        worth pacing for; production keeps 1.5 s between queries)."""
        clients = build_clients(config, clock=_CLOCK)
        real = clients.posthog
        key = config.secrets.posthog_personal_api_key
        assert key is not None
        t = config.timeouts
        fast = PostHogClient(
            app_host=config.posthog.app_host,
            ingest_host=config.posthog.ingest_host,
            personal_key=key,
            timeout=(t.connect_s, t.read_s),
            retry=real._retry,
            query_interval_s=0.05,
        )
        real.close()
        return replace(clients, posthog=fast)

    def run(
        self,
        *overrides: str,
        environ: Mapping[str, str] | None = None,
        switches: RunSwitches | None = None,
    ) -> RunReport:
        config = self.config(*overrides, environ=environ)
        report = run_once(
            config, switches or RunSwitches(trigger="test"), clients=self.clients(config)
        )
        self.runs.append(report)
        return report

    # -- what happened -----------------------------------------------------------------------

    @property
    def resets(self) -> int:
        assert self.sb.posthog is not None
        return self.sb.posthog.counters().resets.get(PROJECT, 0)

    def current_key(self) -> Secret:
        assert self.sb.posthog is not None
        return self.sb.posthog.current_key(PROJECT)

    def head(self) -> str:
        return self.sb.git.head()

    def slack_payloads(self) -> list[dict[str, Any]]:
        assert self.sb.slack is not None
        return self.sb.slack.payloads

    def slack_text(self) -> str:
        """Every Slack payload of this world as one string (to look for words in)."""
        return json.dumps(self.slack_payloads())

    def lease(self) -> dict[str, Any] | None:
        assert self.sb.client is not None
        return self.sb.client.get(LEASE, LOCK_NAMESPACE, LOCK_NAME)

    def lease_holder(self) -> str:
        lease = self.lease() or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def lease_expires_at(self) -> datetime | None:
        spec = (self.lease() or {}).get("spec") or {}
        renewed = spec.get("renewTime")
        if not renewed:
            return None
        at = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
        return at + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))

    def wait_lease_expired(self, *, timeout: float = 30.0) -> None:
        """Sleep until the dead holder's Lease has expired (its duration is 15 s: the minimum)."""
        expires = self.lease_expires_at()
        if expires is None:
            return
        wait = (expires - datetime.now(UTC)).total_seconds() + 0.2
        assert wait < timeout, f"the Lease expires only in {wait:.0f}s"
        if wait > 0:
            time.sleep(wait)

    def pods_on(self, key: Secret) -> bool:
        return all(self.sb.pod_key_fingerprints(env) == {key.fingerprint} for env in ENVS)

    def converged_on(self, key: Secret) -> bool:
        """Every environment synced at the branch tip, and its pods started with ``key``."""
        return all(self.sb.is_converged(env) for env in ENVS) and self.pods_on(key)

    # -- subprocess runs ---------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rotator", "--config", str(self.sb.config_path), *args]

    def popen(
        self, *args: str, log_format: str = "json", extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        env = {**os.environ, **self.environ(), **(extra_env or {})}
        env.pop("COVERAGE_PROCESS_START", None)
        return subprocess.Popen(
            self.command("--log-format", log_format, *args),
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


ENVS = ("preview", "prod")


_CLOCK = SystemClock()


@pytest.fixture(scope="session")
def reliability_key_pair() -> ControllerKeyPair:
    return cached_key_pair(2048)


@pytest.fixture
def make_world(
    tmp_path: Path, reliability_key_pair: ControllerKeyPair
) -> Iterator[Callable[..., World]]:
    started: list[Sandbox] = []
    worlds: list[World] = []

    def make(**kwargs: Any) -> World:
        root = tmp_path / f"world{len(started)}"
        sb = Sandbox(
            root / "sandbox",
            timing=kwargs.pop("timing", TIMING),
            key_pair=reliability_key_pair,
            seed=1,
            **kwargs,
        )
        started.append(sb)
        sb.start()
        worlds.append(World(sb=sb, tmp=root))
        return worlds[-1]

    try:
        yield make
    finally:
        for sb in reversed(started):
            sb.stop()
        for world in worlds:
            world.cleanup.close()


# --- subprocess: read stderr line by line, kill at a marker --------------------------------


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    killed_after: str | None = None


def run_and_kill(
    proc: subprocess.Popen[str], *, kill_after: Callable[[str], bool] | None, timeout: float = 90.0
) -> Finished:
    """Read the child's stderr line by line; SIGKILL it right after the first line for which
    ``kill_after`` is true (the child gets no chance to clean up, like an OOM kill)."""
    assert proc.stderr is not None
    assert proc.stdout is not None
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    lines: list[str] = []
    killed: str | None = None
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            lines.append(line)
            if killed is None and kill_after is not None and kill_after(line):
                proc.send_signal(signal.SIGKILL)
                killed = line
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=10)
    finally:
        timer.cancel()
        reader.join(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    return Finished(proc.returncode, "".join(out), "".join(lines), killed)


def log_message(line: str) -> str:
    """The message of one JSON log line (the whole line if it is not JSON)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()
    return str(record.get("message") or record.get("msg") or "") if isinstance(record, dict) else ""


# --- certificates for the bad-input and cert rows -------------------------------------------


def self_signed_cert(
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    bits: int = 2048,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> bytes:
    """A PEM certificate like the controller's (CN sealed-secret), with the given validity."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = datetime.now(UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealed-secret"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def every_env(fn: Callable[[str], Any]) -> list[Any]:
    return [fn(env) for env in ENVS]


def assert_nothing_changed(world: World, *, seed_head: str, old_key: Secret) -> None:
    """No reset, no commit, the old key still PostHog's and the pods'."""
    assert world.resets == 0
    assert world.head() == seed_head
    assert world.current_key() == old_key
    assert world.pods_on(old_key)


__all__ = [
    "DEFAULT_OVERRIDES",
    "ENVS",
    "PROJECT",
    "ROOT",
    "TIMING",
    "Finished",
    "World",
    "assert_nothing_changed",
    "every_env",
    "log_message",
    "make_world",
    "reliability_key_pair",
    "run_and_kill",
    "self_signed_cert",
    "write",
]
