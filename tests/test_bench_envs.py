"""``rotator bench --envs``: its counting machinery, and one tiny run at 1 and 2 environments.

No assertion here is about time: the figures live in the README's table, made by the bench.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rotator.cli import parse_args
from rotator_sandbox.bench_envs import (
    ENVS_HEADER,
    EnvsOptions,
    EnvsRun,
    env_names,
    format_envs_table,
    git_sessions,
    kube_counts,
    run_envs_bench,
    summarize_envs,
    termination_grace_s,
)


def test_environment_names_sort_as_numbers() -> None:
    assert env_names(2) == ("env-01", "env-02")
    names = env_names(100)
    assert names[0] == "env-001"
    assert list(names) == sorted(names)
    assert len(set(names)) == 100


def test_the_floor_holds_the_old_pods_grace_period_default_30_s() -> None:
    assert termination_grace_s({}) == 30
    assert termination_grace_s({"template": {"spec": {"terminationGracePeriodSeconds": 5}}}) == 5
    assert termination_grace_s({"template": {"spec": {"terminationGracePeriodSeconds": 0}}}) == 0


def test_kube_requests_are_split_into_watches_reads_and_writes() -> None:
    counts = kube_counts(["get", "list", "watch", "patch", "create", "get", "update", "delete"])
    assert (counts.total, counts.watches, counts.reads, counts.writes) == (8, 1, 3, 4)


def test_git_sessions_are_counted_from_the_remotes_own_trace2_events(tmp_path: Path) -> None:
    """Real git: a clone is one upload-pack, a push dry run and a push two receive-packs."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }

    def git(*args: str, cwd: Path = tmp_path, trace: Path | None = None) -> None:
        extra = {"GIT_TRACE2_EVENT": str(trace)} if trace else {}
        subprocess.run(["git", *args], cwd=cwd, env={**env, **extra}, check=True, timeout=30)

    git("init", "-q", "--bare", "-b", "main", "origin.git")
    git("clone", "-q", (tmp_path / "origin.git").as_uri(), "seed")
    (tmp_path / "seed" / "f").write_text("1\n")
    git("add", "f", cwd=tmp_path / "seed")
    git("commit", "-qm", "seed", cwd=tmp_path / "seed")
    git("push", "-q", "origin", "main", cwd=tmp_path / "seed")

    trace = tmp_path / "trace"
    trace.mkdir()
    git("clone", "-q", (tmp_path / "origin.git").as_uri(), "work", trace=trace)
    work = tmp_path / "work"
    (work / "f").write_text("2\n")
    git("commit", "-qam", "change", cwd=work, trace=trace)
    git("push", "-q", "--dry-run", "origin", "main", cwd=work, trace=trace)
    git("push", "-q", "origin", "main", cwd=work, trace=trace)
    assert git_sessions(trace) == {"upload-pack": 1, "receive-pack": 2}
    assert git_sessions(tmp_path / "absent") == {"upload-pack": 0, "receive-pack": 0}


def _run(envs: int, queries: int, outcome: str = "succeeded") -> EnvsRun:
    return EnvsRun(
        envs=envs,
        index=0,
        outcome=outcome,
        dark_s=21.0,
        floor_s=19.0,
        ratio=21.0 / 19.0,
        job_wall_measured_s=10.0,
        cpu_s=0.5,
        max_rss_kb=100 * 1024,
        kube=kube_counts(["watch"] * envs + ["get"] * 3 * envs),
        posthog={"project": 3, "reset_token": 1, "query": queries},
        git={"upload-pack": 1, "receive-pack": 2},
        slack=1,
    )


def test_the_table_has_one_row_per_environment_count_in_the_order_run() -> None:
    runs = [_run(1, 4), _run(1, 4), _run(50, 4), _run(50, 5, outcome="failed"), _run(50, 4)]
    one, fifty = summarize_envs(runs)
    assert (one.envs, one.runs, one.failed, fifty.envs, fifty.runs, fifty.failed) == (
        1,
        2,
        0,
        50,
        3,
        1,
    )
    assert (fifty.posthog_queries, fifty.kube_watches, fifty.git_fetches) == (4, 50, 1)
    lines = format_envs_table([one, fifty], options=EnvsOptions(runs=3)).splitlines()
    assert lines[0] == ENVS_HEADER
    columns = ENVS_HEADER.count("|")
    assert [line.split(" |")[0] for line in lines[2:4]] == ["| 1", "| 50"]
    assert all(line.count("|") == columns for line in lines[1:4])
    assert "| 3 (1 failed) |" in lines[3]


def test_envs_are_counts_given_after_the_flag_or_comma_separated() -> None:
    args = parse_args(["bench", "--envs", "1", "2", "10", "50"])
    assert [*args.env_counts, *args.more_counts] == [1, 2, 10, 50]
    args = parse_args(["bench", "--envs", "1,2", "--runs", "1"])
    assert (args.env_counts, args.runs) == ([1, 2], 1)


@pytest.mark.slow
def test_a_tiny_bench_over_one_and_two_environments_counts_every_system(
    tmp_path: Path,
) -> None:
    options = EnvsOptions(counts=(1, 2), runs=1, time_scale=0.02, key_bits=2048, root=tmp_path)
    result = run_envs_bench(options)
    assert [(r.envs, r.outcome) for r in result.runs] == [(1, "succeeded"), (2, "succeeded")]
    for run in result.runs:
        assert run.dark_s is not None
        assert run.ratio is not None
        # one fetch, a push dry run and the push, whatever the environment count
        assert run.git == {"upload-pack": 1, "receive-pack": 2}
        assert run.posthog.get("reset_token") == 1  # the one reset, never retried
        assert run.posthog.get("query", 0) >= 1
        assert run.kube.watches >= run.envs  # at least one watch per environment
        assert run.slack == 1
        assert run.cpu_s > 0
        assert run.max_rss_kb > 0
    table = format_envs_table(result.summaries, options=options).splitlines()
    assert table[0] == ENVS_HEADER
    assert [line.split(" |")[0] for line in table[2:4]] == ["| 1", "| 2"]
    encoded = json.loads(json.dumps(result.as_json()))
    assert [s["envs"] for s in encoded["summaries"]] == [1, 2]
