"""The one HTTP request helper that every ``requests``-based client goes through.

Explicit connect/read timeouts on every call, and a deadline for the WHOLE answer: the read
timeout only bounds each socket read, so a server that trickles a byte a second would hold a
call (and a run, and its Lease) for ever; a watchdog closes the call's socket at its deadline.
Retries only for idempotent calls and only on
named transients (connection errors, timeouts, 5xx, 429 with ``Retry-After``), bounded, with
backoff, logged as ``attempt i/n failed; retrying``. Library errors are translated into the
caller's ``ClientError`` subclass here, at one boundary, and error bodies are truncated.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from rotator.clock import Clock, SystemClock
from rotator.errors import ClientError
from rotator.redact import scrub

log = logging.getLogger(__name__)

BODY_LIMIT = 300
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0


def truncate(text: str, limit: int = BODY_LIMIT) -> str:
    text = scrub(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return min(max(float(raw), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


ErrorFactory = Callable[..., ClientError]


# --- the whole-response deadline ------------------------------------------------------------


class _Watch:
    """The connections one call uses; ``fire()`` (the deadline) shuts their sockets down, so a
    blocked read returns at once and the call fails instead of waiting for the next byte."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: list[HTTPConnection] = []
        self.fired = False

    def add(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conns.append(conn)
            fired = self.fired
        if fired:
            _shut(conn)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            conns = list(self._conns)
        for conn in conns:
            _shut(conn)


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_ACTIVE = threading.local()  # the calling thread's current _Watch (calls are synchronous)


def _register(conn: HTTPConnection) -> None:
    watch = getattr(_ACTIVE, "watch", None)
    if isinstance(watch, _Watch):
        watch.add(conn)


class _WatchedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)  # a new or a reused keep-alive connection: either way this call's
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter whose connections a ``_Watch`` can cut (proxied ones too)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def ensure_deadline_adapter(session: requests.Session) -> None:
    """Mount ``DeadlineAdapter`` for http and https on ``session`` (once)."""
    for prefix in ("https://", "http://"):
        if not isinstance(session.adapters.get(prefix), DeadlineAdapter):
            session.mount(prefix, DeadlineAdapter())


def request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    what: str,
    error: type[ClientError],
    timeout: tuple[float, float],
    idempotent: bool,
    retry: RetryPolicy = RetryPolicy(),
    clock: Clock | None = None,
    json: Any = None,
    data: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    describe_error: Callable[[requests.Response], str] | None = None,
    ok_statuses: tuple[int, ...] = (),
    allow_redirects: bool = True,
    deadline_s: float | None = None,
) -> requests.Response:
    """Send one request; return the response for any status < 400 (or in ``ok_statuses``).

    ``what`` names the call in messages (``"reset the project key"``); it must not hold secrets.
    Non-idempotent calls (``idempotent=False``) are sent exactly once: a lost answer raises
    ``error`` with ``retryable=False`` and the caller decides how to learn the outcome.
    ``deadline_s`` bounds each attempt's whole answer (default: connect + read timeout).
    """
    clock = clock or SystemClock()
    ensure_deadline_adapter(session)
    limit = deadline_s if deadline_s is not None else timeout[0] + timeout[1]
    attempts = retry.attempts if idempotent else 1
    last: ClientError | None = None
    for attempt in range(1, attempts + 1):
        wait: float | None = None
        watch = _Watch()
        timer = threading.Timer(limit, watch.fire)
        timer.daemon = True
        _ACTIVE.watch = watch
        timer.start()
        try:
            response = session.request(
                method,
                url,
                json=json,
                data=data,
                headers=dict(headers or {}),
                timeout=timeout,
                allow_redirects=allow_redirects,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
            if watch.fired:
                kind = f"no complete answer within its {limit:.0f}s deadline"
            last = error(f"{what}: {kind} ({type(exc).__name__})", retryable=True)
            last.__cause__ = exc
        except requests.RequestException as exc:
            if watch.fired:
                last = error(f"{what}: no complete answer within its {limit:.0f}s deadline")
                last.retryable = True
                last.__cause__ = exc
            else:
                raise error(f"{what}: {type(exc).__name__}", retryable=False) from exc
        else:
            status = response.status_code
            if status < 400 or status in ok_statuses:
                return response
            detail = describe_error(response) if describe_error else truncate(response.text)
            transient = status >= 500 or status == 429
            last = error(f"{what}: HTTP {status}: {detail}", retryable=transient, status=status)
            if status == 429:
                wait = _retry_after(response)
            if not transient:
                raise last
        finally:
            timer.cancel()
            _ACTIVE.watch = None
        if attempt < attempts:
            sleep_before_retry(what, attempt, attempts, last, retry=retry, clock=clock, wait=wait)
    assert last is not None
    raise last


def sleep_before_retry(
    what: str,
    attempt: int,
    attempts: int,
    error: Exception,
    *,
    retry: RetryPolicy,
    clock: Clock,
    wait: float | None = None,
) -> None:
    """Log ``attempt i/n failed; retrying`` and sleep: ``wait`` (Retry-After) or jittered backoff.

    Shared by every client's request boundary so retries look and behave the same everywhere.
    """
    if wait is None:
        wait = min(retry.max_backoff_s, retry.backoff_s * 2 ** (attempt - 1))
        wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
    log.warning(
        "%s: attempt %d/%d failed (%s); retrying in %.1fs", what, attempt, attempts, error, wait
    )
    clock.sleep(wait)
