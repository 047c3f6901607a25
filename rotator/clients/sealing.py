"""kubeseal-compatible sealing: certificates, the hybrid cipher and the SealedSecret file.

The cipher follows bitnami-labs/sealed-secrets ``pkg/crypto/crypto.go`` (``HybridEncrypt``) and
the label rule of ``pkg/apis/sealedsecrets/v1alpha1/sealedsecret_expansion.go``
(``EncryptionLabel``): a fresh 32-byte AES-256-GCM session key with an all-zero 12-byte nonce
and no AAD, wrapped with RSA-OAEP(SHA-256, MGF1-SHA-256) under the label ``ns/name`` (strict),
``ns`` (namespace-wide) or nothing (cluster-wide). Output: uint16 big-endian length of the RSA
ciphertext, the RSA ciphertext, then the GCM ciphertext and tag; standard base64 with padding.

The manifest is written the way kubeseal >= 0.32 writes ``--format yaml``: ``NewSealedSecret``
builds the object, the Kubernetes YAML serializer turns its JSON into YAML with go-yaml v2
(keys sorted by go-yaml's own order, strings that would read as another type double-quoted,
no anchors), and kubeseal puts ``---`` before the document (sealed-secrets PR #1335). Since
k8s.io/apimachinery v0.34 (kubernetes PR #130989) a zero ``creationTimestamp`` is omitted, so it
is not written. Files written by older kubeseal (with ``creationTimestamp: null``) are read.

The value is never logged; log lines carry its fingerprint only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import re
import secrets
import struct
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rotator.clients import transport
from rotator.config import CertSource, ControllerRef, SealingScope, check_url
from rotator.errors import CertError, SealingError
from rotator.names import FINGERPRINT_ANNOTATION, Fingerprint
from rotator.redact import Secret, fingerprint

log = logging.getLogger(__name__)

API_VERSION = "bitnami.com/v1alpha1"
KIND = "SealedSecret"
NAMESPACE_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/cluster-wide"
SCOPE_ANNOTATIONS = {
    SealingScope.NAMESPACE_WIDE: NAMESPACE_WIDE_ANNOTATION,
    SealingScope.CLUSTER_WIDE: CLUSTER_WIDE_ANNOTATION,
}
CERT_PATH = "/v1/cert.pem"
VERIFY_PATH = "/v1/verify"
MIN_KEY_BITS = 2048
EXPIRY_WARNING = timedelta(days=30)
SESSION_KEY_BYTES = 32
GCM_NONCE = bytes(12)  # the session key is used once, so a zero nonce is safe (crypto.go)
CERT_SIZE_LIMIT = 64 * 1024
_FIX_CERT = (
    "fetch the current cert with `kubeseal --fetch-cert` (or from the controller's "
    "/v1/cert.pem) and pass it with --cert, or fix environments.<env>.cert"
)


# --- the certificate -------------------------------------------------------------------------


@dataclass(frozen=True)
class SealingCert:
    """A usable sealing certificate: RSA, >= 2048 bits, valid at load time."""

    pem: bytes
    public_key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime
    key_bits: int
    source: str
    fingerprint: Fingerprint
    expiring_soon: bool

    def expires_within(self, window: timedelta, *, now: datetime) -> bool:
        return self.not_after - now <= window

    def describe(self) -> str:
        return (
            f"{self.source} (RSA {self.key_bits}, cert {self.fingerprint}, "
            f"valid until {self.not_after:%Y-%m-%d})"
        )


_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", flags=re.DOTALL
)


def pem_certificates(pem: bytes) -> list[bytes]:
    """PURE. Each ``CERTIFICATE`` block of a PEM text (a bundle has several)."""
    return [m.group(0) + b"\n" for m in _PEM_CERT.finditer(pem)]


def _same_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    return a.public_numbers() == b.public_numbers()


def load_cert(
    pem: bytes, *, source: str, now: datetime, match: SealingCert | None = None
) -> SealingCert:
    """Parse and check a PEM certificate; raise ``CertError`` naming ``source`` and the fix.

    A bundle of several certificates is refused (kubeseal's ``ParseKey`` silently takes the
    first, which may be a key the controller no longer serves) unless ``match`` (the
    controller's current cert) picks exactly one of them by its public key."""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CertError(f"sealing cert from {source} is not a PEM certificate; {_FIX_CERT}")
    blocks = pem_certificates(pem)
    if len(blocks) > 1:
        return _pick_from_bundle(blocks, source=source, now=now, match=match)
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(
            f"sealing cert from {source} is not a valid PEM certificate; {_FIX_CERT}"
        ) from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertError(
            f"sealing cert from {source} holds {_key_kind(key)} key, but sealed-secrets "
            f"needs RSA; {_FIX_CERT}"
        )
    if key.key_size < MIN_KEY_BITS:
        raise CertError(
            f"sealing cert from {source} has a {key.key_size}-bit RSA key, under the "
            f"{MIN_KEY_BITS}-bit minimum; {_FIX_CERT}"
        )
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    now = now.astimezone(UTC)
    if now > not_after:
        raise CertError(
            f"sealing cert from {source} expired on {not_after:%Y-%m-%d %H:%M} UTC "
            f"(kubeseal refuses it too); {_FIX_CERT}"
        )
    if now < not_before:
        raise CertError(
            f"sealing cert from {source} is not valid before {not_before:%Y-%m-%d %H:%M} UTC; "
            f"check this machine's clock, or {_FIX_CERT}"
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    result = SealingCert(
        pem=pem,
        public_key=key,
        not_before=not_before,
        not_after=not_after,
        key_bits=key.key_size,
        source=source,
        fingerprint=fingerprint(der),
        expiring_soon=not_after - now <= EXPIRY_WARNING,
    )
    if result.expiring_soon:
        log.warning(
            "sealing cert from %s expires on %s UTC (within %d days); the controller renews "
            "its key every 30 days: fetch the new cert",
            source,
            f"{not_after:%Y-%m-%d %H:%M}",
            EXPIRY_WARNING.days,
        )
    return result


def _pick_from_bundle(
    blocks: list[bytes], *, source: str, now: datetime, match: SealingCert | None
) -> SealingCert:
    count = len(blocks)
    if match is None:
        raise CertError(
            f"sealing cert from {source} is a bundle of {count} certificates, and no "
            "controller to tell which one it serves: keep only the controller's current cert "
            "in it, or set environments.<env>.cert.check_with to the controller; "
            f"{_FIX_CERT}"
        )
    matching = []
    for i, block in enumerate(blocks, 1):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise CertError(
                f"sealing cert from {source}: certificate {i} of {count} is not valid PEM; "
                f"{_FIX_CERT}"
            ) from exc
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey) and _same_key(key, match.public_key):
            matching.append(block)
    if len(matching) != 1:
        raise CertError(
            f"sealing cert from {source} is a bundle of {count} certificates, and "
            f"{len(matching)} of them match the controller's current cert {match.fingerprint} "
            f"(exactly one must); {_FIX_CERT}"
        )
    return load_cert(matching[0], source=f"{source} (the controller's of {count})", now=now)


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC ({key.curve.name})"
    if isinstance(key, dsa.DSAPublicKey):
        return "a DSA"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "an EdDSA"
    return "a non-RSA"


class ServiceProxy(Protocol):
    """The Kubernetes API server's service proxy (implemented by ``rotator.clients.kube``).

    Paths go to ``/api/v1/namespaces/{ns}/services/http:{service}:{port_name}/proxy{path}``.
    """

    def get(self, namespace: str, service: str, port_name: str, path: str) -> bytes: ...

    def post(
        self,
        namespace: str,
        service: str,
        port_name: str,
        path: str,
        body: bytes,
        *,
        idempotent: bool = False,
    ) -> tuple[int, bytes]: ...


def ensure_cert_url(url: str) -> str:
    """https, or plain http to a loopback address only; never credentials in the URL."""
    try:
        return check_url(url)
    except ValueError as exc:
        raise CertError(f"cert URL: {exc}") from None


def fetch_cert(
    source: CertSource,
    *,
    proxy: ServiceProxy | None,
    timeout: tuple[float, float],
    now: datetime,
    retry: transport.RetryPolicy | None = None,
) -> SealingCert:
    """Read the sealing cert from a file, an https URL or the controller, and check it. A PEM
    bundle (file or URL) is narrowed to the one cert the ``check_with`` controller serves."""
    if source.file is not None:
        pem = _read_cert_file(source.file)
        match = _controller_cert(source, pem, proxy=proxy, now=now)
        return load_cert(pem, source=f"file {source.file}", now=now, match=match)
    if source.url is not None:
        url = ensure_cert_url(source.url)
        with requests.Session() as session:
            response = transport.request(
                session,
                "GET",
                url,
                what=f"fetch the sealing cert from {url}",
                error=CertError,
                timeout=timeout,
                idempotent=True,
                retry=retry or transport.RetryPolicy(),
            )
            body = response.content[:CERT_SIZE_LIMIT]
        match = _controller_cert(source, body, proxy=proxy, now=now)
        return load_cert(body, source=f"URL {url}", now=now, match=match)
    assert source.controller is not None
    return _fetch_from_controller(source.controller, proxy=proxy, now=now)


def _fetch_from_controller(
    ref: ControllerRef, *, proxy: ServiceProxy | None, now: datetime
) -> SealingCert:
    where = f"controller {ref.namespace}/{ref.name} (port {ref.port_name})"
    if proxy is None:
        raise CertError(
            f"the sealing cert comes from the {where}, which needs a Kubernetes client; "
            "pass --cert PEM-or-URL instead"
        )
    # an idempotent read: the proxy retries a 5xx (e.g. "cannot get certificate") and a 429
    body = proxy.get(ref.namespace, ref.name, ref.port_name, CERT_PATH)
    return load_cert(body[:CERT_SIZE_LIMIT], source=where, now=now)


def _controller_cert(
    source: CertSource, pem: bytes, *, proxy: ServiceProxy | None, now: datetime
) -> SealingCert | None:
    """The ``check_with`` controller's current cert, read only to pick one cert of a bundle."""
    if len(pem_certificates(pem)) <= 1 or source.check_with is None or proxy is None:
        return None
    return _fetch_from_controller(source.check_with, proxy=proxy, now=now)


def _read_cert_file(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(CERT_SIZE_LIMIT)
    except OSError as exc:
        raise CertError(
            f"cannot read the sealing cert file {path}: {exc.strerror}; {_FIX_CERT}"
        ) from exc


# --- the cipher ------------------------------------------------------------------------------


def encryption_label(namespace: str, name: str, scope: SealingScope) -> bytes:
    """The RSA-OAEP label that binds a ciphertext to its scope (``EncryptionLabel``)."""
    if scope is SealingScope.CLUSTER_WIDE:
        return b""
    if scope is SealingScope.NAMESPACE_WIDE:
        return namespace.encode()
    return f"{namespace}/{name}".encode()


def seal_item(
    value: bytes,
    *,
    public_key: rsa.RSAPublicKey,
    namespace: str,
    name: str,
    scope: SealingScope,
) -> str:
    """Encrypt one item exactly like kubeseal's ``HybridEncrypt``; standard base64."""
    session_key = os.urandom(SESSION_KEY_BYTES)
    label = encryption_label(namespace, name, scope)
    wrapped = public_key.encrypt(
        session_key,
        padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()),
            algorithm=hashes.SHA256(),
            label=label or None,
        ),
    )
    sealed = AESGCM(session_key).encrypt(GCM_NONCE, value, None)
    blob = struct.pack(">H", len(wrapped)) + wrapped + sealed
    return base64.b64encode(blob).decode("ascii")


