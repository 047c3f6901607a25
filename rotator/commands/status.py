"""``rotator status``: where each environment stands, changing nothing."""

from __future__ import annotations

import argparse
import sys

from rotator.commands.options import (
    env_option,
    load_config_of,
    make_command,
    output_of,
    output_options,
)
from rotator.errors import ExitCode


def status_command(args: argparse.Namespace) -> int:
    from rotator.status import collect_status_doc, render_status

    doc = collect_status_doc(load_config_of(args), envs=tuple(args.envs or ()))
    sys.stdout.write(render_status(doc, output=output_of(args)) + "\n")
    # Like `kubectl rollout status`: a script can tell by the exit code.
    return int(ExitCode.OK if doc.in_sync else ExitCode.FAILED)


command = make_command(
    "status",
    status_command,
    help="where each environment stands, changing nothing",
    options=[env_option, output_options],
)
