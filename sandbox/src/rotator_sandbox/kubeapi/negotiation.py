"""Output negotiation of the ``Accept`` header's ``as=`` conversions: Tables (kubectl) and
``PartialObjectMetadata`` (metadata-only answers, as client-go's metadata client asks for).

Follows kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/endpoints/handlers/:

- ``negotiation/negotiate.go`` ``NegotiateMediaTypeOptions``/``acceptMediaTypeOptions``: the
  Accept clauses are tried in order; a clause's ``as``/``g``/``v`` parameters ask for a
  conversion, and a clause whose conversion the endpoint does not allow is skipped; when no
  clause is left the answer is 406 ``NotAcceptable`` "only the following media types are
  accepted: ..." (``negotiation/errors.go``);
- ``rest.go`` ``RequestScope.AllowsMediaTypeTransform``: ``Table`` (application/json or yaml),
  ``PartialObjectMetadata`` and ``PartialObjectMetadataList``, each only in ``meta.k8s.io``
  ``v1`` or ``v1beta1``;
- ``response.go`` ``doTransformObject``, ``asPartialObjectMetadata`` (an object -> kind
  ``PartialObjectMetadata``, ``apiVersion: meta.k8s.io/<v>``, its ``metadata`` and nothing else;
  asked of a list -> 406 "you requested PartialObjectMetadata, but the requested object is a
  list") and ``asPartialObjectMetadataList`` (a list -> ``PartialObjectMetadataList`` whose items
  are ``PartialObjectMetadata``, keeping the list's resourceVersion and continue token; asked of
  one object -> 406 "... but the requested object is not a list"); watch events carry each
  object converted (``watchEmbeddedEncoder``).

Differences (deliberate): the stand-in answers every accepted clause as JSON (it serves no
protobuf or YAML responses), and a clause without ``as`` of another media type is answered as
JSON too, as before; the 406 messages leave out the Go type name (``%T``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from rotator_sandbox.kubeapi.status import ApiError

Obj = dict[str, Any]
META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")
TABLE, PARTIAL, PARTIAL_LIST = "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
TABLE_MEDIA = ("application/json", "application/yaml", "application/*", "*/*")
# negotiation.MediaTypesForSerializer of the built-in types (json, yaml, protobuf)
ACCEPTED = "application/json, application/yaml, application/vnd.kubernetes.protobuf"


class Convert(NamedTuple):
    """The conversion an accepted Accept clause asks for (``MediaTypeOptions.Convert``)."""

    kind: str  # Table, PartialObjectMetadata or PartialObjectMetadataList
    version: str  # of meta.k8s.io


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def _clauses(accept: str) -> Iterator[tuple[str, dict[str, str]]]:
    for part in accept.split(","):
        pieces = part.split(";")
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            if key.strip() != "q":
                params[key.strip()] = value.strip()
        yield pieces[0].strip().lower(), params


def negotiate(accept: str) -> Convert | None:
    """The conversion the first acceptable clause asks for; None for a plain answer (no
    ``as``, or no Accept header); 406 when every clause asks for a conversion that is not
    allowed (``rest.go`` ``AllowsMediaTypeTransform``)."""
    if not accept.strip():
        return None
    for media, params in _clauses(accept):
        if not {"as", "g", "v"} & params.keys():
            return None
        kind, group, version = params.get("as", ""), params.get("g", ""), params.get("v", "")
        if group != META_GROUP or version not in META_VERSIONS:
            continue
        if kind == TABLE and media in TABLE_MEDIA:
            return Convert(kind, version)
        if kind in (PARTIAL, PARTIAL_LIST):
            return Convert(kind, version)
    raise not_acceptable(f"only the following media types are accepted: {ACCEPTED}")


def partial_object(obj: Obj, version: str) -> Obj:
    """``meta.AsPartialObjectMetadata``: the object's metadata and nothing else."""
    return {
        "kind": PARTIAL,
        "apiVersion": f"{META_GROUP}/{version}",
        "metadata": dict(obj.get("metadata") or {}),
    }


def partial_single(obj: Obj, convert: Convert) -> Obj:
    """``asPartialObjectMetadata`` of one object (a List conversion of one object: 406)."""
    if convert.kind == PARTIAL_LIST:
        raise not_acceptable(
            "you requested PartialObjectMetadataList, but the requested object is not a list"
        )
    return partial_object(obj, convert.version)


def partial_list(items: list[Obj], list_meta: Obj, convert: Convert) -> Obj:
    """``asPartialObjectMetadataList`` of a list (the single-object conversion of a list: 406)."""
    if convert.kind == PARTIAL:
        raise not_acceptable(
            "you requested PartialObjectMetadata, but the requested object is a list"
        )
    return {
        "kind": PARTIAL_LIST,
        "apiVersion": f"{META_GROUP}/{convert.version}",
        "metadata": dict(list_meta),
        "items": [partial_object(i, convert.version) for i in items],
    }


def partial_events(events: Iterator[Obj], version: str) -> Iterator[Obj]:
    """Watch events whose objects are ``PartialObjectMetadata`` (``watchEmbeddedEncoder``);
    ERROR (a Status) and BOOKMARK events pass unchanged."""
    try:
        for event in events:
            if event["type"] in ("ERROR", "BOOKMARK"):
                yield event
                continue
            yield {"type": event["type"], "object": partial_object(event["object"], version)}
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
