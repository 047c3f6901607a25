"""The PostHog client: read and reset the project key, send events, read them back with HogQL.

Every call goes through ``rotator.clients.transport.request`` (explicit timeouts; bounded retries
for idempotent calls only). Upstream behaviour this relies on is in FACTS section 2:

- ``PATCH /api/projects/{id}/reset_token/`` is the point of no return. It is sent exactly once;
  a lost answer is ``ResetOutcomeUnknown`` and the caller learns the outcome by reading the key
  back with ``get_project``, never by resetting again.
- Capture answers 200 for any well-formed key, dead or alive: a 200 proves nothing. Proof is
  reading the event back through the query API with ``"refresh": "force_blocking"`` (an
  identical query without it may be served from a cache hours old).
- The personal key travels only in the ``Authorization`` header, set by an auth object whose
  ``repr`` is masked; it is never in a URL, a message or a log line.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid as uuid_mod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyotp
import requests
from urllib3.exceptions import NewConnectionError

from rotator.clients.transport import RetryPolicy, request, truncate
from rotator.clock import Clock, Deadline, SystemClock
from rotator.errors import (
    ConfigError,
    LoginFailed,
    PostHogError,
    QueryThrottled,
    ResetForbidden,
    ResetOutcomeUnknown,
)
from rotator.names import ProjectId
from rotator.progress import WaitProgress, waiting
from rotator.redact import Secret, register

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

MARKER_EVENT = "rotator_check"
MARKER_DISTINCT_ID = "rotator"
# posthog/models/utils.py generate_random_token_project: "phc_" + base62; capture caps at 64.
# Checked with fullmatch: `$` would let a trailing newline through.
_PROJECT_KEY = re.compile(r"phc_[0-9A-Za-z]{1,60}")
# Keys minted before the `phc_` prefix existed (generate_random_token: base62, or the older
# urlsafe tokens): accepted when reading and adopting, never from a reset (which mints phc_).
_LEGACY_PROJECT_KEY = re.compile(r"[0-9A-Za-z_-]{32,64}")
ADMIN_LEVEL = 8  # posthog/models/organization.py OrganizationMembership.Level.ADMIN
SESSION_COOKIE = "sessionid"
CSRF_COOKIE = "posthog_csrftoken"  # posthog/settings/web.py CSRF_COOKIE_NAME
TOTP_STEP_S = 30
# HogQLQueryThrottle: 120/hour per personal key on legacy teams and self-hosted (FACTS 2):
# one query per 30 s fits it; `posthog.query_budget_per_hour` sets another budget.
QUERY_INTERVAL_S = 3600 / 120
_MAX_POLL_FACTOR = 4.0
DEFAULT_RETRY = RetryPolicy()
_SCOPE_IN_DETAIL = re.compile(r"missing required scope '([^']+)'")
_HOGQL_SAFE_STRING = re.compile(r"^[^\x00-\x1f]*$")

RESET_FORBIDDEN_REMEDY = (
    "nothing changed. PostHog lets no token reset the project key (since PR #51237 every "
    "personal API key, `*` included, gets this answer): set posthog.reset.method: session and "
    "give rotator a service user (README: PostHog setup), or reset the key in PostHog "
    "(Project settings -> Project API key -> Reset) and run `rotator run --no-reset`"
)
RESET_NEEDS_ADMIN_REMEDY = (
    "nothing changed. Resetting the project key needs a project admin: make the service user "
    "(posthog.reset.email) an admin of this project, or reset the key in PostHog and then run "
    "`rotator run --no-reset`"
)
RESET_CSRF_REMEDY = (
    "nothing changed. PostHog's CSRF check refused the session (X-CSRFToken or Referer missing "
    "or wrong): check that no proxy strips those headers, or that posthog.app_host is the "
    "host the session logged in to"
)
RESET_UNKNOWN_REMEDY = (
    "the reset may or may not have happened. Do not reset again: read the key back "
    "(GET /api/projects/{project_id}/, `rotator status`) and roll out whatever key PostHog now has "
    "(`rotator run --no-reset`)"
)


@dataclass(frozen=True)
class Project:
    id: ProjectId
    name: str
    api_token: Secret
    live_events_token: Secret | None
    # The caller's `effective_membership_level` on the project (admin = 8, owner = 15).
    membership_level: int | None = None


@dataclass(frozen=True)
class MarkerHit:
    check_id: str
    seen_after_s: float
    polls: int


class _BearerAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Bearer <key>`` at send time; its repr never shows the key."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return r

    def __repr__(self) -> str:
        return f"_BearerAuth({self._key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BearerAuth) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)


# --- HogQL values: never interpolate anything unchecked ------------------------------------


def hogql_string(value: str) -> str:
    """A HogQL string literal: quotes and backslashes escaped, control characters refused."""
    if not _HOGQL_SAFE_STRING.match(value):
        raise ValueError("a HogQL string value must not contain control characters")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ensure_check_id(check_id: str) -> str:
    """A marker id is a canonical UUID, nothing else (it is interpolated into HogQL)."""
    try:
        parsed = uuid_mod.UUID(check_id)
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"check_id must be a UUID, got {check_id!r:.60}") from None
    if str(parsed) != check_id:
        raise ValueError("check_id must be a UUID in canonical form (lower case, with dashes)")
    return check_id


def ensure_condition(where: str) -> str:
    """A HogQL condition from config, checked to stay inside the parentheses it is put in.

    The text comes from the operator's config (e.g. ``properties.environment = 'preview'``),
    so it is trusted to be HogQL; what is checked is that it cannot close the surrounding
    ``(...)``, end the statement, or hide text in a comment.
    """
    depth = 0
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(where):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in ("'", '"', "`"):
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' at position {i} in the HogQL condition")
        elif ch == ";" or where.startswith(("--", "/*"), i):
            raise ValueError("a HogQL condition must not contain ';' or comments")
    if quote or depth:
        raise ValueError("unbalanced quotes or parentheses in the HogQL condition")
    if not where.strip():
        raise ValueError("empty HogQL condition")
    return where


def hogql_time(moment: datetime) -> str:
    """``toDateTime('...Z')``: an explicit UTC instant, whatever the project's time zone."""
    if moment.tzinfo is None:
        raise ValueError("use an aware datetime (UTC)")
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"toDateTime({hogql_string(text)})"


