"""``rotator schema report|status``: the JSON Schema of a machine-readable output."""

from __future__ import annotations

import argparse
import sys

import click

from rotator.commands.options import make_command
from rotator.errors import ExitCode


def schema_command(args: argparse.Namespace) -> int:
    from rotator.contract import json_schema_text

    sys.stdout.write(json_schema_text(args.document))
    return int(ExitCode.OK)


command = make_command(
    "schema",
    schema_command,
    help="print the JSON Schema of the run report or of status -o json (as in schema/)",
    options=[click.argument("document", type=click.Choice(["report", "status"]))],
)
