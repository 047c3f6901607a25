"""The session half of the PostHog stand-in: users, password + TOTP login, cookies and CSRF.

What PostHog's web app does, and since PR #51237 the only way to reset a project key on Cloud
(FACTS section 2). Each behaviour names the upstream file it follows:

- ``POST /api/login`` ``{"email","password"}`` and ``POST /api/login/token`` ``{"token"}``:
  posthog/api/authentication.py ``LoginSerializer`` / ``TwoFactorViewSet``;
- TOTP: RFC 6238 (HMAC-SHA1, 30 s steps, 6 digits) as django_otp/oath.py ``TOTP`` computes it,
  verified like django_otp/plugins/otp_totp/models.py ``TOTPDevice.verify_token`` (one step of
  tolerance, a code at or before the last accepted step is refused: single use);
- lockout after 30 failed password logins, 10 min cool-off: django-axes as PostHog configures it
  (posthog/settings/web.py ``AXES_FAILURE_LIMIT``/``AXES_COOLOFF_TIME``), answered by
  posthog/api/authentication.py ``axes_locked_out``;
- cookies ``sessionid`` and ``posthog_csrftoken`` (posthog/settings/web.py
  ``SESSION_COOKIE_NAME``/``CSRF_COOKIE_NAME``), ``remember-cookie_<uuid>`` (two_factor
  ``REMEMBER_COOKIE_PREFIX``); Django's ``login()`` cycles the session key and rotates the CSRF
  token (django/contrib/auth/__init__.py ``login`` -> ``rotate_token``);
- CSRF on unsafe methods of a session-authenticated request: DRF ``SessionAuthentication
  .enforce_csrf`` -> django/middleware/csrf.py (Referer check on HTTPS, then the
  ``X-CSRFToken`` header against the cookie), failures as 403 ``CSRF Failed: <reason>``.

Secrets (passwords, TOTP secrets, session ids, CSRF tokens) are plain strings inside the
stand-in, which plays the outside system; nothing here logs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal
from urllib.parse import urlsplit

SESSION_COOKIE = "sessionid"
CSRF_COOKIE = "posthog_csrftoken"
REMEMBER_COOKIE_PREFIX = "remember-cookie_"
# posthog/models/organization.py OrganizationMembership.Level
MEMBER_LEVEL = 1
ADMIN_LEVEL = 8
OWNER_LEVEL = 15
TOTP_STEP_S = 30
TOTP_DIGITS = 6
TOTP_TOLERANCE_STEPS = 1  # django_otp otp_totp TOTPDevice.tolerance default
TWO_FACTOR_LOGIN_TIMEOUT_S = 600.0  # posthog/api/authentication.py TWO_FACTOR_LOGIN_TIMEOUT
AXES_FAILURE_LIMIT = 30
AXES_COOLOFF_S = 600.0
REMEMBER_COOKIE_AGE_S = 30 * 86400  # TWO_FACTOR_REMEMBER_COOKIE_AGE (FACTS section 2)

Flavour = Literal["cloud", "self_hosted_legacy"]


# --- RFC 4226 / RFC 6238, as django_otp/oath.py computes them ---------------------------------


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 section 5.3: HMAC-SHA1 of the counter, dynamic truncation, modulo 10^digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp_step(unix_time: float, step_s: int = TOTP_STEP_S) -> int:
    """RFC 6238 section 4.2: T = floor((now - T0) / X), T0 = 0."""
    return int(unix_time // step_s)


def decode_base32_secret(secret: str) -> bytes:
    """The key of an ``otpauth://`` base32 secret (upper-cased, padding restored)."""
    text = secret.strip().replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


# --- model ----------------------------------------------------------------------------------


@dataclass
class _User:
    email: str
    password: str
    totp_key: bytes | None
    level: int
    verified: bool | None
    sso_enforced: str | None
    totp_step_s: int = TOTP_STEP_S  # TOTPDevice.step (a per-device field, default 30)
    last_totp_step: int = -1  # TOTPDevice.last_t
    totp_failures: int = 0  # ThrottlingMixin.throttling_failure_count
    totp_failed_at: float = 0.0
    login_failures: list[float] = field(default_factory=list)  # django-axes AccessAttempt


