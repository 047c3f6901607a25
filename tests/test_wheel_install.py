"""The closest proof of the image's contents without a Docker engine.

What the Dockerfile's builder stage does, done here: build the wheel from exactly the files the
build context holds (.dockerignore applied), install it into a fresh virtualenv with every
dependency pinned by constraints.txt, then run ``rotator --help`` from that virtualenv, from a
directory outside the source tree, with HOME and TMPDIR in a scratch dir as in the image. The
wheel holds the product only: the sandbox (sandbox/, the stand-ins, demo and bench) is its own
distribution, and a second virtualenv with both wheels runs ``rotator demo`` through the
``rotator.commands`` entry point. pip's cache makes the second run fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_dockerfile import ROOT, docker_context_files

# Installing the pinned dependencies takes ~30-60 s (less with a warm pip cache). One xdist
# group: the module's tests share one build instead of one per worker.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("wheel")]

SANDBOX = ROOT / "sandbox"


_LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m\n"
    "for d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args[:4])} exited {result.returncode}\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result.stdout


@dataclass(frozen=True)
class Built:
    """The product's wheel, the sandbox's wheel and their pinned dependencies (one dir)."""

    base: Path
    wheel: Path
    sandbox_wheel: Path
    wheelhouse: Path
    constraints: Path
    pip_env: dict[str, str]


@dataclass(frozen=True)
class Venv:
    """A fresh virtualenv and the environment to run it with (HOME, TMPDIR in a scratch dir)."""

    path: Path
    env: dict[str, str]


PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "context"
    for rel in docker_context_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    pip_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels, house = base / "wheels", base / "wheelhouse"
    # 1. The builder's `pip wheel --no-deps`.
    _run(
        [*PIP, "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=src,
        env=pip_env,
        timeout=120,
    )
    (wheel,) = wheels.glob("rotator-*.whl")
    # The sandbox's wheel, built from a copy (a build writes build/ and *.egg-info beside it).
    sandbox_src = base / "sandbox"
    shutil.copytree(
        SANDBOX, sandbox_src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    _run(
        [*PIP, "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=sandbox_src,
        env=pip_env,
        timeout=120,
    )
    (sandbox_wheel,) = wheels.glob("rotator_sandbox-*.whl")
    constraints = src / "constraints.txt"
    # 2. Its dependencies as pinned by constraints.txt, fetched from the index (pip's cache
    #    makes this fast after the first time).
    _run(
        [*PIP, "download", "--quiet", "-c", str(constraints), "-d", str(house), str(wheel)],
        cwd=base,
        env=pip_env,
        timeout=240,
    )
    return Built(base, wheel, sandbox_wheel, house, constraints, pip_env)


def _venv(built: Built, name: str, wheels: list[Path]) -> Venv:
    """3. A fresh venv with nothing else in it. Without bytecode compiling (half the time; the
    image compiles, which does not change what runs) and without reaching the index again."""
    venv = built.base / name
    _run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        cwd=built.base,
        env=built.pip_env,
        timeout=60,
    )
    _run(
        [
            *PIP,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-compile",
            "--no-index",
            "--find-links",
            str(built.wheelhouse),
            "-c",
            str(built.constraints),
            *map(str, wheels),
        ],
        cwd=built.base,
        env=built.pip_env,
        timeout=240,
    )
    scratch = built.base / f"{name}-home"
    scratch.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    return Venv(venv, env)


@pytest.fixture(scope="module")
def installed(built: Built) -> Venv:
    """The product's wheel alone, installed as the Dockerfile's builder does."""
    return _venv(built, "venv", [built.wheel])


@pytest.fixture(scope="module")
def with_sandbox(built: Built) -> Venv:
    """The product's wheel and the sandbox's, as a developer installs both."""
    return _venv(built, "venv-sandbox", [built.wheel, built.sandbox_wheel])


def test_the_wheel_holds_the_product_and_no_sandbox_bench_demo_or_tests(built: Built) -> None:
    names = zipfile.ZipFile(built.wheel).namelist()
    assert "rotator/py.typed" in names
    assert "rotator/cli.py" in names
    modules = [n for n in names if n.endswith(".py")]
    assert all(n.startswith("rotator/") for n in modules), modules
    for module in modules:
        stem = module.removeprefix("rotator/")
        assert not stem.startswith(("sandbox", "bench", "demo")), module
    assert not any("rotator_sandbox" in n or n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(built.wheel).read(entry_points).decode()
    assert "rotator = rotator.cli:main" in text
    assert "rotator.commands" not in text


def test_the_sandbox_wheel_holds_the_stand_ins_and_plugs_in_its_commands(built: Built) -> None:
    names = zipfile.ZipFile(built.sandbox_wheel).namelist()
    for module in ("commands", "demo", "bench", "bench_envs", "world", "kubeapi/server"):
        assert f"rotator_sandbox/{module}.py" in names
    assert "rotator_sandbox/py.typed" in names
    assert not any(n.startswith("rotator/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(built.sandbox_wheel).read(entry_points).decode()
    assert "[rotator.commands]" in text
    assert "demo = rotator_sandbox.commands:demo" in text


def test_every_installed_dependency_is_the_pinned_version(installed: Venv) -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[_canonical(name)] = version.strip()
    frozen = _run(
        [str(installed.path / "bin" / "python"), "-c", _LIST_DISTRIBUTIONS],
        cwd=installed.path,
        env=installed.env,
        timeout=60,
    )
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        if _canonical(name) in ("pip", "setuptools", "wheel", "rotator"):
            continue
        assert _canonical(name) in pins, f"{name} is installed but constraints.txt lacks it"
        assert pins[_canonical(name)] == version, f"{name} {version} != pinned"


def test_rotator_help_runs_from_the_fresh_venv_and_lists_no_sandbox_command(
    installed: Venv,
) -> None:
    home = Path(installed.env["HOME"])
    out = _run(["rotator", "--help"], cwd=home, env=installed.env, timeout=60)
    assert "Usage: rotator" in out
    for command in ("run", "schedule", "seal", "status", "verify", "watch"):
        assert f"  {command} " in out
    for command in ("demo", "bench", "sandbox"):
        assert f"  {command} " not in out
    # The package came from the venv, not from the source tree.
    where = _run(
        [str(installed.path / "bin" / "python"), "-c", "import rotator; print(rotator.__file__)"],
        cwd=home,
        env=installed.env,
        timeout=60,
    )
    assert where.strip().startswith(str(installed.path))


@pytest.mark.parametrize(
    "argv", [["demo"], ["demo", "--keep"], ["sandbox", "up"], ["bench", "--envs", "1"]]
)
def test_a_sandbox_command_without_the_sandbox_says_in_one_line_how_to_get_it(
    installed: Venv, argv: list[str]
) -> None:
    result = subprocess.run(
        ["rotator", *argv],
        cwd=installed.env["HOME"],
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"rotator {argv[0]}" in line
    assert "pip install -e ./sandbox" in line


def test_rotator_demo_runs_from_a_fresh_venv_with_the_sandbox_wheel(with_sandbox: Venv) -> None:
    home = Path(with_sandbox.env["HOME"])
    helped = _run(["rotator", "--help"], cwd=home, env=with_sandbox.env, timeout=60)
    for command in ("demo", "bench", "sandbox"):
        assert f"  {command} " in helped
    out = _run(["rotator", "demo"], cwd=home, env=with_sandbox.env, timeout=110)
    assert "succeeded" in out.lower() or "rotated" in out.lower(), out[-2000:]
