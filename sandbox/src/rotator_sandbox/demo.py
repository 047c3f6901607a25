"""`rotator demo`: start the sandbox, run one real rotation in it, print the report, stop.

Everything is real except the systems themselves: the key is reset in the PostHog stand-in,
sealed with the sandbox controller's certificate, pushed by GitPython to a bare repo, synced by
the simulated ArgoCD through the Kubernetes API stand-in, unsealed, rolled out, and verified by
reading events back through the query API.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from rotator.commands.options import output_of
from rotator.config import RunSwitches
from rotator.output import print_report
from rotator.report import RunReport

log = logging.getLogger(__name__)


def with_event_counts(report: RunReport, counters: object) -> RunReport:
    """Add the stand-in's totals (events sent, ingested, dropped) to a report."""
    keys = getattr(counters, "keys", {})
    sent = sum(c.accepted for c in keys.values())
    ingested = sum(c.ingested for c in keys.values())
    dropped = sum(c.dropped for c in keys.values())
    return replace(
        report, events=replace(report.events, sent=sent, ingested=ingested, dropped=dropped)
    )


def demo_command(args: argparse.Namespace) -> int:
    from rotator.runner import run_once
    from rotator_sandbox.world import Sandbox

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rotator-demo-") as tmp, Sandbox(Path(tmp)) as sandbox:
        assert sandbox.kube is not None
        assert sandbox.posthog is not None
        print(
            f"sandbox up in {time.monotonic() - started:.1f}s: Kubernetes API {sandbox.kube.url}, "
            f"PostHog {sandbox.posthog.url}, git remote {sandbox.git_remote_url}",
            file=sys.stderr,
        )
        config = sandbox.load_config()
        # Let the gateway send some events with the old key first, as in production.
        time.sleep(min(1.0, config.waits.ingestion_window_s / 4))
        report = run_once(config, RunSwitches(trigger="demo", force=True))
        # Count once the stand-in has settled every event still in its ingestion lag.
        settle_by = time.monotonic() + 10 * max(
            0.5, sandbox.timing.scaled(sandbox.timing.ingestion_lag_s)
        )
        if sandbox.gateway is not None:
            sandbox.gateway.paused = True  # stop the traffic so the totals can settle
        counters = sandbox.posthog.counters()
        while any(c.pending for c in counters.keys.values()) and time.monotonic() < settle_by:
            time.sleep(0.1)
            counters = sandbox.posthog.counters()
        report = with_event_counts(report, counters)
        print_report(report, output=output_of(args))
        if args.keep:
            print(
                f"sandbox kept running; kubeconfig: {sandbox.kubeconfig_path}; "
                "press Ctrl-C to stop",
                file=sys.stderr,
            )
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    print(f"demo finished in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return int(report.exit_code)
