"""The commands of ``rotator``, one module each: its flags, its help and its handler.

::

    commands/
      options.py     the flag blocks several commands share (global flags, -o, --env) and
                     make_command(), which every command (and every plugin's) is built with
      run.py         rotator run              status.py    rotator status
      verify.py      rotator verify           seal.py      rotator seal
      schedule.py    rotator schedule         watch.py     rotator watch
      config.py      rotator config check     schema.py    rotator schema
      completion.py  rotator completion       version.py   rotator --version

A command module defines ``command`` (a click command or group) and imports what its handler
needs inside the handler, so that building the CLI (``rotator --help``) loads no client, no
config and no runner. ``rotator.cli`` adds ``builtin_commands()`` to the root group, then the
commands other distributions plug in (the ``rotator.commands`` entry point group).
"""

from __future__ import annotations

import click


def builtin_commands() -> list[click.Command]:
    """The product's own commands."""
    from rotator.commands import (
        completion,
        config,
        run,
        schedule,
        schema,
        seal,
        status,
        verify,
        watch,
    )

    modules = (run, status, verify, seal, schedule, watch, config, schema, completion)
    return [module.command for module in modules]
