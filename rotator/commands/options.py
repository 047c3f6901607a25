"""The flags more than one command shares, and how a command is built from its own.

Each command module (``rotator/commands/<name>.py``) declares its flags beside its handler and
builds its click command with ``make_command``; only the blocks several commands accept live
here: the global flags (``--config``, ``--set``, ``--log-format``, ``-v``: accepted before or
after the command's name, a later one wins, ``--set`` adds up, like cobra's persistent flags),
``-o/--output`` and ``--env``. A command's handler gets an ``argparse.Namespace`` with the
attribute names the flags give (the sandbox's commands, plugged in through the
``rotator.commands`` entry point group, build theirs the same way).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rotator.config import Config, RunSwitches

Handler = Callable[[argparse.Namespace], int]
F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
OUTPUT_FORMATS = ("text", "json", "yaml")
_GLOBALS = ("config", "set", "log_format", "verbose")


@dataclass(frozen=True)
class Invocation:
    """What the command line asked for: the handler and its arguments, not yet run.

    ``text_logs``: the command is one a person runs at a terminal, so its logs are text even
    when piped; the others (run, schedule, watch: the cluster's) log JSON when stderr is not a
    terminal.
    """

    command: str
    handler: Handler
    args: argparse.Namespace
    text_logs: bool = True


def global_options(f: F) -> F:
    """The flags every command accepts, before or after its name (cobra's persistent flags)."""
    f = click.option("-v", "--verbose", is_flag=True, default=None, help="debug logging")(f)
    f = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default=None,
        help="log format (default: json when not on a terminal)",
    )(f)
    f = click.option(
        "--set",
        "set",
        multiple=True,
        metavar="PATH=VALUE",
        help="override one setting, e.g. --set git.branch=main (repeatable)",
    )(f)
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="config file (default: $ROTATOR_CONFIG or config/align.yaml)",
    )(f)


def output_options(f: F) -> F:
    f = click.option("--json", "json_flag", is_flag=True, hidden=True, help="same as -o json")(f)
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        default=None,
        help="output format of the report (default: text)",
    )(f)


def env_option(f: F) -> F:
    return click.option(
        "--env",
        "envs",
        multiple=True,
        metavar="ENV",
        help="only this environment (repeatable; default: all). Env: ROTATOR_ENVS",
    )(f)


def _merged_globals(ctx: click.Context) -> dict[str, Any]:
    """The global flags from the root to this command: a later one wins, ``--set`` adds up."""
    chain: list[click.Context] = []
    current: click.Context | None = ctx
    while current is not None:
        chain.append(current)
        current = current.parent
    merged: dict[str, Any] = {"config": None, "set": [], "log_format": None, "verbose": False}
    for level in reversed(chain):
        params = level.params
        if params.get("config") is not None:
            merged["config"] = params["config"]
        merged["set"].extend(params.get("set") or ())
        if params.get("log_format") is not None:
            merged["log_format"] = params["log_format"]
        merged["verbose"] = merged["verbose"] or bool(params.get("verbose"))
    return merged


def _invocation(handler: Handler, *, text_logs: bool) -> Callable[..., Invocation]:
    """A command callback that returns what to run instead of running it (``cli.parse``)."""

    @click.pass_context
    def callback(ctx: click.Context, /, **params: Any) -> Invocation:
        values = {k: v for k, v in params.items() if k not in _GLOBALS}
        if "json_flag" in values:
            json_flag = values.pop("json_flag")
            values["output"] = values.get("output") or ("json" if json_flag else None)
        if "output" in values:
            values["json"] = values["output"] == "json"
        for key in ("envs", "strategies", "replicas"):
            if key in values:  # argparse's append gave None when the flag was absent
                values[key] = list(values[key]) or None
        values.update(_merged_globals(ctx))
        values["set"] = values["set"] or None
        path = ctx.command_path.split(" ", 1)[1] if " " in ctx.command_path else ""
        values["command"] = path.split(" ", 1)[0]
        return Invocation(
            command=path,
            handler=handler,
            args=argparse.Namespace(**values),
            text_logs=text_logs,
        )

    return callback


def make_command(
    name: str,
    handler: Handler,
    *,
    help: str,
    options: Sequence[Callable[[F], F]] = (),
    text_logs: bool = True,
) -> click.Command:
    """A command that parses its flags (and the global ones) into an ``Invocation`` of
    ``handler``; plugins (``rotator.commands`` entry points) build theirs with it too."""
    fn: Any = _invocation(handler, text_logs=text_logs)
    for option in reversed(options):
        fn = option(fn)
    return click.command(name, help=help, short_help=help)(global_options(fn))


def make_group(name: str, *, help: str, commands: Sequence[click.Command]) -> click.Group:
    """A group of commands (``rotator config check``) that takes the global flags too."""

    @click.group(name, context_settings=CONTEXT, help=help)
    @global_options
    def group(**_: Any) -> None:
        """The flags are read by ``_merged_globals``."""

    for command in commands:
        group.add_command(command)
    return group


def load_config_of(args: argparse.Namespace) -> Config:
    """The config the global flags name (``--config``, ``--set``), over ``ROTATOR_*`` env."""
    from rotator.config import load_config

    return load_config(args.config, overrides=args.set or ())


def switches_from_args(args: argparse.Namespace, *, trigger: str | None = None) -> RunSwitches:
    """CLI flags over ``ROTATOR_*`` env switches (the CronJob's manual trigger)."""
    from rotator.config import RunSwitches

    base = RunSwitches.from_env()
    envs = tuple(getattr(args, "envs", None) or ()) or base.envs
    return RunSwitches(
        envs=envs,
        dry_run=bool(getattr(args, "dry_run", None)) or base.dry_run,
        no_reset=bool(getattr(args, "no_reset", None)) or base.no_reset,
        force=bool(getattr(args, "force", None)) or base.force,
        trigger=trigger or base.trigger,
    )


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
