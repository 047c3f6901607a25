"""Just enough of the Kubernetes protobuf encoding for the bodies kubectl's typed clients send.

kubectl's typed clients send ``application/vnd.kubernetes.protobuf`` bodies (``kubectl auth
can-i`` does). The envelope is the magic ``k8s\\0`` followed by a ``runtime.Unknown`` message
whose field 2 holds the object's own protobuf bytes (k8s.io/apimachinery
``runtime/serializer/protobuf``). Field numbers below are from k8s.io/api
``authorization/v1/generated.proto``; Namespace, Secret and ConfigMap creates are decoded too
(``core/v1/generated.proto``). Every other protobuf body is answered with 415.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints for varints, bytes for length-delimited)."""
    out: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            pos += length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _text(msg: dict[int, list[Any]], number: int) -> str:
    values = msg.get(number) or [b""]
    return bytes(values[-1]).decode()


def _message(msg: dict[int, list[Any]], number: int) -> dict[int, list[Any]] | None:
    values = msg.get(number)
    return fields(bytes(values[-1])) if values else None


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw object bytes) from a protobuf-encoded request body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    unknown = fields(body[len(MAGIC) :])
    type_meta = _message(unknown, 1) or {}
    raw = (unknown.get(2) or [b""])[-1]
    return _text(type_meta, 1), _text(type_meta, 2), bytes(raw)


def self_subject_access_review(raw: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf SelfSubjectAccessReview (its spec)."""
    review = fields(raw)
    spec = _message(review, 2) or {}
    doc: dict[str, Any] = {}
    res = _message(spec, 1)
    if res is not None:
        names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
        doc["resourceAttributes"] = {n: _text(res, i) for i, n in enumerate(names, start=1)}
    non = _message(spec, 2)
    if non is not None:
        doc["nonResourceAttributes"] = {"path": _text(non, 1), "verb": _text(non, 2)}
    return {"spec": doc}


def _string_map(
    msg: dict[int, list[Any]], number: int, *, as_base64: bool = False
) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in msg.get(number) or []:
        pair = fields(bytes(entry))
        key = _text(pair, 1)
        value = bytes((pair.get(2) or [b""])[-1])
        out[key] = base64.b64encode(value).decode() if as_base64 else value.decode()
    return out


def _object_meta(raw: bytes) -> dict[str, Any]:
    """The ObjectMeta fields a create carries (k8s.io/apimachinery ``meta/v1/generated.proto``)."""
    msg = fields(raw)
    meta: dict[str, Any] = {}
    for number, key in ((1, "name"), (2, "generateName"), (3, "namespace"), (6, "resourceVersion")):
        if msg.get(number):
            meta[key] = _text(msg, number)
    for number, key in ((11, "labels"), (12, "annotations")):
        if msg.get(number):
            meta[key] = _string_map(msg, number)
    if msg.get(14):
        meta["finalizers"] = [bytes(v).decode() for v in msg[14]]
    return meta


def decode_object(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded Namespace, ServiceAccount, Secret or ConfigMap (what ``kubectl create
    namespace|serviceaccount|secret|configmap`` send) as its JSON form; metadata only for the
    first two (spec.finalizers and SA secrets are left to the server's defaults)."""
    api_version, kind, raw = unwrap(body)
    msg = fields(raw)
    meta_raw = msg.get(1)
    doc: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _object_meta(bytes(meta_raw[-1])) if meta_raw else {},
    }
    if kind in ("Namespace", "ServiceAccount"):
        return doc
    if kind == "Secret":
        if msg.get(2):
            doc["data"] = _string_map(msg, 2, as_base64=True)
        if msg.get(4):
            doc["stringData"] = _string_map(msg, 4)
        if msg.get(3):
            doc["type"] = _text(msg, 3)
        if msg.get(5):
            doc["immutable"] = bool(msg[5][-1])
        return doc
    if kind == "ConfigMap":
        if msg.get(2):
            doc["data"] = _string_map(msg, 2)
        if msg.get(3):
            doc["binaryData"] = _string_map(msg, 3, as_base64=True)
        if msg.get(4):
            doc["immutable"] = bool(msg[4][-1])
        return doc
    raise ProtobufError(f"no protobuf decoding for {kind}")
