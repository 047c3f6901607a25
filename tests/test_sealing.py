from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotator.clients.sealing import (
    SealingCert,
    _go_yaml_less,
    build_manifest,
    fetch_cert,
    load_cert,
    read_sealed_file,
    render_manifest,
    seal_item,
    seal_manifest,
    update_sealed_file,
    verify_with_controller,
)
from rotator.config import CertSource, ControllerRef, SealingScope
from rotator.errors import CertError, SealingError
from rotator.names import FINGERPRINT_ANNOTATION
from rotator.redact import Secret
from rotator_sandbox.unseal import UnsealError, unseal_item, unseal_manifest
from tests.sealing_fixtures import (
    NOW,
    controller_keys,
    ec_cert,
    expired_cert,
    expiring_cert,
    future_cert,
    small_rsa_cert,
)

NS, NAME, KEY = "align-preview", "align-posthog", "POSTHOG_API_KEY"
VALUE = Secret("phc_TestKey0123456789abcdefABCDEF")
SCOPES = list(SealingScope)


def cert_for(bits: int = 2048, slot: int = 0) -> SealingCert:
    return load_cert(controller_keys(bits, slot).cert_pem, source="test cert", now=NOW)


def seal(scope: SealingScope, *, bits: int = 2048, value: bytes = b"v") -> str:
    return seal_item(
        value, public_key=cert_for(bits).public_key, namespace=NS, name=NAME, scope=scope
    )


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 4096])
@pytest.mark.parametrize("scope", SCOPES)
def test_a_sealed_file_decrypts_back_to_the_exact_value(bits: int, scope: SealingScope) -> None:
    update = update_sealed_file(
        None,
        value=VALUE,
        namespace=NS,
        name=NAME,
        data_key=KEY,
        scope=scope,
        cert=cert_for(bits),
    )
    manifest = yaml.safe_load(update.text)
    opened = unseal_manifest(manifest, [controller_keys(bits).private_key])
    assert opened == {KEY: VALUE.reveal().encode()}
    assert update.fingerprint == VALUE.fingerprint
    assert manifest["spec"]["template"]["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == (
        VALUE.fingerprint
    )


@pytest.mark.parametrize("bits", [2048, 4096])
def test_the_wrapped_session_key_is_as_long_as_the_rsa_modulus(bits: int) -> None:
    blob = base64.b64decode(seal(SealingScope.STRICT, bits=bits))
    assert int.from_bytes(blob[:2], "big") == bits // 8
    # RSA ciphertext, then 1 byte of value and the 16-byte GCM tag
    assert len(blob) == 2 + bits // 8 + 1 + 16


def test_sealing_the_same_value_twice_gives_different_ciphertexts() -> None:
    assert seal(SealingScope.STRICT) != seal(SealingScope.STRICT)


def test_the_controller_tries_each_of_its_keys() -> None:
    ciphertext = seal(SealingScope.STRICT)
    keys = [controller_keys(2048, 1).private_key, controller_keys(2048).private_key]
    assert unseal_item(ciphertext, private_keys=keys, namespace=NS, name=NAME, scope="strict")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.binary(max_size=2048),
    namespace=st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
    name=st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?", fullmatch=True),
    scope=st.sampled_from(SCOPES),
)
def test_any_value_round_trips_in_any_scope(
    value: bytes, namespace: str, name: str, scope: SealingScope
) -> None:
    keys = controller_keys(2048)
    ciphertext = seal_item(
        value, public_key=cert_for().public_key, namespace=namespace, name=name, scope=scope
    )
    opened = unseal_item(
        ciphertext, private_keys=[keys.private_key], namespace=namespace, name=name, scope=scope
    )
    assert opened == value


# --- what must not decrypt -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sealed_scope", "namespace", "name", "scope"),
    [
        (SealingScope.STRICT, "align-prod", NAME, "strict"),  # another namespace
        (SealingScope.STRICT, NS, "other-secret", "strict"),  # another name
        (SealingScope.STRICT, NS, NAME, "namespace-wide"),  # another scope
        (SealingScope.STRICT, NS, NAME, "cluster-wide"),
        (SealingScope.NAMESPACE_WIDE, "align-prod", NAME, "namespace-wide"),
        (SealingScope.NAMESPACE_WIDE, NS, NAME, "strict"),
        (SealingScope.NAMESPACE_WIDE, NS, NAME, "cluster-wide"),
        (SealingScope.CLUSTER_WIDE, NS, NAME, "strict"),
        (SealingScope.CLUSTER_WIDE, NS, NAME, "namespace-wide"),
    ],
)
def test_a_value_sealed_for_another_target_does_not_decrypt(
    sealed_scope: SealingScope, namespace: str, name: str, scope: str
) -> None:
    ciphertext = seal(sealed_scope)
    with pytest.raises(UnsealError):
        unseal_item(
            ciphertext,
            private_keys=[controller_keys(2048).private_key],
            namespace=namespace,
            name=name,
            scope=scope,
        )


