"""``rotator schedule``: run rotations on a cron schedule (APScheduler)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

from rotator.commands.options import load_config_of, make_command, switches_from_args
from rotator.errors import ConfigError


def schedule_command(args: argparse.Namespace) -> int:
    """``rotator schedule [--adopt-check CRON] [--run-now] [--metrics-file PATH]``."""
    from rotator.scheduler import Scheduler

    config = load_config_of(args)
    if args.max_runs is not None and args.max_runs < 1:
        raise ConfigError("--max-runs must be at least 1")
    scheduler = Scheduler(
        config,
        switches=switches_from_args(args, trigger="schedule"),
        adopt_cron=args.adopt_check,
        watch=True if args.watch else None,
        run_now=args.run_now,
        max_runs=args.max_runs,
        metrics_file=args.metrics_file,
    )
    code = scheduler.serve()
    sys.stderr.flush()
    return code


command = make_command(
    "schedule",
    schedule_command,
    help="run rotations on a cron schedule (APScheduler)",
    text_logs=False,
    options=[
        click.option(
            "--adopt-check",
            default=None,
            metavar="CRON",
            help="also run an adopt-mode (--no-reset) check on this cron schedule",
        ),
        click.option("--run-now", is_flag=True, help="run once at start-up too"),
        click.option(
            "--watch",
            is_flag=True,
            help="between runs, read PostHog's key every watch.interval_s and adopt a reset "
            "no rotator commit explains (schedule.watch)",
        ),
        click.option("--max-runs", type=int, default=None, hidden=True),
        click.option(
            "--metrics-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="write Prometheus metrics after each run to this file",
        ),
    ],
)
