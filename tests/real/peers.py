"""Where the real components of the ``real`` tier are: the cache ``.ci/peers.sh`` builds.

Versions come from ``.ci/peers.env`` (the script's own pins), each overridable by the variable
of the same name, exactly as the script reads them; the folder is ``$ROTATOR_PEERS`` or
``${XDG_CACHE_HOME:-~/.cache}/rotator/peers``, one ``<name>-<version>/`` per component.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_ENV = ROOT / ".ci" / "peers.env"
BUILD_COMMAND = ".ci/peers.sh"
# Set by .ci/run: there a missing component is an error, not a skip.
REQUIRED_ENV = "ROTATOR_REAL_REQUIRED"
# What a module of the tier needs (its ``NEEDS``; default: everything).
PARTS = ("kubeseal", "controller", "kubernetes")


def pinned() -> dict[str, str]:
    """``.ci/peers.env`` as a dict, with environment overrides."""
    values: dict[str, str] = {}
    for raw_line in PEERS_ENV.read_text().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key] = os.environ.get(key) or (parts[0] if len(parts) == 1 else " ".join(parts))
    return values


def cache_dir() -> Path:
    if os.environ.get("ROTATOR_PEERS"):
        return Path(os.environ["ROTATOR_PEERS"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rotator" / "peers"


@dataclass(frozen=True)
class Peers:
    """Paths of the built binaries (which may not exist: see ``missing``)."""

    root: Path
    sealed_secrets_versions: tuple[str, ...]
    kubernetes_version: str
    etcd_version: str

    @property
    def current(self) -> str:
        """The current sealed-secrets release (the first one pinned)."""
        return self.sealed_secrets_versions[0]

    def kubeseal(self, version: str) -> Path:
        return self.root / f"kubeseal-{version}" / "kubeseal"

    def controller(self, version: str) -> Path:
        return self.root / f"sealed-secrets-controller-{version}" / "controller"

    def kube(self, binary: str) -> Path:
        return self.root / f"kubernetes-{self.kubernetes_version}" / binary

    @property
    def etcd(self) -> Path:
        return self.root / f"etcd-{self.etcd_version}" / "etcd"

    def crd(self, version: str) -> Path:
        """The SealedSecret CRD of that release (copied from its module by the script)."""
        return self.controller(version).parent / "bitnami.com_sealedsecrets.yaml"

    def needed(self, parts: tuple[str, ...] = PARTS) -> list[Path]:
        """The files the given parts of the tier need (``PARTS``)."""
        paths: list[Path] = []
        versions = self.sealed_secrets_versions
        if "kubeseal" in parts:
            paths += [self.kubeseal(v) for v in versions]
        if "controller" in parts:
            paths += [p for v in versions for p in (self.controller(v), self.crd(v))]
        if "kubernetes" in parts:
            paths += [
                self.kube(b) for b in ("kube-apiserver", "kube-controller-manager", "kubectl")
            ]
            paths.append(self.etcd)
        return paths

    def missing(self, parts: tuple[str, ...] = PARTS) -> list[Path]:
        return [p for p in self.needed(parts) if not p.is_file()]


def peers() -> Peers:
    values = pinned()
    return Peers(
        root=cache_dir(),
        sealed_secrets_versions=tuple(values["SEALED_SECRETS_VERSIONS"].split()),
        kubernetes_version=values["KUBERNETES_VERSION"],
        etcd_version=values["ETCD_VERSION"],
    )


def skip_line(missing: list[Path]) -> str:
    names = sorted({p.parent.name for p in missing})
    if len(names) > 3:
        names = [*names[:3], f"{len(names) - 3} more"]
    return (
        f"real tier: the tests that need {', '.join(names)} were left out (not built in "
        f"{cache_dir()}); build them with {BUILD_COMMAND}, then ./dev test -m real -n 0"
    )
