"""Where a run's report goes: stdout (``-o text|json|yaml``), one log record (the CronJob's
JSON log), the Prometheus textfile. Shared by the run, verify, schedule and watch commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rotator.report import RunReport, to_json, to_json_text, to_text

log = logging.getLogger(__name__)


def render_report(report: RunReport, *, output: str = "text") -> str:
    """The report as ``-o text|json|yaml`` asks."""
    if output == "json":
        return to_json_text(report)
    if output == "yaml":
        import yaml

        return yaml.safe_dump(to_json(report), sort_keys=False).rstrip("\n")
    return to_text(report)


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
