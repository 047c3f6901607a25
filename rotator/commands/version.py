"""``rotator --version``: the version and the git revision (a flag of the root group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from rotator.version import version_text

    click.echo(version_text())
    ctx.exit(0)


def version_option(f: F) -> F:
    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="print the version and the git revision, then exit",
    )(f)
