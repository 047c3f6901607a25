"""The whole sandbox world, startable from a pytest fixture or ``rotator sandbox up``.

What runs (all on 127.0.0.1, each in daemon threads of this process):

- the Kubernetes API stand-in (``kubeapi``), with a kubeconfig at ``<root>/kubeconfig``;
- the PostHog stand-in (``posthog``): project(s), a read-only personal API key (``project:read``,
  ``query:read``) and the service user (admin, TOTP device) whose session resets the key
  (``reset_method="personal_api_key"``: a self-hosted legacy PostHog whose legacy key resets);
- the Slack incoming-webhook receiver (``slack``);
- the ops repo: a bare git repo at ``<root>/ops.git`` (``git_remote_url`` is its ``file://`` URL;
  the plain path works too);
- the simulated controllers, ordinary API clients of the stand-in: sealed-secrets (a real RSA
  key, cert at the Service proxy path), ArgoCD, the Deployment rollout controller (and pods),
  and the gateway simulator that sends each Ready pod's events to PostHog with its key.

Ops-repo and Application layout (``manifests.py``): ``apps/<env>/gateway.yaml`` (Deployment
``align-<env>-gateway``), ``sealedsecrets/<env>/posthog.yaml`` (SealedSecret ``align-posthog``,
strict scope, ``rotator.align.dev/key-fingerprint`` template annotation). One Application per
env, ``align-<env>`` in ``argocd``, with ONE source: ``path: .``, ``directory.recurse: true``,
``directory.include: '{apps/<env>/*.yaml,sealedsecrets/<env>/*.yaml}'``, auto-sync on (no prune,
no self-heal), destination ``align-<env>``. One source keeps ``status.sync.revision`` a single
sha, as FACTS section 4 describes it; the files stay at the paths rotator's config names.

At start the Applications are created through the API, ArgoCD syncs the seed commit, the
controller unseals the initial keys and the gateway pods start with them; ``start()`` returns
when both environments are Synced, Healthy and their pods Ready (a few seconds with ``FAST``).

Time: every simulated delay is ``real-world seconds x timing.time_scale``. ``SandboxTiming()``
is the real world; ``FAST`` makes a whole rotation take a few seconds.

Fault hooks (for the reliability suite), all reversible with ``clear_faults()``:

- git: ``git.arm_concurrent_commit()`` (next push rejected after a colleague's commit),
  ``git.arm_commit_on_top(files)`` (a colleague's commit lands right after the next push),
  ``git.reject_pushes()``, ``git.unreachable()`` / ``make_unreachable()``, ``commit_directly()``;
- ArgoCD (``argocd_version="3.6"``, a constructor setting: the upstream version whose
  behaviour the stand-in follows where 2.x and 3.x differ): ``inject_sync_error(env, msg)``,
  ``inject_degraded(env, msg)``, ``inject_repo_hiccup(env, times)`` (repo-server reads fail),
  ``stick_argocd(env)`` (never picks up new commits),
  ``argocd.poll_s`` / ``sync_s``;
- sealed-secrets (``sealed_secrets_version="v0.36.6"``, a constructor setting: the release
  whose status writing the stand-in follows; v0.24.1 and v0.24.2 lie in different ways. Not
  ``--update-status=false``: ArgoCD's SealedSecret health check then says Progressing forever,
  so the world never converges): ``sealed.fail_unseal = msg``,
  ``sealed.fail_secret_writes = n``, ``sealed.before_status_write``, ``sealed.unseal_delay_s``,
  ``sealed.rotate_key(pair)``;
- rollout: ``never_ready(env)`` (new pods never Ready -> ProgressDeadlineExceeded after the
  Deployment's ``progressDeadlineSeconds`` x time scale);
- gateway: ``gateway.paused``;
- PostHog: ``posthog.inject(route, kind, ...)``, ``posthog.reset_key_out_of_band(pid)``;
- Slack: ``slack.fail_next(n, status=429|5xx, retry_after=...)``, ``slack.set_path_valid(False)``;
- Kubernetes: ``kube.expire_watch_history()`` (watches get 410 Gone).
"""

from __future__ import annotations

import argparse
import base64
import functools
import logging
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import yaml

