"""Resetting the key by the service user's session, against the stand-in's login flow.

Upstream: posthog/api/authentication.py (login, TOTP step, lockout body), django_otp (TOTP
verification, single use, throttle), posthog/permissions.py (admin for PATCH), Django's CSRF
middleware (X-CSRFToken + Referer). FACTS section 2 has the sequence and the failure codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
import requests

from rotator.clients.posthog import PostHogSession, totp_device
from rotator.errors import ConfigError, LoginFailed, ResetForbidden
from rotator.redact import Secret, scrub
from rotator_sandbox.posthog_login import (
    CSRF_COOKIE,
    MEMBER_LEVEL,
    SESSION_COOKIE,
    decode_base32_secret,
    hotp,
    totp_step,
)
from tests.posthog_fixtures import (  # noqa: F401 - fixtures
    SERVICE_EMAIL,
    SERVICE_PASSWORD,
    SERVICE_TOTP_SECRET,
    FakeClock,
    PostHogWorld,
    cloud_world_fixture,
    fake_clock_fixture,
    start_world,
)


@pytest.fixture(name="timed_cloud")
def timed_cloud_fixture(fake_clock: FakeClock) -> Iterator[PostHogWorld]:
    world = start_world(flavour="cloud", clock=fake_clock)
    try:
        yield world
    finally:
        world.standin.stop()


# --- the stand-in's TOTP is RFC 6238 -----------------------------------------------------------

RFC_6238_SHA1_KEY = b"12345678901234567890"  # RFC 6238 Appendix B


@pytest.mark.parametrize(
    ("unix_time", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
    ],
)
def test_the_stand_in_computes_totp_exactly_as_the_rfc_6238_test_vectors(
    unix_time: int, code: str
) -> None:
    assert hotp(RFC_6238_SHA1_KEY, totp_step(unix_time), digits=8) == code


def test_the_stand_in_and_pyotp_agree_on_every_code_of_an_hour() -> None:
    key = decode_base32_secret(SERVICE_TOTP_SECRET)
    totp = pyotp.TOTP(SERVICE_TOTP_SECRET)
    for step in range(58_000_000, 58_000_120):
        assert hotp(key, step) == totp.at(step * 30)


# --- the whole flow ----------------------------------------------------------------------------


def test_an_otpauth_uri_with_a_period_gives_that_devices_codes_and_its_secret_is_scrubbed() -> None:
    uri = f"otpauth://totp/PostHog:{SERVICE_EMAIL}?secret={SERVICE_TOTP_SECRET}&issuer=PostHog&period=5"
    device = totp_device(Secret(uri))
    assert device.interval == 5
    key = decode_base32_secret(SERVICE_TOTP_SECRET)
    assert device.at(5 * 1234) == hotp(key, 1234)
    assert SERVICE_TOTP_SECRET not in scrub(f"code from {SERVICE_TOTP_SECRET}")


def test_a_bare_base32_secret_gives_30_second_steps() -> None:
    assert totp_device(Secret(SERVICE_TOTP_SECRET)).interval == 30


@pytest.mark.parametrize(
    "secret",
    [
        f"otpauth://hotp/PostHog:x?secret={SERVICE_TOTP_SECRET}&counter=1",
        "not base32 at all!",
        f"otpauth://totp/PostHog:x?secret={SERVICE_TOTP_SECRET}&period=0",
    ],
)
def test_a_totp_secret_that_is_no_totp_device_is_a_config_error_naming_the_fix(secret: str) -> None:
    with pytest.raises(ConfigError, match=r"posthog\.reset\.totp_secret: not a base32 TOTP secret"):
        PostHogSession(
            app_host="http://127.0.0.1:9",
            email=SERVICE_EMAIL,
            password=Secret(SERVICE_PASSWORD),
            totp_secret=Secret(secret),
            timeout=(1.0, 1.0),
        )


def test_a_reset_by_session_logs_in_with_totp_resets_once_and_logs_out(
    cloud_world: PostHogWorld,
) -> None:
    world = cloud_world
    session = world.session()
    session.login()
    project = session.ensure_may_reset(world.project)
    assert project.membership_level == 8

    reset = session.reset_key(world.project)
    session.logout()

    assert reset.api_token == world.standin.current_key(world.project)
    assert reset.api_token != world.initial_key
    assert world.standin.counters().resets == {world.project: 1}
    flow = world.standin.login_flow
    assert (flow.login_calls, flow.token_calls, flow.logouts) == (1, 1, 1)
    assert flow.live_sessions() == 0


def raw_login(world: PostHogWorld) -> requests.Session:
    http = requests.Session()
    first = http.post(
        world.standin.url + "/api/login",
        json={"email": SERVICE_EMAIL, "password": SERVICE_PASSWORD},
        timeout=2,
    )
    assert first.status_code == 401
    assert first.json()["code"] == "2fa_required"
    code = pyotp.TOTP(SERVICE_TOTP_SECRET).now()
    second = http.post(world.standin.url + "/api/login/token", json={"token": code}, timeout=2)
    assert second.status_code == 200
    assert second.json() == {"success": True}
    assert any(name.startswith("remember-cookie_") for name in (c.name for c in second.cookies))
    return http


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "CSRF Failed: Referer checking failed - no Referer."),
        ({"Referer": "REFERER"}, "CSRF Failed: CSRF token missing."),
        (
            {"Referer": "REFERER", "X-CSRFToken": "not-the-token"},
            "CSRF Failed: CSRF token from the 'X-Csrftoken' HTTP header incorrect.",
        ),
        (
            {"Referer": "https://evil.example/", "X-CSRFToken": "TOKEN"},
            "CSRF Failed: Referer checking failed - https://evil.example/ does not match any "
            "trusted origins.",
        ),
    ],
)
def test_a_session_patch_without_csrf_header_and_referer_is_refused_like_django(
    cloud_world: PostHogWorld, headers: dict[str, str], detail: str
) -> None:
    world = cloud_world
    http = raw_login(world)
    token = http.cookies.get(CSRF_COOKIE)
    assert token
    sent = {
        k: v.replace("REFERER", world.standin.url + "/").replace("TOKEN", token)
        for k, v in headers.items()
    }
    answer = http.patch(
        f"{world.standin.url}/api/projects/{world.project}/reset_token/",
        json={},
        headers=sent,
        timeout=2,
    )

    assert answer.status_code == 403
    assert answer.json() == {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": detail,
        "attr": None,
    }
    assert world.standin.counters().resets == {}


def test_reading_with_the_session_needs_no_csrf_token(cloud_world: PostHogWorld) -> None:
    http = raw_login(cloud_world)
    answer = http.get(f"{cloud_world.standin.url}/api/projects/{cloud_world.project}/", timeout=2)
    assert answer.status_code == 200
    assert answer.json()["effective_membership_level"] == 8
    assert http.cookies.get(SESSION_COOKIE)


# --- every login failure is a one-line message naming the fix, and nothing changes ------------


def _wrong_password(world: PostHogWorld) -> dict[str, Any]:
    return {"password": Secret("not the password (fake test fixture)")}


def _sso(world: PostHogWorld) -> dict[str, Any]:
    world.standin.login_flow.add_user(
        "sso@corp.example", "pw-of-sso-user", totp_secret=None, sso_enforced="saml"
    )
    return {"email": "sso@corp.example", "password": Secret("pw-of-sso-user")}


def _not_verified(world: PostHogWorld) -> dict[str, Any]:
    world.standin.login_flow.add_user(
        "new@align.example", "pw-of-new-user", totp_secret=None, verified=False
    )
    return {"email": "new@align.example", "password": Secret("pw-of-new-user")}


def _no_totp_device(world: PostHogWorld) -> dict[str, Any]:
    world.standin.login_flow.add_user("nototp@align.example", "pw-of-nototp", totp_secret=None)
    return {"email": "nototp@align.example", "password": Secret("pw-of-nototp")}


def _wrong_totp(world: PostHogWorld) -> dict[str, Any]:
    return {"totp_secret": Secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")}


def _locked_out(world: PostHogWorld) -> dict[str, Any]:
    for _ in range(30):  # django-axes' limit as PostHog sets it
        requests.post(
            world.standin.url + "/api/login",
            json={"email": SERVICE_EMAIL, "password": "guess"},
            timeout=2,
        )
    return {}  # now even the right password is refused


def _member_only(world: PostHogWorld) -> dict[str, Any]:
    world.standin.login_flow.set_level(SERVICE_EMAIL, MEMBER_LEVEL)
    return {}


LOGIN_FAILURES = [
    (_wrong_password, "invalid_credentials", "check posthog.reset.email and the password"),
    (_sso, "sso_enforced", "use a service user on a domain without SSO enforcement"),
    (_not_verified, "not_verified", "open the verification link"),
    (_no_totp_device, "code_based_verification_required", "enroll a TOTP device"),
    (_locked_out, "too_many_failed_attempts", "wait for the cool-off"),
    (_member_only, None, "make it an admin of the project"),
]


@pytest.mark.parametrize(("arrange", "code", "fix"), LOGIN_FAILURES)
def test_each_login_failure_raises_one_line_naming_the_fix_and_nothing_changes(
    cloud_world: PostHogWorld, arrange: Any, code: str | None, fix: str
) -> None:
    world = cloud_world
    overrides = arrange(world)
    calls_before = world.standin.login_flow.login_calls
    session = world.session(**overrides)

    def preflight() -> None:
        session.login()
        session.ensure_may_reset(world.project)

    with pytest.raises(LoginFailed) as caught:
        preflight()

    message = str(caught.value)
    assert "\n" not in message
    assert fix in message
    assert "nothing changed" in message
    if code is not None:
        assert caught.value.code == code
    # never retried: one password POST per attempt
    assert world.standin.login_flow.login_calls == calls_before + 1
    assert world.standin.counters().resets == {}
    assert SERVICE_PASSWORD not in message


def test_a_wrong_totp_secret_fails_after_exactly_one_more_code_in_the_next_step(
    timed_cloud: PostHogWorld, fake_clock: FakeClock
) -> None:
    session = timed_cloud.session(clock=fake_clock, **_wrong_totp(timed_cloud))

    with pytest.raises(LoginFailed) as caught:
        session.login()

    message = str(caught.value)
    assert caught.value.code == "2fa_invalid"
    assert "base32 secret of this user's TOTP device" in message
    assert "nothing changed" in message
    flow = timed_cloud.standin.login_flow
    assert (flow.login_calls, flow.token_calls) == (1, 2)
    assert timed_cloud.standin.counters().resets == {}


def test_a_login_whose_answer_is_lost_is_not_retried(cloud_world: PostHogWorld) -> None:
    cloud_world.standin.inject("login", "5xx", times=3, status=502)
    session = cloud_world.session()

    with pytest.raises(LoginFailed, match="nothing changed"):
        session.login()

    assert cloud_world.standin.login_flow.login_calls == 0  # the 5xx answered before acting
    assert cloud_world.standin.calls("login") == 1


def test_the_totp_step_expires_after_600_s_and_too_many_codes_are_throttled(
    timed_cloud: PostHogWorld, fake_clock: FakeClock
) -> None:
    url = timed_cloud.standin.url
    http = requests.Session()
    http.post(
        url + "/api/login", json={"email": SERVICE_EMAIL, "password": SERVICE_PASSWORD}, timeout=2
    )
    wrong = http.post(url + "/api/login/token", json={"token": "000000"}, timeout=2)
    again = http.post(url + "/api/login/token", json={"token": "000000"}, timeout=2)
    fake_clock.advance(601)
    late = http.post(url + "/api/login/token", json={"token": "000000"}, timeout=2)

    assert (wrong.json()["code"], again.json()["code"]) == ("2fa_invalid", "2fa_too_many_attempts")
    assert late.json()["code"] == "2fa_expired"


def test_a_totp_code_is_never_used_twice_even_by_two_logins_in_one_step(
    timed_cloud: PostHogWorld, fake_clock: FakeClock
) -> None:
    session = timed_cloud.session(clock=fake_clock)
    session.login()
    session.logout()
    session.login()  # within the same 30 s step: the client waits for the next one
    session.logout()

    steps = timed_cloud.standin.login_flow.accepted_totp_steps
    assert len(steps) == 2
    assert steps[0] != steps[1]
    assert any(s >= 1 for s in fake_clock.sleeps)


def test_the_stand_in_refuses_a_replayed_totp_code(cloud_world: PostHogWorld) -> None:
    url = cloud_world.standin.url
    code = pyotp.TOTP(SERVICE_TOTP_SECRET).now()
    answers = []
    for _ in range(2):
        http = requests.Session()
        http.post(
            url + "/api/login",
            json={"email": SERVICE_EMAIL, "password": SERVICE_PASSWORD},
            timeout=2,
        )
        answers.append(http.post(url + "/api/login/token", json={"token": code}, timeout=2))
    assert answers[0].status_code == 200
    assert answers[1].json()["code"] == "2fa_invalid"


def test_a_personal_key_reset_is_refused_on_cloud_while_the_session_may(
    cloud_world: PostHogWorld,
) -> None:
    with pytest.raises(ResetForbidden):
        cloud_world.client(cloud_world.legacy_key).reset_key(cloud_world.project)
    session = cloud_world.session()
    session.login()
    assert session.reset_key(cloud_world.project).api_token.reveal().startswith("phc_")
    session.logout()
