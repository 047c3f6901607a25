"""Label and field selectors, parsed like k8s.io/apimachinery ``labels.Parse``/``fields``.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``, ``k``, ``!k``,
``k>n``, ``k<n``. Field selectors: ``f=v``, ``f==v``, ``f!=v`` joined by commas, with ``\\,``
``\\=`` ``\\\\`` escapes; only the labels a kind supports (else 400 ``field label not
supported``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rotator_sandbox.kubeapi.resources import ResourceType, field_value
from rotator_sandbox.kubeapi.status import ApiError, bad_request

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_label_selector(text: str) -> tuple[Requirement, ...]:
    text = text.strip()
    if not text:
        return ()
    reqs: list[Requirement] = []
    for part in _split_top(text):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(3), values))
        elif m := _CMP_RE.match(part):
            op = "=" if m.group(3) == "==" else m.group(3)
            if op in (">", "<") and not re.fullmatch(r"-?\d+", m.group(4)):
                raise bad_request(f"unable to parse requirement: {part.strip()}: not an integer")
            reqs.append(Requirement(m.group(1), op, (m.group(4),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise bad_request(
                f"unable to parse requirement: found '{part.strip()}', expected a valid requirement"
            )
    return tuple(reqs)


def _split_escaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class FieldRequirement:
    label: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(text: str, rt: ResourceType) -> tuple[FieldRequirement, ...]:
    text = text.strip()
    if not text:
        return ()
    allowed = {"metadata.name", "metadata.namespace", *rt.field_labels}
    reqs: list[FieldRequirement] = []
    for part in _split_escaped(text, ","):
        m = re.match(r"^(.*?)(!=|==|=)(.*)$", part)
        if m is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        label, op, value = m.group(1).strip(), m.group(2), _unescape(m.group(3).strip())
        if label not in allowed:
            raise bad_request(f"field label not supported: {label}")
        reqs.append(FieldRequirement(label, "!=" if op == "!=" else "=", value))
    return tuple(reqs)


def exact_name(reqs: tuple[FieldRequirement, ...]) -> str | None:
    """The name a ``metadata.name=x`` field selector pins a list/watch to (RBAC uses it)."""
    for req in reqs:
        if req.label == "metadata.name" and req.op == "=":
            return req.value
    return None


def matcher(labels: tuple[Requirement, ...], fields: tuple[FieldRequirement, ...]) -> Matcher:
    if not labels and not fields:
        return lambda _obj: True

    def match(obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        obj_labels = meta.get("labels") or {}
        if not all(req.matches(obj_labels) for req in labels):
            return False
        for req in fields:
            equal = field_value(obj, req.label) == req.value
            if equal != (req.op == "="):
                return False
        return True

    return match


def build_matcher(label_selector: str, field_selector: str, rt: ResourceType) -> Matcher:
    return matcher(parse_label_selector(label_selector), parse_field_selector(field_selector, rt))


__all__ = ["ApiError", "Matcher", "build_matcher", "exact_name", "parse_field_selector"]
