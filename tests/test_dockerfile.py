"""The Dockerfile: hadolint clean, and the properties the CronJob relies on.

No Docker engine exists here, so the image itself is never built; these tests read the
Dockerfile and .dockerignore, and ``test_wheel_install.py`` installs what the builder stage
installs into a fresh virtualenv and runs it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

import rotator
from rotator.cli import parse_args

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TOOLS_ENV = "ROTATOR_TOOLS_VENV"


def tool(name: str) -> Path:
    """A linter from the separate tools venv (.ci/tools-venv.sh); skip only when unset."""
    venv = os.environ.get(TOOLS_ENV)
    if not venv:
        pytest.skip(
            f"{TOOLS_ENV} is not set: run `.ci/tools-venv.sh DIR` and set {TOOLS_ENV}=DIR "
            "(.ci/run does both)"
        )
    path = Path(venv) / "bin" / name
    if not path.is_file():
        pytest.fail(f"{name} is missing from {venv}: run .ci/tools-venv.sh {venv}")
    return path


# --- a small Dockerfile reader ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def read_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name] = default
    return args


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


# --- .dockerignore (moby/patternmatcher semantics, for the patterns we use) -----------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        assert "[" not in pattern, f"unsupported pattern {line!r}"
        assert "\\" not in pattern, f"unsupported pattern {line!r}"
        rules.append((negate, _pattern_regex(pattern.strip("/"))))
    return rules


def is_in_context(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            included = negate
    return included


def docker_context_files(root: Path = ROOT) -> list[str]:
    """The files ``docker build .`` would send, relative to ``root``."""
    rules = dockerignore_rules(root / ".dockerignore")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if is_in_context(rel, rules):
                files.append(rel)
    return sorted(files)


# --- tests -----------------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_no_hadolint_rule_is_ignored_without_a_reason() -> None:
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        if "hadolint ignore" in line:
            reason = line.split("hadolint ignore", 1)[1].partition(" ")[2]
            assert reason.strip(), f"Dockerfile:{number}: an ignored rule needs a reason"


def test_the_image_is_multi_stage_on_a_pinned_slim_python() -> None:
    instructions = read_dockerfile()
    parts = stages(instructions)
    assert len(parts) == 2
    base = global_args(instructions)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert parts[0][0].args == "${PYTHON_IMAGE} AS builder"
    assert parts[1][0].args == "${PYTHON_IMAGE}"
    runtime = parts[1]
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "the runtime gets the venv only"


def test_the_builder_installs_the_wheel_with_pinned_dependencies() -> None:
    builder = stages(read_dockerfile())[0]
    run = " ".join(i.args for i in builder if i.keyword == "RUN")
    assert "pip wheel --no-cache-dir --no-deps" in run
    assert "pip install --no-cache-dir -c constraints.txt /wheels/rotator-*.whl" in run


def test_constraints_pin_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        re.split(r"==", line)[0].strip().lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is a dependency but constraints.txt does not pin it"


def test_the_runtime_runs_rotator_run_as_uid_10001_with_tmp_as_home() -> None:
    runtime = stages(read_dockerfile())[1]
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users[-1] == "10001:10001"
    env = env_of(runtime)
    assert env["HOME"] == "/tmp"
    assert env["TMPDIR"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    entry = [i.args for i in runtime if i.keyword == "ENTRYPOINT"]
    cmd = [i.args for i in runtime if i.keyword == "CMD"]
    assert entry == ['["/usr/bin/tini", "--", "rotator"]']
    assert cmd == ['["run"]']
    # The entry point is the console script, and `run` is a real command.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rotator"] == "rotator.cli:main"
    assert parse_args(["run"]).command == "run"


def test_the_runtime_installs_git_and_ssh_pinned_without_recommends() -> None:
    runtime = stages(read_dockerfile())[1]
    run = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "apt-get install -y --no-install-recommends" in run
    assert "rm -rf /var/lib/apt/lists/*" in run
    for package in ("git", "openssh-client", "procps", "tini"):
        assert re.search(rf"\s{package}=\S+", run), f"{package} is not version-pinned"


def test_tini_is_pid_1_and_hands_the_signals_to_rotator() -> None:
    # Debian's tini package installs /usr/bin/tini; "--" ends tini's own options, so the
    # CronJob's args (["--log-format", "json", "run"]) replace CMD and reach rotator.
    runtime = stages(read_dockerfile())[1]
    (entry,) = [json.loads(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    assert entry[:2] == ["/usr/bin/tini", "--"]
    assert entry[2:] == ["rotator"]
    run = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert re.search(r"\stini=0\.19\.\S+", run)


def test_the_license_file_is_apache_2_and_goes_into_the_wheel() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert (
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    )
    assert "LICENSE" in docker_context_files()
    builder = stages(read_dockerfile())[0]
    assert any(i.keyword == "COPY" and "LICENSE" in i.args.split() for i in builder)


def test_the_image_carries_oci_labels_with_the_package_version() -> None:
    runtime = stages(read_dockerfile())[1]
    labels = dict(
        item.partition("=")[::2]
        for ins in runtime
        if ins.keyword == "LABEL"
        for item in shlex.split(ins.args)
    )
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    version_arg = next(i.args for i in runtime if i.keyword == "ARG" and i.args.startswith("VER"))
    assert version_arg == f"VERSION={rotator.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == rotator.__version__
    license = project["license"]
    expected = license["text"] if isinstance(license, dict) else license
    assert labels["org.opencontainers.image.licenses"] == expected


def test_the_build_context_holds_what_the_builder_copies_and_nothing_else() -> None:
    files = docker_context_files()
    assert "pyproject.toml" in files
    assert "README.md" in files  # pyproject's `readme`: the wheel build needs it
    assert "constraints.txt" in files
    assert "rotator/cli.py" in files
    assert "rotator/py.typed" in files
    for path in files:
        assert path.split("/")[0] in (
            "pyproject.toml",
            "README.md",
            "LICENSE",
            "constraints.txt",
            "rotator",
        )
        assert "__pycache__" not in path
        assert not path.endswith(".pyc")
    # The sandbox (sandbox/: stand-ins, demo, bench) is its own distribution, not in the image.
    assert not any(path.startswith("sandbox/") for path in files)


def test_the_dockerignore_matcher_follows_dockers_rules() -> None:
    rules = [(False, _pattern_regex("*")), (True, _pattern_regex("src"))]
    rules.append((False, _pattern_regex("**/__pycache__")))
    assert is_in_context("src/a.py", rules)
    assert is_in_context("src/deep/b.py", rules)
    assert not is_in_context("tests/a.py", rules)
    assert not is_in_context("src/__pycache__/a.pyc", rules)
    assert not is_in_context("src/deep/__pycache__/a.pyc", rules)


def test_hadolint_would_catch_an_unpinned_base_and_a_root_user(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install git\nUSER root\n")
    result = subprocess.run(
        [str(tool("hadolint")), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3002"):
        assert rule in result.stdout, result.stdout
