"""The README cites only files that are in the repository (or says whose they are)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Files the README names that are not this repository's, each with whose it is.
NOT_OURS = {
    "sealedsecrets/preview/posthog.yaml": "the ops repo's sealed file",
    "sealedsecrets/prod/posthog.yaml": "the ops repo's sealed file",
    "controller.yaml": "sealed-secrets' release manifest",
    "bench.json": "an output file of `rotator bench --json-out`",
    "bench-envs.json": "an output file of `rotator bench --envs ... --json-out`",
    "my-values.yaml": "the reader's own Helm values",
    "DIR/rotator.yaml": "a placeholder for the reader's own config",
    "posthog.yaml": "part of sealedsecrets/<env>/posthog.yaml",
}
PATH = re.compile(
    r"(?<![\w/<>.-])((?:[\w.-]+/)*[\w.-]+\.(?:py|yaml|yml|md|txt|toml|sh|json|tpl))\b"
)


def cited(text: str) -> set[str]:
    return {m.group(1) for m in PATH.finditer(text) if not m.group(1).startswith(".")}


# The product's package and the sandbox's (its own distribution): a module path may be relative
# to either.
PACKAGES = (ROOT / "rotator", ROOT / "sandbox" / "src" / "rotator_sandbox")


def resolves(path: str) -> bool:
    """A path from the repository root, or a module path or bare module name in a package."""
    if (ROOT / path).exists() or any((package / path).exists() for package in PACKAGES):
        return True
    return "/" not in path and any(any(package.glob(f"**/{path}")) for package in PACKAGES)


def test_every_file_the_readme_cites_is_in_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    missing = sorted(p for p in cited(text) if p not in NOT_OURS and not resolves(p))
    assert missing == [], f"README.md cites files that are not in the repository: {missing}"


def test_the_check_would_catch_a_file_that_is_not_there() -> None:
    assert cited("see FACTS.md and `docs/guide.md`, and rotator/cli.py") == {
        "FACTS.md",
        "docs/guide.md",
        "rotator/cli.py",
    }
    assert not resolves("FACTS.md")
    assert resolves("rotator/cli.py")
    assert resolves("deployments.py")
