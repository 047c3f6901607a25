"""The `run`, `status` and `verify` commands: flags -> RunSwitches -> runner -> output."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rotator.config import Config, RunSwitches
from rotator.errors import ExitCode
from rotator.interrupts import StopSignals, finish
from rotator.report import RunReport, to_json, to_json_text, to_text

log = logging.getLogger(__name__)


def switches_from_args(args: argparse.Namespace, *, trigger: str | None = None) -> RunSwitches:
    """CLI flags over ``ROTATOR_*`` env switches (the CronJob's manual trigger)."""
    base = RunSwitches.from_env()
    envs = tuple(getattr(args, "envs", None) or ()) or base.envs
    return RunSwitches(
        envs=envs,
        dry_run=bool(getattr(args, "dry_run", None)) or base.dry_run,
        no_reset=bool(getattr(args, "no_reset", None)) or base.no_reset,
        force=bool(getattr(args, "force", None)) or base.force,
        trigger=trigger or base.trigger,
    )


def render_report(report: RunReport, *, output: str = "text") -> str:
    """The report as ``-o text|json|yaml`` asks."""
    if output == "json":
        return to_json_text(report)
    if output == "yaml":
        import yaml

        return yaml.safe_dump(to_json(report), sort_keys=False).rstrip("\n")
    return to_text(report)


def output_of(args: argparse.Namespace) -> str:
    """``-o`` (or the old ``--json``) of a parsed command line. Without either: text, except
    with ``--log-format json`` (the CronJob's args), where the report becomes one log record
    ("log"), so that the pod's log stream is JSON only."""
    output = getattr(args, "output", None)
    if output:
        return str(output)
    if getattr(args, "json", False):
        return "json"
    return "log" if getattr(args, "log_format", None) == "json" else "text"


def log_report(report: RunReport) -> None:
    """The report as one log record: under ``report`` in a JSON log line (the whole JSON
    report), as the text report in a text log."""
    log.info(
        "%s",
        to_text(report),
        extra={
            "report": to_json(report),
            "summary": f"run report: {report.outcome.value} (exit {int(report.exit_code)})",
            "run_id": report.run_id,
            "in_report": True,
        },
    )


def print_report(report: RunReport, *, as_json: bool = False, output: str | None = None) -> None:
    chosen = output or ("json" if as_json else "text")
    if chosen == "log":
        log_report(report)
        return
    sys.stdout.write(render_report(report, output=chosen) + "\n")
    sys.stdout.flush()


def write_metrics(path: Path, report: RunReport) -> None:
    """Write the Prometheus textfile atomically, carrying counters and the last success and
    rotation times over from the file the previous run wrote."""
    from prometheus_client import write_to_textfile

    from rotator.metrics import carry_over, parse, registry_for

    try:
        previous = parse(path.read_text())
    except (OSError, UnicodeDecodeError):
        previous = parse("")
    path.parent.mkdir(parents=True, exist_ok=True)
    # write_to_textfile writes a temporary file beside it and renames it over the old one.
    write_to_textfile(str(path), registry_for(report, carry_over(previous, report)))


def run_command(args: argparse.Namespace, config: Config) -> int:
    from rotator.clients.pushgateway import push_report
    from rotator.runner import run_once

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
        _exit_now_if_abandoned(int(report.exit_code))
    return int(report.exit_code)


def _exit_now_if_abandoned(code: int) -> None:
    """After a stop signal, leave at once: per-environment waits may still run in daemon
    threads (one writing to stderr during interpreter shutdown aborts the process, SIGABRT), and
    the interpreter's shutdown puts the default signal handlers back, so one more SIGTERM of a
    burst would end the process as killed (-15) and lose the exit code. The report is out and
    the Lease released."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def status_command(args: argparse.Namespace, config: Config) -> int:
    from rotator.status import collect_status_doc, render_status

    doc = collect_status_doc(config, envs=tuple(args.envs or ()))
    sys.stdout.write(render_status(doc, output=output_of(args)) + "\n")
    # Like `kubectl rollout status`: a script can tell by the exit code.
    return int(ExitCode.OK if doc.in_sync else ExitCode.FAILED)


def verify_command(args: argparse.Namespace, config: Config) -> int:
    from rotator.status import verify_current_key

    # Like `run`: the first SIGTERM/SIGINT stops the check, none cuts its report short.
    signals = StopSignals()
    signals.install()
    report = verify_current_key(config, switches_from_args(args, trigger="cli"), signals=signals)
    print_report(report, output=output_of(args))
    if signals.stopping:
        _exit_now_if_abandoned(int(report.exit_code))
    return int(report.exit_code)
