"""A PostHog stand-in: a real HTTP server on loopback that behaves like PostHog where it matters.

Routes and bodies follow upstream PostHog (FACTS section 2; read from PostHog/posthog):

- ``GET /api/projects/{id}/`` and ``PATCH /api/projects/{id}/reset_token/`` (and the
  ``/api/environments/{id}/`` alias): personal-key auth (``Authorization: Bearer phx_...``) and
  the scope rules of ``posthog/permissions.py`` ``APIScopePermission``: a legacy key (no scopes)
  may do anything; a scoped key gets 403 "This action does not support Personal API Key access"
  on the reset (the action declares no scope) and "API key missing required scope '...'" when a
  scope is missing. Errors use DRF's ``{type, code, detail, attr}`` body.
- ``POST /i/v0/e/``, ``/e/``, ``/capture/``, ``/batch/``: the Rust capture service
  (``rust/capture/src/api.rs``, ``token.rs``, ``v0_request.rs``): 200 ``{"status":"Ok"}`` for any
  well-formed key, dead or alive; plain-text 401/400 bodies with the upstream wording.
- ``POST /api/projects/{id}/query/``: a small HogQL subset over the stored events, with a
  result cache that only ``"refresh": "force_blocking"`` bypasses (the stale-result trap).

Ingestion is modelled, not just storage: an accepted event is resolved ``lag_s`` after it arrived;
it lands in the project if its key is the project's current key, or was until a reset less than
``window_s`` before (PostHog's token->team cache: 2 min + up to 30 s jitter, hence 150 s by
default); otherwise it is dropped silently and counted. Counters, fault injection and a UI-style
reset are in-process methods and also ``/_sandbox/...`` HTTP routes.

Keys are plain strings inside the stand-in (it plays the outside system); every key it hands out
is wrapped in ``Secret`` and nothing it logs contains a key, only fingerprints.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import uuid as uuid_mod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from rotator.clock import Clock, SystemClock
from rotator.redact import Secret, fingerprint
from rotator_sandbox.posthog_login import (
    ADMIN_LEVEL,
    Flavour,
    LoginFlow,
    LoginReply,
    SessionUser,
    set_cookie_headers,
)

log = logging.getLogger(__name__)

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_TOKEN_LENGTH = 64  # rust/capture/src/token.rs: validate_token
DEFAULT_WINDOW_S = 150.0  # token->team cache of 2 min + up to 30 s jitter (FACTS section 2)
DEFAULT_LAG_S = 0.2
DEFAULT_CACHE_TTL_S = 6 * 3600.0
DEFAULT_HOGQL_LIMIT = 100
INGEST_PREFIX = "/ingest"

Route = Literal["project", "reset_token", "query", "capture", "login"]
FaultKind = Literal["5xx", "hang", "lose_response", "slow", "acted_5xx", "no_api_token", "late_5xx"]
ROUTES: tuple[Route, ...] = ("project", "reset_token", "query", "capture", "login")
# posthog/permissions.py APIScopePermission: the message for an action without required_scopes.
NO_TOKEN_ACCESS = "This action does not support personal API key access"
# posthog/permissions.py TeamMemberStrictManagementPermission (PATCH needs admin).
NOT_ADMIN = "You don't have sufficient permissions in the project."
# posthog/clickhouse/client/limit.py get_api_personal_rate_limiter: max_concurrency=3 API
# queries per ORGANIZATION (FACTS says per team); the stand-in has one organization.
MAX_CONCURRENT_QUERIES = 3
FAULT_KINDS: tuple[FaultKind, ...] = (
    "5xx",
    "hang",
    "lose_response",
    "slow",
    "acted_5xx",
    "no_api_token",
    "late_5xx",
)


# --- values ----------------------------------------------------------------------------------


def generate_token(prefix: str, nbytes: int = 32) -> str:
    """PostHog's ``generate_random_token``: base62 of ``nbytes`` random bytes, with a prefix."""
    number = secrets.randbits(nbytes * 8)
    digits = ""
    while number:
        number, index = divmod(number, 62)
        digits = BASE62[index] + digits
    return prefix + (digits or "0")


@dataclass(frozen=True)
class RateLimits:
    """Per personal key; PostHog's defaults (FACTS section 2, posthog/rate_limit.py)."""

    per_minute: int = 480
    per_hour: int = 4800
    query_per_minute: int = 240
    query_per_hour: int = 2400

    @classmethod
    def legacy_team(cls) -> RateLimits:
        """posthog/rate_limit.py HogQLQueryThrottle: 120/hour for teams on the legacy list and
        on self-hosted."""
        return cls(query_per_minute=120, query_per_hour=120)


@dataclass
class _PersonalKey:
    scopes: tuple[str, ...]  # empty: a legacy key (all access only on self_hosted_legacy)
    level: int = ADMIN_LEVEL  # the key's user's effective_membership_level
    calls: deque[float] = field(default_factory=deque)
    query_calls: deque[float] = field(default_factory=deque)


@dataclass
class _Project:
    id: int
    name: str
    token: str
    uuid: str
    live_events_token: str
    # (token, replaced at): the keys this project had before, newest last.
    retired: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class _Event:
    uuid: str
    event: str
    distinct_id: str
    properties: dict[str, Any]
    timestamp: datetime
    token: str
    received_at: float
    project_id: int | None = None
    outcome: Literal["pending", "ingested", "dropped"] = "pending"
    resolved_at: float | None = None


@dataclass(frozen=True)
class KeyCounters:
    """What happened to the events sent with one key (by fingerprint)."""

    accepted: int
    ingested: int
    dropped: int
    pending: int
    first_accepted_at: float | None
    last_accepted_at: float | None
    last_ingested_at: float | None
    last_dropped_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "ingested": self.ingested,
            "dropped": self.dropped,
            "pending": self.pending,
            "first_accepted_at": self.first_accepted_at,
            "last_accepted_at": self.last_accepted_at,
            "last_ingested_at": self.last_ingested_at,
            "last_dropped_at": self.last_dropped_at,
        }


@dataclass(frozen=True)
class EventRecord:
    """One accepted event and what ingestion made of it (for benchmarks: the dark window)."""

    key_fingerprint: str
    event: str
    distinct_id: str
    properties: Mapping[str, Any]
    received_at: float
    outcome: Literal["pending", "ingested", "dropped"]
    resolved_at: float | None
    project_id: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "key_fingerprint": self.key_fingerprint,
            "event": self.event,
            "distinct_id": self.distinct_id,
            "properties": dict(self.properties),
            "received_at": self.received_at,
            "outcome": self.outcome,
            "resolved_at": self.resolved_at,
            "project_id": self.project_id,
        }


