"""The Slack client: post the run report to an incoming webhook.

Every call goes through ``rotator.clients.transport.request``. The webhook URL is itself the
credential (anyone holding it can post to the channel), so it is a ``Secret``: it is revealed
only as the request's URL, messages name the call (``what``) and never the URL, and its path
and token are registered for scrubbing too, because ``requests``/``urllib3`` put the path
(without the host) into their exception text and debug lines.

Retries: a webhook post is not idempotent in the strict sense (a post whose answer was lost
may have been delivered, and the retry then shows the report twice). A duplicate report is
acceptable; a lost one is not, so ``post`` is sent with ``idempotent=True``: connection errors,
timeouts and 5xx are retried, 429 waits for ``Retry-After`` (all in the helper, bounded).
Slack's 4xx answers (``invalid_blocks``, ``no_text``, ``no_service``, ``invalid_token``, ...)
are final and raise ``SlackError`` with Slack's error string and the fix. So is a 200 whose body
is not ``ok``: a webhook answers ``ok`` for a delivered message and nothing else (Slack's
"Handling errors" for incoming webhooks), so ``invalid_payload`` or any other body under a 200
(a proxy's error page, a legacy endpoint's answer) means the report did not arrive.

Deadline: the whole post, retries included, ends within ``slack.deadline_s``. ``requests``
bounds each socket read, not the answer: a server that trickles a byte every few seconds would
hold the post (and the run's exit) for as long as it likes. The post therefore runs in a
worker thread that the caller waits for at most the deadline; after it the post is abandoned
(the worker starts no further attempt and logs nothing) and ``SlackError`` says so.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import requests

from rotator.clients.transport import RetryPolicy, request, truncate
from rotator.clock import Clock, SystemClock
from rotator.config import is_loopback
from rotator.errors import SlackError
from rotator.redact import Secret, register, scrub

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

WHAT: Final = "post the report to Slack"
DEFAULT_RETRY: Final = RetryPolicy()
DEFAULT_DEADLINE_S: Final = 30.0
OK_ANSWER: Final = "ok"

_FIX_PAYLOAD = (
    "Slack rejected the message itself, a rotator bug: the same report is in the job's log "
    "and stdout; please report it"
)
_FIX_WEBHOOK = (
    "the webhook is revoked or wrong: create a new incoming webhook for the channel and put its "
    "URL in the secret named by slack.webhook_url"
)
_FIX_CHANNEL = (
    "the webhook's channel is gone or archived: create an incoming webhook for a live channel "
    "and update the secret named by slack.webhook_url"
)
# Slack's error strings for incoming webhooks (api.slack.com/messaging/webhooks#handling_errors).
SLACK_FIXES: Final[Mapping[str, str]] = {
    "invalid_payload": _FIX_PAYLOAD,
    "invalid_blocks": _FIX_PAYLOAD,
    "invalid_blocks_format": _FIX_PAYLOAD,
    "invalid_attachments": _FIX_PAYLOAD,
    "too_many_attachments": _FIX_PAYLOAD,
    "no_text": _FIX_PAYLOAD,
    "missing_text_or_fallback_or_attachments": _FIX_PAYLOAD,
    "msg_too_long": _FIX_PAYLOAD,
    "invalid_token": _FIX_WEBHOOK,
    "no_service": _FIX_WEBHOOK,
    "no_service_id": _FIX_WEBHOOK,
    "no_team": _FIX_WEBHOOK,
    "team_disabled": _FIX_WEBHOOK,
    "action_prohibited": "an admin restricted posting to this channel: pick another channel",
    "channel_not_found": _FIX_CHANNEL,
    "channel_is_archived": _FIX_CHANNEL,
    "posting_to_general_channel_denied": (
        "only admins may post to #general: create the webhook for another channel"
    ),
}


def describe_slack_error(response: requests.Response) -> str:
    """Slack answers errors as a short plain-text string; add the fix for the known ones."""
    code = truncate(response.text.strip(), 120) or "(empty body)"
    fix = SLACK_FIXES.get(code)
    return f"{code}; {fix}" if fix else code


def _register_url_parts(url: str) -> None:
    """Scrub the URL's path and token too: urllib3 messages carry the path without the host."""
    parts = urlsplit(url)
    register(parts.path)
    register(parts.path.rsplit("/", 1)[-1])


