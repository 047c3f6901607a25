"""``rotator run``: rotate the key (the CronJob's command)."""

from __future__ import annotations

import argparse
from pathlib import Path

import click

from rotator.commands.options import (
    env_option,
    load_config_of,
    make_command,
    output_of,
    output_options,
    switches_from_args,
)


def run_command(args: argparse.Namespace) -> int:
    from rotator.clients.pushgateway import push_report
    from rotator.interrupts import StopSignals, exit_now_if_abandoned, finish
    from rotator.output import print_report, write_metrics
    from rotator.runner import run_once

    config = load_config_of(args)
    # Kubernetes stops a Job's pod with SIGTERM (tini, PID 1 in the image, passes it on): like
    # Ctrl-C, the first stops the run, which releases its Lease and reports; no later signal
    # cuts the report short (rotator/interrupts.py).
    signals = StopSignals()
    signals.install()
    # The report reaches stdout before the Slack post starts: a slow or failing Slack never
    # delays or hides it. The post's outcome follows as a log line.
    report = run_once(
        config,
        switches_from_args(args),
        signals=signals,
        before_slack=lambda pending: print_report(pending, output=output_of(args)),
    )
    metrics = args.metrics_file or config.metrics.file
    if metrics is not None:
        write_metrics(metrics, report)
    # A no-op unless metrics.pushgateway_url is set.
    finish(signals, "push the metrics", lambda: push_report(config, report))
    if signals.stopping:
        exit_now_if_abandoned(int(report.exit_code))
    return int(report.exit_code)


command = make_command(
    "run",
    run_command,
    help="rotate the key (the CronJob's command)",
    text_logs=False,
    options=[
        env_option,
        output_options,
        click.option(
            "--no-reset",
            is_flag=True,
            default=None,
            help="adopt mode: make git and the cluster match PostHog's current key without "
            "resetting it. Env: ROTATOR_NO_RESET=true",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            default=None,
            help="do every read, seal a throwaway value, commit locally, push nothing. "
            "Env: ROTATOR_DRY_RUN=true",
        ),
        click.option(
            "--force",
            is_flag=True,
            default=None,
            help="reset even if the last rotation is younger than policy.min_interval_s. "
            "Env: ROTATOR_FORCE=true",
        ),
        click.option(
            "--metrics-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="write Prometheus metrics of this run to this file",
        ),
    ],
)
