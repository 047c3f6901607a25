"""Fixtures and helpers for the end-to-end tests: whole rotator runs in the sandbox world.

Import the fixtures you use into your test module (pytest finds them by name)::

    from tests.e2e_fixtures import e2e_key_pair, make_sandbox

``e2e_key_pair`` (session): one 2048-bit sealed-secrets controller key pair for every sandbox
of the session (generating it is the slowest part of a start). ``make_sandbox(**kwargs)``: a
fresh, started and converged ``Sandbox`` with ``FAST`` timing under the test's tmp dir, stopped
in the finalizer; the keyword arguments go to ``Sandbox`` (``separate_projects=True``,
``rbac=True``, ...). Every test that changes the world gets its own (~2-3 s to start).

Helpers: ``config_for(sandbox, *overrides)`` (the sandbox's config, ``PATH=VALUE`` overrides
for shorter waits), ``rotate(sandbox, ...)`` (one ``run_once`` with a ``test`` trigger, with
the PostHog client's query spacing cut for the stand-in unless ``product_clients=True``),
``WorldState.of(sandbox)`` (what a run could have changed: resets, the remote's tip, the Lease,
the Deployments' pod templates) and ``capture_logs()`` (the product's log handler at DEBUG,
urllib3 and kubernetes included).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.clients.posthog import PostHogClient
from rotator.clients.transport import RetryPolicy
from rotator.clock import SystemClock
from rotator.config import Config, RunSwitches, load_config
from rotator.logs import setup_logging
from rotator.report import RunReport
from rotator.runner import Clients, build_clients, run_once
from rotator_sandbox import manifests
from rotator_sandbox.controllers.base import LEASE
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import FAST, Sandbox, cached_key_pair

ENVS = tuple(manifests.ENVS)
LEASE_NAMESPACE = "rotator"
LEASE_NAME = "rotator-posthog"
NOISY_LOGGERS = ("urllib3", "kubernetes", "git", "requests")

MakeSandbox = Callable[..., Sandbox]


@pytest.fixture(scope="session")
def e2e_key_pair() -> ControllerKeyPair:
    return cached_key_pair(2048)


@pytest.fixture
def make_sandbox(tmp_path: Path, e2e_key_pair: ControllerKeyPair) -> Iterator[MakeSandbox]:
    """A factory of started sandboxes (each stopped in the finalizer)."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("timing", FAST)
        kwargs.setdefault("key_pair", e2e_key_pair)
        kwargs.setdefault("seed", 1)
        world = Sandbox(tmp_path / f"sandbox-{len(started)}", **kwargs)
        started.append(world)
        return world.start()

    try:
        yield make
    finally:
        for world in reversed(started):
            world.stop()


def start_sandbox(root: Path, key_pair: ControllerKeyPair, **kwargs: Any) -> Sandbox:
    """For module-scoped fixtures: start a sandbox under ``root`` (the caller stops it)."""
    kwargs.setdefault("timing", FAST)
    kwargs.setdefault("seed", 1)
    return Sandbox(root, key_pair=key_pair, **kwargs).start()


def config_for(sandbox: Sandbox, *overrides: str) -> Config:
    """The sandbox's rotator config, with ``PATH=VALUE`` overrides (e.g. ``waits.argocd_s=2``)."""
    return load_config(sandbox.config_path, environ=sandbox.environ(), overrides=overrides)


# The stand-in has no query rate limit: space queries 0.1 s apart instead of PostHog's 1.5 s
# (2400/h), which would otherwise make every Live Events check take 3-5 s.
SANDBOX_QUERY_INTERVAL_S = 0.1


def sandbox_clients(config: Config) -> Clients:
    """``build_clients`` with the PostHog client's query spacing set for the stand-in."""
    clock = SystemClock()
    clients = build_clients(config, clock=clock)
    key = config.secrets.posthog_personal_api_key
    assert key is not None
    t = config.timeouts
    clients.posthog.close()
    clients.posthog = PostHogClient(
        app_host=config.posthog.app_host,
        ingest_host=config.posthog.ingest_host,
        personal_key=key,
        timeout=(t.connect_s, t.read_s),
        retry=RetryPolicy(attempts=t.attempts),
        clock=clock,
        query_interval_s=SANDBOX_QUERY_INTERVAL_S,
    )
    return clients


def rotate(
    sandbox: Sandbox,
    *overrides: str,
    config: Config | None = None,
    product_clients: bool = False,
    **switches: Any,
) -> RunReport:
    """One ``run_once`` in the sandbox (trigger ``test`` unless given). The clients are the
    product's own with ``product_clients=True``, else ``sandbox_clients`` (faster checks)."""
    switches.setdefault("trigger", "test")
    config = config or config_for(sandbox, *overrides)
    clients = None if product_clients else sandbox_clients(config)
    return run_once(config, RunSwitches(**switches), clients=clients)


def resets(sandbox: Sandbox) -> int:
    """Key resets through the API (``PATCH .../reset_token/``) the stand-in answered."""
    assert sandbox.posthog is not None
    return sandbox.posthog.calls("reset_token")


def lease(sandbox: Sandbox) -> dict[str, Any] | None:
    assert sandbox.client is not None
    return sandbox.client.get(LEASE, LEASE_NAMESPACE, LEASE_NAME)


@dataclass(frozen=True)
class WorldState:
    """Everything a rotation run changes, to prove that a run changed nothing."""

    reset_calls: int
    keys: tuple[str, ...]
    remote_head: str
    lease: Any
    pod_templates: tuple[Any, ...]
    app_operations: tuple[Any, ...]

    @classmethod
    def of(cls, sandbox: Sandbox) -> WorldState:
        assert sandbox.posthog is not None
        pids = sorted({sandbox.project_id(e) for e in ENVS})
        held = lease(sandbox)
        return cls(
            reset_calls=resets(sandbox),
            keys=tuple(sandbox.posthog.current_key(p).fingerprint for p in pids),
            remote_head=sandbox.git.head(),
            lease=None if held is None else held.get("spec"),
            pod_templates=tuple(
                (sandbox.deployment(e).get("spec") or {}).get("template", {}).get("metadata")
                for e in ENVS
            ),
            app_operations=tuple(sandbox.application(e).get("operation") for e in ENVS),
        )


@contextlib.contextmanager
def capture_logs() -> Iterator[io.StringIO]:
    """The product's log handler (``setup_logging``: context and redacting filters) at DEBUG,
    with urllib3, kubernetes and git turned up to DEBUG too; everything restored afterwards."""
    root = logging.getLogger()
    saved_root = root.level
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    stream = io.StringIO()
    handler = setup_logging(fmt="text", level=logging.DEBUG, stream=stream)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def secret_forms(value: str) -> set[str]:
    """The value and the encodings a leak would take (base64 as in a Secret's data)."""
    import base64

    forms = {value, base64.b64encode(value.encode()).decode()}
    if value.startswith("http"):
        # A Slack webhook's credential is its path: a request log line carries only the path.
        forms.add(value.split("/services/", 1)[-1])
    return forms


def find_leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets (name -> clear value) that appear in ``text`` in any form."""
    return sorted(
        name for name, value in secrets.items() if any(f in text for f in secret_forms(value))
    )
