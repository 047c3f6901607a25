"""``rotator verify``: the Live Events check for the current key, no changes."""

from __future__ import annotations

import argparse

from rotator.commands.options import (
    env_option,
    load_config_of,
    make_command,
    output_of,
    output_options,
    switches_from_args,
)


def verify_command(args: argparse.Namespace) -> int:
    from rotator.interrupts import StopSignals, exit_now_if_abandoned
    from rotator.output import print_report
    from rotator.status import verify_current_key

    config = load_config_of(args)
    # Like `run`: the first SIGTERM/SIGINT stops the check, none cuts its report short.
    signals = StopSignals()
    signals.install()
    report = verify_current_key(config, switches_from_args(args, trigger="cli"), signals=signals)
    print_report(report, output=output_of(args))
    if signals.stopping:
        exit_now_if_abandoned(int(report.exit_code))
    return int(report.exit_code)


command = make_command(
    "verify",
    verify_command,
    help="the Live Events check for the current key, no changes",
    options=[env_option, output_options],
)