@dataclass(frozen=True)
class Counters:
    """A snapshot: events per key fingerprint, and requests per route (``reset_token`` etc.)."""

    keys: Mapping[str, KeyCounters]
    requests: Mapping[str, int]
    resets: Mapping[int, int]

    def for_key(self, key: Secret | str) -> KeyCounters:
        fp = key.fingerprint if isinstance(key, Secret) else fingerprint(key)
        return self.keys.get(fp) or KeyCounters(0, 0, 0, 0, None, None, None, None)

    def as_json(self) -> dict[str, Any]:
        return {
            "keys": {fp: c.as_json() for fp, c in sorted(self.keys.items())},
            "requests": dict(sorted(self.requests.items())),
            "resets": {str(k): v for k, v in sorted(self.resets.items())},
        }


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int
    delay_s: float
    status: int


class _Lost(Exception):
    """Close the connection without an answer (a lost response)."""


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def _json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(
        status, json.dumps(payload, separators=(",", ":")).encode(), "application/json", headers
    )


def _text_reply(status: int, text: str) -> _Reply:
    # axum's `(StatusCode, String)` answers text/plain (rust/capture/src/api.rs IntoResponse).
    return _Reply(status, text.encode(), "text/plain; charset=utf-8")


def _drf_error(
    status: int, type_: str, code: str, detail: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Reply:
    return _json_reply(
        status, {"type": type_, "code": code, "detail": detail, "attr": None}, headers
    )


# --- HogQL subset ----------------------------------------------------------------------------


class HogQLError(Exception):
    """Unsupported or invalid HogQL: answered as a 400 ``validation_error``, never guessed."""


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<op>==|!=|<>|>=|<=|=|>|<|\(|\)|,|\.|\*|-|\+)
  | (?P<ident>[A-Za-z_$][A-Za-z0-9_$]*|`[^`]+`)
    """,
    re.VERBOSE,
)
_KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "order",
    "by",
    "limit",
    "asc",
    "desc",
    "interval",
    "true",
    "false",
    "null",
}
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_FIELDS = {"uuid", "event", "timestamp", "distinct_id", "properties"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # string, number, op, ident, kw, end
    value: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise HogQLError(f"Syntax error at line 1, column {pos}: unexpected {text[pos]!r}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind == "string":
            body = value[1:-1]
            value = re.sub(r"\\(.)", r"\1", body)
        elif kind == "ident":
            if value.startswith("`"):
                value = value[1:-1]
            elif value.lower() in _KEYWORDS:
                kind, value = "kw", value.lower()
        if kind != "ws":
            out.append(_Tok(kind, value, pos))
        pos = match.end()
    out.append(_Tok("end", "", len(text)))
    return out


# AST nodes are tuples: ("const", v) ("field", path) ("now",) ("todt", str) ("interval", s)
# ("count",) ("bin", op, l, r) ("and", l, r) ("or", l, r) ("not", e) ("arith", op, l, r)
Node = tuple[Any, ...]


@dataclass(frozen=True)
class _Select:
    columns: tuple[tuple[str, Node], ...]
    where: Node | None
    order: tuple[Node, bool] | None  # (expression, descending)
    limit: int | None

    @property
    def is_count(self) -> bool:
        return any(node[0] in ("count", "countif") for _, node in self.columns)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> _Tok | None:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def expect(self, kind: str, value: str | None = None) -> _Tok:
        tok = self.accept(kind, value)
        if tok is None:
            got = self.peek()
            want = value or kind
            shown = got.value or "end of query"
            raise HogQLError(
                f"Syntax error at line 1, column {got.pos}: expected {want}, got {shown!r}"
            )
        return tok

    def parse(self) -> _Select:
        self.expect("kw", "select")
        columns = [self.column()]
        while self.accept("op", ","):
            columns.append(self.column())
        self.expect("kw", "from")
        table = self.expect("ident")
        if table.value != "events":
            raise HogQLError(f"Unknown table `{table.value}`.")
        where = None
        if self.accept("kw", "where"):
            where = self.expr()
        order = None
        if self.accept("kw", "order"):
            self.expect("kw", "by")
            node = self.operand()
            descending = bool(self.accept("kw", "desc"))
            if not descending:
                self.accept("kw", "asc")
            order = (node, descending)
        limit = None
        if self.accept("kw", "limit"):
            limit = int(float(self.expect("number").value))
        tok = self.peek()
        if tok.kind != "end":
            raise HogQLError(
                f"Syntax error at line 1, column {tok.pos}: unsupported here: {tok.value!r}"
            )
        return _Select(tuple(columns), where, order, limit)

    def column(self) -> tuple[str, Node]:
        start = self.peek().pos
        node = self.operand()
        if node[0] not in ("field", "count", "countif", "now"):
            raise HogQLError(f"Syntax error at line 1, column {start}: unsupported column")
        names = {"count": "count()", "countif": "countIf(...)", "now": "now()"}
        name = ".".join(node[1]) if node[0] == "field" else names[node[0]]
        return name, node

    def expr(self) -> Node:
        node = self.conj()
        while self.accept("kw", "or"):
            node = ("or", node, self.conj())
        return node

    def conj(self) -> Node:
        node = self.neg()
        while self.accept("kw", "and"):
            node = ("and", node, self.neg())
        return node

    def neg(self) -> Node:
        if self.accept("kw", "not"):
            return ("not", self.neg())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("=", "==", "!=", "<>", ">=", "<=", ">", "<"):
            self.next()
            op = {"==": "=", "<>": "!="}.get(tok.value, tok.value)
            return ("bin", op, left, self.operand())
        if left[0] not in ("group", "const"):
            raise HogQLError(
                f"Syntax error at line 1, column {tok.pos}: expected a comparison, got "
                f"{tok.value or 'end of query'!r}"
            )
        return left

    def operand(self) -> Node:
        node = self.term()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in ("+", "-"):
                self.next()
                node = ("arith", tok.value, node, self.term())
            else:
                return node

    def term(self) -> Node:
        tok = self.next()
        if tok.kind == "string":
            return ("const", tok.value)
        if tok.kind == "number":
            return ("const", float(tok.value) if "." in tok.value else int(tok.value))
        if tok.kind == "kw" and tok.value in ("true", "false"):
            return ("const", tok.value == "true")
        if tok.kind == "kw" and tok.value == "null":
            return ("const", None)
        if tok.kind == "kw" and tok.value == "interval":
            amount = float(self.expect("number").value)
            unit = self.expect("ident").value.lower().rstrip("s")
            if unit not in _UNITS:
                raise HogQLError(f"Unsupported interval unit {unit!r}")
            return ("interval", amount * _UNITS[unit])
        if tok.kind == "op" and tok.value == "(":
            inner = self.expr()
            self.expect("op", ")")
            return ("group", inner)
        if tok.kind == "ident":
            if self.accept("op", "("):
                return self.call(tok)
            path = [tok.value]
            while self.accept("op", "."):
                path.append(self.expect("ident").value)
            if path[0] not in _FIELDS or (path[0] != "properties" and len(path) > 1):
                raise HogQLError(f"Unable to resolve field: {'.'.join(path)}")
            if path[0] == "properties" and len(path) > 2:
                raise HogQLError("Nested property access is not supported by the stand-in")
            return ("field", tuple(path))
        raise HogQLError(
            f"Syntax error at line 1, column {tok.pos}: unexpected {tok.value or 'end of query'!r}"
        )

    def call(self, name: _Tok) -> Node:
        fn = name.value
        if fn == "count":
            self.expect("op", ")")
            return ("count",)
        if fn == "countIf":  # ClickHouse's -If combinator, as HogQL passes it through
            condition = self.expr()
            self.expect("op", ")")
            return ("countif", condition)
        if fn == "now":
            self.expect("op", ")")
            return ("now",)
        if fn == "toDateTime":
            arg = self.expect("string").value
            self.expect("op", ")")
            return ("todt", _parse_time(arg))
        raise HogQLError(f"Unsupported function call `{fn}(...)` in the stand-in")