def _check_webhook_url(webhook_url: Secret) -> None:
    parts = urlsplit(webhook_url.reveal())
    loopback = is_loopback(parts.hostname or "")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise SlackError(
            f"slack.webhook_url ({webhook_url.fingerprint}) is not an https URL: use the "
            "incoming webhook URL Slack shows (https://hooks.slack.com/services/...)"
        )


class _Abandoned(Exception):
    """The caller stopped waiting for the post: start no further attempt."""


class _AbandonableClock:
    """The request helper's clock for the worker: a retry's sleep ends the post once the
    caller has given up, so an abandoned post never sends another attempt."""

    def __init__(self, inner: Clock, abandoned: threading.Event) -> None:
        self._inner = inner
        self._abandoned = abandoned

    def monotonic(self) -> float:
        return self._inner.monotonic()

    def now(self) -> Any:
        return self._inner.now()

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
        if self._abandoned.is_set():
            raise _Abandoned


class SlackClient:
    def __init__(
        self,
        *,
        webhook_url: Secret,
        timeout: tuple[float, float],
        retry: RetryPolicy = DEFAULT_RETRY,
        deadline_s: float = DEFAULT_DEADLINE_S,
        clock: Clock | None = None,
        session: requests.Session | None = None,
    ) -> None:
        _check_webhook_url(webhook_url)
        _register_url_parts(webhook_url.reveal())
        self._url = webhook_url
        self._timeout = timeout
        self._retry = retry
        self._deadline_s = deadline_s
        self._clock: Clock = clock or SystemClock()
        self._owns_session = session is None
        self._session = session or requests.Session()

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> SlackClient | None:
        """None when ``slack.enabled`` is false; SlackError when the webhook URL is missing."""
        if not config.slack.enabled:
            return None
        url = config.secrets.slack_webhook_url
        if url is None:
            why = config.secrets.missing.get("slack.webhook_url", "not set")
            raise SlackError(
                f"slack.webhook_url: {why}: provide the incoming webhook URL "
                f"({config.slack.webhook_url.describe()}) or set slack.enabled: false"
            )
        return cls(
            webhook_url=url,
            timeout=(config.timeouts.connect_s, config.timeouts.read_s),
            retry=RetryPolicy(attempts=config.timeouts.attempts),
            deadline_s=config.slack.deadline_s,
            clock=clock,
        )

    def post(self, payload: Mapping[str, Any]) -> None:
        """POST the message JSON; SlackError (with Slack's error string and the fix) if refused,
        if Slack answers anything but ``ok``, or if no whole answer came within the deadline.

        Last line of defence: a registered secret value in the payload is replaced by its
        fingerprint (and logged) rather than sent; the report still goes out.
        """
        body = json.dumps(payload, separators=(",", ":"))
        clean = scrub(body)
        if clean != body:
            log.error("the Slack payload held a secret value: sending it with the value masked")
        abandoned = threading.Event()
        done = threading.Event()
        result: list[BaseException | None] = []

        def send() -> None:
            try:
                self._send(clean.encode(), _AbandonableClock(self._clock, abandoned))
                result.append(None)
            except BaseException as exc:  # handed to the caller's thread, raised there
                result.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=send, name="rotator-slack", daemon=True)
        worker.start()
        if not done.wait(self._deadline_s):
            abandoned.set()
            raise SlackError(
                f"{WHAT}: no whole answer within {self._deadline_s:g}s (slack.deadline_s), "
                "post abandoned; the report is in the job's log and stdout",
                retryable=True,
            )
        (error,) = result
        if error is not None:
            raise error
        log.info("posted the report to Slack")

    def _send(self, data: bytes, clock: Clock) -> None:
        response = request(
            self._session,
            "POST",
            self._url.reveal(),
            what=WHAT,
            error=SlackError,
            timeout=self._timeout,
            # Not strictly idempotent: a retry after a lost answer may post twice. A duplicate
            # report is acceptable, a lost one is not (see the module docstring).
            idempotent=True,
            retry=self._retry,
            clock=clock,
            data=data,
            headers={"Content-Type": "application/json; charset=utf-8"},
            describe_error=describe_slack_error,
        )
        if response.text.strip() != OK_ANSWER:
            # A webhook answers exactly "ok" for a delivered message; anything else under a
            # 200 (Slack's own invalid_payload, a proxy's page) is a report that did not arrive.
            raise SlackError(
                f"{WHAT}: HTTP {response.status_code} but not 'ok': "
                f"{describe_slack_error(response)}",
                retryable=False,
                status=response.status_code,
            )

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> SlackClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SlackClient(webhook_url={self._url!r})"
