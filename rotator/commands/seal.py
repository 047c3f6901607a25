"""``rotator seal``: seal a PostHog project key into an environment's sealed file.

Replaces the runbook's ``make seal-posthog-<env>`` (kubeseal). The key is read from a hidden
prompt (asked twice) or from standard input, wrapped in a ``Secret`` at once, and leaves this
process only as ciphertext; what is printed and logged is its fingerprint.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rotator.commands.options import load_config_of, make_command
from rotator.errors import ConfigError, SealingError
from rotator.redact import Secret

if TYPE_CHECKING:
    # Imported where they are used: building the CLI (rotator --help) loads no crypto or config.
    from rotator.clients.sealing import SealingCert, ServiceProxy
    from rotator.clock import Clock
    from rotator.config import CertSource, Config, EnvironmentConfig

log = logging.getLogger(__name__)

PROJECT_KEY_MAX = 64
_PROJECT_KEY = re.compile(r"^phc_[0-9A-Za-z]+$")
_PROMPT = "PostHog project API key (phc_..., input hidden): "
_PROMPT_AGAIN = "Again, to check: "


def ensure_project_key(key: Secret) -> None:
    """Accept only a project key: ``phc_`` + base62, at most 64 characters (FACTS section 2)."""
    value = key.reveal()
    if value.startswith("phx_"):
        raise ConfigError(
            "that is a personal API key (phx_...), not the project key: copy the project API "
            "key (phc_...) from PostHog -> Project Settings -> Project API Keys"
        )
    if not value.startswith("phc_"):
        raise ConfigError(
            f"not a PostHog project key ({key.fingerprint}): a project key starts with phc_"
        )
    if len(value) > PROJECT_KEY_MAX:
        raise ConfigError(
            f"the key ({key.fingerprint}) is {len(value)} characters; a project key has at "
            f"most {PROJECT_KEY_MAX}"
        )
    if not _PROJECT_KEY.match(value):
        raise ConfigError(
            f"the key ({key.fingerprint}) has characters a project key never has: after phc_ "
            "come only letters and digits (check for a stray quote or space)"
        )


def read_key(*, from_stdin: bool) -> Secret:
    """The key from standard input (one line) or a hidden prompt asked twice."""
    if from_stdin:
        lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if len(lines) != 1:
            raise ConfigError(
                f"--from-stdin expects exactly one line holding the key, got {len(lines)}"
            )
        return Secret(lines[0])
    if not sys.stdin.isatty():
        raise ConfigError(
            "no terminal for the hidden prompt; pipe the key in and pass --from-stdin"
        )
    first = Secret(getpass.getpass(_PROMPT).strip())
    second = Secret(getpass.getpass(_PROMPT_AGAIN).strip())
    if first != second:
        raise ConfigError("the two entries differ; nothing was written, try again")
    if not first:
        raise ConfigError("no key entered; nothing was written")
    return first


def cert_source(cert_arg: str | None, env: EnvironmentConfig) -> CertSource:
    """``--cert`` (a URL if it looks like one, else a file) or the environment's source."""
    from rotator.config import CertSource

    if cert_arg is None:
        return env.cert
    if cert_arg.startswith(("http://", "https://")):
        return CertSource(url=cert_arg)
    return CertSource(file=Path(cert_arg))


def kube_proxy(config: Config) -> ServiceProxy:
    """The Kubernetes client, only for a cert or a verify through the API server's proxy."""
    try:
        module: Any = importlib.import_module("rotator.clients.kube")
    except ModuleNotFoundError as exc:
        if exc.name != "rotator.clients.kube":
            raise
        raise ConfigError(
            "reaching the sealed-secrets controller needs the Kubernetes client "
            "(rotator.clients.kube), which this build does not have yet; pass "
            "--cert PEM-file-or-URL and leave out --verify"
        ) from exc
    proxy: ServiceProxy = module.Kube.from_config(config)
    return proxy


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # ciphertext only; the usual mode for a file in the ops repo
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def seal_command(
    args: argparse.Namespace,
    config: Config,
    *,
    clock: Clock | None = None,
    proxy: ServiceProxy | None = None,
) -> int:
    """Seal the key typed in for ``args.env``; ``proxy`` replaces the Kubernetes client."""
    from rotator.clients.sealing import update_sealed_file, verify_with_controller
    from rotator.clock import SystemClock
    from rotator.logs import log_context

    clock = clock or SystemClock()
    env_name: str = args.env
    env = config.env(env_name)
    with log_context(step="seal", env=env_name):
        repo = Path(args.repo)
        if not repo.is_dir():
            raise ConfigError(f"--repo {repo}: no such folder (the ops repo checkout)")
        source = cert_source(args.cert, env)
        controller = env.cert.controller
        if args.verify and controller is None:
            raise ConfigError(
                f"--verify asks the controller, but environments.{env_name}.cert names no "
                "controller"
            )
        needs_kube = source.controller is not None or bool(args.verify)
        if needs_kube and proxy is None:
            proxy = kube_proxy(config)
        cert = _fetch(source, proxy=proxy, config=config, clock=clock)
        key = read_key(from_stdin=bool(args.from_stdin))
        ensure_project_key(key)
        path = repo / env.sealed_file
        existing = path.read_text(encoding="utf-8") if path.exists() else None
        update = update_sealed_file(
            existing,
            value=key,
            namespace=env.namespace,
            name=env.secret_name,
            data_key=env.secret_key,
            scope=env.scope,
            cert=cert,
            path=str(path),
        )
        if args.verify:
            assert proxy is not None
            assert controller is not None
            if not verify_with_controller(update.text, proxy=proxy, controller=controller):
                raise SealingError(
                    f"the controller {controller.namespace}/{controller.name} cannot decrypt "
                    f"the result (cert {cert.fingerprint}); nothing was written: fetch the "
                    "controller's current cert and seal again"
                )
            log.info("the controller can decrypt the sealed file")
        write_atomically(path, update.text)
        print(f"sealed {path} for {env.namespace}/{env.secret_name} (key {update.fingerprint})")
    return 0


def _fetch(
    source: CertSource, *, proxy: ServiceProxy | None, config: Config, clock: Clock
) -> SealingCert:
    from rotator.clients.sealing import fetch_cert

    timeouts = config.timeouts
    cert = fetch_cert(
        source,
        proxy=proxy,
        timeout=(timeouts.connect_s, timeouts.read_s),
        now=clock.now(),
    )
    log.info("sealing with %s", cert.describe())
    return cert


command = make_command(
    "seal",
    lambda args: seal_command(args, load_config_of(args)),
    help="seal a project key into sealedsecrets/<env>/posthog.yaml",
    options=[
        click.option("--env", required=True, help="environment name from the config"),
        click.option(
            "--repo",
            type=click.Path(path_type=Path),
            default=Path(),
            help="ops repo checkout (default: .)",
        ),
        click.option(
            "--cert",
            default=None,
            help="PEM file or https URL of the sealing cert (default: from config)",
        ),
        click.option(
            "--from-stdin",
            is_flag=True,
            help="read the key from standard input instead of a hidden prompt",
        ),
        click.option(
            "--verify",
            is_flag=True,
            help="ask the controller's /v1/verify whether it can decrypt the result",
        ),
    ],
)

__all__ = ["cert_source", "command", "ensure_project_key", "read_key", "seal_command"]