def _parse_time(text: str) -> datetime:
    raw = text.strip().replace(" ", "T", 1)
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise HogQLError(f"Cannot parse {text!r} as a date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_hogql(text: str) -> _Select:
    return _Parser(text).parse()


def _value(node: Node, ev: _Event, now: datetime) -> Any:
    kind = node[0]
    if kind == "const":
        return node[1]
    if kind == "group":
        return _truth(node[1], ev, now)
    if kind == "field":
        path = node[1]
        if path[0] == "properties":
            if len(path) == 1:
                return json.dumps(ev.properties, sort_keys=True)
            return ev.properties.get(path[1])
        return {
            "uuid": ev.uuid,
            "event": ev.event,
            "timestamp": ev.timestamp,
            "distinct_id": ev.distinct_id,
        }[path[0]]
    if kind == "now":
        return now
    if kind == "todt":
        return node[1]
    if kind == "interval":
        return timedelta(seconds=node[1])
    if kind == "arith":
        left, right = _value(node[2], ev, now), _value(node[3], ev, now)
        if isinstance(left, datetime) and isinstance(right, timedelta):
            return left - right if node[1] == "-" else left + right
        if isinstance(left, (int, float)) and isinstance(right, (int, float)):
            return left - right if node[1] == "-" else left + right
        raise HogQLError(f"Cannot apply {node[1]!r} to these operands")
    raise HogQLError(f"Unsupported expression {kind!r}")


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        # posthog/hogql/printer.py: `a = b` -> ifNull(equals(a, b), 0), `a != b` ->
        # ifNull(notEquals(a, b), 1), `= NULL` -> isNull, `!= NULL` -> isNotNull; other
        # comparisons with NULL are false. So a missing property is "!=" anything.
        if op == "=":
            return left is None and right is None
        if op == "!=":
            return not (left is None and right is None)
        return False
    if isinstance(left, datetime) or isinstance(right, datetime):
        left = left if isinstance(left, datetime) else _parse_time(str(left))
        right = right if isinstance(right, datetime) else _parse_time(str(right))
    elif isinstance(left, bool) or isinstance(right, bool):
        left, right = str(left).lower(), str(right).lower()
    elif isinstance(left, (int, float)) or isinstance(right, (int, float)):
        try:
            left, right = float(left), float(right)
        except (TypeError, ValueError):
            left, right = str(left), str(right)
    else:
        left, right = str(left), str(right)
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: bool(a == b),
        "!=": lambda a, b: bool(a != b),
        ">=": lambda a, b: bool(a >= b),
        "<=": lambda a, b: bool(a <= b),
        ">": lambda a, b: bool(a > b),
        "<": lambda a, b: bool(a < b),
    }
    return ops[op](left, right)


def _truth(node: Node, ev: _Event, now: datetime) -> bool:
    kind = node[0]
    if kind == "and":
        return _truth(node[1], ev, now) and _truth(node[2], ev, now)
    if kind == "or":
        return _truth(node[1], ev, now) or _truth(node[2], ev, now)
    if kind == "not":
        return not _truth(node[1], ev, now)
    if kind == "group":
        return _truth(node[1], ev, now)
    if kind == "bin":
        return _compare(node[1], _value(node[2], ev, now), _value(node[3], ev, now))
    if kind == "const":
        return bool(node[1])
    raise HogQLError("A condition must be a comparison")


