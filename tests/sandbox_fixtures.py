"""Fixtures for tests that need the sandbox world or a piece of it.

Import the fixtures you use into your test module::

    from tests.sandbox_fixtures import sandbox, key_pair  # noqa: F401

``sandbox``: the whole world (``rotator_sandbox.world.Sandbox`` with ``FAST`` timing and a
shared 2048-bit controller key), started and converged, stopped in the finalizer;
``bare_sandbox`` the same without the seed restart that marks a finished rotation.
``kube_world``: only the Kubernetes API stand-in plus a kubeconfig and the sandbox namespaces;
start single controllers with ``kube_world.run(controller)`` (stopped in the finalizer).
``wait_for(predicate, timeout=..., what=...)``: a bounded poll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from rotator_sandbox.controllers.base import Kube
from rotator_sandbox.kubeapi import KubeApiServer
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import FAST, Sandbox, cached_key_pair

T = TypeVar("T")
NAMESPACES = ("kube-system", "argocd", "align-preview", "align-prod")


class _Stoppable(Protocol):
    def start(self) -> Any: ...

    def stop(self, timeout: float = ...) -> None: ...


def wait_for(predicate: Callable[[], T], *, timeout: float = 10.0, what: str = "it") -> T:
    return Sandbox.wait_for(predicate, timeout=timeout, what=what, every=0.02)


@pytest.fixture(scope="session")
def key_pair() -> ControllerKeyPair:
    return cached_key_pair(2048)


@pytest.fixture
def sandbox(tmp_path: Path, key_pair: ControllerKeyPair) -> Iterator[Sandbox]:
    world = Sandbox(tmp_path / "sandbox", timing=FAST, key_pair=key_pair, seed=1)
    world.start()
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture
def bare_sandbox(tmp_path: Path, key_pair: ControllerKeyPair) -> Iterator[Sandbox]:
    """Like ``sandbox`` without the seed restart that marks a finished rotation (faster; for
    tests of the controllers rather than of rotator runs)."""
    world = Sandbox(
        tmp_path / "sandbox", timing=FAST, key_pair=key_pair, seed=1, previous_rotation=False
    )
    world.start()
    try:
        yield world
    finally:
        world.stop()


@dataclass
class KubeWorld:
    api: KubeApiServer
    kubeconfig: Path
    kube: Kube
    _running: list[_Stoppable] = field(default_factory=list)

    def run(self, controller: T) -> T:
        controller.start()  # type: ignore[attr-defined]
        self._running.append(controller)  # type: ignore[arg-type]
        return controller


@pytest.fixture
def kube_world(tmp_path: Path) -> Iterator[KubeWorld]:
    api = KubeApiServer().start()
    world: KubeWorld | None = None
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        world = KubeWorld(api=api, kubeconfig=kubeconfig, kube=Kube(kubeconfig))
        for ns in NAMESPACES:
            world.kube.ensure_namespace(ns)
        yield world
    finally:
        if world is not None:
            for controller in reversed(world._running):
                controller.stop()
            world.kube.close()
        api.stop()
