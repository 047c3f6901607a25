"""The Slack client: post the run report to an incoming webhook.

Every call goes through ``rotator.clients.http.request``. The webhook URL is itself the
credential (anyone holding it can post to the channel), so it is a ``Secret``: it is revealed
only as the request's URL, messages name the call (``what``) and never the URL, and its path
and token are registered for scrubbing too, because ``requests``/``urllib3`` put the path
(without the host) into their exception text and debug lines.

Retries: a webhook post is not idempotent in the strict sense (a post whose answer was lost
may have been delivered, and the retry then shows the report twice). A duplicate report is
acceptable; a lost one is not, so ``post`` is sent with ``idempotent=True``: connection errors,
timeouts and 5xx are retried, 429 waits for ``Retry-After`` (all in the helper, bounded).
Slack's 4xx answers (``invalid_blocks``, ``no_text``, ``no_service``, ``invalid_token``, ...)
are final and raise ``SlackError`` with Slack's error string and the fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import requests

from rotator.clients.http import RetryPolicy, request, truncate
from rotator.clock import Clock
from rotator.config import is_loopback
from rotator.errors import SlackError
from rotator.redact import Secret, register, scrub

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

WHAT: Final = "post the report to Slack"
DEFAULT_RETRY: Final = RetryPolicy()

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


class SlackClient:
    def __init__(
        self,
        *,
        webhook_url: Secret,
        timeout: tuple[float, float],
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Clock | None = None,
        session: requests.Session | None = None,
    ) -> None:
        _check_webhook_url(webhook_url)
        _register_url_parts(webhook_url.reveal())
        self._url = webhook_url
        self._timeout = timeout
        self._retry = retry
        self._clock = clock
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
            clock=clock,
        )

    def post(self, payload: Mapping[str, Any]) -> None:
        """POST the message JSON; SlackError (with Slack's error string and the fix) if refused.

        Last line of defence: a registered secret value in the payload is replaced by its
        fingerprint (and logged) rather than sent; the report still goes out.
        """
        body = json.dumps(payload, separators=(",", ":"))
        clean = scrub(body)
        if clean != body:
            log.error("the Slack payload held a secret value: sending it with the value masked")
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
            clock=self._clock,
            data=clean.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            describe_error=describe_slack_error,
        )
        answer = response.text.strip()
        if answer != "ok":
            log.warning(
                "Slack accepted the report but answered %r (expected 'ok')", truncate(answer, 80)
            )
        else:
            log.info("posted the report to Slack")

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> SlackClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SlackClient(webhook_url={self._url!r})"