def test_wider_scopes_open_anywhere_they_allow() -> None:
    key = [controller_keys(2048).private_key]
    ns_wide = seal(SealingScope.NAMESPACE_WIDE)
    assert unseal_item(ns_wide, private_keys=key, namespace=NS, name="x", scope="namespace-wide")
    cluster = seal(SealingScope.CLUSTER_WIDE)
    assert unseal_item(cluster, private_keys=key, namespace="y", name="x", scope="cluster-wide")


def test_another_controller_key_does_not_decrypt() -> None:
    with pytest.raises(UnsealError):
        unseal_item(
            seal(SealingScope.STRICT),
            private_keys=[controller_keys(2048, 1).private_key],
            namespace=NS,
            name=NAME,
            scope="strict",
        )


@pytest.mark.parametrize("where", ["length", "rsa", "gcm", "tag", "truncated"])
def test_tampered_ciphertext_fails(where: str) -> None:
    blob = bytearray(base64.b64decode(seal(SealingScope.STRICT, value=b"phc_value")))
    if where == "length":
        blob[1] ^= 0x01
    elif where == "rsa":
        blob[10] ^= 0x01
    elif where == "gcm":
        blob[2 + 256] ^= 0x01
    elif where == "tag":
        blob[-1] ^= 0x80
    else:
        del blob[-5:]
    with pytest.raises(UnsealError):
        unseal_item(
            base64.b64encode(bytes(blob)).decode(),
            private_keys=[controller_keys(2048).private_key],
            namespace=NS,
            name=NAME,
            scope="strict",
        )


# --- the manifest layout ---------------------------------------------------------------------

# What kubeseal >= 0.32 prints for `kubectl create secret generic align-posthog
# --from-literal=POSTHOG_API_KEY=... -n align-preview --dry-run=client -o yaml | kubeseal
# --format yaml [--scope ...]` with type Opaque and our annotation on the Secret: NewSealedSecret
# (sealedsecret_expansion.go) -> JSON -> go-yaml v2 (sorted keys, "true" double-quoted),
# `---` first (PR #1335), no creationTimestamp (apimachinery >= 0.34, kubernetes PR #130989).
GOLDEN_STRICT = """\
---
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata:
  name: align-posthog
  namespace: align-preview
spec:
  encryptedData:
    POSTHOG_API_KEY: <CIPHERTEXT>
  template:
    metadata:
      annotations:
        rotator.align.dev/key-fingerprint: <FINGERPRINT>
      name: align-posthog
      namespace: align-preview
    type: Opaque
"""

GOLDEN_WIDE = """\
---
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata:
  annotations:
    sealedsecrets.bitnami.com/<SCOPE>: "true"
  name: align-posthog
  namespace: align-preview
spec:
  encryptedData:
    POSTHOG_API_KEY: <CIPHERTEXT>
  template:
    metadata:
      annotations:
        rotator.align.dev/key-fingerprint: <FINGERPRINT>
        sealedsecrets.bitnami.com/<SCOPE>: "true"
      name: align-posthog
      namespace: align-preview
    type: Opaque
"""


@pytest.mark.parametrize("scope", SCOPES)
def test_the_manifest_is_laid_out_like_kubeseal_writes_it(scope: SealingScope) -> None:
    update = update_sealed_file(
        None, value=VALUE, namespace=NS, name=NAME, data_key=KEY, scope=scope, cert=cert_for()
    )
    ciphertext = yaml.safe_load(update.text)["spec"]["encryptedData"][KEY]
    golden = GOLDEN_STRICT if scope is SealingScope.STRICT else GOLDEN_WIDE
    expected = (
        golden.replace("<CIPHERTEXT>", ciphertext)
        .replace("<FINGERPRINT>", VALUE.fingerprint)
        .replace("<SCOPE>", scope.value)
    )
    assert update.text == expected
    assert "&" not in update.text
    assert "*" not in update.text.replace(ciphertext, "")


