"""The benchmark's machinery: the floor's arithmetic, and one tiny run per strategy in the sandbox.

No assertion here is about wall time: the performance targets live in the benchmark's printed
figures (README, "Performance: the dark window"), not in a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rotator_sandbox.bench import (
    BenchOptions,
    Delays,
    RunResult,
    floor_for,
    format_table,
    options_from_args,
    resolve_surge,
    rollout_waves,
    run_bench,
    summarize,
)


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "waves"),
    [
        (1, 1, 0, 1),  # 25%/25% of 1: surge 1, unavailable 0
        (3, 1, 0, 3),  # 25%/25% of 3: one new pod at a time
        (4, 1, 1, 2),  # 25%/25% of 4: two at a time
        (10, 3, 2, 2),  # 25%/25% of 10
        (3, 3, 0, 1),  # maxSurge 100%: all at once
        (3, 0, 1, 3),  # no surge: one down, one up
        (2, 0, 0, 2),  # both 0: maxUnavailable becomes 1
        (0, 1, 0, 0),
    ],
)
def test_rollout_waves_step_the_deployment_controller(
    replicas: int, surge: int, unavailable: int, waves: int
) -> None:
    assert rollout_waves(replicas, surge, unavailable) == waves


def test_surge_percentages_round_like_resolve_fenceposts() -> None:
    assert resolve_surge(3, "25%", "25%") == (1, 0)
    assert resolve_surge(10, "25%", "25%") == (3, 2)
    assert resolve_surge(3, 2, "50%") == (2, 1)


def test_the_floor_is_sync_unseal_and_one_pod_start_per_wave() -> None:
    delays = Delays(sync_s=3, unseal_s=1, pod_start_s=10, pod_ready_s=5)
    assert floor_for(delays, replicas=1, max_surge="25%", max_unavailable="25%").total_s == 19
    assert floor_for(delays, replicas=3, max_surge="25%", max_unavailable="25%").total_s == 49


def _result(strategy: str, dark: float, lost: int) -> RunResult:
    return RunResult(
        strategy=strategy,
        replicas=1,
        index=0,
        outcome="succeeded",
        dark_s=dark,
        dark_report_s=dark,
        floor_s=19.0,
        ratio=dark / 19.0,
        sent=100,
        ingested=100 - lost,
        lost=lost,
        pending=0,
        cpu_s=0.5,
        wall_measured_s=3.0,
        waits_measured_s=2.0,
        outside_waits_measured_s=1.0,
        first_call_s=0.9,
        max_rss_kb=100_000,
        dark_measured_s=dark / 20,
    )


def test_summaries_are_medians_per_strategy_and_keep_the_worst_loss() -> None:
    runs = [_result("passive", d, lost) for d, lost in ((60, 0), (200, 40), (90, 0))]
    runs += [_result("default", d, 0) for d in (20, 21, 22)]
    passive, default = summarize(runs)
    assert (passive.strategy, passive.dark_s, passive.lost, passive.lost_max) == (
        "passive",
        90,
        0,
        40,
    )
    assert passive.dark_max_s == 200
    assert default.dark_s == 21
    assert default.ratio == pytest.approx(21 / 19)
    table = format_table([passive, default], options=BenchOptions(runs=3))
    assert "| passive | 1 | 3 |" in table
    assert "| default | 1 | 3 |" in table


def test_options_missing_from_the_parser_keep_their_defaults() -> None:
    options = options_from_args(argparse.Namespace(runs=2, json_out=None))
    assert options.runs == 2
    assert options.delays == Delays()
    assert options.strategies == ("passive", "default", "watch")


@pytest.mark.slow
def test_one_tiny_run_per_strategy_gives_sane_figures(tmp_path: Path) -> None:
    options = BenchOptions(
        runs=1,
        time_scale=0.01,
        replicas=(1,),
        key_bits=2048,
        cold_start=False,
        root=tmp_path,
    )
    result = run_bench(options)
    assert [(r.strategy, r.outcome) for r in result.runs] == [
        ("passive", "succeeded"),
        ("default", "succeeded"),
        ("watch", "succeeded"),  # a person's reset, adopted by rotator watch
    ]
    for run in result.runs:
        assert run.dark_s is not None
        # watch: the adopt run did not reset, so it has no reset time of its own
        assert (run.dark_report_s is None) == (run.strategy == "watch")
        assert run.ratio is not None
        # the dark window cannot beat the unavoidable delays (small slack for timer rounding)
        assert run.dark_s > 0.9 * run.floor_s
        assert run.sent > 0
        assert run.sent == run.ingested + run.lost + run.pending
        assert run.pending == 0
        assert run.cpu_s > 0
        assert 0 < run.waits_measured_s <= run.wall_measured_s
        assert run.outside_waits_measured_s == pytest.approx(
            run.wall_measured_s - run.waits_measured_s, abs=1e-6
        )
        assert run.first_call_s > 0
        assert run.max_rss_kb > 0
    assert len(result.summaries) == 3
    encoded = json.loads(json.dumps(result.as_json()))
    assert {s["strategy"] for s in encoded["summaries"]} == {"passive", "default", "watch"}
    (watch,) = [r for r in result.runs if r.strategy == "watch"]
    assert watch.lost == 0
