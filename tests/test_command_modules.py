"""Each command lives in rotator/commands/<name>.py and owns its flags; cli.py only assembles."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest

import rotator.commands
from rotator.cli import cli, main, parse
from rotator.commands import builtin_commands
from rotator.commands.options import Invocation

COMMANDS_DIR = Path(rotator.commands.__file__).parent
SHARED = {"__init__", "options", "version"}  # not commands: the shared blocks, the root's flag
MODULES = sorted(p.stem for p in COMMANDS_DIR.glob("*.py") if p.stem not in SHARED)
GLOBAL = {"--config", "--set", "--log-format", "--verbose", "-v", "--help", "-h"}
SHARED_BLOCKS = {"-o", "--output", "--json", "--env"}  # commands/options.py


def _flags(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def _leaves(command: click.Command) -> list[click.Command]:
    if isinstance(command, click.Group):
        return [leaf for sub in command.commands.values() for leaf in _leaves(sub)]
    return [command]


def test_every_module_in_commands_is_a_builtin_command_of_the_same_name() -> None:
    assert sorted(c.name or "" for c in builtin_commands()) == MODULES
    for name in MODULES:
        module = importlib.import_module(f"rotator.commands.{name}")
        assert cli.commands[name] is module.command


@pytest.mark.parametrize("name", MODULES)
def test_a_command_s_own_flags_are_declared_in_its_module(name: str) -> None:
    text = (COMMANDS_DIR / f"{name}.py").read_text()
    module = importlib.import_module(f"rotator.commands.{name}")
    for leaf in _leaves(module.command):
        for flag in _flags(leaf) - GLOBAL - SHARED_BLOCKS:
            assert f'"{flag}"' in text, f"{flag} of {name} is declared elsewhere"
    cli_text = (COMMANDS_DIR.parent / "cli.py").read_text()
    assert "click.option(" not in cli_text.split("# --- the sandbox's commands")[0]


def _option_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        ast.dump(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("option", "argument")
    ]


def test_no_option_block_is_written_out_twice_a_shared_one_lives_in_options() -> None:
    seen: dict[str, str] = {}
    twice = []
    for path in sorted(COMMANDS_DIR.glob("*.py")):
        for call in set(_option_calls(path)):
            if call in seen:
                twice.append(f"{path.stem} and {seen[call]}")
            seen[call] = path.stem
    assert twice == []


@pytest.mark.parametrize("name", MODULES)
def test_each_command_s_help_lists_its_flags_and_exits_0(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"rotator.commands.{name}")
    for leaf in _leaves(module.command):
        path = [name] if leaf is module.command else [name, leaf.name or ""]
        assert main([*path, "--help"]) == 0
        shown = capsys.readouterr().out
        visible = {
            opt
            for p in leaf.params
            if isinstance(p, click.Option) and not p.hidden
            for opt in p.opts
        }
        assert visible, path
        assert [flag for flag in visible if flag not in shown] == []


def test_the_cluster_s_commands_log_json_when_piped_and_the_others_text() -> None:
    parsed = {name: parse([name]) for name in ("run", "schedule", "watch")}
    parsed |= {"status": parse(["status"]), "verify": parse(["verify"])}
    parsed |= {"config check": parse(["config", "check"]), "schema": parse(["schema", "report"])}
    text_logs = {name: p.text_logs for name, p in parsed.items() if isinstance(p, Invocation)}
    assert text_logs == {
        "run": False,
        "schedule": False,
        "watch": False,
        "status": True,
        "verify": True,
        "config check": True,
        "schema": True,
    }


def test_building_the_cli_loads_no_client_config_runner_or_their_libraries() -> None:
    # rotator --help (and every command's start) stays fast: heavy imports wait for a handler.
    code = (
        "import sys, rotator.cli; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rotator', 'pydantic', 'yaml', 'cryptography', 'requests', 'kubernetes', 'git'))))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
        ).stdout.split()
    )
    heavy = {m for m in loaded if not m.startswith("rotator")}
    product = {
        m
        for m in loaded
        if m.startswith(("rotator.clients", "rotator.config", "rotator.runner", "rotator.run."))
    }
    assert heavy == set()
    assert product == set()
