"""Fixtures for the PostHog client and stand-in tests: a started stand-in, keys, a fake clock.

Import the fixtures you use into the test module (``from tests.posthog_fixtures import ...``);
each stand-in is stopped in its fixture's finalizer.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.clients.posthog import PostHogClient, PostHogSession
from rotator.clients.transport import RetryPolicy
from rotator.names import ProjectId
from rotator.redact import Secret
from rotator_sandbox.posthog import PostHogStandIn, RateLimits, generate_token
from tests.git_fixtures import silent_server

PROJECT = ProjectId(4242)
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02)


class FakeClock:
    """A Clock whose sleep advances time at once; shared with the stand-in it drives both."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._start = start or datetime.now(UTC)
        self._offset = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._offset

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._offset)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._offset += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


SERVICE_EMAIL = "rotator@align.example"
SERVICE_PASSWORD = "correct horse battery staple (fake test fixture)"
# A labelled fake test fixture: base32 of 20 bytes, like the secret PostHog shows at enrollment.
SERVICE_TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@dataclass
class PostHogWorld:
    """A running stand-in with one project, a legacy and a scoped personal key, and the
    service user (admin, TOTP). ``world``: a self-hosted legacy PostHog (the legacy key may
    reset); ``cloud_world``: PostHog Cloud (no token may reset; the session may)."""

    standin: PostHogStandIn
    project: ProjectId
    initial_key: Secret
    legacy_key: Secret
    scoped_key: Secret

    def client(self, key: Secret | None = None, **kwargs: Any) -> PostHogClient:
        options: dict[str, Any] = {
            "timeout": (1.0, 2.0),
            "retry": FAST_RETRY,
            "query_interval_s": 0.0,
        }
        options.update(kwargs)
        return PostHogClient(
            app_host=self.standin.url,
            ingest_host=self.standin.ingest_url,
            personal_key=key or self.legacy_key,
            **options,
        )

    def session(self, **kwargs: Any) -> PostHogSession:
        options: dict[str, Any] = {
            "app_host": self.standin.url,
            "email": SERVICE_EMAIL,
            "password": Secret(SERVICE_PASSWORD),
            "totp_secret": Secret(SERVICE_TOTP_SECRET),
            "timeout": (1.0, 2.0),
            "retry": FAST_RETRY,
        }
        options.update(kwargs)
        return PostHogSession(**options)


def personal_key() -> Secret:
    return Secret(generate_token("phx_", 35))


def start_world(**standin_options: Any) -> PostHogWorld:
    standin_options.setdefault("flavour", "self_hosted_legacy")
    if standin_options["flavour"] == "self_hosted_legacy":
        standin_options.setdefault("rate_limits", RateLimits())
    standin = PostHogStandIn(**standin_options).start()
    standin.login_flow.add_user(SERVICE_EMAIL, SERVICE_PASSWORD, totp_secret=SERVICE_TOTP_SECRET)
    initial = standin.add_project(PROJECT, "Preview & Production")
    legacy = standin.add_personal_key(personal_key(), legacy=True)
    scoped = standin.add_personal_key(personal_key(), scoped=True, legacy=False, scopes=("*",))
    return PostHogWorld(standin, PROJECT, initial, legacy, scoped)


@pytest.fixture(name="fake_clock")
def fake_clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="world")
def world_fixture() -> Iterator[PostHogWorld]:
    """Real time, short lag and window (the sandbox's scaled-down PostHog)."""
    world = start_world(lag_s=0.05, window_s=0.4, separate_hosts=True)
    try:
        yield world
    finally:
        world.standin.stop()


@pytest.fixture(name="cloud_world")
def cloud_world_fixture() -> Iterator[PostHogWorld]:
    """PostHog Cloud as it is since PR #51237 (the stand-in's default flavour)."""
    world = start_world(lag_s=0.05, window_s=0.4, separate_hosts=True, flavour="cloud")
    try:
        yield world
    finally:
        world.standin.stop()


@pytest.fixture(name="timed_world")
def timed_world_fixture(fake_clock: FakeClock) -> Iterator[PostHogWorld]:
    """PostHog's real lag and window, on a fake clock shared by stand-in and clients."""
    world = start_world(lag_s=30.0, window_s=150.0, clock=fake_clock)
    try:
        yield world
    finally:
        world.standin.stop()


@pytest.fixture(name="silent_server")
def silent_server_fixture() -> Iterator[str]:
    """A loopback server that accepts connections and never answers: every read times out."""
    with silent_server() as url:
        yield url


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
