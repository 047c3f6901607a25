"""The version and the git revision it was built from (``rotator --version``).

Kept apart from ``config`` so that ``--version`` stays fast (no pydantic import). The revision
comes from the image (``ROTATOR_REVISION``, set from the Dockerfile's ``REVISION`` build arg),
else from the git checkout the package runs from (an editable install), else "unknown".
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rotator import __version__

REVISION_ENV = "ROTATOR_REVISION"


def git_revision(source: Path | None = None) -> str:
    """The short commit of the checkout holding ``source`` (+ ``-dirty``), or "unknown"."""
    baked = os.environ.get(REVISION_ENV, "").strip()  # the image's build arg, not a setting
    if baked and baked != "unknown":
        return baked
    where = source or Path(__file__).resolve().parent
    try:
        # Only a tracked package is the checkout's code (a wheel installed into a venv that
        # happens to sit inside some git work tree is not).
        subprocess.run(
            ["git", "-C", str(where), "ls-files", "--error-unmatch", "__init__.py"],
            capture_output=True,
            timeout=5,
            check=True,
        )
        rev = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}-dirty" if dirty else rev or "unknown"


def version_text() -> str:
    return f"rotator {__version__} (revision {git_revision()})"
