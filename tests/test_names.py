"""rotator.names: the names rotator writes into other systems have one home and fixed values."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator import names

ROOT = Path(__file__).resolve().parent.parent
# The product and, wherever it lives, the sandbox: its stand-ins read what rotator writes.
SOURCES = [p for p in (ROOT / "rotator", ROOT / "sandbox") if p.is_dir()]


def test_the_names_on_the_wire_keep_their_values() -> None:
    # Earlier rotations are found by these exact strings in git and in the cluster: a change
    # here makes every past rotation invisible to status, watch and the min-interval guard.
    assert names.FINGERPRINT_ANNOTATION == "rotator.align.dev/key-fingerprint"
    assert names.REPORTING_CONTROLLER == "rotator.align.dev/rotator"
    assert names.TRAILER_RUN_ID == "Rotator-Run-Id"
    assert names.TRAILER_TRIGGER == "Rotator-Trigger"
    assert names.TRAILER_KEY_FINGERPRINT == "Rotator-Key-Fingerprint"
    assert names.COMPONENT == "rotator"


def _string_literals(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def _spelled_out() -> list[str]:
    found = []
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            if path == Path(names.__file__).resolve():
                continue
            for line, value in _string_literals(path):
                if "rotator.align.dev/" in value or value.startswith("Rotator-"):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {value!r}")
    return found


def test_no_module_spells_out_an_annotation_or_trailer_name_instead_of_importing_it() -> None:
    assert _spelled_out() == [], "import these from rotator.names"


@pytest.mark.parametrize("name", ["EnvName", "ProjectId", "Fingerprint"])
def test_the_ids_are_defined_once_in_names(name: str) -> None:
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            if path == Path(names.__file__).resolve():
                continue
            text = path.read_text()
            assert f'NewType("{name}"' not in text, f"{path}: import {name} from rotator.names"