def test_keys_are_sorted_in_go_yaml_order_and_odd_strings_are_double_quoted() -> None:
    manifest = build_manifest(
        namespace=NS,
        name=NAME,
        scope=SealingScope.STRICT,
        encrypted={"b10": "AQ==", "b9": "AQ==", "A_B": "AQ==", "AB": "AQ==", "a": "AQ=="},
        labels={"on": "yes", "count": "10", "empty": "", "app": "align-gateway", "n": "n"},
    )
    text = render_manifest(manifest)
    data = text.split("encryptedData:\n", 1)[1].split("  template:", 1)[0]
    assert [line.split(":")[0].strip() for line in data.splitlines()] == [
        "A_B",
        "AB",
        "a",
        "b9",
        "b10",
    ]
    assert '      labels:\n        app: align-gateway\n        count: "10"\n' in text
    assert 'empty: ""' in text
    assert '"n": "n"' in text  # go-yaml quotes keys that read as booleans too
    assert '"on": "yes"' in text
    assert yaml.safe_load(text)["spec"]["template"]["metadata"]["labels"]["count"] == "10"


@pytest.mark.parametrize(
    ("a", "b"),
    [("a9", "a10"), ("A_B", "AB"), ("a_b", "ab"), ("B", "a"), ("a", "ab"), ("x1", "x01")],
)
def test_go_yaml_key_order(a: str, b: str) -> None:
    assert _go_yaml_less(a, b)
    assert not _go_yaml_less(b, a)


def test_a_cluster_wide_manifest_still_writes_its_namespace() -> None:
    text = seal_manifest(
        {KEY: b"x"}, namespace=NS, name=NAME, scope=SealingScope.CLUSTER_WIDE, cert=cert_for()
    )
    doc = yaml.safe_load(text)
    assert doc["metadata"]["namespace"] == NS
    assert doc["spec"]["template"]["metadata"]["namespace"] == NS


# --- certificates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (lambda: b"hello, I am not a cert\n", r"not a PEM certificate"),
        (
            lambda: b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
            r"not a valid PEM certificate",
        ),
        (ec_cert, r"holds an EC \(secp256r1\) key, but sealed-secrets needs RSA"),
        (small_rsa_cert, r"1024-bit RSA key, under the 2048-bit minimum"),
        (expired_cert, r"expired on 2026-11-25"),
        (future_cert, r"not valid before 2026-11-29 .*check this machine's clock"),
    ],
    ids=["not-pem", "bad-pem", "ec-key", "rsa-1024", "expired", "not-yet-valid"],
)
def test_each_bad_cert_gives_its_message(pem: object, message: str) -> None:
    assert callable(pem)
    with pytest.raises(CertError, match=message) as info:
        load_cert(pem(), source="file /tmp/cert.pem", now=NOW)
    assert "file /tmp/cert.pem" in str(info.value)
    assert "--fetch-cert" in str(info.value) or "clock" in str(info.value)


def test_a_cert_that_expires_within_30_days_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rotator.clients.sealing"):
        cert = load_cert(expiring_cert(), source="URL https://x", now=NOW)
    assert cert.expiring_soon
    assert cert.expires_within(timedelta(days=30), now=NOW)
    assert any("expires on" in r.getMessage() for r in caplog.records)


def test_a_good_cert_is_described_by_its_fingerprint() -> None:
    cert = cert_for(4096)
    assert cert.key_bits == 4096
    assert not cert.expiring_soon
    assert cert.fingerprint.startswith("sha256:")
    assert "RSA 4096" in cert.describe()


class CertHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/v1/cert.pem":
            body = controller_keys(2048).cert_pem
            self.send_response(200)
            self.send_header("Content-Type", "application/x-pem-file")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cert_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CertHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_cert_is_fetched_from_a_url(cert_server: str) -> None:
    source = CertSource(url=cert_server + "/v1/cert.pem")
    cert = fetch_cert(source, proxy=None, timeout=(2, 2), now=NOW)
    assert cert.pem == controller_keys(2048).cert_pem


def test_a_missing_cert_url_is_a_cert_error(cert_server: str) -> None:
    with pytest.raises(CertError, match="HTTP 404"):
        fetch_cert(CertSource(url=cert_server + "/nope"), proxy=None, timeout=(2, 2), now=NOW)


