"""An independent implementation of the sealed-secrets controller's decryption.

Written from FACTS section 3 (and bitnami-labs/sealed-secrets ``HybridDecrypt`` and
``SealedSecret.Unseal``), not from ``rotator.clients.sealing``: the tests use it to prove that
what rotator seals is what the controller opens, and the sandbox's simulated controller uses it
to unseal. Also makes controller key pairs and self-signed certs (4096-bit RSA by default, like
the controller's ``--key-size``).

Per item: base64 -> ``len(2 bytes, big-endian) | RSA-OAEP(SHA-256, MGF1-SHA-256, label) of the
32-byte session key | AES-256-GCM(zero 12-byte nonce, no AAD) ciphertext+tag``. The label is
``namespace/name`` (strict), ``namespace`` (namespace-wide) or empty (cluster-wide), where the
scope comes from the SealedSecret's own ``metadata.annotations`` and namespace/name from its own
metadata, as the controller does. Each private key is tried in turn.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

STRICT = "strict"
NAMESPACE_WIDE = "namespace-wide"
CLUSTER_WIDE = "cluster-wide"
_ANNOTATION_PREFIX = "sealedsecrets.bitnami.com/"
DEFAULT_KEY_BITS = 4096
DEFAULT_VALIDITY = timedelta(days=3650)  # the controller's certs are valid for ten years


class UnsealError(Exception):
    """The ciphertext could not be opened with any of the keys for this scope and target."""


def _label(namespace: str, name: str, scope: str) -> bytes:
    scope = str(getattr(scope, "value", scope))
    if scope == CLUSTER_WIDE:
        return b""
    if scope == NAMESPACE_WIDE:
        return namespace.encode("utf-8")
    if scope == STRICT:
        return (namespace + "/" + name).encode("utf-8")
    raise ValueError(f"unknown scope {scope!r}")


def _open_with(key: rsa.RSAPrivateKey, blob: bytes, label: bytes) -> bytes:
    if len(blob) < 2:
        raise UnsealError("sealed data is too short")
    rsa_len = int.from_bytes(blob[:2], "big")
    if len(blob) < 2 + rsa_len:
        raise UnsealError("sealed data is too short")
    wrapped, body = blob[2 : 2 + rsa_len], blob[2 + rsa_len :]
    oaep = padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=label if label else None,
    )
    try:
        session_key = key.decrypt(wrapped, oaep)
    except ValueError as exc:
        raise UnsealError("the session key does not open with this key and label") from exc
    if len(session_key) != 32:
        raise UnsealError(f"session key is {len(session_key)} bytes, expected 32")
    try:
        return AESGCM(session_key).decrypt(b"\x00" * 12, body, None)
    except InvalidTag as exc:
        raise UnsealError("the sealed value failed its GCM authentication") from exc


def unseal_item(
    ciphertext_b64: str,
    *,
    private_keys: Sequence[rsa.RSAPrivateKey],
    namespace: str,
    name: str,
    scope: str,
) -> bytes:
    """Decrypt one ``encryptedData`` value, trying every key like the controller does."""
    try:
        blob = base64.b64decode(ciphertext_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnsealError("the sealed value is not standard base64") from exc
    label = _label(namespace, name, scope)
    errors = []
    for key in private_keys:
        try:
            return _open_with(key, blob, label)
        except UnsealError as exc:
            errors.append(str(exc))
    # pkg/crypto/crypto.go HybridDecrypt: "no key could decrypt secret" (clients tell a
    # decryption failure by it); the keys' reasons follow as the stand-in's own detail.
    raise UnsealError(
        f"no key could decrypt secret ({len(private_keys)} keys tried for {namespace}/{name}, "
        f"{scope}: " + "; ".join(errors or ["no keys"]) + ")"
    )


def scope_of(manifest: Mapping[str, Any]) -> str:
    """The scope the controller reads from the SealedSecret's own metadata annotations."""
    annotations = (manifest.get("metadata") or {}).get("annotations") or {}
    if annotations.get(_ANNOTATION_PREFIX + "cluster-wide") == "true":
        return CLUSTER_WIDE
    if annotations.get(_ANNOTATION_PREFIX + "namespace-wide") == "true":
        return NAMESPACE_WIDE
    return STRICT


def unseal_manifest(
    manifest: Mapping[str, Any], private_keys: Sequence[rsa.RSAPrivateKey]
) -> dict[str, bytes]:
    """Every item of a SealedSecret (a parsed manifest), decrypted."""
    if manifest.get("kind") != "SealedSecret":
        raise UnsealError(f"not a SealedSecret: kind {manifest.get('kind')!r}")
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    scope = scope_of(manifest)
    items = (manifest.get("spec") or {}).get("encryptedData") or {}
    return {
        key: unseal_item(
            value, private_keys=private_keys, namespace=namespace, name=name, scope=scope
        )
        for key, value in items.items()
    }


# --- key pairs and certificates ----------------------------------------------------------------


@dataclass(frozen=True)
class ControllerKeyPair:
    private_key: rsa.RSAPrivateKey
    cert_pem: bytes

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


def self_signed_cert(
    private_key: CertificateIssuerPrivateKeyTypes,
    *,
    common_name: str = "sealed-secret",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> bytes:
    """A self-signed CA cert like the controller's ``SignKey`` makes; PEM bytes."""
    start = not_before or datetime.now(UTC) - timedelta(minutes=1)
    end = not_after or start + DEFAULT_VALIDITY
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    algorithm = None if _signs_without_hash(private_key) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _signs_without_hash(key: CertificateIssuerPrivateKeyTypes) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    return isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))


def generate_key_pair(
    bits: int = DEFAULT_KEY_BITS,
    *,
    common_name: str = "sealed-secret",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> ControllerKeyPair:
    """A fresh controller key and its self-signed cert (RSA 4096 takes about a second)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = self_signed_cert(key, common_name=common_name, not_before=not_before, not_after=not_after)
    return ControllerKeyPair(private_key=key, cert_pem=pem)


def load_private_keys(pem: bytes) -> list[rsa.RSAPrivateKey]:
    """Every RSA private key in a PEM bundle (like ``--recovery-private-key``)."""
    keys: list[rsa.RSAPrivateKey] = []
    for match in _PEM_BLOCK.finditer(pem):
        if b"PRIVATE KEY" not in match.group(1):
            continue
        key = serialization.load_pem_private_key(match.group(0), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            keys.append(key)
    return keys


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----\n?", re.DOTALL)


__all__ = [
    "CLUSTER_WIDE",
    "NAMESPACE_WIDE",
    "STRICT",
    "ControllerKeyPair",
    "UnsealError",
    "generate_key_pair",
    "load_private_keys",
    "scope_of",
    "self_signed_cert",
    "unseal_item",
    "unseal_manifest",
]