@dataclass
class _Session:
    key: str
    csrf: str | None = None
    pending_user: str | None = None  # "user_authenticated_but_no_2fa"
    pending_since: float = 0.0  # "user_authenticated_time"
    user: str | None = None  # logged in


@dataclass(frozen=True)
class LoginReply:
    status: int
    payload: Any
    cookies: tuple[tuple[str, str, int | None], ...] = ()  # name, value, max-age


@dataclass(frozen=True)
class SessionUser:
    email: str
    level: int


def _error(status: int, type_: str, code: str, detail: str) -> LoginReply:
    return LoginReply(status, {"type": type_, "code": code, "detail": detail, "attr": None})


def parse_cookies(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


class LoginFlow:
    """Users and sessions of one stand-in; thread-safe; time comes from ``now`` (unix seconds)."""

    def __init__(self, *, now: Callable[[], float], flavour: Flavour = "cloud") -> None:
        self._now = now
        self.flavour = flavour
        self._lock = threading.RLock()
        self._users: dict[str, _User] = {}
        self._sessions: dict[str, _Session] = {}
        self.login_calls = 0
        self.token_calls = 0
        self.accepted_totp_steps: list[int] = []
        self.logouts = 0
        self._issued: list[str] = []  # every session id, CSRF token and remember cookie

    def add_user(
        self,
        email: str,
        password: str,
        *,
        totp_secret: str | None,
        level: int = ADMIN_LEVEL,
        verified: bool | None = True,
        sso_enforced: str | None = None,
        totp_step_s: int = TOTP_STEP_S,
    ) -> None:
        """A PostHog user (the service user) with its project level and optional TOTP device
        (``totp_step_s``: django_otp's per-device ``TOTPDevice.step``, default 30)."""
        key = decode_base32_secret(totp_secret) if totp_secret else None
        with self._lock:
            self._users[email.lower()] = _User(
                email=email,
                password=password,
                totp_key=key,
                level=level,
                verified=verified,
                sso_enforced=sso_enforced,
                totp_step_s=totp_step_s,
            )

    def set_level(self, email: str, level: int) -> None:
        with self._lock:
            self._users[email.lower()].level = level

    def issued_secrets(self) -> list[str]:
        """Every session id, CSRF token and remember-cookie value handed out (for leak scans)."""
        with self._lock:
            return list(self._issued)

    def live_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if s.user is not None)

    # --- the endpoints ----------------------------------------------------------------------

    def _session(self, cookies: Mapping[str, str]) -> _Session:
        found = self._sessions.get(cookies.get(SESSION_COOKIE, ""))
        if found is None:
            found = _Session(key=secrets.token_urlsafe(24))
            self._sessions[found.key] = found
            self._issued.append(found.key)
        return found

    def _locked_out(self, user: _User | None, now: float) -> bool:
        if user is None:
            return False
        user.login_failures = [t for t in user.login_failures if t > now - AXES_COOLOFF_S]
        return len(user.login_failures) >= AXES_FAILURE_LIMIT

    def login(self, headers: Mapping[str, str], body: bytes) -> LoginReply:
        """posthog/api/authentication.py ``LoginSerializer.create``."""
        data = _json_object(body)
        email = data.get("email")
        password = data.get("password")
        if not isinstance(email, str) or "@" not in email or not isinstance(password, str):
            return _error(400, "validation_error", "required", "This field is required.")
        now = self._now()
        with self._lock:
            self.login_calls += 1
            user = self._users.get(email.lower())
            # django-axes checks the lockout before authenticating (axes_locked_out).
            if self._locked_out(user, now):
                return _error(
                    403,
                    "authentication_error",
                    "too_many_failed_attempts",
                    "Too many failed login attempts. Please try again in "
                    f"{int(AXES_COOLOFF_S // 60)} minutes.",
                )
            if user is not None and user.sso_enforced:
                return _error(
                    400,
                    "validation_error",
                    "sso_enforced",
                    f"You can only login with SSO for this account ({user.sso_enforced}).",
                )
            if user is None or not hmac.compare_digest(user.password, password):
                if user is not None:
                    user.login_failures.append(now)
                return _error(
                    400, "validation_error", "invalid_credentials", "Invalid email or password."
                )
            user.login_failures.clear()  # AXES_RESET_ON_SUCCESS
            if user.verified is False:
                return _error(
                    400,
                    "validation_error",
                    "not_verified",
                    "Your account is awaiting verification. Please check your email for a "
                    "verification link.",
                )
            session = self._session(parse_cookies(headers))
            cookie = ((SESSION_COOKIE, session.key, None),)
            if user.totp_key is not None:
                session.pending_user, session.pending_since, session.user = email.lower(), now, None
                return LoginReply(
                    401,
                    {
                        "type": "authentication_error",
                        "code": "2fa_required",
                        "detail": "2FA is required.",
                        "attr": None,
                    },
                    cookie,
                )
            if self.flavour == "cloud":
                # posthog/helpers/two_factor_session.py + posthog/api/test/
                # test_code_based_verification.py: Cloud mails a code to a user without TOTP
                # and answers 401 with the email as detail; nothing unattended can follow.
                session.pending_user, session.pending_since = email.lower(), now
                return _error(
                    401, "authentication_error", "code_based_verification_required", user.email
                )
            return self._logged_in(session, user, {"success": True}, remember=False)

    def login_token(self, headers: Mapping[str, str], body: bytes) -> LoginReply:
        """posthog/api/authentication.py ``TwoFactorViewSet.create``."""
        data = _json_object(body)
        token = data.get("token")
        now = self._now()
        with self._lock:
            self.token_calls += 1
            session = self._sessions.get(parse_cookies(headers).get(SESSION_COOKIE, ""))
            user = self._users.get(session.pending_user or "") if session else None
            if session is None or user is None or user.totp_key is None:
                # upstream: User.objects.get(pk=session[...]) raises KeyError -> 500
                return _error(500, "server_error", "error", "A server error occurred.")
            if now > session.pending_since + TWO_FACTOR_LOGIN_TIMEOUT_S:
                return _error(
                    400,
                    "validation_error",
                    "2fa_expired",
                    "Login attempt has expired. Re-enter username/password.",
                )
            # django_otp ThrottlingMixin.verify_is_allowed: after n failures, refuse for
            # 2**(n-1) s (OTP_TOTP_THROTTLE_FACTOR = 1).
            if user.totp_failures and now < user.totp_failed_at + 2 ** (user.totp_failures - 1):
                return _error(
                    400, "validation_error", "2fa_too_many_attempts", "Too many attempts."
                )
            step = self._verify_totp(user, token if isinstance(token, str) else "", now)
            if step is None:
                user.totp_failures += 1
                user.totp_failed_at = now
                return _error(400, "validation_error", "2fa_invalid", "Invalid authentication code")
            user.totp_failures = 0
            user.last_totp_step = step
            self.accepted_totp_steps.append(step)
            return self._logged_in(session, user, {"success": True}, remember=True)

    def _verify_totp(self, user: _User, token: str, now: float) -> int | None:
        """TOTPDevice.verify_token: the matching step within tolerance, after ``last_t``."""
        assert user.totp_key is not None
        if not token.isdigit() or len(token) != TOTP_DIGITS:
            return None
        current = totp_step(now, user.totp_step_s)
        for step in range(current - TOTP_TOLERANCE_STEPS, current + TOTP_TOLERANCE_STEPS + 1):
            if step > user.last_totp_step and hmac.compare_digest(hotp(user.totp_key, step), token):
                return step
        return None

    def _logged_in(
        self, session: _Session, user: _User, payload: Any, *, remember: bool
    ) -> LoginReply:
        # django.contrib.auth.login: cycle_key() (new session id) and rotate_token() (new CSRF).
        self._sessions.pop(session.key, None)
        fresh = _Session(key=secrets.token_urlsafe(24), csrf=secrets.token_urlsafe(24))
        fresh.user = user.email.lower()
        self._sessions[fresh.key] = fresh
        cookies: list[tuple[str, str, int | None]] = [
            (SESSION_COOKIE, fresh.key, None),
            (CSRF_COOKIE, fresh.csrf or "", None),
        ]
        self._issued += [fresh.key, fresh.csrf or ""]
        if remember:
            cookies.append(
                (
                    REMEMBER_COOKIE_PREFIX + secrets.token_hex(8),
                    secrets.token_urlsafe(24),
                    REMEMBER_COOKIE_AGE_S,
                )
            )
            self._issued.append(cookies[-1][1])
        return LoginReply(200, payload, tuple(cookies))

    def logout(self, headers: Mapping[str, str], *, secure: bool, host: str) -> LoginReply:
        """posthog/api/authentication.py ``logout`` (csrf_protect) -> logout_then_login: 302."""
        with self._lock:
            cookies = parse_cookies(headers)
            session = self._sessions.get(cookies.get(SESSION_COOKIE, ""))
            if session is not None and session.user is not None:
                failed = self._csrf_failure(session, headers, cookies, secure, host)
                if failed:
                    return _error(403, "authentication_error", "permission_denied", failed)
            if session is not None:
                self._sessions.pop(session.key, None)
                self.logouts += 1
            return LoginReply(302, None, ((SESSION_COOKIE, "", 0),))

    # --- authenticating API requests ---------------------------------------------------------

    def authenticate(
        self, method: str, headers: Mapping[str, str], *, secure: bool, host: str
    ) -> SessionUser | str | None:
        """DRF ``SessionAuthentication``: the logged-in user, a ``CSRF Failed`` detail, or None."""
        with self._lock:
            cookies = parse_cookies(headers)
            session = self._sessions.get(cookies.get(SESSION_COOKIE, ""))
            if session is None or session.user is None:
                return None
            user = self._users.get(session.user)
            if user is None:
                return None
            if method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
                failed = self._csrf_failure(session, headers, cookies, secure, host)
                if failed:
                    return failed
            return SessionUser(email=user.email, level=user.level)

    @staticmethod
    def _csrf_failure(
        session: _Session,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        secure: bool,
        host: str,
    ) -> str | None:
        """django/middleware/csrf.py ``CsrfViewMiddleware.process_view`` (reasons verbatim)."""
        if secure:
            referer = headers.get("referer")
            if not referer:
                return "CSRF Failed: Referer checking failed - no Referer."
            # same_origin(referer, "https://<Host>/"): the stand-in serves plain http on loopback
            # behind a pretend TLS proxy, so the scheme is not compared, the host is.
            if urlsplit(referer).netloc != host:
                return (
                    f"CSRF Failed: Referer checking failed - {referer} does not match any "
                    "trusted origins."
                )
        cookie = cookies.get(CSRF_COOKIE)
        if not cookie:
            return "CSRF Failed: CSRF cookie not set."
        header = headers.get("x-csrftoken")
        if not header:
            return "CSRF Failed: CSRF token missing."
        if not hmac.compare_digest(header, cookie) or cookie != session.csrf:
            return "CSRF Failed: CSRF token from the 'X-Csrftoken' HTTP header incorrect."
        return None


def set_cookie_headers(cookies: tuple[tuple[str, str, int | None], ...]) -> list[str]:
    """``Set-Cookie`` values as Django writes them (HttpOnly session, SameSite)."""
    out = []
    for name, value, max_age in cookies:
        parts = [f"{name}={value}", "Path=/", "SameSite=Lax"]
        if name != CSRF_COOKIE:
            parts.append("HttpOnly")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        out.append("; ".join(parts))
    return out


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


__all__ = [
    "ADMIN_LEVEL",
    "CSRF_COOKIE",
    "MEMBER_LEVEL",
    "OWNER_LEVEL",
    "SESSION_COOKIE",
    "Flavour",
    "LoginFlow",
    "LoginReply",
    "SessionUser",
    "decode_base32_secret",
    "hotp",
    "set_cookie_headers",
    "totp_step",
]
