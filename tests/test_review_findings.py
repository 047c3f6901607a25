"""Bugs found in review of the run's critical path, each pinned by a whole run in the sandbox."""

from __future__ import annotations

from typing import Any

from rotator.config import RunSwitches
from rotator.redact import Secret
from rotator.report import Outcome, to_text
from rotator.runner import run_once
from rotator_sandbox.controllers.base import LEASE
from tests.e2e_fixtures import (
    LEASE_NAME,
    LEASE_NAMESPACE,
    MakeSandbox,
    config_for,
    e2e_key_pair,
    lease,
    make_sandbox,
    resets,
    sandbox_clients,
)

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name


def test_a_run_that_lost_its_lease_before_the_reset_does_not_reset(
    make_sandbox: MakeSandbox,
) -> None:
    """The Lease is what stops two runs from resetting the same key: a run whose Lease was
    taken over (renewals failed, it expired, another run took it) must not reset."""
    world = make_sandbox()
    assert world.client is not None
    config = config_for(world)
    clients = sandbox_clients(config)
    read_project = clients.posthog.get_project
    calls = [0]

    def read_then_lose_the_lease(project_id: Any) -> Any:
        calls[0] += 1
        if calls[0] == 2:  # the re-read under the lock, just before the reset
            held = lease(world)
            assert held is not None
            held["spec"]["holderIdentity"] = "rot-other-run"
            world.client.replace(LEASE, LEASE_NAMESPACE, LEASE_NAME, held)
        return read_project(project_id)

    clients.posthog.get_project = read_then_lose_the_lease  # type: ignore[method-assign]

    report = run_once(config, RunSwitches(trigger="test"), clients=clients)

    assert resets(world) == 0, to_text(report)
    assert report.outcome is Outcome.ABORTED, to_text(report)
    assert "lost the lock" in (report.error or ""), to_text(report)


def test_a_key_reset_in_posthog_during_verification_is_not_reported_as_success(
    make_sandbox: MakeSandbox,
) -> None:
    """Right after a reset in PostHog's UI, events of the revoked key still land for PostHog's
    token-cache window: the marker and gateway events prove nothing then, and production is on
    a dead key. The run must fail after reset and name PostHog's current key."""
    world = make_sandbox()
    assert world.posthog is not None
    posthog = world.posthog
    config = config_for(world)
    clients = sandbox_clients(config)
    send_marker = clients.posthog.send_marker
    out_of_band: list[Secret] = []

    def send_then_reset_in_the_ui(key: Secret, **kwargs: Any) -> None:
        send_marker(key, **kwargs)
        out_of_band.append(posthog.reset_key_out_of_band(world.project_id("prod")))

    clients.posthog.send_marker = send_then_reset_in_the_ui  # type: ignore[method-assign]

    report = run_once(config, RunSwitches(trigger="test"), clients=clients)

    assert out_of_band, to_text(report)
    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    assert report.broken_now is not None
    assert out_of_band[0].fingerprint in report.broken_now, to_text(report)


def test_a_sigterm_while_the_reset_is_in_flight_is_reported_as_failed_after_reset(
    make_sandbox: MakeSandbox,
) -> None:
    """SIGTERM (mapped to KeyboardInterrupt) can land while the PATCH is out: PostHog may have
    reset the key already, so the report must not say aborted with nothing changed."""
    world = make_sandbox()
    config = config_for(world)
    clients = sandbox_clients(config)
    make_session = clients.posthog_session
    assert make_session is not None

    def session_with_sigterm_after_reset() -> Any:
        session = make_session()
        reset_key = session.reset_key

        def reset_then_sigterm(project_id: Any) -> Any:
            reset_key(project_id)
            raise KeyboardInterrupt

        session.reset_key = reset_then_sigterm  # type: ignore[method-assign]
        return session

    clients.posthog_session = session_with_sigterm_after_reset

    report = run_once(config, RunSwitches(trigger="test"), clients=clients)

    assert resets(world) == 1
    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    assert report.broken_now is not None, to_text(report)
    assert report.resume_command is not None, to_text(report)


def test_completing_a_rotation_for_one_environment_says_the_other_on_the_project_is_behind(
    make_sandbox: MakeSandbox,
) -> None:
    """One project serves preview and prod. After a reset (a crashed run, or PostHog's UI),
    `--env preview` completes preview only: prod still runs the revoked key, and the run must
    say so instead of reporting success."""
    world = make_sandbox()
    assert world.posthog is not None
    new = world.posthog.reset_key_out_of_band(world.project_id("prod"))
    config = config_for(world)

    report = run_once(
        config, RunSwitches(envs=("preview",), trigger="test"), clients=sandbox_clients(config)
    )

    assert resets(world) == 0
    assert world.pod_key_fingerprints("preview") == {new.fingerprint}, to_text(report)
    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    assert "prod" in (report.error or ""), to_text(report)
