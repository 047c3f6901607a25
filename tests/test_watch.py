"""``rotator watch``: a person's reset in PostHog is adopted at once; rotator's own is not."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rotator.clients.sealing import read_sealed_file
from rotator.config import Config, RunSwitches
from rotator.errors import PostHogError
from rotator.names import ProjectId
from rotator.report import Outcome, RunReport, to_text
from rotator.runner import run_once
from rotator.scheduler import Scheduler
from rotator.watch import Watcher
from rotator_sandbox.bench import _reset_as_a_person
from rotator_sandbox.gitremote import git
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import (
    ENVS,
    MakeSandbox,
    config_for,
    e2e_key_pair,
    make_sandbox,
    resets,
    rotate,
    sandbox_clients,
)
from tests.test_run_e2e import commits_since, trailers

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name


class _Runs:
    """The adopt runs the watcher started: ``run_once`` with the sandbox's clients."""

    def __init__(self) -> None:
        self.switches: list[RunSwitches] = []
        self.reports: list[RunReport] = []

    def __call__(self, config: Config, switches: RunSwitches) -> RunReport:
        self.switches.append(switches)
        report = run_once(config, switches, clients=sandbox_clients(config))
        self.reports.append(report)
        return report


@contextmanager
def _watcher(world: Sandbox, runs: _Runs) -> Iterator[Watcher]:
    config = config_for(world)
    watcher = Watcher(
        config, run=runs, posthog=sandbox_clients(config).posthog, workdir=world.root / "watch"
    )
    try:
        yield watcher
    finally:
        watcher.close()


def _dropped_old_key_events(world: Sandbox, old_fp: str) -> int:
    assert world.posthog is not None
    return sum(
        1 for e in world.posthog.events() if e.key_fingerprint == old_fp and e.outcome == "dropped"
    )


def test_a_person_resetting_the_key_is_adopted_by_the_watch_at_once_without_a_second_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    runs = _Runs()
    with _watcher(world, runs) as watcher:
        assert watcher.tick() is None  # the converged key is the one git records
        old_fp = world.posthog.current_key(1).fingerprint
        head = world.git.head()

        config = config_for(world)
        new_key = _reset_as_a_person(config, sandbox_clients(config), ProjectId(1))  # logs in
        assert resets(world) == 1

        report = watcher.tick()

        assert report is not None
        assert (report.outcome, report.mode) == (Outcome.SUCCEEDED, "adopt"), to_text(report)
        assert [s.no_reset for s in runs.switches] == [True]
        assert [s.trigger for s in runs.switches] == ["watch"]
        assert resets(world) == 1  # the person's only: the watch never resets
        assert world.posthog.current_key(1) == new_key
        assert commits_since(world, head) == [report.commit]
        assert trailers(world, world.git.head())["Rotator-Key-Fingerprint"] == new_key.fingerprint
        for env in ENVS:
            assert world.pod_key_fingerprints(env) == {new_key.fingerprint}
            path = config.env(env).sealed_file
            text = git("show", f"{world.git.branch}:{path}", cwd=world.git.path)
            sealed = read_sealed_file(text, path=path)
            assert sealed.fingerprint == new_key.fingerprint
        assert _dropped_old_key_events(world, old_fp) == 0

        assert watcher.tick() is None  # now git explains the key: no second adopt
        assert len(runs.reports) == 1


def test_a_rotation_done_by_rotator_is_explained_by_its_commit_and_starts_no_adopt(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    runs = _Runs()
    with _watcher(world, runs) as watcher:
        assert watcher.tick() is None

        rotated = rotate(world)
        assert rotated.outcome is Outcome.SUCCEEDED, to_text(rotated)

        assert watcher.tick() is None
        assert watcher.tick() is None
        assert runs.reports == []
        assert resets(world) == 1


class _FailingPostHog:
    """A PostHog that cannot be reached: every read fails as the client's errors do."""

    def __init__(self) -> None:
        self.reads = 0

    def get_project(self, project_id: ProjectId) -> object:
        self.reads += 1
        raise PostHogError(f"read PostHog project {int(project_id)}: connection refused")


def test_a_read_error_is_logged_and_read_again_on_the_next_tick_never_fatal(
    make_sandbox: MakeSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_sandbox()
    runs = _Runs()
    config = config_for(world)
    failing = _FailingPostHog()
    watcher = Watcher(config, run=runs, posthog=failing, workdir=world.root / "w")  # type: ignore[arg-type]
    ticks = iter(range(3))

    def sleep(_seconds: float) -> bool:  # injected: no real wait; stop after three ticks
        return next(ticks, None) is None or failing.reads >= 3

    with caplog.at_level(logging.WARNING, logger="rotator.watch"):
        code = watcher.serve(sleep=sleep)

    assert code == 0
    assert failing.reads == 3
    assert runs.reports == []
    assert "reading again next tick" in caplog.text


def test_sigterm_stops_the_watch_cleanly(make_sandbox: MakeSandbox) -> None:
    world = make_sandbox()
    runs = _Runs()
    config = config_for(world)
    watcher = Watcher(
        config, run=runs, posthog=sandbox_clients(config).posthog, workdir=world.root / "w"
    )
    waited: list[float] = []

    def sleep(seconds: float) -> bool:
        waited.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (the main) thread's handler
        return watcher._stop.wait(5)

    assert threading.current_thread() is threading.main_thread()
    code = watcher.serve(sleep=sleep)

    assert code == 0
    assert waited == [config.watch.interval_s]
    assert runs.reports == []
    assert signal.getsignal(signal.SIGTERM) is not watcher._on_signal


def test_the_scheduler_runs_the_watch_between_rotations_and_adopts_a_persons_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    runs = _Runs()
    config = config_for(world)
    watcher = Watcher(config, posthog=sandbox_clients(config).posthog, workdir=world.root / "watch")
    scheduler = Scheduler(config, run=runs, watcher=watcher)
    try:
        assert scheduler.fire_watch() is None
        new_key = _reset_as_a_person(config, sandbox_clients(config), ProjectId(1))

        report = scheduler.fire_watch()

        assert report is not None
        assert (report.outcome, report.mode) == (Outcome.SUCCEEDED, "adopt"), to_text(report)
        assert [(s.trigger, s.no_reset) for s in runs.switches] == [("watch", True)]
        assert scheduler.run_count == 1
        assert resets(world) == 1
        for env in ENVS:
            assert world.pod_key_fingerprints(env) == {new_key.fingerprint}
        assert scheduler.fire_watch() is None
        assert len(runs.reports) == 1
    finally:
        watcher.close()


def test_a_watch_tick_is_skipped_while_a_scheduled_run_holds_the_run_lock(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    runs = _Runs()
    config = config_for(world)
    reads: list[int] = []

    class _CountingPostHog(_FailingPostHog):
        def get_project(self, project_id: ProjectId) -> object:
            reads.append(int(project_id))
            return super().get_project(project_id)

    watcher = Watcher(config, posthog=_CountingPostHog(), workdir=world.root / "w")  # type: ignore[arg-type]
    scheduler = Scheduler(config, run=runs, watcher=watcher)
    with scheduler._run_lock:
        assert scheduler.fire_watch() is None
    assert reads == []
    assert scheduler.fire_watch() is None  # a read error: logged, nothing run
    assert reads == [1]
    assert runs.reports == []