# --- errors -----------------------------------------------------------------------------------


@dataclass
class _ErrorBody:
    """PostHog's DRF error body ``{type, code, detail, attr}``, filled by ``describe``."""

    code: str | None = None
    detail: str | None = None


def _parse_error(response: requests.Response) -> _ErrorBody:
    try:
        body = response.json()
    except ValueError:
        return _ErrorBody()
    if not isinstance(body, dict):
        return _ErrorBody()
    code = body.get("code")
    detail = body.get("detail")
    return _ErrorBody(
        code=str(code) if code is not None else None,
        detail=str(detail) if detail is not None else None,
    )


def _never_sent(exc: BaseException | None) -> bool:
    """True only when the request provably never left: the connection could not be opened."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", None)
        return isinstance(reason, NewConnectionError)
    return False


def parse_project(project_id: ProjectId, data: Any, *, what: str, minted: bool = False) -> Project:
    """The project JSON of ``GET /api/projects/{id}/`` or a reset's answer, checked strictly.

    ``minted``: the answer of a reset, which only ever mints ``phc_`` + base62; a read also
    accepts a key minted before the prefix existed (FACTS section 2).
    """
    if not isinstance(data, dict):
        raise PostHogError(f"{what}: PostHog answered something other than a JSON object")
    token = data.get("api_token")
    if not isinstance(token, str) or not token:
        raise PostHogError(f"{what}: PostHog's answer has no `api_token`")
    shapes = (_PROJECT_KEY,) if minted else (_PROJECT_KEY, _LEGACY_PROJECT_KEY)
    if not any(shape.fullmatch(token) for shape in shapes):
        # Never echo the value: it may be a key of another shape.
        raise PostHogError(
            f"{what}: `api_token` in PostHog's answer is not a project key "
            f"(phc_ + base62, at most 64 chars, nothing around it; got {len(token)} chars)"
        )
    live = data.get("live_events_token")
    answered_id = data.get("id")
    if answered_id is not None and answered_id != int(project_id):
        raise PostHogError(f"{what}: PostHog answered for project {answered_id!r}")
    level = data.get("effective_membership_level")
    return Project(
        id=project_id,
        name=str(data.get("name") or ""),
        api_token=Secret(token),
        live_events_token=Secret(live) if isinstance(live, str) and live else None,
        membership_level=level if isinstance(level, int) else None,
    )


def reset_error(
    exc: PostHogError, body: _ErrorBody, what: str, project_id: ProjectId
) -> PostHogError:
    """What a failed reset PATCH means: never sent, refused (nothing changed) or unknown."""
    unknown = RESET_UNKNOWN_REMEDY.format(project_id=int(project_id))
    status = exc.status
    if status is None:
        if _never_sent(exc.__cause__):
            return PostHogError(
                f"{what}: could not connect ({type(exc.__cause__).__name__}); the request "
                f"was not sent, nothing changed",
                retryable=True,
            )
        return ResetOutcomeUnknown(
            f"{what}: no answer ({type(exc.__cause__).__name__}); {unknown}",
            retryable=False,
        )
    if status >= 500:
        return ResetOutcomeUnknown(
            f"{exc}; {unknown}", retryable=False, status=status, code=body.code
        )
    if status == 403:
        detail = body.detail or "forbidden"
        if "personal api key access" in detail.lower():
            remedy = RESET_FORBIDDEN_REMEDY
        elif detail.startswith("CSRF Failed"):
            remedy = RESET_CSRF_REMEDY
        else:
            remedy = RESET_NEEDS_ADMIN_REMEDY
        return ResetForbidden(
            f"{what}: PostHog answered 403 ({truncate(detail)}); {remedy}",
            status=status,
            code=body.code,
        )
    if status == 429:
        return PostHogError(
            f"{exc}; the reset was throttled before it ran, nothing changed; try again later",
            retryable=False,
            status=status,
            code=body.code,
        )
    return PostHogError(f"{exc}; nothing changed", retryable=False, status=status, code=body.code)


# --- the client -------------------------------------------------------------------------------


class PostHogClient:
    """PostHog's private API (app host) and capture (ingestion host), for one personal key."""

    def __init__(
        self,
        *,
        app_host: str,
        ingest_host: str,
        personal_key: Secret,
        timeout: tuple[float, float],
        retry: RetryPolicy = DEFAULT_RETRY,
        clock: Clock | None = None,
        session: requests.Session | None = None,
        key_source: str = "the configured personal API key",
        query_interval_s: float = QUERY_INTERVAL_S,
        capture_path: str = "/e/",
    ) -> None:
        self._app = app_host.rstrip("/")
        self._ingest = ingest_host.rstrip("/")
        self._timeout = timeout
        self._retry = retry
        self._clock: Clock = clock or SystemClock()
        self._key_source = key_source
        self._query_interval_s = query_interval_s
        self._capture_path = "/" + capture_path.lstrip("/")
        self._last_query: float | None = None
        self._query_lock = threading.Lock()
        # The key is added per request by the session's auth object (masked repr), never via
        # `headers=`. Capture is unauthenticated (the project key is in the body): it has its
        # own session without the personal key, so that key never reaches the ingestion host.
        self._api = session or requests.Session()
        self._api.auth = _BearerAuth(personal_key)
        self._ingest_session = requests.Session()
        for s in (self._api, self._ingest_session):
            # trust_env stays on: HTTPS_PROXY and REQUESTS_CA_BUNDLE may be needed in-cluster.
            s.headers["User-Agent"] = "rotator (posthog key rotation)"

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> PostHogClient:
        source = config.posthog.personal_api_key
        key = config.secrets.posthog_personal_api_key
        if key is None:
            why = config.secrets.missing.get("posthog.personal_api_key", "it is not set")
            raise ConfigError(
                f"posthog.personal_api_key: the PostHog personal API key is missing "
                f"({source.describe()}): {why}"
            )
        t = config.timeouts
        return cls(
            app_host=config.posthog.app_host,
            ingest_host=config.posthog.ingest_host,
            personal_key=key,
            timeout=(t.connect_s, t.read_s),
            retry=RetryPolicy(attempts=t.attempts),
            clock=clock,
            key_source=f"the personal API key from {source.describe()}",
            query_interval_s=3600 / config.posthog.query_budget_per_hour,
            capture_path=config.posthog.capture_path,
        )

    def close(self) -> None:
        self._api.close()
        self._ingest_session.close()

    # plumbing -----------------------------------------------------------------------------

    def _describe(self, body: _ErrorBody) -> Callable[[requests.Response], str]:
        def describe(response: requests.Response) -> str:
            parsed = _parse_error(response)
            body.code, body.detail = parsed.code, parsed.detail
            detail = parsed.detail or truncate(response.text)
            if response.status_code == 401 and parsed.code in (
                "authentication_failed",
                "not_authenticated",
            ):
                return (
                    f"PostHog rejected {self._key_source} ({parsed.code}: {truncate(detail)}); "
                    f"check that it is a valid personal API key (phx_...) for {self._app}"
                )
            scope = _SCOPE_IN_DETAIL.search(detail)
            if response.status_code == 403 and scope:
                return (
                    f"{self._key_source} lacks the scope '{scope.group(1)}'; add it to the key "
                    f"in PostHog (Settings -> Personal API keys)"
                )
            prefix = f"{parsed.code}: " if parsed.code else ""
            return prefix + truncate(detail)

        return describe

    def _call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        idempotent: bool,
        json: Any = None,
        session: requests.Session | None = None,
    ) -> requests.Response:
        body = _ErrorBody()
        session = session or self._api
        try:
            return request(
                session,
                method,
                url,
                what=what,
                error=PostHogError,
                timeout=self._timeout,
                idempotent=idempotent,
                retry=self._retry,
                clock=self._clock,
                json=json,
                describe_error=self._describe(body),
            )
        except PostHogError as exc:
            if body.code is None or exc.status is None:  # no PostHog error body to add
                raise
            raise PostHogError(
                str(exc), retryable=exc.retryable, status=exc.status, code=body.code
            ) from exc

    def _api_url(self, project_id: ProjectId, suffix: str = "") -> str:
        return f"{self._app}/api/projects/{int(project_id)}/{suffix}"

    def _project(
        self, project_id: ProjectId, data: Any, *, what: str, minted: bool = False
    ) -> Project:
        return parse_project(project_id, data, what=what, minted=minted)

    # the API ------------------------------------------------------------------------------

    def get_project(self, project_id: ProjectId) -> Project:
        what = f"read PostHog project {int(project_id)}"
        response = self._call("GET", self._api_url(project_id), what=what, idempotent=True)
        return self._project(project_id, _json(response, what), what=what)

    def reset_key(self, project_id: ProjectId) -> Project:
        """Reset the project key: sent exactly once, never retried (the point of no return)."""
        what = f"reset the key of PostHog project {int(project_id)}"
        body = _ErrorBody()
        try:
            response = request(
                self._api,
                "PATCH",
                self._api_url(project_id, "reset_token/"),
                what=what,
                error=PostHogError,
                timeout=self._timeout,
                idempotent=False,
                retry=self._retry,
                clock=self._clock,
                describe_error=self._describe(body),
            )
        except PostHogError as exc:
            raise reset_error(exc, body, what, project_id) from exc
        try:
            project = self._project(project_id, _json(response, what), what=what, minted=True)
        except PostHogError as exc:
            # The reset happened (200) but the answer is unusable: the key is unknown to us.
            unknown = RESET_UNKNOWN_REMEDY.format(project_id=int(project_id))
            raise ResetOutcomeUnknown(f"{exc}; {unknown}", status=200) from exc
        log.info("PostHog project %s: key reset, new key %s", int(project_id), project.api_token)
        return project

    def capture(
        self,
        key: Secret,
        event: str,
        distinct_id: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> None:
        """Send one event. A 200 only means the key is well-formed, not that it is alive."""
        payload: dict[str, Any] = {
            "api_key": key.reveal(),
            "event": event,
            "distinct_id": distinct_id,
            "properties": dict(properties or {}),
            # A uuid makes a retried capture the same event (PostHog's events table
            # deduplicates on it), so the request helper may retry the call.
            "uuid": str(uuid_mod.uuid4()),
        }
        if timestamp is not None:
            payload["timestamp"] = timestamp.astimezone(UTC).isoformat()
        self._call(
            "POST",
            f"{self._ingest}{self._capture_path}",
            what=f"send event {event!r} with key {key.fingerprint}",
            idempotent=True,
            json=payload,
            session=self._ingest_session,
        )

    def query(self, project_id: ProjectId, hogql: str) -> list[list[Any]]:
        """Run HogQL with ``force_blocking`` (never a cached answer); returns the result rows."""
        self._space_queries()
        what = f"query PostHog project {int(project_id)}"
        response = self._call(
            "POST",
            self._api_url(project_id, "query/"),
            what=what,
            idempotent=True,  # read-only
            json={"query": {"kind": "HogQLQuery", "query": hogql}, "refresh": "force_blocking"},
        )
        data = _json(response, what)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, list) for r in results):
            raise PostHogError(f"{what}: the answer has no `results` rows")
        return results

    def _space_queries(self) -> None:
        """Stay under the per-key query limit (240/min, 2400/h) instead of meeting 429s.

        Thread-safe: callers that poll in parallel (one thread per environment) each reserve
        the next free slot under the lock, then wait for it outside the lock.
        """
        with self._query_lock:
            now = self._clock.monotonic()
            slot = now
            if self._last_query is not None:
                slot = max(now, self._last_query + self._query_interval_s)
            self._last_query = slot
        if slot > now:
            self._clock.sleep(slot - now)

    def send_marker(
        self, key: Secret, *, check_id: str, properties: Mapping[str, Any] | None = None
    ) -> None:
        """Send the ``rotator_check`` marker event carrying ``check_id`` with ``key``."""
        ensure_check_id(check_id)
        props = {**dict(properties or {}), "check_id": check_id, "source": "rotator"}
        self.capture(key, MARKER_EVENT, MARKER_DISTINCT_ID, props)

    def find_marker(
        self,
        project_id: ProjectId,
        *,
        check_id: str,
        deadline_s: float,
        poll_s: float,
        heartbeat_s: float | None = None,
    ) -> MarkerHit | None:
        """Poll (with backoff) until the marker is queryable; ``None`` when the deadline passes."""
        with waiting(
            "verify",
            f"marker event {check_id} to be queryable in project {project_id}",
            clock=self._clock,
            deadline_s=deadline_s,
            interval_s=heartbeat_s,
        ) as progress:
            return self._poll_marker(
                project_id,
                check_id=check_id,
                deadline_s=deadline_s,
                poll_s=poll_s,
                progress=progress,
            )

    def _poll_marker(
        self,
        project_id: ProjectId,
        *,
        check_id: str,
        deadline_s: float,
        poll_s: float,
        progress: WaitProgress,
    ) -> MarkerHit | None:
        ensure_check_id(check_id)
        # Every interpolated value is checked (uuid) and quoted (hogql_string).
        hogql = (
            f"SELECT uuid, timestamp FROM events WHERE event = {hogql_string(MARKER_EVENT)} "  # noqa: S608
            f"AND properties.check_id = {hogql_string(check_id)} "
            f"AND timestamp >= now() - INTERVAL 60 MINUTE LIMIT 1"
        )
        deadline = Deadline(self._clock, deadline_s)
        polls = 0
        wait = poll_s
        throttled: PostHogError | None = None
        while True:
            polls += 1
            try:
                rows = self.query(project_id, hogql)
                throttled = None
            except PostHogError as exc:
                if not exc.retryable:
                    raise
                throttled = exc if exc.status == 429 else None
                log.warning("marker %s: query failed (%s); polling on", check_id, exc)
                rows = []
            if rows:
                hit = MarkerHit(check_id=check_id, seen_after_s=deadline.elapsed, polls=polls)
                log.info("marker %s seen after %.1fs (%d polls)", check_id, hit.seen_after_s, polls)
                return hit
            if deadline.remaining <= 0:
                if throttled is not None:
                    # HogQLQueryThrottle or the concurrency limit until the end: unknown,
                    # never "the key may not be live" (FACTS section 2).
                    raise QueryThrottled(
                        f"marker {check_id}: the query API was still throttled at the "
                        f"{deadline_s:.0f}s deadline ({polls} queries): {throttled}",
                        status=429,
                    ) from throttled
                log.info("marker %s not seen within %.0fs (%d polls)", check_id, deadline_s, polls)
                return None
            progress.observe(f"not found after {polls} queries")
            self._clock.sleep(min(wait, deadline.remaining))
            wait = min(wait * 1.5, poll_s * _MAX_POLL_FACTOR)

    def count_gateway_events(
        self, project_id: ProjectId, *, filters: Mapping[str, str], since: datetime
    ) -> dict[str, int]:
        """Every environment's count in ONE query (``countIf`` per filter): the HogQL budget
        is 120/hour per personal key on legacy teams and self-hosted (FACTS section 2)."""
        names = list(filters)
        if not names:
            return {}
        columns = ", ".join(f"countIf({ensure_condition(filters[n])})" for n in names)
        hogql = f"SELECT {columns} FROM events WHERE timestamp >= {hogql_time(since)}"  # noqa: S608
        rows = self.query(project_id, hogql)
        try:
            return {name: int(rows[0][i]) for i, name in enumerate(names)}
        except (IndexError, TypeError, ValueError):
            raise PostHogError(
                f"count events in PostHog project {int(project_id)}: unexpected answer shape"
            ) from None

    def count_events(self, project_id: ProjectId, *, where: str, since: datetime) -> int:
        """``count()`` of events with ``timestamp >= since AND (where)``."""
        # `since` is rendered by hogql_time; `where` is checked to stay inside its parentheses.
        hogql = (
            f"SELECT count() FROM events WHERE timestamp >= {hogql_time(since)} "  # noqa: S608
            f"AND ({ensure_condition(where)})"
        )
        rows = self.query(project_id, hogql)
        try:
            return int(rows[0][0])
        except (IndexError, TypeError, ValueError):
            raise PostHogError(
                f"count events in PostHog project {int(project_id)}: unexpected answer shape"
            ) from None