def test_a_cert_is_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(controller_keys(2048).cert_pem)
    assert fetch_cert(CertSource(file=path), proxy=None, timeout=(1, 1), now=NOW).key_bits == 2048
    with pytest.raises(CertError, match="cannot read the sealing cert file"):
        fetch_cert(CertSource(file=tmp_path / "nope.pem"), proxy=None, timeout=(1, 1), now=NOW)


class FakeControllerProxy:
    """The API server's service proxy in front of a controller that holds ``keys``."""

    def __init__(
        self,
        bits: int = 2048,
        slot: int = 0,
        *,
        cert_slot: int | None = None,
        verify_status: int | None = None,
    ) -> None:
        self.keys = controller_keys(bits, slot)
        # A controller can hand out the cert of a key other than the one it decrypts with.
        self.cert_pem = controller_keys(bits, slot if cert_slot is None else cert_slot).cert_pem
        self.verify_status = verify_status
        self.calls: list[tuple[str, str, str, str]] = []

    def get(self, namespace: str, service: str, port_name: str, path: str) -> bytes:
        self.calls.append((namespace, service, port_name, path))
        return self.cert_pem

    def post(
        self,
        namespace: str,
        service: str,
        port_name: str,
        path: str,
        body: bytes,
        *,
        idempotent: bool = False,
    ) -> tuple[int, bytes]:
        assert idempotent  # /v1/verify only reads: retried like a read
        self.calls.append((namespace, service, port_name, path))
        if self.verify_status is not None:
            return self.verify_status, b"internal error " * 100
        try:
            unseal_manifest(json.loads(body), [self.keys.private_key])
        except UnsealError:
            return 409, b"cannot decrypt"
        return 200, b""


def test_a_cert_is_fetched_from_the_controller_through_the_proxy() -> None:
    proxy = FakeControllerProxy()
    ref = ControllerRef(name="sealed-secrets", namespace="kube-system", port_name="http")
    cert = fetch_cert(CertSource(controller=ref), proxy=proxy, timeout=(1, 1), now=NOW)
    assert cert.pem == proxy.keys.cert_pem
    assert proxy.calls == [("kube-system", "sealed-secrets", "http", "/v1/cert.pem")]
    with pytest.raises(CertError, match="needs a Kubernetes client"):
        fetch_cert(CertSource(controller=ref), proxy=None, timeout=(1, 1), now=NOW)


def test_a_plain_http_cert_url_off_loopback_is_refused() -> None:
    source = CertSource.model_construct(url="http://example.com/cert.pem")
    with pytest.raises(CertError, match="use https"):
        fetch_cert(source, proxy=None, timeout=(1, 1), now=NOW)


def test_the_controller_verifies_what_it_can_decrypt() -> None:
    text = seal_manifest(
        {KEY: b"x"}, namespace=NS, name=NAME, scope=SealingScope.STRICT, cert=cert_for()
    )
    ref = ControllerRef()
    assert verify_with_controller(text, proxy=FakeControllerProxy(), controller=ref)
    assert not verify_with_controller(text, proxy=FakeControllerProxy(slot=1), controller=ref)
    with pytest.raises(SealingError, match=r"HTTP 500: internal error .*more chars"):
        verify_with_controller(text, proxy=FakeControllerProxy(verify_status=500), controller=ref)


# --- updating a sealed file ------------------------------------------------------------------


def two_item_file(scope: SealingScope = SealingScope.STRICT) -> str:
    return seal_manifest(
        {KEY: b"phc_old", "OTHER_KEY": b"other"},
        namespace=NS,
        name=NAME,
        scope=scope,
        cert=cert_for(),
        labels={"app": "align-gateway"},
    )


@pytest.mark.parametrize("scope", SCOPES)
def test_updating_keeps_other_items_byte_for_byte(scope: SealingScope) -> None:
    before = two_item_file(scope)
    other = yaml.safe_load(before)["spec"]["encryptedData"]["OTHER_KEY"]
    update = update_sealed_file(
        before, value=VALUE, namespace=NS, name=NAME, data_key=KEY, scope=scope, cert=cert_for()
    )
    assert f"    OTHER_KEY: {other}\n" in update.text
    assert update.kept_keys == ("OTHER_KEY",)
    assert not update.created
    doc = yaml.safe_load(update.text)
    assert doc["spec"]["encryptedData"]["OTHER_KEY"] == other
    assert doc["spec"]["template"]["metadata"]["labels"] == {"app": "align-gateway"}
    opened = unseal_manifest(doc, [controller_keys(2048).private_key])
    assert opened == {KEY: VALUE.reveal().encode(), "OTHER_KEY": b"other"}
    info = read_sealed_file(update.text, path="x.yaml")
    assert (info.namespace, info.name, info.scope) == (NS, NAME, scope)
    assert info.fingerprint == VALUE.fingerprint
    assert set(info.keys) == {KEY, "OTHER_KEY"}