def _render(value: Any) -> Any:
    """HogQL answers property values as strings; DRF renders datetimes as ISO with ms and Z."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True)


def run_hogql(
    text: str, events: Sequence[_Event], now: datetime
) -> tuple[list[str], list[list[Any]]]:
    """Evaluate the supported subset over ``events``; raises ``HogQLError`` for anything else."""
    select = parse_hogql(text)
    matched = [ev for ev in events if select.where is None or _truth(select.where, ev, now)]
    names = [name for name, _ in select.columns]
    if select.is_count:
        if any(node[0] not in ("count", "countif") for _, node in select.columns):
            raise HogQLError("Mixing count() with other columns needs GROUP BY (unsupported)")
        row = [
            len(matched)
            if node[0] == "count"
            else sum(1 for ev in matched if _truth(node[1], ev, now))
            for _, node in select.columns
        ]
        return names, [row]
    if select.order is not None:
        key_node, descending = select.order

        def sort_key(ev: _Event) -> Any:
            value = _value(key_node, ev, now)
            return (value is None, value if not isinstance(value, dict) else str(value))

        matched.sort(key=sort_key, reverse=descending)
    limit = DEFAULT_HOGQL_LIMIT if select.limit is None else select.limit
    rows = [[_render(_value(node, ev, now)) for _, node in select.columns] for ev in matched]
    return names, rows[:limit]


# --- capture parsing (rust/capture) ---------------------------------------------------------


class _CaptureRejected(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _validate_token(token: str) -> str:
    """rust/capture/src/token.rs ``validate_token``: shape only, never the project lookup."""
    token = token.strip()
    reason = None
    if not token:
        reason = "empty"
    elif len(token) > MAX_TOKEN_LENGTH:
        reason = "too_long"
    elif not token.isascii():
        reason = "not_ascii"
    elif token.startswith("phx_"):
        reason = "personal_api_key"
    elif "\0" in token:
        reason = "null_byte"
    if reason:
        raise _CaptureRejected(401, f"API key is not valid: {reason}")
    return token


def _event_token(raw: Mapping[str, Any]) -> str | None:
    for name in ("token", "$token", "api_key"):
        value = raw.get(name)
        if isinstance(value, str):
            return value
    props = raw.get("properties")
    if isinstance(props, dict) and isinstance(props.get("token"), str):
        return str(props["token"])
    return None


def _parse_capture(body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The token and the events of a capture request, or ``_CaptureRejected`` as upstream."""
    if not body:
        raise _CaptureRejected(400, "request missing data payload")
    if body[:3] == b"\x1f\x8b\x08":
        try:
            body = gzip.decompress(body)
        except OSError:
            raise _CaptureRejected(400, "failed to decode request: invalid gzip data") from None
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _CaptureRejected(400, f"failed to parse request: {exc}") from None
    untagged = "failed to parse request: data did not match any variant of untagged enum RawRequest"

    def is_event(item: Any) -> bool:
        return isinstance(item, dict) and isinstance(item.get("event"), str)

    if isinstance(data, list):
        if not all(is_event(item) for item in data):
            raise _CaptureRejected(400, untagged)
        events = list(data)
        tokens = {t for t in (_event_token(e) for e in events) if t is not None}
        if not tokens:
            raise _CaptureRejected(401, "event submitted without an api_key")
        if len(tokens) > 1:
            raise _CaptureRejected(401, "batch submitted with inconsistent api_key values")
        token = tokens.pop()
    elif isinstance(data, dict) and "batch" in data:
        batch_token = data.get("token", data.get("api_key"))
        batch = data.get("batch")
        if not isinstance(batch_token, str) or not isinstance(batch, list):
            raise _CaptureRejected(400, untagged)
        if not all(is_event(item) for item in batch):
            raise _CaptureRejected(400, untagged)
        events, token = list(batch), batch_token
    elif is_event(data):
        events = [data]
        found = _event_token(data)
        if found is None:
            raise _CaptureRejected(401, "event submitted without an api_key")
        token = found
    else:
        raise _CaptureRejected(400, untagged)
    token = _validate_token(token)
    if not events:
        raise _CaptureRejected(400, "request holds no event")
    for event in events:
        if not event["event"]:
            raise _CaptureRejected(400, "event submitted with an empty event name")
        if _distinct_id(event) is None:
            raise _CaptureRejected(400, "event submitted without a distinct_id")
    return token, events


def _distinct_id(event: Mapping[str, Any]) -> str | None:
    """common_types ``RawEvent::extract_distinct_id``: top level, then properties; never empty."""
    value = event.get("distinct_id", event.get("$distinct_id"))
    if value is None:
        props = event.get("properties")
        value = props.get("distinct_id") if isinstance(props, dict) else None
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text[:200] or None


