"""Every wait logs a heartbeat at a steady interval; on a terminal a live line shows it."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from rotator.clock import SystemClock
from rotator.errors import WaitTimeout
from rotator.logs import LiveLines, log_context, setup_logging
from rotator.progress import WaitProgress, waiting
from tests.posthog_fixtures import FakeClock as PostHogFakeClock
from tests.posthog_fixtures import (  # noqa: F401 - fixtures
    PostHogWorld,
    fake_clock_fixture,
    timed_world_fixture,
)
from tests.test_kube_client import FakeClock, _obj, _ready, offline_kube
from tests.test_posthog_client import new_check_id

HEARTBEAT = "still waiting"


def heartbeats(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if HEARTBEAT in r.getMessage()]


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


def test_a_heartbeat_comes_every_interval_with_what_how_long_and_the_last_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    with waiting(
        "argocd", "app x at abc", clock=clock, deadline_s=600, interval_s=15, ticker=False
    ) as wait:
        wait.observe("OutOfSync/Progressing")
        clock.sleep(14)
        assert not wait.beat()
        clock.sleep(1)
        assert wait.beat()
        clock.sleep(15)
        assert wait.beat()
        assert not wait.beat()  # not twice for one interval
    assert heartbeats(caplog) == [
        "argocd: still waiting: app x at abc, 15s of 600s; last seen: OutOfSync/Progressing",
        "argocd: still waiting: app x at abc, 30s of 600s; last seen: OutOfSync/Progressing",
    ]


def test_a_new_state_is_logged_at_once_and_a_repeated_one_only_by_the_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    progress = WaitProgress("rollout", "deployment x", clock, interval_s=15)
    for state in ("1 of 3 updated", "1 of 3 updated", "2 of 3 updated"):
        progress.observe(state)
        clock.sleep(1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["rollout: 1 of 3 updated", "rollout: 2 of 3 updated"]
    assert progress.summary().endswith("3s; last seen: 2 of 3 updated")


def test_the_kubernetes_wait_beats_while_nothing_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    kube = offline_kube(clock)  # heartbeat_s: the default 15
    with pytest.raises(WaitTimeout):
        kube.wait(
            step="rollout",
            what="deployment x to roll out",
            get=lambda: _obj("1", False),
            watch=None,
            check=_ready,
            deadline_s=50,
        )
    beats = heartbeats(caplog)
    assert len(beats) == 3  # at 15, 30 and 45 s of the 50
    for beat in beats:
        assert beat.startswith("rollout: still waiting: deployment x to roll out, ")
        assert beat.endswith("s of 50s; last seen: not ready yet")


def test_the_ticker_beats_while_the_waiting_thread_is_blocked_and_keeps_its_env() -> None:
    """A watch request blocks for up to watch_timeout_s with no event: the beat must not
    depend on the wait's loop coming round."""
    stream = io.StringIO()
    handler = setup_logging(fmt="json", stream=stream)
    seen = threading.Event()

    class Signal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if HEARTBEAT in record.getMessage():
                seen.set()

    signal = Signal()
    logging.getLogger().addHandler(signal)
    try:
        with (
            log_context(step="unseal", env="prod"),
            waiting("unseal", "sealedsecret x", clock=SystemClock(), interval_s=0.01) as wait,
        ):
            wait.observe("Synced=False")
            assert seen.wait(timeout=60), "no heartbeat while the waiting thread was blocked"
    finally:
        logging.getLogger().removeHandler(signal)
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    beat = next(r for r in records if HEARTBEAT in r["message"])
    assert (beat["step"], beat["env"]) == ("unseal", "prod")
    assert beat["message"].endswith("last seen: Synced=False")


def test_find_marker_beats_while_the_marker_is_not_found(
    timed_world: PostHogWorld, fake_clock: PostHogFakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = timed_world.client(clock=fake_clock, query_interval_s=1.5)
    check_id = new_check_id()
    hit = client.find_marker(
        timed_world.project, check_id=check_id, deadline_s=40, poll_s=2, heartbeat_s=15
    )
    assert hit is None
    beats = heartbeats(caplog)
    assert len(beats) == 2
    assert all(f"marker event {check_id}" in b and "not found after" in b for b in beats)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal() -> Iterator[tuple[Terminal, LiveLines]]:
    stream = Terminal()
    handler = setup_logging(fmt="text", stream=stream)
    assert isinstance(handler, LiveLines)
    try:
        yield stream, handler
    finally:
        logging.getLogger().removeHandler(handler)


def test_on_a_terminal_the_live_line_is_cleared_for_each_log_line_and_drawn_again(
    terminal: tuple[Terminal, LiveLines],
) -> None:
    stream, live = terminal
    live.show("a", "[argocd] app x, 42s of 600s; last seen: OutOfSync")
    logging.getLogger("rotator.test").info("sync started")
    live.show("a", None)
    out = stream.getvalue()
    first = out.index("[argocd] app x, 42s")
    cleared = out.index("\r\x1b[K", first)
    logged = out.index("sync started", cleared)
    assert out.index("[argocd] app x, 42s", logged) > logged  # drawn again below the log line
    assert out.endswith("\r\x1b[K")  # and gone when the wait ends


def test_text_logs_that_are_not_on_a_terminal_get_no_live_line() -> None:
    handler = setup_logging(fmt="text", stream=io.StringIO())
    try:
        assert not isinstance(handler, LiveLines)
    finally:
        logging.getLogger().removeHandler(handler)


def test_on_a_terminal_a_wait_draws_its_step_env_time_and_state_live(
    terminal: tuple[Terminal, LiveLines],
) -> None:
    stream, _ = terminal
    with (
        log_context(step="unseal", env="prod"),
        waiting("unseal", "sealedsecret x", clock=SystemClock(), deadline_s=180) as wait,
    ):
        wait.observe("Synced=False")
        drawn = threading.Event()
        for _ in range(600):  # the ticker draws once a second; allow a loaded machine a minute
            if "[unseal prod] " in stream.getvalue():
                drawn.set()
                break
            drawn.wait(0.1)
    assert drawn.is_set(), stream.getvalue()
    line = stream.getvalue().split("[unseal prod] ", 1)[1]
    assert "/180s Synced=False (sealedsecret x)" in line.split("\r")[0]