from rotator.clients.sealing import SealingCert, load_cert
from rotator.config import Config, load_config
from rotator.names import FINGERPRINT_ANNOTATION
from rotator.redact import Secret
from rotator_sandbox import manifests
from rotator_sandbox.controllers.argocd import (
    REFRESH_ANNOTATION,
    ArgoCDController,
    parse_version,
)
from rotator_sandbox.controllers.base import (
    APP_PROJECT,
    APPLICATION,
    DEPLOYMENT,
    POD,
    ROLE,
    ROLE_BINDING,
    Kube,
    meta,
)
from rotator_sandbox.controllers.deployments import (
    KEY_FINGERPRINT_ANNOTATION,
    RESTARTED_AT,
    RolloutController,
    is_ready,
)
from rotator_sandbox.controllers.gateway import GatewaySimulator, PodEnv
from rotator_sandbox.controllers.sealedsecrets import LATEST as SEALED_SECRETS_LATEST
from rotator_sandbox.controllers.sealedsecrets import (
    PORT_NAME,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    SealedSecretsController,
)
from rotator_sandbox.controllers.sealedsecrets import parse_version as parse_sealed_secrets_version
from rotator_sandbox.gitremote import GitRemote
from rotator_sandbox.kubeapi import KubeApiServer
from rotator_sandbox.posthog import PostHogStandIn, generate_token
from rotator_sandbox.slack import SlackReceiver
from rotator_sandbox.unseal import ControllerKeyPair, generate_key_pair

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_GATEWAY_INTERVAL_S = 0.1
PERSONAL_KEY_ENV = "ROTATOR_POSTHOG_PERSONAL_API_KEY"
PASSWORD_ENV = "ROTATOR_POSTHOG_PASSWORD"
TOTP_SECRET_ENV = "ROTATOR_POSTHOG_TOTP_SECRET"
SERVICE_USER = "rotator@align.example"
SLACK_URL_ENV = "ROTATOR_SLACK_WEBHOOK_URL"
CONFIG_ENV = "ROTATOR_CONFIG"
# The job's own namespace (cronjob.yaml): the run's Lease lives there.
LOCK_NAMESPACE = "rotator"
SHARED_PROJECT = 1
PREVIEW_PROJECT = 1
PROD_PROJECT = 2


@dataclass(frozen=True)
class SandboxTiming:
    """Real-world delays (seconds) and the factor every one of them is multiplied by."""

    time_scale: float = 1.0
    argocd_poll_s: float | None = None  # None: the ArgoCD version's default (180 s / 120 s)
    argocd_jitter_s: float | None = None  # None: the version's default (0 s / 60 s)
    sync_s: float = 3.0
    unseal_s: float = 1.0
    pod_start_s: float = 10.0
    pod_ready_s: float = 5.0
    ingestion_window_s: float = 150.0
    ingestion_lag_s: float = 3.0
    gateway_rate_hz: float = 1.0

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def with_scale(self, time_scale: float) -> SandboxTiming:
        return replace(self, time_scale=time_scale)

    @property
    def gateway_interval_s(self) -> float:
        return max(MIN_GATEWAY_INTERVAL_S, self.time_scale / self.gateway_rate_hz)

    def wait(self, seconds: float, floor: float) -> float:
        """A rotator wait deadline for this world: the real one scaled, never under ``floor``."""
        return max(floor, seconds * self.time_scale)


FAST = SandboxTiming(time_scale=0.02)


@functools.lru_cache(maxsize=4)
def cached_key_pair(bits: int = 4096) -> ControllerKeyPair:
    """The controller's key pair, generated once per process per size (4096 bits takes ~1 s)."""
    return generate_key_pair(bits)