# --- the manifest ----------------------------------------------------------------------------


def _go_yaml_less(a: str, b: str) -> bool:
    """go-yaml v2's map key order (``keyList.Less`` in sorter.go), for string keys."""
    ar, br = list(a), list(b)
    for i in range(min(len(ar), len(br))):
        if ar[i] == br[i]:
            continue
        al, bl = ar[i].isalpha(), br[i].isalpha()
        if al and bl:
            return ar[i] < br[i]
        if al or bl:
            return bl
        an = bn = 0
        if ar[i] == "0" or br[i] == "0":
            j = i - 1
            while j >= 0 and _is_digit(ar[j]):
                if ar[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(ar) and _is_digit(ar[ai]):
            an = an * 10 + int(ar[ai])
            ai += 1
        bi = i
        while bi < len(br) and _is_digit(br[bi]):
            bn = bn * 10 + int(br[bi])
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ar[i] < br[i]
    return len(ar) < len(br)


def _is_digit(ch: str) -> bool:
    return ch.isdigit() and unicodedata.category(ch) == "Nd"


def _go_key_cmp(a: str, b: str) -> int:
    if _go_yaml_less(a, b):
        return -1
    return 1 if _go_yaml_less(b, a) else 0


def _go_ordered(node: Any) -> Any:
    if isinstance(node, Mapping):
        keys = sorted(node, key=functools.cmp_to_key(_go_key_cmp))
        return {k: _go_ordered(node[k]) for k in keys}
    if isinstance(node, list):
        return [_go_ordered(item) for item in node]
    return node


class _KubeYamlDumper(yaml.SafeDumper):
    """Emit like go-yaml v2: no anchors, block style, no line folding."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# go-yaml v2 (YAML 1.1) also reads these as booleans; PyYAML's resolver does not.
_GO_YAML_EXTRA_BOOLS = frozenset({"y", "Y", "n", "N"})


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # go-yaml's encoder double-quotes a string that would read back as another type
    # ("true", "1", "null", ""); otherwise it asks for plain style.
    resolved = dumper.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if resolved != "tag:yaml.org,2002:str" or value in _GO_YAML_EXTRA_BOOLS:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_KubeYamlDumper.add_representer(str, _represent_str)


def render_manifest(manifest: Mapping[str, Any]) -> str:
    """YAML text as ``kubeseal --format yaml`` writes it: ``---``, go-yaml order and quoting."""
    body = yaml.dump(
        _go_ordered(manifest),
        Dumper=_KubeYamlDumper,
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=2**31 - 1,
        indent=2,
    )
    return "---\n" + body


def build_manifest(
    *,
    namespace: str,
    name: str,
    scope: SealingScope,
    encrypted: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The SealedSecret object that ``NewSealedSecret`` builds for a Secret with this metadata.

    The template's metadata is a copy of the Secret's (name, namespace, labels, annotations;
    for a non-strict scope kubeseal has put the scope annotation on the Secret, so the template
    carries it too); the outer metadata holds name, namespace and the scope annotation only.
    """
    template_annotations = dict(annotations or {})
    outer: dict[str, Any] = {"name": name, "namespace": namespace}
    if scope in SCOPE_ANNOTATIONS:
        template_annotations[SCOPE_ANNOTATIONS[scope]] = "true"
        outer["annotations"] = {SCOPE_ANNOTATIONS[scope]: "true"}
    template_meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    if labels:
        template_meta["labels"] = dict(labels)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": outer,
        "spec": {
            "encryptedData": dict(encrypted),
            "template": {"metadata": template_meta, "type": "Opaque"},
        },
    }


