"""Throwaway key pairs and certificates for the sealing tests.

Key pairs are made once per test process (RSA 4096 takes about a second) and shared.
"""

from __future__ import annotations

import functools
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rotator_sandbox.unseal import ControllerKeyPair, generate_key_pair, self_signed_cert

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def controller_keys(bits: int, slot: int = 0) -> ControllerKeyPair:
    """Controller key pair number ``slot`` of this size, valid from a year before NOW (cached)."""
    return _controller_keys(bits, slot)


@functools.cache
def _controller_keys(bits: int, slot: int) -> ControllerKeyPair:
    return generate_key_pair(bits, not_before=NOW - timedelta(days=365))


def cert_valid(*, not_before: datetime, not_after: datetime, bits: int = 2048) -> bytes:
    return self_signed_cert(
        controller_keys(bits).private_key, not_before=not_before, not_after=not_after
    )


@functools.cache
def ec_cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return self_signed_cert(key, not_before=NOW - timedelta(days=1))


@functools.cache
def small_rsa_cert() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return self_signed_cert(key, not_before=NOW - timedelta(days=1))


def expired_cert() -> bytes:
    return cert_valid(not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=2))


def future_cert() -> bytes:
    return cert_valid(not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=400))


def expiring_cert() -> bytes:
    return cert_valid(not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=10))


def git_checkout(path: Path) -> Path:
    """An empty git repository with one commit, standing in for the ops repo checkout."""
    path.mkdir(parents=True, exist_ok=True)
    env_args = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("ops\n")
    subprocess.run(["git", "-C", str(path), "add", "README.md"], check=True)
    subprocess.run(["git", "-C", str(path), *env_args, "commit", "-q", "-m", "init"], check=True)
    return path