def test_a_file_from_older_kubeseal_is_accepted_and_rewritten_in_the_new_layout() -> None:
    old = yaml.safe_load(two_item_file())
    old["metadata"]["creationTimestamp"] = None
    old["spec"]["template"]["metadata"]["creationTimestamp"] = None
    text = yaml.safe_dump(old)  # no leading ---, PyYAML quoting: still a valid file
    assert read_sealed_file(text, path="old.yaml").fingerprint is None
    update = update_sealed_file(
        text,
        value=VALUE,
        namespace=NS,
        name=NAME,
        data_key=KEY,
        scope=SealingScope.STRICT,
        cert=cert_for(),
    )
    assert "creationTimestamp" not in update.text
    assert update.text.startswith("---\napiVersion: bitnami.com/v1alpha1\n")


@pytest.mark.parametrize(
    ("namespace", "name", "scope", "message"),
    [
        ("align-prod", NAME, SealingScope.STRICT, r"sealed for align-preview/align-posthog"),
        (NS, "other", SealingScope.STRICT, r"config asks for align-preview/other"),
        (NS, NAME, SealingScope.CLUSTER_WIDE, r"\(strict\) but the config asks .*cluster-wide"),
    ],
)
def test_a_file_for_another_target_is_refused(
    namespace: str, name: str, scope: SealingScope, message: str
) -> None:
    with pytest.raises(SealingError, match=message) as info:
        update_sealed_file(
            two_item_file(),
            value=VALUE,
            namespace=namespace,
            name=name,
            data_key=KEY,
            scope=scope,
            cert=cert_for(),
            path="sealedsecrets/preview/posthog.yaml",
        )
    assert "sealedsecrets/preview/posthog.yaml" in str(info.value)
    assert "seal every item again" in str(info.value)


def hand_edits() -> list[tuple[str, str]]:
    good = two_item_file()
    doc = yaml.safe_load(good)
    not_base64 = good.replace(doc["spec"]["encryptedData"]["OTHER_KEY"], "not base64!")
    listed = yaml.safe_load(good)
    listed["spec"]["encryptedData"] = ["a", "b"]
    no_name = yaml.safe_load(good)
    del no_name["metadata"]["name"]
    return [
        ("kind: Deployment\napiVersion: apps/v1\nmetadata: {name: x}\n", "is not a SealedSecret"),
        (good + "---\n" + good, "expected one YAML document, found 2"),
        (good.replace("spec:", "spec: [", 1), "not valid YAML"),
        (not_base64, r"spec\.encryptedData\.OTHER_KEY` is not base64"),
        (yaml.safe_dump(listed), r"spec\.encryptedData` must be a mapping"),
        (yaml.safe_dump(no_name), r"metadata\.name` is missing"),
        (good.replace("OTHER_KEY: ", "OTHER_KEY: AQA"), r"OTHER_KEY` is not base64|too short"),
    ]


@pytest.mark.parametrize("index", range(7))
def test_a_hand_edited_invalid_file_is_refused_with_its_path(index: int) -> None:
    text, message = hand_edits()[index]
    with pytest.raises(SealingError, match=message) as info:
        update_sealed_file(
            text,
            value=VALUE,
            namespace=NS,
            name=NAME,
            data_key=KEY,
            scope=SealingScope.STRICT,
            cert=cert_for(),
            path="ops/sealedsecrets/preview/posthog.yaml",
        )
    assert "ops/sealedsecrets/preview/posthog.yaml" in str(info.value)


def test_the_value_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        update = update_sealed_file(
            two_item_file(),
            value=VALUE,
            namespace=NS,
            name=NAME,
            data_key=KEY,
            scope=SealingScope.STRICT,
            cert=cert_for(),
        )
    assert VALUE.reveal() not in update.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert VALUE.fingerprint in logged
    assert VALUE.reveal() not in logged