def _query_request(body: bytes) -> tuple[dict[str, Any], str | None]:
    """The JSON body and the HogQL text of a query request (None when malformed)."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return {}, None
    query = payload.get("query") if isinstance(payload, dict) else None
    if not isinstance(query, dict) or query.get("kind") != "HogQLQuery":
        return {}, None
    text = query.get("query")
    return payload, text if isinstance(text, str) else None


# --- the stand-in ----------------------------------------------------------------------------

_PROJECT_PATH = re.compile(r"^/api/(?:projects|environments)/(?P<id>[^/]+)/(?P<rest>.*)$")
_CAPTURE_PATHS = {"/i/v0/e", "/e", "/capture", "/batch", "/track"}
# posthog/urls.py: Django capture (capture.views) of an older self-hosted PostHog; the Rust
# capture's /i/v0/e/ (rust/capture/src/router.rs) does not exist there.
_LEGACY_CAPTURE_PATHS = {"/e", "/capture", "/batch", "/track"}
# posthog/urls.py: login, 2FA token and logout (posthog/api/authentication.py).
_LOGIN_PATHS = {"/api/login", "/api/login/token", "/logout", "/api/logout"}


def _login_reply(answer: LoginReply) -> _Reply:
    headers = tuple(("Set-Cookie", value) for value in set_cookie_headers(answer.cookies))
    if answer.status == 302:
        return _Reply(302, b"", "text/html; charset=utf-8", (("Location", "/login"), *headers))
    return _json_reply(answer.status, answer.payload, headers)


class PostHogStandIn:
    """The PostHog stand-in. Start it, add projects and personal keys, point the client at ``url``.

    ``window_s``: how long a replaced key's events still land (scale it down in tests);
    ``lag_s``: how long after arrival an event becomes queryable; ``rate_limits``: per personal
    key; ``cache_ttl_s``: how long a query result is served from cache without force_blocking;
    ``separate_hosts``: serve capture only under ``ingest_url`` (``/ingest``) and the API only
    under ``url``, to check that a client keeps the two hosts apart.

    ``flavour``: ``"cloud"`` (PostHog after PR #51237: no token may reset; capture on
    ``/i/v0/e/`` too; a user without TOTP must confirm an emailed code) or
    ``"self_hosted_legacy"`` (an instance built before it: a legacy key without scopes may
    reset; Django capture without ``/i/v0/e/``; the 120/h query throttle).
    ``behind_tls``: check the CSRF Referer as Django does on HTTPS (Cloud sits behind TLS).
    ``replica_lag_s``: project reads come from a read replica this many seconds behind.
    ``query_s``: how long one query runs (to exercise the concurrency limit).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        window_s: float = DEFAULT_WINDOW_S,
        lag_s: float = DEFAULT_LAG_S,
        rate_limits: RateLimits = RateLimits(),
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        separate_hosts: bool = False,
        clock: Clock | None = None,
        flavour: Flavour = "cloud",
        behind_tls: bool = True,
        replica_lag_s: float = 0.0,
        query_s: float = 0.0,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the stand-in listens on loopback only")
        self._host = host
        self._port = port
        self.window_s = window_s
        self.lag_s = lag_s
        self.flavour: Flavour = flavour
        self.behind_tls = behind_tls
        self.replica_lag_s = replica_lag_s
        self.query_s = query_s
        if flavour == "self_hosted_legacy" and rate_limits == RateLimits():
            rate_limits = RateLimits.legacy_team()
        self.rate_limits = rate_limits
        self.cache_ttl_s = cache_ttl_s
        self.separate_hosts = separate_hosts
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self.login_flow = LoginFlow(now=self._now, flavour=flavour)
        self._queries_running: dict[int, int] = {}
        self._occupied = 0  # query slots held by occupy_query_slots
        self._query_texts: list[str] = []
        self._stopping = threading.Event()
        self._projects: dict[int, _Project] = {}
        self._personal: dict[str, _PersonalKey] = {}
        self._events: list[_Event] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._requests: dict[str, int] = {}
        self._resets: dict[int, int] = {}
        # Called (under the stand-in's lock) with the project id right after every key reset:
        # lets a test flip another fault at the point of no return.
        self.on_reset: Callable[[int], None] | None = None
        self._cache: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------------------

    def start(self) -> PostHogStandIn:
        if self._server is not None:
            return self
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        server = ThreadingHTTPServer((self._host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="posthog-standin",
            daemon=True,
        )
        self._thread.start()
        log.debug("PostHog stand-in listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases hanging and slow handlers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.debug("PostHog stand-in stopped")

    def __enter__(self) -> PostHogStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The app (private API) host."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def ingest_url(self) -> str:
        """The ingestion host (the same server; a path prefix when ``separate_hosts``)."""
        return self.url + (INGEST_PREFIX if self.separate_hosts else "")

    # control ------------------------------------------------------------------------------

    def add_project(self, project_id: int, name: str) -> Secret:
        """Create a project; returns its initial project key."""
        token = generate_token("phc_")
        with self._lock:
            if project_id in self._projects:
                raise ValueError(f"project {project_id} exists")
            self._projects[project_id] = _Project(
                id=project_id,
                name=name,
                token=token,
                uuid=str(uuid_mod.uuid4()),
                live_events_token=generate_token("lve_", 24),
            )
        return Secret(token)

    def add_personal_key(
        self,
        value: str | Secret,
        *,
        scoped: bool = False,
        legacy: bool = True,
        scopes: Sequence[str] = ("*",),
    ) -> Secret:
        """Register a personal API key: ``legacy`` (no scopes: may reset) or ``scoped``."""
        if scoped == legacy:
            raise ValueError("a personal key is either legacy (no scopes) or scoped")
        raw = value.reveal() if isinstance(value, Secret) else value
        with self._lock:
            self._personal[raw] = _PersonalKey(scopes=tuple(scopes) if scoped else ())
        return value if isinstance(value, Secret) else Secret(raw)

    def occupy_query_slots(self, n: int = MAX_CONCURRENT_QUERIES) -> None:
        """``n`` other API queries of the organization keep running (until ``free_query_slots``):
        every query of rotator meets the concurrency limit's 429."""
        with self._lock:
            self._queries_running[0] = self._queries_running.get(0, 0) + n
            self._occupied += n

    def free_query_slots(self) -> None:
        with self._lock:
            self._queries_running[0] = self._queries_running.get(0, 0) - self._occupied
            self._occupied = 0

    def current_key(self, project_id: int) -> Secret:
        with self._lock:
            return Secret(self._project(project_id).token)

    def reset_key_out_of_band(self, project_id: int) -> Secret:
        """A reset in the PostHog UI: the key changes without any API call."""
        with self._lock:
            return Secret(self._reset(self._project(project_id)))

    def inject(
        self,
        route: Route,
        kind: FaultKind,
        *,
        times: int = 1,
        delay_s: float = 30.0,
        status: int = 500,
    ) -> None:
        """Make the next ``times`` calls of ``route`` fail.

        ``5xx``: answer ``status`` without acting; ``hang``: hold the connection ``delay_s``
        without acting, then close it; ``lose_response``: act (the reset happens), then close
        the connection without answering; ``slow``: act, then answer after ``delay_s``;
        ``acted_5xx``: act (the reset happens), then answer ``status`` anyway; ``no_api_token``:
        act, then answer the project JSON without its ``api_token`` field; ``late_5xx``: answer
        ``status`` at once and act ``delay_s`` later (a reset applied after its answer).
        """
        if route not in ROUTES or kind not in FAULT_KINDS:
            raise ValueError(f"route one of {ROUTES}, kind one of {FAULT_KINDS}")
        with self._lock:
            self._faults.setdefault(route, []).append(_Fault(kind, times, delay_s, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def calls(self, route: str) -> int:
        """How many requests reached ``route`` (faulted ones included)."""
        with self._lock:
            return self._requests.get(route, 0)

    def counters(self) -> Counters:
        with self._lock:
            self._ingest_due()
            keys: dict[str, KeyCounters] = {}
            by_fp: dict[str, list[_Event]] = {}
            for ev in self._events:
                by_fp.setdefault(fingerprint(ev.token), []).append(ev)
            for fp, evs in by_fp.items():

                def last(outcome: str, evs: list[_Event] = evs) -> float | None:
                    times = [e.resolved_at for e in evs if e.outcome == outcome and e.resolved_at]
                    return max(times) if times else None

                keys[fp] = KeyCounters(
                    accepted=len(evs),
                    ingested=sum(e.outcome == "ingested" for e in evs),
                    dropped=sum(e.outcome == "dropped" for e in evs),
                    pending=sum(e.outcome == "pending" for e in evs),
                    first_accepted_at=min(e.received_at for e in evs),
                    last_accepted_at=max(e.received_at for e in evs),
                    last_ingested_at=last("ingested"),
                    last_dropped_at=last("dropped"),
                )
            return Counters(keys=keys, requests=dict(self._requests), resets=dict(self._resets))

    def events(self) -> list[EventRecord]:
        """Every accepted event in arrival order, with its outcome (keys as fingerprints)."""
        with self._lock:
            self._ingest_due()
            return [
                EventRecord(
                    key_fingerprint=fingerprint(ev.token),
                    event=ev.event,
                    distinct_id=ev.distinct_id,
                    properties=dict(ev.properties),
                    received_at=ev.received_at,
                    outcome=ev.outcome,
                    resolved_at=ev.resolved_at,
                    project_id=ev.project_id,
                )
                for ev in self._events
            ]

    # model --------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _project(self, project_id: int) -> _Project:
        try:
            return self._projects[project_id]
        except KeyError:
            raise KeyError(f"no project {project_id} in the stand-in") from None

    def _reset(self, project: _Project) -> str:
        project.retired.append((project.token, self._now()))
        project.token = generate_token("phc_")
        self._resets[project.id] = self._resets.get(project.id, 0) + 1
        log.info("stand-in: project %s key reset to %s", project.id, fingerprint(project.token))
        if self.on_reset is not None:
            self.on_reset(project.id)
        return project.token

    def _resolve(self, token: str, at: float) -> int | None:
        """Which project an event with ``token`` lands in when ingested at ``at``, if any."""
        for project in self._projects.values():
            if project.token == token:
                return project.id
            for old, replaced_at in project.retired:
                if old == token and at < replaced_at + self.window_s:
                    return project.id
        return None

    def _ingest_due(self) -> None:
        now = self._now()
        for ev in self._events:
            if ev.outcome != "pending":
                continue
            due = ev.received_at + self.lag_s
            if due > now:
                continue
            ev.project_id = self._resolve(ev.token, due)
            ev.outcome = "ingested" if ev.project_id is not None else "dropped"
            ev.resolved_at = due

    # request handling -------------------------------------------------------------------------

    def _count(self, route: str) -> None:
        self._requests[route] = self._requests.get(route, 0) + 1

    def _take_fault(self, route: str) -> _Fault | None:
        faults = self._faults.get(route)
        if not faults:
            return None
        fault = faults[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            faults.pop(0)
        return fault

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Route one request. Raises ``_Lost`` when the connection must close unanswered."""
        path = path.split("?", 1)[0]
        if path.startswith("/_sandbox/"):
            return self._control(method, path, body)
        ingest = False
        if path.startswith(INGEST_PREFIX + "/"):
            path, ingest = path[len(INGEST_PREFIX) :], True
        bare = path.rstrip("/") or "/"
        if bare in _CAPTURE_PATHS:
            if self.flavour == "self_hosted_legacy" and bare not in _LEGACY_CAPTURE_PATHS:
                return _text_reply(404, "Not Found")
            if self.separate_hosts and not ingest:
                return _text_reply(404, "not found: capture is on the ingestion host")
            if method not in ("POST", "GET"):
                return _text_reply(405, "method not allowed")
            return self._faulted("capture", lambda: self._capture(body))
        if ingest:
            return _text_reply(404, "not found")
        if bare in _LOGIN_PATHS and method == "POST":
            return self._faulted("login", lambda: self._login(bare, headers, body))
        match = _PROJECT_PATH.match(path)
        if not match:
            return _drf_error(404, "invalid_request", "not_found", "Not found.")
        rest = match.group("rest").rstrip("/")
        route: Route
        if rest == "" and method == "GET":
            route, scope = "project", "project:read"
        elif rest == "reset_token" and method == "PATCH":
            route, scope = "reset_token", ""  # the action declares no API scope
        elif rest == "query" and method == "POST":
            route, scope = "query", "query:read"
        elif rest in ("", "reset_token", "query"):
            return _drf_error(
                405, "invalid_request", "method_not_allowed", f'Method "{method}" not allowed.'
            )
        else:
            return _drf_error(404, "invalid_request", "not_found", "Not found.")
        with self._lock:
            self._count(route)
        principal = self._authorize(method, headers, scope, query=route == "query")
        if isinstance(principal, _Reply):
            return principal
        try:
            project_id = int(match.group("id"))
        except ValueError:
            return _drf_error(404, "invalid_request", "not_found", "Not found.")
        with self._lock:
            if project_id not in self._projects:
                return _drf_error(404, "invalid_request", "not_found", "Not found.")
        level = principal.level
        if route == "project":
            return self._faulted(route, lambda: self._get_project(project_id, level), counted=True)
        if route == "reset_token":
            if level < ADMIN_LEVEL:
                return _drf_error(403, "authentication_error", "permission_denied", NOT_ADMIN)
            return self._faulted(route, lambda: self._reset_token(project_id, level), counted=True)
        return self._faulted(route, lambda: self._query(project_id, body), counted=True)

    def _login(self, path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        flow = self.login_flow
        host = headers.get("host", "")
        if path == "/api/login":
            answer = flow.login(headers, body)
        elif path == "/api/login/token":
            answer = flow.login_token(headers, body)
        else:
            answer = flow.logout(headers, secure=self.behind_tls, host=host)
        return _login_reply(answer)

    def _faulted(self, route: str, act: Callable[[], _Reply], *, counted: bool = False) -> _Reply:
        with self._lock:
            if not counted:
                self._count(route)
            fault = self._take_fault(route)
        if fault is None:
            return act()
        log.info("stand-in: injecting %s on %s", fault.kind, route)
        if fault.kind == "5xx":
            return _drf_error(fault.status, "server_error", "error", "A server error occurred.")
        if fault.kind == "hang":
            self._stopping.wait(fault.delay_s)
            raise _Lost
        if fault.kind == "late_5xx":
            # A proxy in front of PostHog (Cloud's load balancer) answers 5xx while the app
            # server still works on the request: the action takes effect ``delay_s`` later.
            timer = threading.Timer(fault.delay_s, act)
            timer.daemon = True
            timer.start()
            return _drf_error(fault.status, "server_error", "error", "A server error occurred.")
        reply = act()
        if fault.kind == "lose_response":
            raise _Lost
        if fault.kind == "acted_5xx":
            return _drf_error(fault.status, "server_error", "error", "A server error occurred.")
        if fault.kind == "no_api_token":
            if reply.content_type != "application/json":
                return reply
            data = json.loads(reply.body)
            if isinstance(data, dict):
                data.pop("api_token", None)
            return _json_reply(reply.status, data, reply.headers)
        self._stopping.wait(fault.delay_s)  # slow: acted, answers late
        return reply

    def _authorize(
        self, method: str, headers: Mapping[str, str], scope: str, *, query: bool
    ) -> _Reply | _PersonalKey | SessionUser:
        """DRF order: authenticate (401), permissions (403), then throttles (429).

        posthog/api/routing.py TeamAndOrgViewSetMixin: personal API key first (posthog/auth.py
        PersonalAPIKeyAuthentication, ``Authorization: Bearer``), then the session cookie
        (SessionAuthentication, with its CSRF check on unsafe methods).
        """
        header = headers.get("authorization", "")
        if not header:
            user = self.login_flow.authenticate(
                method, headers, secure=self.behind_tls, host=headers.get("host", "")
            )
            if isinstance(user, str):
                return _drf_error(403, "authentication_error", "permission_denied", user)
            if user is not None:
                return user  # APIScopePermission: session auth has no scopes to check
            return _drf_error(
                401,
                "authentication_error",
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        value = header[7:].strip() if header.lower().startswith("bearer ") else ""
        with self._lock:
            key = self._personal.get(value)
            if key is None:
                return _drf_error(
                    401,
                    "authentication_error",
                    "authentication_failed",
                    "Personal API key found in request Authorization header is invalid.",
                )
            scopes = key.scopes
            if not scopes and self.flavour == "cloud":
                # PR #51237, migration 1052: every NULL-scope key became ["*"].
                scopes = ("*",)
            if scopes:  # posthog/permissions.py APIScopePermission
                if not scope:
                    return _drf_error(
                        403, "authentication_error", "permission_denied", NO_TOKEN_ACCESS
                    )
                valid = {scope, scope.replace(":read", ":write"), "*"}
                if not valid & set(scopes):
                    return _drf_error(
                        403,
                        "authentication_error",
                        "permission_denied",
                        f"API key missing required scope '{scope}'",
                    )
            throttled = self._throttle(key, query=query)
            return throttled if throttled is not None else key

    def _throttle(self, key: _PersonalKey, *, query: bool) -> _Reply | None:
        now = self._now()
        limits = self.rate_limits
        windows = [(key.calls, limits.per_minute, 60.0), (key.calls, limits.per_hour, 3600.0)]
        if query:
            windows += [
                (key.query_calls, limits.query_per_minute, 60.0),
                (key.query_calls, limits.query_per_hour, 3600.0),
            ]
        wait = 0.0
        for calls, limit, span in windows:
            while calls and calls[0] <= now - 3600.0:
                calls.popleft()
            recent = [t for t in calls if t > now - span]
            if len(recent) >= limit:
                oldest = recent[-limit] if limit > 0 else now
                wait = max(wait, oldest + span - now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return _drf_error(
                429,
                "throttled_error",
                "throttled",
                f"Request was throttled. Expected available in {seconds} seconds.",
                headers=(("Retry-After", str(seconds)),),
            )
        key.calls.append(now)
        if query:
            key.query_calls.append(now)
        return None

    def _project_json(
        self, project: _Project, level: int, *, token: str | None = None
    ) -> dict[str, Any]:
        # A subset of posthog/api/project.py ProjectBackwardCompatSerializer.
        return {
            "id": project.id,
            "uuid": project.uuid,
            "organization": "0190b1b4-0000-0000-0000-000000000000",
            "api_token": token or project.token,
            "effective_membership_level": level,
            "name": project.name,
            "completed_snippet_onboarding": True,
            "ingested_event": True,
            "is_demo": False,
            "timezone": "UTC",
            "access_control": False,
            "live_events_token": project.live_events_token,
            "secret_api_token": None,
        }

    def _get_project(self, project_id: int, level: int) -> _Reply:
        with self._lock:
            project = self._project(project_id)
            token = self._replica_token(project)
            return _json_reply(200, self._project_json(project, level, token=token))

    def _replica_token(self, project: _Project) -> str:
        """The key a read replica ``replica_lag_s`` behind the primary still returns.

        PostHog Cloud reads through Postgres read replicas (posthog/settings/data_stores.py
        ``DATABASES["replica"]``, posthog/dbrouter.py ReplicaRouter): a GET right after a
        reset may see the previous key.
        """
        if self.replica_lag_s <= 0:
            return project.token
        seen_at = self._now() - self.replica_lag_s
        for token, replaced_at in project.retired:
            if replaced_at > seen_at:
                return token
        return project.token

    def _reset_token(self, project_id: int, level: int) -> _Reply:
        with self._lock:
            project = self._project(project_id)
            self._reset(project)
            return _json_reply(200, self._project_json(project, level))

    def _capture(self, body: bytes) -> _Reply:
        try:
            token, raw_events = _parse_capture(body)
        except _CaptureRejected as exc:
            return _text_reply(exc.status, exc.text)
        now = self._now()
        with self._lock:
            for raw in raw_events:
                props = raw.get("properties") if isinstance(raw.get("properties"), dict) else {}
                stamp = raw.get("timestamp")
                try:
                    moment = _parse_time(stamp) if isinstance(stamp, str) else None
                except HogQLError:
                    moment = None
                self._events.append(
                    _Event(
                        uuid=str(raw.get("uuid") or uuid_mod.uuid4()),
                        event=str(raw["event"]),
                        distinct_id=_distinct_id(raw) or "",
                        properties=dict(props or {}),
                        timestamp=moment or datetime.fromtimestamp(now, UTC),
                        token=token,
                        received_at=now,
                    )
                )
        return _json_reply(200, {"status": "Ok"})

    def _query(self, project_id: int, body: bytes) -> _Reply:
        org = 0  # every stand-in project is in one organization
        with self._lock:
            running = self._queries_running.get(org, 0)
            if running >= MAX_CONCURRENT_QUERIES:
                # posthog/clickhouse/client/limit.py RateLimit.use raises
                # ConcurrencyLimitExceeded (upstream first retries for up to 30 s; the stand-in
                # refuses at once): a 429 WITHOUT Retry-After.
                return _drf_error(
                    429,
                    "throttled_error",
                    "throttled",
                    f"Exceeded maximum concurrency limit: {MAX_CONCURRENT_QUERIES} for key: "
                    f"api:query:per-org:{org}",
                )
            self._queries_running[org] = running + 1
        try:
            if self.query_s > 0:
                self._stopping.wait(self.query_s)
            return self._run_query(project_id, body)
        finally:
            with self._lock:
                self._queries_running[org] -= 1

    def query_log(self) -> list[str]:
        """The HogQL text of every query received, in order."""
        with self._lock:
            return list(self._query_texts)

    def _run_query(self, project_id: int, body: bytes) -> _Reply:
        payload, text = _query_request(body)
        if text is not None:
            with self._lock:
                self._query_texts.append(text)
        if text is None:
            return _drf_error(
                400,
                "validation_error",
                "parse_error",
                'Request must include a "query" of kind HogQLQuery',
            )
        refresh = payload.get("refresh", "blocking")
        now = self._now()
        with self._lock:
            cached = self._cache.get((project_id, text))
            if refresh != "force_blocking" and cached and now - cached[0] < self.cache_ttl_s:
                return _json_reply(200, {**cached[1], "is_cached": True})
            self._ingest_due()
            events = [e for e in self._events if e.project_id == project_id]
            try:
                columns, rows = run_hogql(text, events, datetime.fromtimestamp(now, UTC))
            except HogQLError as exc:
                return _drf_error(400, "validation_error", "invalid_input", str(exc))
            result = {
                "cache_key": f"cache_{secrets.token_hex(8)}",
                "is_cached": False,
                "last_refresh": _render(datetime.fromtimestamp(now, UTC)),
                "timezone": "UTC",
                "columns": columns,
                "types": [],
                "results": rows,
                "hogql": text,
                "hasMore": False,
                "limit": DEFAULT_HOGQL_LIMIT,
                "offset": 0,
            }
            self._cache[(project_id, text)] = (now, result)
            return _json_reply(200, result)

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        """``/_sandbox/...``: counters and run-time switches for tests, demo and benchmarks."""
        try:
            args = json.loads(body) if body else {}
            if path == "/_sandbox/counters" and method == "GET":
                return _json_reply(200, self.counters().as_json())
            if path == "/_sandbox/events" and method == "GET":
                return _json_reply(200, [record.as_json() for record in self.events()])
            if path == "/_sandbox/inject" and method == "POST":
                self.inject(
                    args["route"],
                    args["kind"],
                    times=int(args.get("times", 1)),
                    delay_s=float(args.get("delay_s", 30.0)),
                    status=int(args.get("status", 500)),
                )
                return _json_reply(200, {"ok": True})
            if path == "/_sandbox/clear_faults" and method == "POST":
                self.clear_faults()
                return _json_reply(200, {"ok": True})
            reset = re.fullmatch(r"/_sandbox/projects/(\d+)/reset", path)
            if reset and method == "POST":
                new = self.reset_key_out_of_band(int(reset.group(1)))
                return _json_reply(200, {"key_fingerprint": new.fingerprint})
        except (ValueError, KeyError, TypeError) as exc:
            return _json_reply(400, {"error": f"bad control request: {type(exc).__name__}"})
        return _json_reply(404, {"error": "unknown sandbox route"})


class _Handler(BaseHTTPRequestHandler):
    owner: PostHogStandIn
    server_version = "posthog-standin"
    sys_version = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.owner.handle(self.command, self.path, headers, body)
        except _Lost:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except Exception:  # a stand-in bug must show as a 500, not a dropped connection
            log.exception("stand-in: unexpected error on %s %s", self.command, self.path)
            reply = _drf_error(500, "server_error", "error", "A server error occurred.")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up (e.g. after a slow answer)

    do_GET = _serve
    do_POST = _serve
    do_PATCH = _serve
    do_PUT = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Paths never hold keys (keys travel in headers and bodies); route it to logging.
        log.debug("stand-in: %s", format % args)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("stand-in error: %s", format % args)


# --- `rotator sandbox posthog` ---------------------------------------------------------------

DEMO_PROJECT_ID = 12345  # config/align.yaml's project, so the default config works against it
SERVE_USER = "rotator@align.example"  # config/align.yaml's posthog.reset.email


def serve_command(args: argparse.Namespace) -> int:
    """Run the stand-in alone until SIGINT/SIGTERM; print how to point rotator at it."""
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="posthog-standin-")))
        stand_in = stack.enter_context(PostHogStandIn(port=int(args.port or 0)))
        project_key = stand_in.add_project(DEMO_PROJECT_ID, "Preview & Production")
        personal = stand_in.add_personal_key(
            generate_token("phx_", 35),
            scoped=True,
            legacy=False,
            scopes=("project:read", "query:read"),
        )
        password = generate_token("pw_", 18)
        totp_secret = base64.b32encode(secrets.token_bytes(20)).decode()
        stand_in.login_flow.add_user(SERVE_USER, password, totp_secret=totp_secret)
        files = {}
        for name, value in (
            ("personal-api-key", personal.reveal()),
            ("password", password),
            ("totp-secret", totp_secret),
        ):
            files[name] = workdir / name
            fd = os.open(files[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
        key_file = files["personal-api-key"]
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, lambda *_: stop.set())
            stack.callback(signal.signal, signum, previous)
        lines = [
            f"PostHog stand-in on {stand_in.url} (app and ingestion host)",
            f"project {DEMO_PROJECT_ID}: key {project_key.fingerprint}",
            f"personal API key (read-only: project:read, query:read): in {key_file} (mode 0600)",
            f"  use it: posthog.personal_api_key: {{file: {key_file}}}",
            f"service user {SERVE_USER} (admin, TOTP) resets the key by session:",
            f"  posthog.reset: {{method: session, email: {SERVE_USER}, "
            f"password: {{file: {files['password']}}}, "
            f"totp_secret: {{file: {files['totp-secret']}}}}}",
            f"  and:    --set posthog.app_host={stand_in.url}"
            f" --set posthog.ingest_host={stand_in.ingest_url}",
            f"counters: GET {stand_in.url}/_sandbox/counters",
            "stop with Ctrl-C",
        ]
        print("\n".join(lines), flush=True)
        while not stop.wait(0.2):
            pass
        print("PostHog stand-in stopped", flush=True)
    return 0


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[PostHogStandIn]:
    """``with running(window_s=1) as posthog:`` a started stand-in, stopped on exit."""
    stand_in = PostHogStandIn(**kwargs).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


__all__ = [
    "Counters",
    "EventRecord",
    "HogQLError",
    "KeyCounters",
    "PostHogStandIn",
    "RateLimits",
    "generate_token",
    "run_hogql",
    "running",
    "serve_command",
]
