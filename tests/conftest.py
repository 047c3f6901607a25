"""Suite-wide hooks: the ``real`` tier (tests/real) runs only when its components are built.

Without them its tests are deselected and the run ends with ONE line naming the command that
builds them (``.ci/peers.sh``); with ``ROTATOR_REAL_REQUIRED=1`` (``.ci/run``) they are errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.real import peers as real_peers

REAL_DIR = Path(__file__).parent / "real"


def _real_missing() -> list[Path]:
    return real_peers.peers().missing()


def _needs(item: pytest.Item) -> tuple[str, ...]:
    module = getattr(item, "module", None)
    return tuple(getattr(module, "NEEDS", real_peers.PARTS))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = [i for i in items if Path(str(i.path)).is_relative_to(REAL_DIR)]
    for item in real:
        item.add_marker(pytest.mark.real)
        # One worker runs the whole tier (with --dist loadgroup): one control plane, not two.
        item.add_marker(pytest.mark.xdist_group("real"))
    if not real or os.environ.get(real_peers.REQUIRED_ENV) == "1":
        return
    found = real_peers.peers()
    absent = [i for i in real if found.missing(_needs(i))]
    if absent:
        config.hook.pytest_deselected(items=absent)
        chosen = set(map(id, absent))
        items[:] = [i for i in items if id(i) not in chosen]


def _asks_for_real(config: pytest.Config) -> bool:
    args = config.args or [str(Path(__file__).parent)]
    for arg in args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == REAL_DIR or REAL_DIR.is_relative_to(path) or path.is_relative_to(REAL_DIR):
            return True
    return False


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not _asks_for_real(config):
        return
    missing = _real_missing()
    if missing and os.environ.get(real_peers.REQUIRED_ENV) != "1":
        terminalreporter.write_line(real_peers.skip_line(missing))
