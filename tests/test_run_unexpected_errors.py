"""A programming error inside a step (any exception that is not one of rotator's own) is never
reported as "aborted, nothing changed" once the run may have changed something, and its
traceback is in the log (issue 13 item 1). The fault is injected at the client seam (a client
whose call does its work and then fails with a TypeError), never by patching rotator's code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import pytest

from rotator.clients.kube import Kube
from rotator.clients.posthog import PostHogSession, Project
from rotator.config import ProjectId, RunSwitches
from rotator.report import Outcome
from rotator.runner import run_once
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    make_world,
    reliability_key_pair,
)


class _SessionWithABugAfterTheReset(PostHogSession):
    """The real reset is sent; then the code reading its answer fails (a bug of ours)."""

    def reset_key(self, project_id: ProjectId) -> Project:
        super().reset_key(project_id)
        raise TypeError("a bug reading the reset's answer")


class _KubeWithABugAfterTheRestart(Kube):
    """The real restart is made; then the code after it fails (a bug of ours)."""

    def restart_deployment(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        super().restart_deployment(*args, **kwargs)  # type: ignore[arg-type]
        raise TypeError("a bug after the restart")


def _run(world: World, **patch: Callable[[World], object]) -> object:
    config = world.config()
    clients = world.clients(config)
    clients = replace(clients, **{name: make(world) for name, make in patch.items()})
    report = run_once(config, RunSwitches(trigger="test"), clients=clients)
    world.runs.append(report)
    return report


def _tracebacks(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The log records with the traceback of an exception saying ``text``: each exception's
    traceback is logged exactly once (log or raise, never both)."""
    found = [
        r
        for r in caplog.records
        if r.exc_info is not None and r.exc_info[1] is not None and text in str(r.exc_info[1])
    ]
    exceptions = [id(r.exc_info[1]) for r in found if r.exc_info]
    assert len(exceptions) == len(set(exceptions)), "a traceback logged twice"
    return found


def test_a_bug_after_the_reset_is_sent_is_failed_after_reset_with_its_traceback_never_exit_3(
    make_world: Callable[..., World],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world()
    old = world.current_key()
    config = world.config()
    with caplog.at_level(logging.INFO):
        report = run_once(
            config,
            RunSwitches(trigger="test"),
            clients=replace(
                world.clients(config),
                posthog_session=lambda: _SessionWithABugAfterTheReset.from_config(config),
            ),
        )
    summary = f"{report.outcome.value}: {report.error}"
    assert world.resets == 1, "the PATCH went out"
    assert world.current_key().fingerprint != old.fingerprint
    assert report.outcome is Outcome.FAILED_AFTER_RESET, summary
    assert int(report.exit_code) == 1, summary
    assert "unexpected error" in (report.error or ""), summary
    assert "TypeError" in (report.error or ""), summary
    assert "never resets again" in (report.resume_command or "")
    assert len(_tracebacks(caplog, "a bug reading the reset's answer")) == 1, "logged once"
    # A re-run completes the rotation with the key PostHog has now, without a second reset.
    again = world.run()
    assert again.outcome is Outcome.SUCCEEDED, f"{again.outcome.value}: {again.error}"
    assert world.resets == 1
    assert world.converged_on(world.current_key())


def test_a_bug_in_a_step_after_the_reset_keeps_its_traceback_and_is_failed_after_reset(
    make_world: Callable[..., World],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world()
    config = world.config()
    clients = world.clients(config)
    buggy = _KubeWithABugAfterTheRestart.from_config(config, clock=clients.kube.clock)
    with caplog.at_level(logging.INFO):
        report = run_once(
            config,
            RunSwitches(trigger="test"),
            clients=replace(clients, kube=buggy, argocd=type(clients.argocd)(buggy)),
        )
    summary = f"{report.outcome.value}: {report.error}"
    assert world.resets == 1
    assert report.outcome is Outcome.FAILED_AFTER_RESET, summary
    assert "unexpected error" in (report.error or ""), summary
    # Both environments restarted, and each one's bug is in the log with its traceback.
    assert len(_tracebacks(caplog, "a bug after the restart")) == 2
    step = [s for s in report.steps if s.step.value == "rollout" and s.status.value == "failed"]
    assert step, report.steps
    assert "unexpected error" in step[0].detail, report.steps
