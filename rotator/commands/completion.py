"""``rotator completion bash|zsh|fish``: the shell completion script (click's)."""

from __future__ import annotations

import argparse
import sys

import click

from rotator.commands.options import make_command
from rotator.errors import ConfigError, ExitCode


def completion_command(args: argparse.Namespace) -> int:
    from click.shell_completion import get_completion_class

    from rotator.cli import cli

    shell_class = get_completion_class(args.shell)
    if shell_class is None:  # click.Choice already refused anything else
        raise ConfigError(f"no completion for shell {args.shell!r}")
    source = shell_class(cli, {}, "rotator", "_ROTATOR_COMPLETE").source()
    sys.stdout.write(source if source.endswith("\n") else source + "\n")
    return int(ExitCode.OK)


command = make_command(
    "completion",
    completion_command,
    help="print the shell completion script: source <(rotator completion bash)",
    options=[click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))],
)
