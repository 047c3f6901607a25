"""``rotator watch``: adopt a reset made outside rotator within seconds."""

from __future__ import annotations

import argparse
import sys

import click

from rotator.commands.options import load_config_of, make_command


def watch_command(args: argparse.Namespace) -> int:
    from rotator.watch import Watcher

    code = Watcher(load_config_of(args), max_adopts=args.max_adopts).serve()
    sys.stderr.flush()
    return code


command = make_command(
    "watch",
    watch_command,
    help="read PostHog's key every watch.interval_s and adopt a reset no rotator commit "
    "explains (runs `run --no-reset`)",
    text_logs=False,
    options=[click.option("--max-adopts", type=int, default=None, hidden=True)],
)
