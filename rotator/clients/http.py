"""The one HTTP request helper that every ``requests``-based client goes through.

Explicit connect/read timeouts on every call; retries only for idempotent calls and only on
named transients (connection errors, timeouts, 5xx, 429 with ``Retry-After``), bounded, with
backoff, logged as ``attempt i/n failed; retrying``. Library errors are translated into the
caller's ``ClientError`` subclass here, at one boundary, and error bodies are truncated.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

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
) -> requests.Response:
    """Send one request; return the response for any status < 400 (or in ``ok_statuses``).

    ``what`` names the call in messages (``"reset the project key"``); it must not hold secrets.
    Non-idempotent calls (``idempotent=False``) are sent exactly once: a lost answer raises
    ``error`` with ``retryable=False`` and the caller decides how to learn the outcome.
    """
    clock = clock or SystemClock()
    attempts = retry.attempts if idempotent else 1
    last: ClientError | None = None
    for attempt in range(1, attempts + 1):
        wait: float | None = None
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
            last = error(f"{what}: {kind} ({type(exc).__name__})", retryable=True)
            last.__cause__ = exc
        except requests.RequestException as exc:
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
