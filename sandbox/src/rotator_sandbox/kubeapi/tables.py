"""Server-side ``meta.k8s.io`` Tables, which kubectl asks for when it prints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from rotator_sandbox.kubeapi.resources import ResourceType

Obj = dict[str, Any]


def age(timestamp: str) -> str:
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _column_doc(name: str, type_: str, fmt: str, priority: int) -> Obj:
    return {"name": name, "type": type_, "format": fmt, "description": name, "priority": priority}


def table(rt: ResourceType, objs: list[Obj], *, rv: str, version: str, include: str) -> Obj:
    """A ``meta.k8s.io`` Table like the server-side printers (kubectl asks for one)."""
    shown = [c for c in rt.columns if c.priority == 0]
    later = [c for c in rt.columns if c.priority != 0]
    columns = [_column_doc("Name", "string", "name", 0)]
    columns += [_column_doc(c.name, c.type, c.fmt, 0) for c in shown]
    if rt.age_column:
        columns.append(_column_doc("Age", "string", "", 0))
    columns += [_column_doc(c.name, c.type, c.fmt, c.priority) for c in later]
    rows = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        cells: list[Any] = [meta.get("name", "")]
        cells += [col.value(obj) for col in shown]
        if rt.age_column:
            cells.append(age(str(meta.get("creationTimestamp", ""))))
        cells += [col.value(obj) for col in later]
        row: Obj = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{version}",
                "metadata": meta,
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    }


def table_events(
    events: Iterator[Obj], rt: ResourceType, version: str, include: str
) -> Iterator[Obj]:
    """Watch events whose objects are one-row Tables (``kubectl get -w``); like the real server,
    only the first carries the column definitions."""
    first = True
    try:
        for event in events:
            obj = event["object"]
            if event["type"] in ("ERROR", "BOOKMARK"):
                yield event
                continue
            rv = str(obj["metadata"].get("resourceVersion", ""))
            doc = table(rt, [obj], rv=rv, version=version, include=include)
            if not first:
                doc["columnDefinitions"] = []
            first = False
            yield {"type": event["type"], "object": doc}
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
