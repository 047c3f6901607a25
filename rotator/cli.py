"""Command line: parses flags, builds config, sets up logging, maps outcomes to exit codes.

The only place that catches every exception. Heavy modules are imported inside the command
that needs them, so ``rotator --help`` and start-up stay fast.

Built on click, like kubectl's cobra: the global flags (``--config``, ``--set``,
``--log-format``, ``-v``) are accepted before or after the subcommand (a later one wins;
``--set`` adds up), a mistyped command or flag gets a "Did you mean" suggestion, and
``rotator completion bash|zsh|fish`` prints the shell completion script. Each command hands
its handler an ``argparse.Namespace`` with the same attribute names as before, so the command
modules (``runcmd``, ``sealcmd``, ``scheduler`` ...) are unchanged by the parser. Other
distributions add commands through the ``rotator.commands`` entry point group (``plugin_commands``):
the sandbox adds ``demo``, ``bench`` and ``sandbox``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click

from rotator.errors import ConfigError, ExitCode, RotatorError
from rotator.logs import setup_logging
from rotator.redact import scrub

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]
F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_FORMATS = ("text", "json", "yaml")
# Commands a person runs at a terminal: their logs are text even when piped. The others (run,
# schedule: the CronJob's) log JSON when stderr is not a terminal.
_INTERACTIVE = frozenset(
    {"demo", "seal", "config", "status", "verify", "bench", "sandbox", "completion", "schema"}
)
_GLOBALS = ("config", "set", "log_format", "verbose")


@dataclass(frozen=True)
class Invocation:
    """What the command line asked for: the handler and its arguments, not yet run."""

    command: str
    handler: Handler
    args: argparse.Namespace


def _load_config(args: argparse.Namespace) -> Config:
    from rotator.config import load_config

    return load_config(args.config, overrides=args.set or ())


# --- commands --------------------------------------------------------------------------------


def _cmd_config_check(args: argparse.Namespace) -> int:
    from rotator.config import effective_config_output

    config = _load_config(args)
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


def _cmd_seal(args: argparse.Namespace) -> int:
    from rotator.sealcmd import seal_command

    return seal_command(args, _load_config(args))


def _cmd_run(args: argparse.Namespace) -> int:
    from rotator.runcmd import run_command

    return run_command(args, _load_config(args))


def _cmd_status(args: argparse.Namespace) -> int:
    from rotator.runcmd import status_command

    return status_command(args, _load_config(args))


def _cmd_verify(args: argparse.Namespace) -> int:
    from rotator.runcmd import verify_command

    return verify_command(args, _load_config(args))


def _cmd_schedule(args: argparse.Namespace) -> int:
    from rotator.scheduler import schedule_command

    return schedule_command(args, _load_config(args))


def _cmd_watch(args: argparse.Namespace) -> int:
    from rotator.watch import watch_command

    return watch_command(_load_config(args), max_adopts=args.max_adopts)


def _cmd_schema(args: argparse.Namespace) -> int:
    from rotator.contract import json_schema_text

    sys.stdout.write(json_schema_text(args.document))
    return int(ExitCode.OK)


def _cmd_completion(args: argparse.Namespace) -> int:
    from click.shell_completion import get_completion_class

    shell_class = get_completion_class(args.shell)
    if shell_class is None:  # click.Choice already refused anything else
        raise ConfigError(f"no completion for shell {args.shell!r}")
    source = shell_class(cli, {}, "rotator", "_ROTATOR_COMPLETE").source()
    sys.stdout.write(source if source.endswith("\n") else source + "\n")
    return int(ExitCode.OK)


# --- flags -----------------------------------------------------------------------------------


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


def _invocation(handler: Handler) -> Callable[..., Invocation]:
    """A command callback that returns what to run instead of running it (see ``parse``)."""

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
        return Invocation(command=path, handler=handler, args=argparse.Namespace(**values))

    return callback


def make_command(
    name: str,
    handler: Handler,
    *,
    help: str,
    options: Sequence[Callable[[F], F]] = (),
) -> click.Command:
    """A command that parses its flags (and the global ones) into an ``Invocation`` of
    ``handler``; plugins (``rotator.commands`` entry points) build theirs with it too."""
    fn: Any = _invocation(handler)
    for option in reversed(options):
        fn = option(fn)
    return click.command(name, help=help, short_help=help)(global_options(fn))


def _command(
    group: click.Group,
    name: str,
    handler: Handler,
    *,
    help: str,
    options: Sequence[Callable[[F], F]] = (),
) -> None:
    group.add_command(make_command(name, handler, help=help, options=options))


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


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    name="rotator",
    cls=RootGroup,
    context_settings=CONTEXT,
    help="Rotate the PostHog project API key through sealed-secrets, git, ArgoCD and a gateway "
    "rollout, and prove that events arrive with the new key.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _print_version(ctx, value),
    help="print the version and the git revision, then exit",
)
@global_options
def cli(**_: Any) -> None:
    """The root group; the flags are read by ``_merged_globals``."""


def _print_version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from rotator.version import version_text

    click.echo(version_text())
    ctx.exit(0)


_RUN_FLAGS: list[Callable[[F], F]] = [
    env_option,
    output_options,
]

_command(
    cli,
    "run",
    _cmd_run,
    help="rotate the key (the CronJob's command)",
    options=[
        *_RUN_FLAGS,
        click.option(
            "--no-reset",
            is_flag=True,
            default=None,
            help="adopt mode: make git and the cluster match PostHog's current key without "
            "resetting it. Env: ROTATOR_NO_RESET=true",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            default=None,
            help="do every read, seal a throwaway value, commit locally, push nothing. "
            "Env: ROTATOR_DRY_RUN=true",
        ),
        click.option(
            "--force",
            is_flag=True,
            default=None,
            help="reset even if the last rotation is younger than policy.min_interval_s. "
            "Env: ROTATOR_FORCE=true",
        ),
        click.option(
            "--metrics-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="write Prometheus metrics of this run to this file",
        ),
    ],
)
_command(
    cli,
    "status",
    _cmd_status,
    help="where each environment stands, changing nothing",
    options=_RUN_FLAGS,
)
_command(
    cli,
    "verify",
    _cmd_verify,
    help="the Live Events check for the current key, no changes",
    options=_RUN_FLAGS,
)
_command(
    cli,
    "seal",
    _cmd_seal,
    help="seal a project key into sealedsecrets/<env>/posthog.yaml",
    options=[
        click.option("--env", required=True, help="environment name from the config"),
        click.option(
            "--repo",
            type=click.Path(path_type=Path),
            default=Path(),
            help="ops repo checkout (default: .)",
        ),
        click.option(
            "--cert",
            default=None,
            help="PEM file or https URL of the sealing cert (default: from config)",
        ),
        click.option(
            "--from-stdin",
            is_flag=True,
            help="read the key from standard input instead of a hidden prompt",
        ),
        click.option(
            "--verify",
            is_flag=True,
            help="ask the controller's /v1/verify whether it can decrypt the result",
        ),
    ],
)


@cli.group("config", context_settings=CONTEXT, help="configuration commands")
@global_options
def config_group(**_: Any) -> None:
    """``rotator config ...``"""


_command(
    config_group,
    "check",
    _cmd_config_check,
    help="validate and print the effective config, secrets masked (exit 2 when one is missing)",
    options=[output_options],
)
_command(
    cli,
    "schedule",
    _cmd_schedule,
    help="run rotations on a cron schedule (APScheduler)",
    options=[
        click.option(
            "--adopt-check",
            default=None,
            metavar="CRON",
            help="also run an adopt-mode (--no-reset) check on this cron schedule",
        ),
        click.option("--run-now", is_flag=True, help="run once at start-up too"),
        click.option(
            "--watch",
            is_flag=True,
            help="between runs, read PostHog's key every watch.interval_s and adopt a reset "
            "no rotator commit explains (schedule.watch)",
        ),
        click.option("--max-runs", type=int, default=None, hidden=True),
        click.option(
            "--metrics-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="write Prometheus metrics after each run to this file",
        ),
    ],
)


_command(
    cli,
    "watch",
    _cmd_watch,
    help="read PostHog's key every watch.interval_s and adopt a reset no rotator commit "
    "explains (runs `run --no-reset`)",
    options=[click.option("--max-adopts", type=int, default=None, hidden=True)],
)


_command(
    cli,
    "schema",
    _cmd_schema,
    help="print the JSON Schema of the run report or of status -o json (as in schema/)",
    options=[click.argument("document", type=click.Choice(["report", "status"]))],
)
_command(
    cli,
    "completion",
    _cmd_completion,
    help="print the shell completion script: source <(rotator completion bash)",
    options=[click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))],
)


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
    default_fmt = "text" if args.command in _INTERACTIVE or sys.stderr.isatty() else "json"
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


__all__ = [
    "CONTEXT",
    "ConfigError",
    "Invocation",
    "cli",
    "global_options",
    "main",
    "make_command",
    "output_options",
    "parse",
    "parse_args",
    "plugin_commands",
]