# --- the service user's session (posthog.reset.method: session) -------------------------------

_LOGIN_FIXES: dict[str, str] = {
    "invalid_credentials": (
        "wrong email or password: check posthog.reset.email and the password in {password}; "
        "rotator never retries a login (PostHog locks the account after 30 failures)"
    ),
    "sso_enforced": (
        "the email's domain enforces SSO ({detail}), so a password login is impossible: use a "
        "service user on a domain without SSO enforcement"
    ),
    "not_verified": (
        "the user's email is not verified: open the verification link PostHog mailed to it"
    ),
    "code_based_verification_required": (
        "the user has no TOTP device, so PostHog mails a code on every new login, which "
        "cannot run unattended: enroll a TOTP device for it and put the base32 secret in "
        "{totp}"
    ),
    "too_many_failed_attempts": (
        "PostHog locked the account after too many failed logins ({detail}): fix the password "
        "in {password}, wait for the cool-off, then run again"
    ),
    "2fa_invalid": (
        "PostHog refused the TOTP code: check that {totp} holds the base32 secret of this "
        "user's TOTP device and that this machine's clock is right (NTP)"
    ),
    "2fa_expired": ("more than 600 s passed between the password and the TOTP step: run again"),
    "2fa_too_many_attempts": (
        "PostHog throttles TOTP codes after failed ones: check the secret in {totp}, wait a "
        "few minutes, then run again"
    ),
}