def seal_manifest(
    items: Mapping[str, bytes],
    *,
    namespace: str,
    name: str,
    scope: SealingScope,
    cert: SealingCert,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Seal raw values into a complete manifest text (each item encrypted separately)."""
    encrypted = {
        key: seal_item(
            value, public_key=cert.public_key, namespace=namespace, name=name, scope=scope
        )
        for key, value in items.items()
    }
    manifest = build_manifest(
        namespace=namespace,
        name=name,
        scope=scope,
        encrypted=encrypted,
        annotations=annotations,
        labels=labels,
    )
    return render_manifest(manifest)


# --- reading and updating a sealed file ------------------------------------------------------


@dataclass(frozen=True)
class SealedFileInfo:
    path: str
    namespace: str
    name: str
    scope: SealingScope
    keys: tuple[str, ...]
    fingerprint: Fingerprint | None


@dataclass(frozen=True)
class SealedUpdate:
    text: str
    fingerprint: Fingerprint
    cert_fingerprint: Fingerprint
    created: bool
    kept_keys: tuple[str, ...]


def _invalid(path: str, why: str) -> SealingError:
    return SealingError(
        f"{path} is not a valid SealedSecret ({why}); restore it from git history "
        "(`git checkout -- <file>`) or delete it and seal every item again"
    )


def _mapping(node: Any, where: str, path: str) -> dict[str, Any]:
    if not isinstance(node, dict) or not all(isinstance(k, str) for k in node):
        raise _invalid(path, f"`{where}` must be a mapping")
    return node


def _str_map(node: Any, where: str, path: str) -> dict[str, str]:
    mapping = _mapping(node, where, path)
    for key, value in mapping.items():
        if not isinstance(value, str):
            raise _invalid(path, f"`{where}.{key}` must be a string")
    return mapping


def scope_from_annotations(annotations: Mapping[str, Any]) -> SealingScope:
    """``SecretScope``: cluster-wide wins over namespace-wide; neither means strict."""
    if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
        return SealingScope.CLUSTER_WIDE
    if annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
        return SealingScope.NAMESPACE_WIDE
    return SealingScope.STRICT


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _invalid(path, f"not valid YAML{where}") from None
    if len(docs) != 1:
        raise _invalid(path, f"expected one YAML document, found {len(docs)}")
    doc = _mapping(docs[0], "<top>", path)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise SealingError(
            f"{path} is not a SealedSecret (apiVersion {doc.get('apiVersion')!r}, kind "
            f"{doc.get('kind')!r}); point the environment's sealed_file at the SealedSecret "
            "file or move that file away"
        )
    meta = _mapping(doc.get("metadata"), "metadata", path)
    for field in ("name", "namespace"):
        if not isinstance(meta.get(field), str) or not meta[field]:
            raise _invalid(path, f"`metadata.{field}` is missing")
    if "annotations" in meta:
        _str_map(meta["annotations"], "metadata.annotations", path)
    spec = _mapping(doc.get("spec"), "spec", path)
    if "data" in spec:
        raise _invalid(path, "it uses the deprecated whole-Secret `spec.data` field")
    encrypted = _str_map(spec.get("encryptedData"), "spec.encryptedData", path)
    for key, value in encrypted.items():
        try:
            blob = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _invalid(path, f"`spec.encryptedData.{key}` is not base64") from None
        if len(blob) < 2 or len(blob) < 2 + struct.unpack(">H", blob[:2])[0]:
            raise _invalid(path, f"`spec.encryptedData.{key}` is too short to be sealed")
    template = _mapping(spec.get("template", {}), "spec.template", path)
    tmeta = _mapping(template.get("metadata", {}), "spec.template.metadata", path)
    for field in ("annotations", "labels"):
        if field in tmeta and tmeta[field] is not None:
            _str_map(tmeta[field], f"spec.template.metadata.{field}", path)
    return doc


def read_sealed_file(text: str, *, path: str) -> SealedFileInfo:
    """What a sealed file is for and which key fingerprint it records (never the value)."""
    doc = _parse(text, path)
    meta = doc["metadata"]
    tmeta = doc["spec"].get("template", {}).get("metadata", {}) or {}
    recorded = (tmeta.get("annotations") or {}).get(FINGERPRINT_ANNOTATION)
    return SealedFileInfo(
        path=path,
        namespace=meta["namespace"],
        name=meta["name"],
        scope=scope_from_annotations(meta.get("annotations") or {}),
        keys=tuple(doc["spec"]["encryptedData"]),
        fingerprint=Fingerprint(recorded) if isinstance(recorded, str) else None,
    )


def update_sealed_file(
    existing: str | None,
    *,
    value: Secret,
    namespace: str,
    name: str,
    data_key: str,
    scope: SealingScope,
    cert: SealingCert,
    path: str = "the sealed file",
    labels: Mapping[str, str] | None = None,
) -> SealedUpdate:
    """Seal ``value`` under ``data_key``; keep every other item's ciphertext byte for byte.

    Like ``kubeseal --merge-into``: the existing object is kept, the item and the template
    annotations (our fingerprint) are replaced, and the whole object is written again.
    """
    ciphertext = seal_item(
        value.reveal().encode(),
        public_key=cert.public_key,
        namespace=namespace,
        name=name,
        scope=scope,
    )
    if existing is None or not existing.strip():
        manifest = build_manifest(
            namespace=namespace,
            name=name,
            scope=scope,
            encrypted={data_key: ciphertext},
            annotations={FINGERPRINT_ANNOTATION: value.fingerprint},
            labels=labels,
        )
        kept: tuple[str, ...] = ()
        created = True
    else:
        manifest = _parse(existing, path)
        info = read_sealed_file(existing, path=path)
        _ensure_same_target(info, namespace=namespace, name=name, scope=scope)
        spec = manifest["spec"]
        kept = tuple(k for k in spec["encryptedData"] if k != data_key)
        spec["encryptedData"][data_key] = ciphertext
        template = spec.setdefault("template", {})
        tmeta = template.get("metadata") or {}
        template["metadata"] = tmeta
        tmeta.pop("creationTimestamp", None)  # old kubeseal wrote null; >= 0.32 omits it
        manifest["metadata"].pop("creationTimestamp", None)
        tmeta.setdefault("name", name)
        tmeta.setdefault("namespace", namespace)
        annotations = dict(tmeta.get("annotations") or {})
        annotations[FINGERPRINT_ANNOTATION] = value.fingerprint
        tmeta["annotations"] = annotations
        if labels:
            tmeta["labels"] = {**(tmeta.get("labels") or {}), **labels}
        template.setdefault("type", "Opaque")
        created = False
    text = render_manifest(manifest)
    log.info(
        "sealed %s for %s/%s (%s, key %s, cert %s; kept %d other item(s))",
        data_key,
        namespace,
        name,
        scope.value,
        value.fingerprint,
        cert.fingerprint,
        len(kept),
    )
    return SealedUpdate(
        text=text,
        fingerprint=value.fingerprint,
        cert_fingerprint=cert.fingerprint,
        created=created,
        kept_keys=kept,
    )


def _ensure_same_target(
    info: SealedFileInfo, *, namespace: str, name: str, scope: SealingScope
) -> None:
    wanted = (namespace, name, scope)
    found = (info.namespace, info.name, info.scope)
    if wanted == found:
        return
    raise SealingError(
        f"{info.path} is sealed for {info.namespace}/{info.name} ({info.scope.value}) but the "
        f"config asks for {namespace}/{name} ({scope.value}); the other items in it cannot be "
        "moved without their values: fix the environment's namespace/secret_name/scope, or "
        "delete the file and seal every item again"
    )


# --- asking the controller -------------------------------------------------------------------


def verify_with_controller(
    manifest_text: str, *, proxy: ServiceProxy, controller: ControllerRef
) -> bool:
    """POST the manifest to the controller's ``/v1/verify``: True on 200, False on 409.

    The endpoint only reads (pkg/controller/server.go: it tries to open the body), so it is
    retried like a read: on 5xx and on the 429 of its rate limit (``--rate-limit`` 2/s)."""
    doc = yaml.safe_load(manifest_text)
    body = json.dumps(doc, sort_keys=True).encode()
    status, answer = proxy.post(
        controller.namespace,
        controller.name,
        controller.port_name,
        VERIFY_PATH,
        body,
        idempotent=True,
    )
    if status == 200:
        return True
    if status == 409:
        return False
    detail = transport.truncate(answer.decode("utf-8", "replace"))
    raise SealingError(
        f"verify with controller {controller.namespace}/{controller.name}: HTTP {status}: {detail}",
        status=status,
        retryable=status >= 500,
    )


def ensure_controller_opens(
    cert: SealingCert,
    *,
    proxy: ServiceProxy,
    controller: ControllerRef,
    namespace: str,
    name: str,
    data_key: str,
    scope: SealingScope,
) -> None:
    """Seal a throwaway value with ``cert`` for ``namespace/name`` and ask the controller to
    open it (``/v1/verify``); a cert it cannot open (not one of its keys) -> ``CertError``.
    Before the reset, so a wrong cert aborts with nothing changed."""
    throwaway = Secret(f"rotator-cert-check-{secrets.token_hex(16)}")
    text = update_sealed_file(
        None,
        value=throwaway,
        namespace=namespace,
        name=name,
        data_key=data_key,
        scope=scope,
        cert=cert,
    ).text
    if not verify_with_controller(text, proxy=proxy, controller=controller):
        raise CertError(
            f"the controller {controller.namespace}/{controller.name} cannot open a value "
            f"sealed with {cert.describe()} (POST {VERIFY_PATH}: 409): it is not one of the "
            f"controller's keys; {_FIX_CERT}"
        )


__all__ = [
    "FINGERPRINT_ANNOTATION",
    "SealedFileInfo",
    "SealedUpdate",
    "SealingCert",
    "ServiceProxy",
    "build_manifest",
    "encryption_label",
    "ensure_controller_opens",
    "fetch_cert",
    "load_cert",
    "pem_certificates",
    "read_sealed_file",
    "render_manifest",
    "scope_from_annotations",
    "seal_item",
    "seal_manifest",
    "update_sealed_file",
    "verify_with_controller",
]
