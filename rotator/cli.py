"""Command line: the root group, plugin loading, and the one place that catches everything.

Each command lives in ``rotator/commands/<name>.py`` with its flags and handler; the flag
blocks several share (``--config``, ``--set``, ``--log-format``, ``-v``, ``-o``, ``--env``) are
in ``rotator/commands/options.py``. Built on click, like kubectl's cobra: the global flags are
accepted before or after the subcommand (a later one wins; ``--set`` adds up), a mistyped
command or flag gets a "Did you mean" suggestion. Parsing gives an ``Invocation`` (the handler
and its ``argparse.Namespace``); ``main`` sets up logging, runs it and maps what it raises to an
exit code. Heavy modules are imported inside the handler that needs them, so ``rotator
--help`` and start-up stay fast. Other distributions add commands through the
``rotator.commands`` entry point group (``plugin_commands``): the sandbox adds ``demo``,
``bench`` and ``sandbox``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, Literal, cast

import click

from rotator.commands import builtin_commands
from rotator.commands.options import (
    CONTEXT,
    Invocation,
    global_options,
)
from rotator.commands.version import version_option
from rotator.errors import ConfigError, ExitCode, RotatorError
from rotator.logs import setup_logging
from rotator.redact import scrub

log = logging.getLogger(__name__)

# --- plugins ---------------------------------------------------------------------------------

PLUGIN_GROUP = "rotator.commands"
# The commands the sandbox distribution (sandbox/, rotator-sandbox) plugs in. The product's
# wheel and image leave it out; there these names are not listed and say how to get them.
SANDBOX_COMMANDS = ("demo", "bench", "sandbox")


@functools.cache
def plugin_commands() -> dict[str, click.Command]:
    """The click commands other installed distributions add to ``rotator``, by name.

    Each entry point of the ``rotator.commands`` group names a ``click.Command`` (or group),
    e.g. in sandbox/pyproject.toml ``[project.entry-points."rotator.commands"]``
    ``demo = "rotator_sandbox.commands:demo"`` (flask's ``flask.commands`` works the same way).
    Loaded on first use, so a built-in command (``rotator run``) never imports a plugin; a
    plugin never replaces a built-in command.
    """
    found: dict[str, click.Command] = {}
    for entry_point in entry_points(group=PLUGIN_GROUP):
        command = entry_point.load()
        if not isinstance(command, click.Command):
            raise TypeError(
                f"entry point {entry_point.name} = {entry_point.value} in group {PLUGIN_GROUP} "
                f"is a {type(command).__name__}, not a click command"
            )
        found.setdefault(entry_point.name, command)
    return found


class _SandboxNotInstalled(click.ClickException):
    """A sandbox command run where the sandbox is not installed (nothing ran)."""

    exit_code = int(ExitCode.CONFIG)


def _not_installed(name: str) -> click.Command:
    def callback() -> None:
        raise _SandboxNotInstalled(
            f"`rotator {name}` comes with the sandbox, which is not installed here (the "
            "product's wheel and image leave it out): install it with pip install -e ./sandbox "
            "from a checkout, or run ./dev there"
        )

    return click.Command(
        name,
        callback=callback,
        hidden=True,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class RootGroup(click.Group):
    """The ``rotator`` group: its own commands, then the plugins' (see ``plugin_commands``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            command = plugin_commands().get(cmd_name)
        if command is None and cmd_name in SANDBOX_COMMANDS:
            command = _not_installed(cmd_name)
        return command


@click.group(
    name="rotator",
    cls=RootGroup,
    context_settings=CONTEXT,
    help="Rotate the PostHog project API key through sealed-secrets, git, ArgoCD and a gateway "
    "rollout, and prove that events arrive with the new key.",
)
@version_option
@global_options
def cli(**_: Any) -> None:
    """The root group; the flags are read by ``commands.options._merged_globals``."""


for _builtin in builtin_commands():
    cli.add_command(_builtin)


# --- entry point -----------------------------------------------------------------------------


def parse(argv: Sequence[str]) -> Invocation | int:
    """Parse ``argv``: the invocation to run, or an exit code (``--help``, a usage error)."""
    try:
        result = cli.main(args=list(argv), prog_name="rotator", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.CONFIG) if isinstance(exc, click.UsageError) else exc.exit_code
    except click.exceptions.Abort:
        print("rotator: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, Invocation):
        return result
    return int(result or 0)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments a command's handler gets for ``argv`` (for tests and embedding)."""
    parsed = parse(argv)
    if not isinstance(parsed, Invocation):
        raise ConfigError(f"not a command: {' '.join(argv)}")
    return parsed.args


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse(sys.argv[1:] if argv is None else argv)
    if not isinstance(parsed, Invocation):
        return parsed
    args = parsed.args
    default_fmt = "text" if parsed.text_logs or sys.stderr.isatty() else "json"
    fmt = cast(Literal["text", "json"], args.log_format or default_fmt)
    setup_logging(fmt=fmt, level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(parsed.handler(args))
    except RotatorError as exc:
        # The class decides what the user sees: one line naming the step and the fix.
        print(f"rotator: {scrub(str(exc))}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("rotator: interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected error")
        print("rotator: unexpected error (traceback in the log above)", file=sys.stderr)
        return int(ExitCode.FAILED)


__all__ = ["ConfigError", "Invocation", "cli", "main", "parse", "parse_args"]
