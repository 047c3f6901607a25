"""rotator.errors is the whole exception tree: no module of the product defines another error."""

from __future__ import annotations

import ast
from pathlib import Path

import rotator
from rotator import errors

PRODUCT = Path(rotator.__file__).resolve().parent
# Module-private control flow, never raised out of its module, and the YAML loader's own error
# (a yaml.YAMLError that config.py turns into ConfigError at its boundary).
PRIVATE_OK = {"config.py": {"DuplicateKeyError"}}


def _exception_classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
            continue
        bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
        if any(b.endswith(("Error", "Exception", "Failed", "Timeout")) for b in bases) or any(
            getattr(errors, b, None) is not None for b in bases
        ):
            found.append(node.name)
    return found


def test_every_public_error_class_of_the_product_is_defined_in_errors() -> None:
    strays = []
    for path in sorted(PRODUCT.rglob("*.py")):
        rel = path.relative_to(PRODUCT)
        if path.name == "errors.py":
            continue
        allowed = PRIVATE_OK.get(str(rel), set())
        strays += [f"{rel}: {name}" for name in _exception_classes(path) if name not in allowed]
    assert strays == [], "define these in rotator/errors.py"


def test_the_docstring_draws_every_class_of_the_tree() -> None:
    tree_text = errors.__doc__ or ""
    classes = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.RotatorError)
    ]
    assert len(classes) > 10
    assert [
        name for name in classes if f"+-- {name}" not in tree_text and name != "RotatorError"
    ] == []


def test_a_step_failure_names_the_step_and_environment_and_never_the_secret() -> None:
    from rotator.redact import Secret
    from rotator.steps import Step

    key = Secret("phc_" + "k" * 40)
    failed = errors.StepFailed(Step.SEAL, "prod", errors.SealingError(f"bad {key.reveal()}"))
    assert str(failed).startswith("seal [prod]: bad ")
    assert key.reveal() not in str(failed)
    assert failed.exit_code is errors.ExitCode.FAILED
