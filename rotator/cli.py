"""Command line: parses flags, builds config, sets up logging, maps outcomes to exit codes.

The only place that catches every exception. Heavy modules are imported inside the command
that needs them, so ``rotator --help`` and start-up stay fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from rotator import __version__
from rotator.errors import ConfigError, ExitCode, RotatorError
from rotator.logs import setup_logging
from rotator.redact import scrub

if TYPE_CHECKING:
    from rotator.config import Config

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _load_config(args: argparse.Namespace) -> Config:
    from rotator.config import load_config

    return load_config(args.config, overrides=args.set or ())


# --- commands --------------------------------------------------------------------------------


def _cmd_config_check(args: argparse.Namespace) -> int:
    from rotator.config import effective_config_text

    config = _load_config(args)
    sys.stdout.write(effective_config_text(config))
    if config.secrets.missing:
        for path, why in sorted(config.secrets.missing.items()):
            print(f"warning: {path}: {why}", file=sys.stderr)
    print("config OK", file=sys.stderr)
    return ExitCode.OK


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from rotator.demo import demo_command

    return demo_command(args)


def _cmd_schedule(args: argparse.Namespace) -> int:
    from rotator.scheduler import schedule_command

    return schedule_command(args, _load_config(args))


def _cmd_sandbox_up(args: argparse.Namespace) -> int:
    from rotator.sandbox.world import up_command

    return up_command(args)


def _cmd_sandbox_posthog(args: argparse.Namespace) -> int:
    from rotator.sandbox.posthog import serve_command

    return serve_command(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from rotator.bench import bench_command

    return bench_command(args)


# --- parser ----------------------------------------------------------------------------------


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env",
        action="append",
        dest="envs",
        metavar="ENV",
        help="only this environment (repeatable; default: all). Env: ROTATOR_ENVS",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat list of commands
    parser = argparse.ArgumentParser(
        prog="rotator",
        description="Rotate the PostHog project API key through sealed-secrets, git, ArgoCD and "
        "a gateway rollout, and prove that events arrive with the new key.",
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $ROTATOR_CONFIG or config/align.yaml)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="override one setting, e.g. --set git.branch=main (repeatable)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log format (default: json when not on a terminal)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="rotate the key (the CronJob's command)")
    _run_flags(p)
    p.add_argument(
        "--no-reset",
        action="store_true",
        default=None,
        help="adopt mode: make git and the cluster match PostHog's current key "
        "without resetting it. Env: ROTATOR_NO_RESET=true",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="do every read, seal a throwaway value, commit locally, push nothing. "
        "Env: ROTATOR_DRY_RUN=true",
    )
    p.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="reset even if the last rotation is younger than policy.min_interval_s. "
        "Env: ROTATOR_FORCE=true",
    )
    p.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="write Prometheus metrics of this run to this file",
    )
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("status", help="where each environment stands, changing nothing")
    _run_flags(p)
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("verify", help="the Live Events check for the current key, no changes")
    _run_flags(p)
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("demo", help="start the sandbox, rotate the key in it, print the report")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--keep", action="store_true", help="leave the sandbox running afterwards")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("seal", help="seal a project key into sealedsecrets/<env>/posthog.yaml")
    p.add_argument("--env", required=True, help="environment name from the config")
    p.add_argument("--repo", type=Path, default=Path(), help="ops repo checkout (default: .)")
    p.add_argument(
        "--cert",
        default=None,
        help="PEM file or https URL of the sealing cert (default: from config)",
    )
    p.add_argument(
        "--from-stdin",
        action="store_true",
        help="read the key from standard input instead of a hidden prompt",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="ask the controller's /v1/verify whether it can decrypt the result",
    )
    p.set_defaults(handler=_cmd_seal)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("check", help="validate and print the effective config, secrets masked")
    c.set_defaults(handler=_cmd_config_check)

    p = sub.add_parser("schedule", help="run rotations on a cron schedule (APScheduler)")
    p.add_argument(
        "--adopt-check",
        default=None,
        metavar="CRON",
        help="also run an adopt-mode (--no-reset) check on this cron schedule",
    )
    p.add_argument("--run-now", action="store_true", help="run once at start-up too")
    p.add_argument("--max-runs", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="write Prometheus metrics after each run to this file",
    )
    p.set_defaults(handler=_cmd_schedule)

    p = sub.add_parser("sandbox", help="the embedded stand-ins for PostHog, Kubernetes, git, Slack")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)
    s = ssub.add_parser("up", help="start the whole sandbox and run until interrupted")
    s.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to write the config, kubeconfig and git remote (default: temp)",
    )
    s.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="multiply the simulated delays (default: fast)",
    )
    s.add_argument(
        "--argocd-version",
        default="3.6",
        help="the ArgoCD version the stand-in behaves as, e.g. 2.14 or 3.6 (default: 3.6)",
    )
    s.set_defaults(handler=_cmd_sandbox_up)
    s = ssub.add_parser("posthog", help="run only the PostHog stand-in")
    s.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    s.set_defaults(handler=_cmd_sandbox_posthog)

    p = sub.add_parser(
        "bench", help="measure the dark window of rotation strategies in the sandbox"
    )
    p.add_argument("--runs", type=int, default=5, help="runs per strategy")
    p.add_argument("--json-out", type=Path, default=None, help="write the results as JSON")
    p.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="multiply every simulated delay (default 0.2; figures are printed in real seconds)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        nargs="+",
        default=None,
        help="gateway replicas per environment, one sandbox each (default: 1 3)",
    )
    p.add_argument(
        "--strategy",
        dest="strategies",
        action="append",
        choices=("passive", "default"),
        default=None,
        help="only this strategy (repeatable; default: both)",
    )
    for flag, what, default in (
        ("--argocd-poll", "ArgoCD's polling interval", "120"),
        ("--argocd-jitter", "the most jitter added to it", "60"),
        ("--sync", "an ArgoCD sync", "3"),
        ("--unseal", "the sealed-secrets unseal", "1"),
        ("--pod-start", "a pod's start-up", "10"),
        ("--pod-ready", "a started pod's readiness", "5"),
        ("--window", "PostHog's ingestion window for the old key", "150"),
        ("--lag", "PostHog's ingestion lag", "3"),
        ("--passive-poll", "how often the runbook's person checks", "10"),
    ):
        p.add_argument(
            flag, type=float, default=None, metavar="S", help=f"{what}, real s (default {default})"
        )
    p.add_argument("--seed", type=int, default=None, help="random seed (default 8)")
    p.add_argument("--key-bits", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-cold-start", action="store_true", help="skip the start-up and memory figures"
    )
    p.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    interactive = args.command in ("demo", "seal", "config", "status", "verify", "bench", "sandbox")
    default_fmt = "text" if interactive or sys.stderr.isatty() else "json"
    fmt = cast(Literal["text", "json"], args.log_format or default_fmt)
    setup_logging(fmt=fmt, level=logging.DEBUG if args.verbose else logging.INFO)
    handler = cast(Handler, args.handler)
    try:
        return int(handler(args))
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


__all__ = ["ConfigError", "build_parser", "main"]
