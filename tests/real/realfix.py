"""Shared helpers of the real tier: running the built binaries, key files, ops checkouts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from rotator_sandbox.unseal import ControllerKeyPair

RUN_TIMEOUT_S = 60


def run(argv: list[str | Path], *, stdin: bytes = b"", env: dict[str, str] | None = None) -> bytes:
    """Run a built binary; its stdout, or an AssertionError with its stderr."""
    proc = subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        check=False,
    )
    name = Path(str(argv[0])).name
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    )
    return proc.stdout


def write_private_key(pair: ControllerKeyPair, path: Path) -> Path:
    """The controller key as the controller's key Secret holds it (``tls.key``, PKCS#1 PEM)."""
    path.write_bytes(
        pair.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path