def totp_device(secret: Secret) -> pyotp.TOTP:
    """The TOTP device of ``posthog.reset.totp_secret``: a base32 secret (30 s steps, 6 digits,
    as PostHog enrols with django_otp's ``TOTPDevice`` defaults) or the ``otpauth://totp/`` URI
    of the enrolment QR code (Google's Key-Uri-Format; its ``period`` is the device's
    ``TOTPDevice.step``, a per-device field). Raises ValueError for anything else; the base32
    part of a URI is registered for scrubbing like the URI itself."""
    text = secret.reveal().strip()
    if text.lower().startswith("otpauth://"):
        otp = pyotp.parse_uri(text)
        if not isinstance(otp, pyotp.TOTP):
            raise ValueError("not an otpauth://totp/ URI")
        register(otp.secret)
    else:
        otp = pyotp.TOTP(text, interval=TOTP_STEP_S)
    otp.at(0)  # decodes the secret: a bad base32 raises here, before any login
    if otp.interval < 1:
        raise ValueError("period must be at least 1 s")
    return otp


class _TotpLedger:
    """The last TOTP step this process used per (app host, user): a code is single-use per
    30 s step (django_otp TOTPDevice ``last_t``), so two runs of one process (the scheduler,
    the tests) must not log in within the same step. Like the redaction registry, the one
    process-wide state here: runs of one process have no other way to know of each other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[tuple[str, str], int] = {}

    def last(self, who: tuple[str, str]) -> int | None:
        with self._lock:
            return self._steps.get(who)

    def use(self, who: tuple[str, str], step: int) -> None:
        with self._lock:
            self._steps[who] = max(step, self._steps.get(who, step))


_TOTP_LEDGER = _TotpLedger()


class PostHogSession:
    """The service user's logged-in session: what PostHog's web app uses to reset the key.

    One fresh cookie jar per instance (never reused across runs): ``POST /api/login`` with the
    email and password, ``POST /api/login/token`` with a TOTP code (FACTS section 2,
    posthog/api/authentication.py), then API calls with the ``sessionid`` cookie; unsafe
    methods add ``X-CSRFToken`` (the ``posthog_csrftoken`` cookie) and ``Referer`` (Django's
    CSRF check on HTTPS). Logins are never retried (django-axes locks the account after 30
    failures) and two logins never use the same TOTP step (a code is single-use).
    """

    def __init__(
        self,
        *,
        app_host: str,
        email: str,
        password: Secret,
        totp_secret: Secret | None,
        timeout: tuple[float, float],
        clock: Clock | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        password_from: str = "posthog.reset.password",  # noqa: S107 - a description
        totp_from: str = "the configured TOTP secret",
    ) -> None:
        self._app = app_host.rstrip("/")
        self._email = email
        self._password = password
        self._totp = totp_secret
        self._timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._retry = retry
        self._sources = {"password": password_from, "totp": totp_from}
        self._http = requests.Session()
        self._http.headers["User-Agent"] = "rotator (posthog key rotation)"
        self._http.trust_env = True
        self._logged_in = False
        self._otp: pyotp.TOTP | None = None
        if totp_secret is not None:
            try:
                self._otp = totp_device(totp_secret)
            except (ValueError, TypeError):  # binascii.Error is a ValueError
                raise ConfigError(
                    f"posthog.reset.totp_secret: not a base32 TOTP secret nor an otpauth://totp/ "
                    f"URI ({totp_from}); use the secret PostHog showed when the TOTP device was "
                    "enrolled (or the URI its QR code holds)"
                ) from None

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> PostHogSession:
        reset = config.posthog.reset
        secrets = config.secrets
        if reset.email is None:
            raise ConfigError(
                "posthog.reset.email: required with posthog.reset.method: session "
                "(the PostHog service user's email)"
            )
        for path, value in (
            ("posthog.reset.password", secrets.posthog_password),
            ("posthog.reset.totp_secret", secrets.posthog_totp_secret),
        ):
            if value is None:
                why = secrets.missing.get(path, "it is not set")
                raise ConfigError(f"{path}: {why}")
        assert secrets.posthog_password is not None
        t = config.timeouts
        return cls(
            app_host=config.posthog.app_host,
            email=reset.email,
            password=secrets.posthog_password,
            totp_secret=secrets.posthog_totp_secret,
            timeout=(t.connect_s, t.read_s),
            clock=clock,
            retry=RetryPolicy(attempts=t.attempts),
            password_from=f"posthog.reset.password ({reset.password.describe()})",
            totp_from=f"posthog.reset.totp_secret ({reset.totp_secret.describe()})",
        )

    @property
    def email(self) -> str:
        return self._email

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    def close(self) -> None:
        self._http.close()

    # plumbing -----------------------------------------------------------------------------

    def _post_login(
        self, path: str, payload: Mapping[str, str], *, what: str, ok_401: bool = False
    ) -> requests.Response:
        body = _ErrorBody()
        try:
            return request(
                self._http,
                "POST",
                f"{self._app}{path}",
                what=what,
                error=PostHogError,
                timeout=self._timeout,
                idempotent=False,  # never retry a login blindly
                clock=self._clock,
                json=dict(payload),
                describe_error=_login_describe(body),
                ok_statuses=(401,) if ok_401 else (),  # 2fa_required: the usual first answer
            )
        except PostHogError as exc:
            raise self._login_error(exc, body, what) from exc

    def _login_error(self, exc: PostHogError, body: _ErrorBody, what: str) -> LoginFailed:
        fix = _LOGIN_FIXES.get(body.code or "")
        if fix is not None:
            text = fix.format(
                password=self._sources["password"],
                totp=self._sources["totp"],
                detail=truncate(body.detail or "", 80),
            )
            message = f"{what}: {body.code}: {text}; nothing changed"
        elif exc.status is None:
            message = (
                f"{what}: no answer ({exc}); not retried (a login is never retried blindly); "
                "nothing changed, run again"
            )
        else:
            message = f"{what}: unexpected answer ({exc}); nothing changed"
        return LoginFailed(message, status=exc.status, code=body.code)

    def _totp_code(self) -> str:
        """The current TOTP code, waiting for the next step if this process used this one."""
        assert self._otp is not None
        step_s = self._otp.interval
        who = (self._app, self._email.lower())
        now = self._clock.now().timestamp()
        step = int(now // step_s)
        last = _TOTP_LEDGER.last(who)
        if last is not None and step <= last:
            wait = (last + 1) * step_s - now + min(0.5, step_s / 10)
            log.info(
                "PostHog login: waiting %.1fs for a fresh TOTP step (codes are single-use)", wait
            )
            self._clock.sleep(wait)
            now = self._clock.now().timestamp()
            step = int(now // step_s)
        _TOTP_LEDGER.use(who, step)
        return str(self._otp.at(step * step_s))

    def _cookie(self, name: str) -> str | None:
        value = self._http.cookies.get(name)
        if value:
            Secret(value)  # registered: scrubbed from any log line or message
        return value

    def _csrf_headers(self) -> dict[str, str]:
        token = self._cookie(CSRF_COOKIE)
        if not token:
            raise LoginFailed(
                f"PostHog session of {self._email}: the login set no {CSRF_COOKIE} cookie; "
                "nothing changed (is posthog.app_host the PostHog app host?)"
            )
        return {"X-CSRFToken": token, "Referer": f"{self._app}/"}

    # the flow -----------------------------------------------------------------------------

    def login(self) -> None:
        """Log in as the service user. Raises ``LoginFailed`` with the fix; never retries."""
        what = f"log in to PostHog as {self._email}"
        self._http.cookies.clear()  # a fresh jar: never a session of an earlier run
        response = self._post_login(
            "/api/login",
            {"email": self._email, "password": self._password.reveal()},
            what=what,
            ok_401=True,
        )
        code = _parse_error(response).code if response.status_code == 401 else None
        if response.status_code == 401 and code == "code_based_verification_required":
            raise self._login_error(PostHogError(what, status=401), _ErrorBody(code=code), what)
        if response.status_code == 401 and code != "2fa_required":
            raise self._login_error(
                PostHogError(f"{what}: HTTP 401: {code}", status=401), _ErrorBody(code=code), what
            )
        if code == "2fa_required":
            if self._totp is None:
                raise LoginFailed(
                    f"{what}: PostHog asks for a TOTP code but no TOTP secret is configured: "
                    f"set posthog.reset.totp_secret ({self._sources['totp']}); nothing changed",
                    status=401,
                    code=code,
                )
            self._send_totp(what)
        if self._cookie(SESSION_COOKIE) is None:
            raise LoginFailed(f"{what}: PostHog set no session cookie; nothing changed")
        self._cookie(CSRF_COOKIE)
        self._logged_in = True
        log.info("PostHog: logged in as %s", self._email)

    def _send_totp(self, what: str) -> None:
        """The TOTP step; one more try in the NEXT step only after ``2fa_invalid``.

        Not a blind retry: the password step stands (600 s), a code is single-use per step and
        another process (a run started within the same 30 s) may have used this step's code.
        A second refusal in a fresh step means the secret is wrong. TOTP failures do not count
        toward django-axes' lockout; django_otp's throttle (2**(n-1) s after n failures) is over
        by the next step.
        """
        try:
            self._post_login(
                "/api/login/token", {"token": self._totp_code()}, what=f"{what} (TOTP step)"
            )
        except LoginFailed as exc:
            if exc.code != "2fa_invalid":
                raise
            log.warning(
                "PostHog login: TOTP code refused; one more try with the next step's code "
                "(another login may have used this step's)"
            )
            self._post_login(
                "/api/login/token", {"token": self._totp_code()}, what=f"{what} (TOTP step)"
            )

    def _ensure_logged_in(self) -> None:
        if not self._logged_in:
            raise LoginFailed("PostHog session: not logged in (call login() first)")

    def get_project(self, project_id: ProjectId) -> Project:
        """The project as the service user sees it (with its ``effective_membership_level``)."""
        self._ensure_logged_in()
        what = f"read PostHog project {int(project_id)} as {self._email}"
        response = request(
            self._http,
            "GET",
            f"{self._app}/api/projects/{int(project_id)}/",
            what=what,
            error=PostHogError,
            timeout=self._timeout,
            idempotent=True,
            retry=self._retry,
            clock=self._clock,
            describe_error=_login_describe(_ErrorBody()),
        )
        return parse_project(project_id, _json(response, what), what=what)

    def ensure_may_reset(self, project_id: ProjectId) -> Project:
        """Preflight: the session may reset this project's key (admin or owner)."""
        try:
            project = self.get_project(project_id)
        except LoginFailed:
            raise
        except PostHogError as exc:
            raise LoginFailed(f"{exc}; nothing changed", status=exc.status) from exc
        level = project.membership_level
        if level is None or level < ADMIN_LEVEL:
            raise LoginFailed(
                f"PostHog user {self._email} is not an admin of project {int(project_id)} "
                f"(effective_membership_level {level}, admin is {ADMIN_LEVEL}): make it an "
                "admin of the project (Project settings -> Access control); nothing changed"
            )
        return project

    def reset_key(self, project_id: ProjectId) -> Project:
        """The reset, as the web app does it: sent exactly once, never retried."""
        self._ensure_logged_in()
        what = f"reset the key of PostHog project {int(project_id)} (as {self._email})"
        body = _ErrorBody()
        try:
            response = request(
                self._http,
                "PATCH",
                f"{self._app}/api/projects/{int(project_id)}/reset_token/",
                what=what,
                error=PostHogError,
                timeout=self._timeout,
                idempotent=False,
                clock=self._clock,
                json={},
                headers=self._csrf_headers(),
                describe_error=_login_describe(body),
            )
        except PostHogError as exc:
            raise reset_error(exc, body, what, project_id) from exc
        try:
            project = parse_project(project_id, _json(response, what), what=what, minted=True)
        except PostHogError as exc:
            unknown = RESET_UNKNOWN_REMEDY.format(project_id=int(project_id))
            raise ResetOutcomeUnknown(f"{exc}; {unknown}", status=200) from exc
        log.info("PostHog project %s: key reset, new key %s", int(project_id), project.api_token)
        return project

    def logout(self) -> None:
        """End the session (best effort: a failed logout never fails a run)."""
        if not self._logged_in:
            return
        self._logged_in = False
        try:
            request(
                self._http,
                "POST",
                f"{self._app}/logout",
                what=f"log out of PostHog ({self._email})",
                error=PostHogError,
                timeout=self._timeout,
                idempotent=False,
                clock=self._clock,
                headers=self._csrf_headers(),
                ok_statuses=(302,),
                allow_redirects=False,
            )
            log.info("PostHog: logged out %s", self._email)
        except PostHogError as exc:
            log.warning(
                "PostHog: logging out %s failed (%s); the session expires", self._email, exc
            )
        finally:
            self._http.cookies.clear()


def _login_describe(body: _ErrorBody) -> Callable[[requests.Response], str]:
    def describe(response: requests.Response) -> str:
        parsed = _parse_error(response)
        body.code, body.detail = parsed.code, parsed.detail
        detail = parsed.detail or truncate(response.text)
        return (f"{parsed.code}: " if parsed.code else "") + truncate(detail)

    return describe


def _json(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise PostHogError(
            f"{what}: PostHog answered {response.status_code} without JSON: "
            f"{truncate(response.text)}"
        ) from None


__all__ = [
    "MARKER_EVENT",
    "MarkerHit",
    "PostHogClient",
    "PostHogSession",
    "Project",
    "ProjectId",
    "ensure_check_id",
    "ensure_condition",
    "hogql_string",
    "hogql_time",
]
