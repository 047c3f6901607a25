"""``rotator config check``: validate and print the effective config, secrets masked."""

from __future__ import annotations

import argparse
import sys

from rotator.commands.options import load_config_of, make_command, make_group, output_options
from rotator.errors import ExitCode


def config_check_command(args: argparse.Namespace) -> int:
    from rotator.config import effective_config_output

    config = load_config_of(args)
    sys.stdout.write(effective_config_output(config, output=args.output))
    missing = sorted(config.secrets.missing.items())
    for path, why in missing:
        print(f"error: {path}: {why}", file=sys.stderr)
    if missing:
        # A config that cannot run is not OK: a CI gate or an init container must see it.
        print(
            f"config NOT OK: {len(missing)} secret(s) missing; set them and run again",
            file=sys.stderr,
        )
        return int(ExitCode.CONFIG)
    print("config OK", file=sys.stderr)
    return int(ExitCode.OK)


command = make_group(
    "config",
    help="configuration commands",
    commands=[
        make_command(
            "check",
            config_check_command,
            help="validate and print the effective config, secrets masked (exit 2 when one is "
            "missing)",
            options=[output_options],
        )
    ],
)
