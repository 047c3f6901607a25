"""Go-built tools the tests use (helm, promtool), installed by ``.ci/tools-go.sh``.

They live in ``$ROTATOR_TOOLS_BIN`` (default ``~/.cache/rotator/tools-bin``), or on PATH. When
one is absent its tests skip with one line that names the command that builds it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BUILD = ".ci/tools-go.sh (go install under nice -n 19 into $ROTATOR_TOOLS_BIN)"


def tools_bin() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rotator"
    return Path(os.environ.get("ROTATOR_TOOLS_BIN") or default / "tools-bin")


def go_tool(name: str) -> Path:
    """The tool's path, or skip the test naming the build command."""
    candidate = tools_bin() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    pytest.skip(f"{name} not installed: build it with {BUILD}")
