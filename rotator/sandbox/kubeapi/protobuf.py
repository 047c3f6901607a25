"""Just enough of the Kubernetes protobuf envelope to read a SelfSubjectAccessReview.

kubectl's typed clients send ``application/vnd.kubernetes.protobuf`` bodies (``kubectl auth
can-i`` does). The envelope is the magic ``k8s\\0`` followed by a ``runtime.Unknown`` message
whose field 2 holds the object's own protobuf bytes (k8s.io/apimachinery
``runtime/serializer/protobuf``). Field numbers below are from k8s.io/api
``authorization/v1/generated.proto``. Every other protobuf body is answered with 415.
"""

from __future__ import annotations

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
