"""Keeping secrets out of every output.

``Secret`` wraps a value so that ``repr``/``str``/f-strings show only its fingerprint;
``reveal()`` is called at the point of use and nowhere else. Every ``Secret`` registers its
value with a process-wide registry that ``RedactingFilter`` (installed on the root logger by
``rotator.logs``) and ``scrub()`` use as a backstop for anything that slipped through.

The registry is the one piece of module-level mutable state in rotator: a logging filter has no
other way to learn which values to scrub.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from rotator.names import Fingerprint

FINGERPRINT_HEX_CHARS = 12
MASK = "[secure]"
# Values shorter than this are not scrubbed from free text or refused in commits: a short value
# would match by chance (in base64 ciphertext, say). Every real secret here is far longer
# (project and personal keys ~47 chars, tokens ~40, the webhook's path token 24).
_MIN_SCRUB_LENGTH = 16


def fingerprint(value: str | bytes) -> Fingerprint:
    """Short, stable, one-way id of a secret value: ``sha256:`` and 12 hex characters."""
    data = value.encode() if isinstance(value, str) else value
    return Fingerprint("sha256:" + hashlib.sha256(data).hexdigest()[:FINGERPRINT_HEX_CHARS])


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, value: str) -> None:
        if len(value) < _MIN_SCRUB_LENGTH:
            return
        with self._lock:
            self._values = self._values | {value}

    def values(self) -> frozenset[str]:
        return self._values


_REGISTRY = _Registry()


def register(value: str) -> None:
    """Scrub ``value`` from every log record and ``scrub()`` result from now on."""
    _REGISTRY.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret value in ``text`` with its fingerprint."""
    for value in _REGISTRY.values():
        if value in text:
            text = text.replace(value, f"{MASK}({fingerprint(value)})")
    return text


class Secret:
    """A secret value that never prints itself."""

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        self._fingerprint = fingerprint(value)
        register(value)

    def reveal(self) -> str:
        """The clear value: call only where it is sent or sealed."""
        return self._value

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Secret({MASK} {self._fingerprint})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


class RedactingFilter(logging.Filter):
    """Backstop: rewrites any log record whose text contains a registered secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = _REGISTRY.values()
        if not values:
            return True
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(text)
        return True
