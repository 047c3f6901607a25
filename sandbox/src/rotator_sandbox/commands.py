"""The sandbox's commands, plugged into ``rotator``'s CLI through the ``rotator.commands`` entry
point group (sandbox/pyproject.toml; ``rotator.cli.plugin_commands`` loads them).

``rotator demo``, ``rotator bench ...`` and ``rotator sandbox up|posthog``. Each command parses
into the same ``Invocation`` as the product's own (``rotator.commands.options.make_command``),
so ``rotator``'s ``main`` sets up logging and maps errors to exit codes for them too. The heavy
modules are imported inside the handler that needs them: ``rotator --help`` lists these without
loading them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rotator.commands.options import CONTEXT, global_options, make_command, output_options

F = TypeVar("F", bound=Callable[..., Any])


def _cmd_demo(args: argparse.Namespace) -> int:
    from rotator_sandbox.demo import demo_command

    return demo_command(args)


def _cmd_sandbox_up(args: argparse.Namespace) -> int:
    from rotator_sandbox.world import up_command

    return up_command(args)


def _cmd_sandbox_posthog(args: argparse.Namespace) -> int:
    from rotator_sandbox.posthog import serve_command

    return serve_command(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    counts = [*(getattr(args, "env_counts", None) or ()), *(getattr(args, "more_counts", ()) or ())]
    if counts:
        from rotator_sandbox.bench_envs import envs_bench_command, envs_options_from_args

        return envs_bench_command(
            envs_options_from_args(args, counts=counts), json_out=args.json_out
        )
    if getattr(args, "more_counts", ()):
        print(
            "rotator bench: extra arguments are environment counts: give --envs first, e.g. "
            "--envs 1 2 10 50",
            file=sys.stderr,
        )
        return 2
    from rotator_sandbox.bench import bench_command

    return bench_command(args)


def _float_option(flag: str, what: str, default: str) -> Callable[[F], F]:
    return click.option(
        flag, type=float, default=None, metavar="S", help=f"{what}, real s (default {default})"
    )


def _split_ints(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[int]:
    try:
        return [int(part) for item in value for part in item.replace(",", " ").split()]
    except ValueError as exc:
        raise click.BadParameter("give whole numbers, e.g. --replicas 1,3") from exc


demo = make_command(
    "demo",
    _cmd_demo,
    help="start the sandbox, rotate the key in it, print the report",
    options=[
        output_options,
        click.option("--keep", is_flag=True, help="leave the sandbox running afterwards"),
    ],
)


@click.group(
    "sandbox",
    context_settings=CONTEXT,
    help="the embedded stand-ins for PostHog, Kubernetes, git, Slack",
)
@global_options
def sandbox(**_: Any) -> None:
    """``rotator sandbox ...``"""


sandbox.add_command(
    make_command(
        "up",
        _cmd_sandbox_up,
        help="start the whole sandbox and run until interrupted",
        options=[
            click.option(
                "--dir",
                type=click.Path(path_type=Path),
                default=None,
                help="where to write the config, kubeconfig and git remote (default: temp)",
            ),
            click.option(
                "--time-scale",
                type=float,
                default=None,
                help="multiply the simulated delays (default: fast)",
            ),
            click.option(
                "--argocd-version",
                default="3.6",
                help="the ArgoCD version the stand-in behaves as, e.g. 2.14 or 3.6 (default: 3.6)",
            ),
            click.option(
                "--sealed-secrets-version",
                default="v0.36.6",
                help="the sealed-secrets release whose status writing the stand-in follows, e.g. "
                "v0.24.1 or v0.24.2 (default: v0.36.6)",
            ),
        ],
    )
)
sandbox.add_command(
    make_command(
        "posthog",
        _cmd_sandbox_posthog,
        help="run only the PostHog stand-in",
        options=[
            click.option("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)"),
        ],
    )
)
bench = make_command(
    "bench",
    _cmd_bench,
    help="measure the dark window of rotation strategies in the sandbox",
    options=[
        click.option(
            "--runs",
            type=int,
            default=None,
            help="runs per strategy (default 5), or per environment count with --envs (default 3)",
        ),
        click.option(
            "--envs",
            "env_counts",
            multiple=True,
            callback=_split_ints,
            metavar="N [N...]",
            help="measure how the cost grows with N environments on one project, one sandbox "
            "per N: --envs 1 2 10 50",
        ),
        click.option(
            "--json-out",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="write the results as JSON",
        ),
        click.option(
            "--time-scale",
            type=float,
            default=None,
            help="multiply every simulated delay (default 0.2; figures are printed in real "
            "seconds)",
        ),
        click.option(
            "--replicas",
            multiple=True,
            callback=_split_ints,
            metavar="N[,N...]",
            help="gateway replicas per environment, one sandbox each (default: 1,3)",
        ),
        click.option(
            "--strategy",
            "strategies",
            multiple=True,
            type=click.Choice(["passive", "default", "watch"]),
            help="only this strategy (repeatable; default: all three)",
        ),
        _float_option("--argocd-poll", "ArgoCD's polling interval", "120"),
        _float_option("--argocd-jitter", "the most jitter added to it", "60"),
        _float_option("--sync", "an ArgoCD sync", "3"),
        _float_option("--unseal", "the sealed-secrets unseal", "1"),
        _float_option("--pod-start", "a pod's start-up", "10"),
        _float_option("--pod-ready", "a started pod's readiness", "5"),
        _float_option("--window", "PostHog's ingestion window for the old key", "150"),
        _float_option("--lag", "PostHog's ingestion lag", "3"),
        _float_option("--passive-poll", "how often the runbook's person checks", "10"),
        _float_option("--watch-interval", "how often rotator watch reads the key", "10"),
        click.option("--seed", type=int, default=None, help="random seed (default 8)"),
        click.option("--key-bits", type=int, default=None, hidden=True),
        click.option("--no-cold-start", is_flag=True, help="skip the start-up and memory figures"),
        click.argument("more_counts", nargs=-1, type=int, metavar="[N...]"),
    ],
)

__all__ = ["bench", "demo", "sandbox"]