class Sandbox:
    """The sandbox world; ``with Sandbox(tmp_path) as sb: ...`` or ``start()`` / ``stop()``."""

    def __init__(
        self,
        root: Path,
        *,
        timing: SandboxTiming = FAST,
        replicas: int = 1,
        separate_projects: bool = False,
        rbac: bool = False,
        key_bits: int = 4096,
        key_pair: ControllerKeyPair | None = None,
        seed: int | None = None,
        previous_rotation: bool = True,
        argocd_version: str = "3.6",
        sealed_secrets_version: str = SEALED_SECRETS_LATEST,
        reset_method: str = "session",
        posthog_options: dict[str, Any] | None = None,
        envs: Sequence[str] = manifests.ENVS,
    ) -> None:
        if reset_method not in ("session", "personal_api_key"):
            raise ValueError("reset_method: session or personal_api_key")
        self.root = Path(root).absolute()
        self.reset_method = reset_method
        self.posthog_options = dict(posthog_options or {})
        # The environments (default preview and prod); any other list shares one project.
        self.envs: tuple[str, ...] = tuple(envs)
        if not self.envs or len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs must be distinct and at least one: {self.envs}")
        if separate_projects and set(self.envs) != set(manifests.ENVS):
            raise ValueError("separate_projects needs the environments preview and prod")
        self.previous_rotation = previous_rotation
        self.argocd_version = argocd_version
        self.sealed_secrets_version = sealed_secrets_version
        self.timing = timing
        self.replicas = replicas
        self.separate_projects = separate_projects
        self.rbac = rbac
        self.key_pair = key_pair or cached_key_pair(key_bits)
        self.seed = seed
        self.kubeconfig_path = self.root / "kubeconfig"
        self.admin_kubeconfig_path = self.root / "admin.kubeconfig"
        self.config_path = self.root / "rotator.yaml"
        self.secrets_dir = self.root / "secrets"
        self.git = GitRemote(self.root)
        self.kube: KubeApiServer | None = None
        self.posthog: PostHogStandIn | None = None
        self.slack: SlackReceiver | None = None
        self.sealed: SealedSecretsController | None = None
        self.rollout: RolloutController | None = None
        self.argocd: ArgoCDController | None = None
        self.gateway: GatewaySimulator | None = None
        self.client: Kube | None = None
        self.personal_key: Secret | None = None
        self.service_password: Secret | None = None
        self.totp_secret: Secret | None = None
        self.initial_keys: dict[str, Secret] = {}
        self.seed_revision = ""
        self.started_in_s = 0.0
        self._stoppers: list[Callable[[], None]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, wait_s: float = 60.0) -> Sandbox:
        if self._stoppers:
            return self  # already running
        began = time.monotonic()
        try:
            self._start()
            self.wait_converged(timeout=wait_s)
            if self.previous_rotation:
                self._mark_rotated(timeout=wait_s)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        log.info("sandbox: up in %.2fs at %s", self.started_in_s, self.root)
        return self

    def _start(self) -> None:
        t = self.timing
        self.root.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)

        self._start_kube()

        options: dict[str, Any] = {
            "flavour": "cloud" if self.reset_method == "session" else "self_hosted_legacy",
            **self.posthog_options,
        }
        posthog = self.posthog = PostHogStandIn(
            window_s=t.scaled(t.ingestion_window_s), lag_s=t.scaled(t.ingestion_lag_s), **options
        ).start()
        self._stoppers.append(posthog.stop)
        if self.separate_projects:
            self.initial_keys = {
                "preview": posthog.add_project(PREVIEW_PROJECT, "Preview"),
                "prod": posthog.add_project(PROD_PROJECT, "Production"),
            }
        else:
            shared = posthog.add_project(SHARED_PROJECT, "Align")
            self.initial_keys = dict.fromkeys(self.envs, shared)
        if self.reset_method == "session":
            # The README's setup: a read-only personal key, and a service user (admin, TOTP).
            self.personal_key = posthog.add_personal_key(
                generate_token("phx_"),
                scoped=True,
                legacy=False,
                scopes=("project:read", "query:read"),
            )
        else:  # an old self-hosted PostHog: a legacy key without scopes may reset
            self.personal_key = posthog.add_personal_key(generate_token("phx_"), legacy=True)
        self.service_password = Secret(generate_token("pw_", 18))
        self.totp_secret = Secret(base64.b32encode(secrets.token_bytes(20)).decode())
        posthog.login_flow.add_user(
            SERVICE_USER,
            self.service_password.reveal(),
            totp_secret=self.totp_secret.reveal(),
            totp_step_s=self.totp_step_s,
        )

        slack = self.slack = SlackReceiver().start()
        self._stoppers.append(slack.stop)

        client = self.client = Kube(self.admin_kubeconfig_path)
        self._stoppers.append(client.close)
        for ns in (
            SERVICE_NAMESPACE,
            manifests.ARGOCD_NAMESPACE,
            LOCK_NAMESPACE,
            *map(manifests.namespace, self.envs),
        ):
            client.ensure_namespace(ns)

        cluster_controllers, pods = self._start_cluster_controllers()
        self.argocd = ArgoCDController(
            self.admin_kubeconfig_path,
            version=self.argocd_version,
            poll_s=t.argocd_poll_s,
            jitter_s=t.argocd_jitter_s,
            sync_s=t.sync_s,
            time_scale=t.time_scale,
            seed=self.seed,
        )
        self.gateway = GatewaySimulator(
            self.admin_kubeconfig_path,
            rollout=pods,
            ingest_url=posthog.ingest_url,
            interval_s=t.gateway_interval_s,
        )
        for controller in (*cluster_controllers, self.argocd, self.gateway):
            controller.start()
            self._stoppers.append(controller.stop)

        files = manifests.ops_repo_files(
            keys=self.initial_keys,
            cert=self.cert(),
            repo_url=self.git_remote_url,
            replicas=self.replicas,
            branch=self.git.branch,
            envs=self.envs,
        )
        self.seed_revision = self.git.create(files)
        client.create(APP_PROJECT, manifests.ARGOCD_NAMESPACE, manifests.app_project())
        for env in self.envs:
            app = manifests.application(env, repo_url=self.git_remote_url, branch=self.git.branch)
            client.create(APPLICATION, manifests.ARGOCD_NAMESPACE, app)
        if self.rbac:
            self._grant_rotator_rbac()
        self._write_secret_files()
        self.write_config()

    def _start_kube(self) -> None:
        """The Kubernetes API (the stand-in) and the two kubeconfigs: admin and rotator's."""
        kube = self.kube = KubeApiServer(rbac=self.rbac, tls=True).start()
        self._stoppers.append(kube.stop)
        kube.write_kubeconfig(self.admin_kubeconfig_path)
        if self.rbac:
            token = generate_token("sa-", 24)
            kube.add_token(token, user="system:serviceaccount:align-prod:rotator")
            kube.write_kubeconfig(self.kubeconfig_path, token=token, user="rotator")
        else:
            kube.write_kubeconfig(self.kubeconfig_path)

    def _start_cluster_controllers(self) -> tuple[list[Any], PodEnv]:
        """The cluster's own controllers (not yet started): the sealed-secrets controller and
        the Deployment/ReplicaSet controllers with their kubelet; and what tells the gateway
        simulator each pod's environment. (tests/real replaces them with the real ones.)"""
        t = self.timing
        self.sealed = SealedSecretsController(
            self.admin_kubeconfig_path,
            key_pairs=[self.key_pair],
            unseal_delay_s=t.scaled(t.unseal_s),
            version=self.sealed_secrets_version,
        )
        self.rollout = RolloutController(
            self.admin_kubeconfig_path,
            pod_start_s=t.scaled(t.pod_start_s),
            pod_ready_s=t.scaled(t.pod_ready_s),
            time_scale=t.time_scale,
        )
        return [self.sealed, self.rollout], self.rollout

    def _grant_rotator_rbac(self) -> None:
        """With ``rbac=True`` rotator's kubeconfig is the ServiceAccount ``align-prod/rotator``;
        grant it exactly ``rotator.clients.kube.required_rbac`` (Roles + RoleBindings)."""
        from rotator.clients.kube import required_rbac

        client = self._client()
        rules = required_rbac(
            deployments=tuple(manifests.deployment_name(e) for e in self.envs),
            sealed_secrets=(manifests.SECRET_NAME,),
            applications=tuple(manifests.app_name(e) for e in self.envs),
            projects=(manifests.APP_PROJECT,),
        )
        where: dict[str, tuple[str, ...]] = {
            "app": tuple(manifests.namespace(e) for e in self.envs),
            "lock": (LOCK_NAMESPACE,),
            "argocd": (manifests.ARGOCD_NAMESPACE,),
            "controller": (SERVICE_NAMESPACE,),
        }
        for part, namespaces in where.items():
            for ns in namespaces:
                name = f"rotator-{part}"
                role = {
                    "metadata": {"name": name, "namespace": ns},
                    "rules": [r.to_rule() for r in rules[part]],  # type: ignore[index]
                }
                binding = {
                    "metadata": {"name": name, "namespace": ns},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "rotator", "namespace": "align-prod"}
                    ],
                }
                client.create(ROLE, ns, role)
                client.create(ROLE_BINDING, ns, binding)

    def _mark_rotated(self, *, timeout: float) -> None:
        """Make the world look like the end of a finished rotation: rotator's restart records
        the key fingerprint on the pod template (``rotator.align.dev/key-fingerprint``), so a
        first run sees a settled world and rotates, instead of completing a rotation it finds
        "in flight" (pods started for an unknown key)."""
        for env in self.envs:
            self.restart(env, key_fingerprint=self.initial_keys[env].fingerprint)
        self.wait_for(
            lambda: all(
                self.is_converged(env, self.seed_revision)
                and self.pod_key_fingerprints(env) == {self.initial_keys[env].fingerprint}
                and self._rolled_out(env)
                for env in self.envs
            ),
            timeout=timeout,
            what="the seed restart",
        )

    def _rolled_out(self, env: str) -> bool:
        d = self.deployment(env)
        status = d.get("status") or {}
        return bool(
            int(status.get("observedGeneration", 0)) >= int(meta(d).get("generation", 0))
            and status.get("updatedReplicas") == self.replicas
            and status.get("replicas") == self.replicas
            and status.get("availableReplicas") == self.replicas
        )

    def stop(self) -> None:
        """Stop everything that was started, newest first; safe to call twice."""
        for controller in (self.gateway, self.argocd, self.rollout, self.sealed):
            if controller is not None:
                controller.request_stop()  # all watches wind down at once
        while self._stoppers:
            stopper = self._stoppers.pop()
            try:
                stopper()
            except Exception:
                log.exception("sandbox: stopping %s failed", stopper)

    # -- addresses and config --------------------------------------------------------------------

    @property
    def git_remote_url(self) -> str:
        return self.git.url

    def cert(self) -> SealingCert:
        return load_cert(
            self.key_pair.cert_pem, source="the sandbox controller", now=datetime.now(UTC)
        )

    def project_id(self, env: str) -> int:
        if not self.separate_projects:
            return SHARED_PROJECT
        return PREVIEW_PROJECT if env == "preview" else PROD_PROJECT

    @property
    def totp_step_s(self) -> int:
        """The service user's TOTP device step: django_otp's ``TOTPDevice.step`` is a per-device
        field (default 30 s). A time-scaled sandbox enrols a shorter one, so two logins in a row
        wait seconds, not up to 30 s, for a fresh single-use code; never under 5 s, so a code
        still arrives within the one step of tolerance on a loaded machine."""
        if self.timing.time_scale >= 1:
            return 30
        return max(5, round(30 * self.timing.time_scale))

    def totp_uri(self) -> Secret:
        """The enrolment QR code's ``otpauth://totp/`` URI (Google's Key-Uri-Format, as
        django_otp's ``TOTPDevice.config_url`` writes it: ``period`` only when not 30)."""
        assert self.totp_secret is not None
        period = "" if self.totp_step_s == 30 else f"&period={self.totp_step_s}"
        return Secret(
            f"otpauth://totp/PostHog:{SERVICE_USER}?secret={self.totp_secret.reveal()}"
            f"&issuer=PostHog{period}"
        )

    def environ(self) -> dict[str, str]:
        """The env vars rotator reads its secrets (and config path) from."""
        assert self.personal_key is not None, "start() first"
        assert self.slack is not None
        assert self.service_password is not None
        assert self.totp_secret is not None
        return {
            PERSONAL_KEY_ENV: self.personal_key.reveal(),
            PASSWORD_ENV: self.service_password.reveal(),
            TOTP_SECRET_ENV: self.totp_uri().reveal(),
            SLACK_URL_ENV: self.slack.url.reveal(),
            CONFIG_ENV: str(self.config_path),
        }

    def load_config(self) -> Config:
        return load_config(self.config_path, environ=self.environ())

    def config_tree(self) -> dict[str, Any]:
        assert self.posthog is not None
        t = self.timing
        envs: dict[str, Any] = {}
        for env in self.envs:
            envs[env] = {
                "posthog_project_id": self.project_id(env),
                "namespace": manifests.namespace(env),
                "secret_name": manifests.SECRET_NAME,
                "secret_key": manifests.DATA_KEY,
                "sealed_file": manifests.sealed_path(env),
                "scope": "strict",
                "cert": {
                    "controller": {
                        "name": SERVICE_NAME,
                        "namespace": SERVICE_NAMESPACE,
                        "port_name": PORT_NAME,
                    }
                },
                "argocd_app": {
                    "name": manifests.app_name(env),
                    "namespace": manifests.ARGOCD_NAMESPACE,
                },
                "deployment": manifests.deployment_name(env),
                "restart": "rollout-restart",
                "gateway_event_filter": f"properties.environment = '{env}'",
            }
        return {
            "posthog": {
                "app_host": self.posthog.url,
                "ingest_host": self.posthog.ingest_url,
                "personal_api_key": {"env": PERSONAL_KEY_ENV},
                # The sandbox's PostHog runs 1/time_scale times faster: so may the queries.
                "query_budget_per_hour": min(36000, round(120 / t.time_scale)),
                "reset": {
                    "method": self.reset_method,
                    "email": SERVICE_USER,
                    "password": {"env": PASSWORD_ENV},
                    "totp_secret": {"env": TOTP_SECRET_ENV},
                },
            },
            "environments": envs,
            "git": {
                "remote": self.git_remote_url,
                "branch": self.git.branch,
                "author_name": "rotator",
                "author_email": "rotator@sandbox.invalid",
                "workdir": str(self.root / "checkout"),
                "push_attempts": 3,
            },
            "slack": {"enabled": True, "webhook_url": {"env": SLACK_URL_ENV}},
            "kubernetes": {"kubeconfig": str(self.kubeconfig_path)},
            "lock": {"namespace": LOCK_NAMESPACE, "name": "rotator-posthog", "duration_s": 15},
            "waits": {
                "argocd_s": t.wait(600, 20),
                "unseal_s": t.wait(180, 10),
                "rollout_s": t.wait(600, 20),
                "marker_s": t.wait(300, 15),
                "gateway_events_s": t.wait(420, 20),
                "ingestion_window_s": t.scaled(t.ingestion_window_s),
                "poll_interval_s": max(0.05, t.scaled(2)),
                "reset_readback_s": t.wait(30, 1),
                "watch_timeout_s": max(1, round(t.scaled(30))),
            },
            "timeouts": {"connect_s": 2, "read_s": 10, "attempts": 3},
            "schedule": {"cron": "0 6 * * 1", "timezone": "Europe/London", "misfire_grace_s": 3600},
            "metrics": {"file": None, "pushgateway_url": None},
        }

    def write_config(self) -> Path:
        header = "# rotator config for the sandbox at " + str(self.root) + " (written by it)\n"
        self.config_path.write_text(header + yaml.safe_dump(self.config_tree(), sort_keys=False))
        return self.config_path

    def _write_secret_files(self) -> None:
        assert self.personal_key is not None
        assert self.slack is not None
        assert self.service_password is not None
        assert self.totp_secret is not None
        for name, secret in (
            ("posthog-personal-api-key", self.personal_key),
            ("posthog-password", self.service_password),
            ("posthog-totp-secret", self.totp_uri()),
            ("slack-webhook-url", self.slack.url),
        ):
            path = self.secrets_dir / name
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            path.write_text(secret.reveal() + "\n")

    # -- observing -------------------------------------------------------------------------------

    def _client(self) -> Kube:
        assert self.client is not None, "start() first"
        return self.client

    def application(self, env: str) -> dict[str, Any]:
        app = self._client().get(APPLICATION, manifests.ARGOCD_NAMESPACE, manifests.app_name(env))
        assert app is not None
        return app

    def deployment(self, env: str) -> dict[str, Any]:
        d = self._client().get(DEPLOYMENT, manifests.namespace(env), manifests.deployment_name(env))
        assert d is not None
        return d

    def gateway_pods(self, env: str, *, ready_only: bool = True) -> list[dict[str, Any]]:
        pods = self._client().list(
            POD, manifests.namespace(env), label_selector=f"app={manifests.APP_LABEL},env={env}"
        )[0]
        return [p for p in pods if is_ready(p) or not ready_only]

    def pod_key_fingerprints(self, env: str) -> set[str]:
        """Key fingerprints the Ready gateway pods of ``env`` started with."""
        return {
            str((meta(p).get("annotations") or {}).get(KEY_FINGERPRINT_ANNOTATION, ""))
            for p in self.gateway_pods(env)
        }

    def is_converged(self, env: str, revision: str | None = None) -> bool:
        """Synced + Healthy at ``revision`` (default: branch tip), no operation, pods Ready."""
        app = self.application(env)
        status = app.get("status") or {}
        rev = revision or self.git.head()
        op = status.get("operationState") or {}
        ok = (
            app.get("operation") is None
            and (status.get("sync") or {}).get("status") == "Synced"
            and (status.get("sync") or {}).get("revision") == rev
            and (status.get("health") or {}).get("status") == "Healthy"
            and op.get("phase") == "Succeeded"
            and not status.get("conditions")
        )
        return ok and len(self.gateway_pods(env)) == self.replicas

    def wait_converged(self, *, timeout: float = 60.0) -> None:
        self.wait_for(
            lambda: all(self.is_converged(env, self.seed_revision) for env in self.envs),
            timeout=timeout,
            what="the sandbox to sync its seed commit",
        )

    @staticmethod
    def wait_for(
        predicate: Callable[[], T],
        *,
        timeout: float,
        what: str = "a condition",
        every: float = 0.05,
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(every)

    # -- acting like a person --------------------------------------------------------------------

    def refresh_app(self, env: str) -> None:
        """``argocd.argoproj.io/refresh: normal``, as rotator (or the ArgoCD UI) does."""
        self._client().patch(
            APPLICATION,
            manifests.ARGOCD_NAMESPACE,
            manifests.app_name(env),
            {"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}},
        )

    def restart(self, env: str, *, key_fingerprint: str | None = None) -> None:
        """``kubectl rollout restart``: the restartedAt template annotation (strategic merge);
        with ``key_fingerprint`` also rotator's record of the key the pods start for."""
        annotations = {RESTARTED_AT: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        if key_fingerprint is not None:
            annotations[FINGERPRINT_ANNOTATION] = key_fingerprint
        self._client().patch(
            DEPLOYMENT,
            manifests.namespace(env),
            manifests.deployment_name(env),
            {"spec": {"template": {"metadata": {"annotations": annotations}}}},
            strategic=True,
        )

    def push_sealed_key(self, envs: tuple[str, ...], key: Secret, *, message: str = "") -> str:
        """Commit files sealed for ``key`` straight to the remote (as a person would push)."""
        cert = self.cert()
        files = {
            manifests.sealed_path(e): manifests.sealed_posthog(e, key=key, cert=cert) for e in envs
        }
        return self.git.commit_directly(
            files, message=message or f"Rotate PostHog key ({key.fingerprint})"
        )

    # -- faults ----------------------------------------------------------------------------------

    def inject_sync_error(self, env: str, message: str = "injected sync error") -> None:
        assert self.argocd is not None
        self.argocd.sync_errors[manifests.app_name(env)] = message

    def inject_degraded(self, env: str, message: str = "injected: gateway is degraded") -> None:
        assert self.argocd is not None
        self.argocd.degraded[manifests.app_name(env)] = message
        self.argocd.refresh(manifests.app_name(env))

    def inject_repo_hiccup(self, env: str, times: int = 1) -> None:
        """The next ``times`` repo-server reads for ``env``'s app fail (a restart, a blip)."""
        assert self.argocd is not None
        self.argocd.repo_hiccups[manifests.app_name(env)] = times

    def stick_argocd(self, env: str) -> None:
        assert self.argocd is not None
        self.argocd.stuck(manifests.app_name(env))

    def never_ready(self, env: str, value: bool = True) -> None:
        assert self.rollout is not None
        self.rollout.set_never_ready(
            manifests.namespace(env), manifests.deployment_name(env), value
        )

    def clear_faults(self) -> None:
        if self.argocd is not None:
            self.argocd.sync_errors.clear()
            self.argocd.degraded.clear()
            self.argocd.repo_hiccups.clear()
            for env in self.envs:
                self.argocd.unstick(manifests.app_name(env))
        if self.rollout is not None:
            for env in self.envs:
                self.never_ready(env, False)
        if self.sealed is not None:
            self.sealed.fail_unseal = None
        if self.gateway is not None:
            self.gateway.paused = False
        self.git.make_reachable()
        self.git.accept_pushes()
        if self.posthog is not None:
            self.posthog.clear_faults()


# --- rotator sandbox up ---------------------------------------------------------------------------


def describe(sandbox: Sandbox) -> str:
    """Where everything is; secrets only as file paths and fingerprints."""
    assert sandbox.kube is not None
    assert sandbox.posthog is not None
    assert sandbox.slack is not None
    assert sandbox.sealed is not None
    s = sandbox.secrets_dir
    lines = [
        f"rotator sandbox is up (started in {sandbox.started_in_s:.1f}s, "
        f"time scale {sandbox.timing.time_scale:g})",
        f"  Kubernetes API   {sandbox.kube.url}",
        f"  kubeconfig       {sandbox.kubeconfig_path}",
        f"  rotator config   {sandbox.config_path}",
        f"  PostHog          {sandbox.posthog.url}  (projects: "
        + ", ".join(f"{e}={sandbox.project_id(e)}" for e in sandbox.envs)
        + ")",
        f"  Slack webhook    {sandbox.slack.base_url}/services/...  "
        f"(URL {sandbox.slack.url.fingerprint})",
        f"  git remote       {sandbox.git.path}  ({sandbox.git_remote_url})",
        f"  sealing cert     {sandbox.sealed.url}/v1/cert.pem  (also via the API service proxy)",
        "",
        "Use it:",
        f"  export KUBECONFIG={sandbox.kubeconfig_path}",
        f'  export {PERSONAL_KEY_ENV}="$(cat {s / "posthog-personal-api-key"})"',
        f'  export {SLACK_URL_ENV}="$(cat {s / "slack-webhook-url"})"',
        f"  export {CONFIG_ENV}={sandbox.config_path}",
        "  kubectl get deploy,sealedsecrets,applications -A",
        "  rotator status && rotator run",
        "",
        "Ctrl-C stops it.",
    ]
    return "\n".join(lines)


def up_command(args: argparse.Namespace) -> int:
    """``rotator sandbox up [--dir D] [--time-scale X] [--argocd-version V]
    [--sealed-secrets-version V]``: start, print, run until a signal."""
    scale = args.time_scale if args.time_scale is not None else FAST.time_scale
    argocd_version = getattr(args, "argocd_version", None) or "3.6"
    sealed_version = getattr(args, "sealed_secrets_version", None) or SEALED_SECRETS_LATEST
    try:
        parse_version(argocd_version)
    except ValueError as exc:
        print(f"rotator: --argocd-version: {exc}", file=sys.stderr)
        return 2
    try:
        parse_sealed_secrets_version(sealed_version)
    except ValueError as exc:
        print(f"rotator: --sealed-secrets-version: {exc}", file=sys.stderr)
        return 2
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rotator-sandbox-"))
    if (root / "ops.git").exists():
        print(
            f"rotator: {root} already holds a sandbox (ops.git); pick an empty --dir",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sandbox = Sandbox(
            root,
            timing=FAST.with_scale(scale),
            argocd_version=argocd_version,
            sealed_secrets_version=sealed_version,
        )
        # Start-up runs a sync, an unseal and two rollouts: ~40 s of real-world delays.
        sandbox.start(wait_s=max(60.0, 120.0 * scale))
        try:
            print(describe(sandbox), flush=True)
            while not stop.wait(0.5):
                pass
            print("rotator sandbox: stopping", file=sys.stderr)
        finally:
            sandbox.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = [
    "FAST",
    "Sandbox",
    "SandboxTiming",
    "cached_key_pair",
    "describe",
    "up_command",
]
