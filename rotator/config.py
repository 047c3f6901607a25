"""Typed, validated settings: the only reader of config files and of the environment.

Precedence: the YAML file < ``ROTATOR_<SECTION>__<FIELD>`` environment variables <
``--set PATH=VALUE`` flags. The result is a frozen ``Config``. Secrets never come from the YAML
itself: the file names where each secret lives (``{env: NAME}`` or ``{file: PATH}``) and the
loader reads it into a ``Secret``. A bad value is reported with its path and the fix, e.g.
``environments.prod.namespace: required``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rotator.errors import ConfigError
from rotator.names import EnvName, ProjectId
from rotator.redact import Secret

DEFAULT_CONFIG_PATH = Path("config/align.yaml")
# One namespace for every variable rotator reads: ROTATOR_. A setting is ROTATOR_ + its path
# with `__` between the levels (pydantic-settings' env_prefix + env_nested_delimiter:
# ROTATOR_GIT__BRANCH, ROTATOR_LOCK for a whole section); the run's switches (ROTATOR_DRY_RUN,
# ROTATOR_ENVS, ...), ROTATOR_CONFIG and the default secret variables have no `__` and name no
# section, so they are never read as settings.
ENV_PREFIX = "ROTATOR_"
ENV_NESTING = "__"
# Until the next release, also ROTATOR__<PATH> (the old prefix), with a warning naming the new.
DEPRECATED_ENV_PREFIX = "ROTATOR__"

log = logging.getLogger(__name__)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError("must be a lower-case DNS label (a-z, 0-9 and '-', at most 63 chars)")
    return value


def _dns_name(value: str) -> str:
    if not _DNS_SUBDOMAIN.match(value):
        raise ValueError("must be a lower-case DNS name (a-z, 0-9, '-' and '.')")
    return value


def _git_ident_name(value: str) -> str:
    # git ident.c fmt_ident: a name that is empty or only "crud" (bytes <= 32 and , : ; < > "
    # \ ') makes `git commit` die ("name consists only of disallowed characters"): that commit
    # comes after the reset, so refuse the name here.
    if not any(ord(c) > 32 and c not in ",:;<>\"\\'" for c in value):
        raise ValueError(
            "git refuses an author name that is empty or only spaces and , : ; < > \" \\ '"
        )
    return value


def _data_key(value: str) -> str:
    if not _DATA_KEY.match(value):
        raise ValueError("a Secret data key uses only letters, digits, '-', '_' and '.'")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsName = Annotated[str, AfterValidator(_dns_name)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SealingScope(StrEnum):
    """kubeseal's ``--scope``: what the RSA-OAEP label binds the ciphertext to."""

    STRICT = "strict"
    NAMESPACE_WIDE = "namespace-wide"
    CLUSTER_WIDE = "cluster-wide"


class RestartStrategy(StrEnum):
    ROLLOUT_RESTART = "rollout-restart"
    NONE = "none"


class SecretSource(_Model):
    """Where a secret lives: an environment variable or a mounted file, exactly one."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env: NAME` or `file: PATH`")
        return self

    def describe(self) -> str:
        return f"env {self.env}" if self.env else f"file {self.file}"


_URL = TypeAdapter(AnyHttpUrl)
_USERINFO = re.compile(r"(?<=//)[^/@]*@")


def _parsed_url(value: str) -> tuple[str, str]:
    """(scheme, host) of an absolute http(s) URL, parsed as pydantic's ``AnyHttpUrl`` (the WHATWG
    URL parser of the ``url`` crate); ``ValueError`` naming the fault and the fix otherwise. The
    value is quoted without its user-info, which may be a credential."""
    shown = _USERINFO.sub("***@", value)
    try:
        _URL.validate_python(value)
    except ValidationError as exc:
        fault = str(exc.errors()[0]["msg"]).removeprefix("Input should be a valid URL, ")
        raise PydanticCustomError(
            "url",
            "not a valid URL ({fault}): {shown}; write it as https://host[:port][/path]",
            {"fault": fault, "shown": shown},
        ) from None
    parts = urlsplit(value)
    if not parts.hostname:  # the parser forgives "https:/host"; requests does not
        raise PydanticCustomError(
            "url", "no host in {shown}; write it as https://host[:port][/path]", {"shown": shown}
        )
    if parts.username or parts.password:
        raise PydanticCustomError(
            "url", "URLs must not carry credentials; use a secret source instead", {}
        )
    return parts.scheme, parts.hostname


def check_url(value: str) -> str:
    """https, or http to a loopback address (the sandbox); never credentials in the URL."""
    scheme, host = _parsed_url(value)
    if scheme == "http" and not is_loopback(host):
        raise PydanticCustomError(
            "url", "use https (plain http is allowed only for loopback addresses)", {}
        )
    return value.rstrip("/")


def check_service_url(value: str) -> str:
    """http or https (an in-cluster service such as a Pushgateway); never credentials."""
    _parsed_url(value)
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1): where plain http is acceptable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A URL of an outside system: https (or http to a loopback address), no credentials.
HttpsUrl = Annotated[str, AfterValidator(check_url)]
# A URL of an in-cluster service, where plain http is the norm (the Pushgateway): no credentials.
ServiceUrl = Annotated[str, AfterValidator(check_service_url)]


class ResetMethod(StrEnum):
    """How the project key is reset (FACTS section 2).

    ``session``: as PostHog's web app does, logged in as a service user (the only way on
    PostHog Cloud and on self-hosted PostHog built after PR #51237, 2026-03-17);
    ``personal_api_key``: with a legacy personal key without scopes, only on self-hosted
    PostHog older than that.
    """

    SESSION = "session"
    PERSONAL_API_KEY = "personal_api_key"


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class ResetConfig(_Model):
    method: ResetMethod = ResetMethod.SESSION
    # The service user: admin of the project(s), a TOTP device, no SSO enforced on its domain.
    email: str | None = None
    password: SecretSource = SecretSource(env="ROTATOR_POSTHOG_PASSWORD")
    totp_secret: SecretSource = SecretSource(env="ROTATOR_POSTHOG_TOTP_SECRET")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError("an email address (the PostHog service user's login)")
        return value


class PostHogConfig(_Model):
    app_host: HttpsUrl = "https://eu.posthog.com"
    ingest_host: HttpsUrl = "https://eu.i.posthog.com"
    # Read-only: scopes project:read and query:read (the reset uses `reset`).
    personal_api_key: SecretSource = SecretSource(env="ROTATOR_POSTHOG_PERSONAL_API_KEY")
    reset: ResetConfig = ResetConfig()
    # `/e/` is served by Cloud's Rust capture and by older self-hosted Django capture alike;
    # `/i/v0/e/` only by the former (FACTS section 2).
    capture_path: str = "/e/"
    # HogQL queries per hour this personal key may spend (HogQLQueryThrottle: 120/hour on
    # legacy teams and self-hosted, 2400/hour otherwise); rotator spaces its queries to fit.
    query_budget_per_hour: Annotated[float, Field(gt=0, le=36000)] = 120

    @field_validator("capture_path")
    @classmethod
    def _capture_path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9_/.-]*", value) or ".." in value:
            raise ValueError("a URL path on the ingestion host, such as /e/ or /i/v0/e/")
        return value


class ControllerRef(_Model):
    """The sealed-secrets controller's Service, reached through the API server's proxy."""

    name: DnsLabel = "sealed-secrets-controller"
    namespace: DnsLabel = "kube-system"
    port_name: str = "http"


class CertSource(_Model):
    """Exactly one of a PEM file, an https URL, or the controller's ``/v1/cert.pem``.

    ``check_with``: the controller that, before the reset, must open a throwaway value sealed
    with the cert (``POST /v1/verify``) and that picks the one cert of a PEM bundle; default
    the cert's own controller (none for a file or URL: then the cert is not checked).
    """

    file: Path | None = None
    url: HttpsUrl | None = None
    controller: ControllerRef | None = None
    check_with: ControllerRef | None = None

    @property
    def checking_controller(self) -> ControllerRef | None:
        return self.check_with or self.controller

    @model_validator(mode="after")
    def _exactly_one(self) -> CertSource:
        given = [k for k in ("file", "url", "controller") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `file`, `url` or `controller`")
        return self


class ArgoAppRef(_Model):
    name: DnsName
    namespace: DnsLabel = "argocd"
    # The Application's spec.project: rotator reads this AppProject's sync windows before a
    # reset, and the Role grants get on exactly it.
    project: DnsName = "default"


class EnvironmentConfig(_Model):
    posthog_project_id: Annotated[int, Field(gt=0)]
    namespace: DnsLabel
    secret_name: DnsName = "align-posthog"
    secret_key: Annotated[str, AfterValidator(_data_key)] = "POSTHOG_API_KEY"
    sealed_file: str
    scope: SealingScope = SealingScope.STRICT
    cert: CertSource = CertSource(controller=ControllerRef())
    argocd_app: ArgoAppRef
    deployment: DnsName
    restart: RestartStrategy = RestartStrategy.ROLLOUT_RESTART
    # HogQL condition that picks this environment's gateway events, for the Live Events check.
    gateway_event_filter: str | None = None
    # Optional URL that makes the gateway emit an event (like the runbook's test signup).
    trigger_url: HttpsUrl | None = None

    @field_validator("sealed_file")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or not value.endswith((".yaml", ".yml")):
            raise ValueError("a relative .yaml path inside the ops repo, without `..`")
        return value


class GitConfig(_Model):
    remote: str
    branch: str = "main"
    author_name: Annotated[str, AfterValidator(_git_ident_name)] = "rotator"
    author_email: str = "rotator@users.noreply.invalid"
    workdir: Path | None = None
    https_token: SecretSource | None = None
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None
    push_attempts: Annotated[int, Field(ge=1, le=10)] = 3

    @field_validator("remote")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and (parts.username or parts.password):
            raise ValueError("the remote URL must not carry credentials; use git.https_token")
        return value


class SlackConfig(_Model):
    enabled: bool = True
    webhook_url: SecretSource = SecretSource(env="ROTATOR_SLACK_WEBHOOK_URL")
    mention_on_failure: str | None = None
    # The whole post, retries included, ends within this many seconds: a webhook that trickles
    # its answer byte by byte must not hold the run's exit (the report is already on stdout).
    deadline_s: Annotated[float, Field(gt=0, le=600)] = 30


class KubernetesConfig(_Model):
    kubeconfig: Path | None = None
    context: str | None = None
    # Kubernetes Events for what the run did and found, on the SealedSecrets and Deployments
    # it touched and on its own pod (kubectl describe shows them). RBAC: create events.
    events: bool = True


class JobPod(BaseModel):
    """The run's own pod, from the downward API (POD_NAME, POD_NAMESPACE, POD_UID in the
    CronJob's env); None outside a pod. The pod's Events need all three: kubectl describe
    finds an object's Events by its uid."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobPod | None:
        values = [environ.get(k, "").strip() for k in ("POD_NAME", "POD_NAMESPACE", "POD_UID")]
        if not all(values):
            return None
        return cls(name=values[0], namespace=values[1], uid=values[2])


class LockConfig(_Model):
    # The job's own namespace: the app namespaces then grant no Lease rights.
    namespace: DnsLabel = "rotator"
    name: DnsName = "rotator-posthog"
    duration_s: Annotated[int, Field(ge=15, le=3600)] = 120


class Waits(_Model):
    """Deadlines (seconds) for each wait, and the poll interval where a watch is not possible."""

    argocd_s: Annotated[float, Field(gt=0)] = 600
    unseal_s: Annotated[float, Field(gt=0)] = 180
    rollout_s: Annotated[float, Field(gt=0)] = 600
    marker_s: Annotated[float, Field(gt=0)] = 300
    gateway_events_s: Annotated[float, Field(gt=0)] = 420
    # PostHog's token->project cache (2 min + up to 30 s jitter): old-key events land until then.
    ingestion_window_s: Annotated[float, Field(ge=0)] = 150
    poll_interval_s: Annotated[float, Field(gt=0)] = 2
    # After a lost reset answer, or a read of a key already replaced (a lagging read replica):
    # how long to keep reading the key back before concluding.
    reset_readback_s: Annotated[float, Field(ge=0)] = 30
    watch_timeout_s: Annotated[int, Field(ge=1, le=300)] = 30
    # While a wait lasts, a "still waiting" line with the last observed state every this often.
    heartbeat_s: Annotated[float, Field(gt=0)] = 15


class Timeouts(_Model):
    connect_s: Annotated[float, Field(gt=0)] = 5
    read_s: Annotated[float, Field(gt=0)] = 30
    attempts: Annotated[int, Field(ge=1, le=10)] = 4


class PolicyConfig(_Model):
    """Guards on when a reset may happen."""

    # A reset within this many seconds of the last recorded rotation is skipped (the run only
    # verifies) unless --force: protects against a CronJob retry or a double trigger rotating
    # twice. 0 disables the guard.
    min_interval_s: Annotated[float, Field(ge=0)] = 6 * 3600


class ScheduleConfig(_Model):
    cron: str = "0 6 * * 1"
    timezone: str = "Europe/London"
    misfire_grace_s: Annotated[int, Field(ge=1)] = 3600
    adopt_check_cron: str | None = None
    # Run the `rotator watch` loop between rotations (every watch.interval_s): a person's
    # reset in PostHog is adopted within seconds, not at the next adopt check.
    watch: bool = False


class WatchConfig(_Model):
    """``rotator watch``: how often it reads PostHog's key (one GET per project per tick;
    PostHog allows 480/min per personal key), and how long it waits before it retries an
    adopt run that did not succeed for the same key."""

    interval_s: Annotated[float, Field(ge=0.2, le=3600)] = 10.0
    adopt_retry_s: Annotated[float, Field(ge=0, le=86400)] = 600.0


class MetricsConfig(_Model):
    file: Path | None = None
    pushgateway_url: ServiceUrl | None = None


class Secrets(BaseModel):
    """The resolved secrets; filled by the loader, never from the YAML."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    posthog_personal_api_key: Secret | None = None
    posthog_password: Secret | None = None
    posthog_totp_secret: Secret | None = None
    slack_webhook_url: Secret | None = None
    git_https_token: Secret | None = None
    # A secret that could not be read: field path -> why (reported by preflight, not at load).
    missing: Mapping[str, str] = Field(default_factory=dict)


class Config(_Model):
    posthog: PostHogConfig = PostHogConfig()
    environments: Annotated[dict[str, EnvironmentConfig], Field(min_length=1)]
    git: GitConfig
    slack: SlackConfig = SlackConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    lock: LockConfig = LockConfig()
    waits: Waits = Waits()
    timeouts: Timeouts = Timeouts()
    policy: PolicyConfig = PolicyConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    watch: WatchConfig = WatchConfig()
    metrics: MetricsConfig = MetricsConfig()
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)
    pod: JobPod | None = Field(default=None, exclude=True)  # filled by the loader from env

    @field_validator("environments")
    @classmethod
    def _env_names(cls, value: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in value:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"environment name {name!r} must be a lower-case DNS label")
        files = [env.sealed_file for env in value.values()]
        if len(set(files)) != len(files):
            raise ValueError("two environments write the same sealed_file")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secrets" in data:
            raise ValueError(
                "`secrets` cannot be set in the file: secrets come from env vars or mounted "
                "files named by posthog.personal_api_key, slack.webhook_url, git.https_token"
            )
        return data

    def env(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(f"unknown environment {name!r}; known: {known}") from None

    def env_names(self) -> list[EnvName]:
        """Environments in rotation order: preview first, prod last, others by name between."""
        order = {"preview": 0, "prod": 2}
        return [EnvName(n) for n in sorted(self.environments, key=lambda n: (order.get(n, 1), n))]

    def project_groups(self) -> list[tuple[ProjectId, list[EnvName]]]:
        """Environments grouped by PostHog project, in rotation order (one key per project)."""
        groups: dict[int, list[EnvName]] = {}
        for name in self.env_names():
            groups.setdefault(self.environments[name].posthog_project_id, []).append(name)
        return [(ProjectId(pid), names) for pid, names in groups.items()]


# The top-level sections a ROTATOR_<SECTION> variable may set.
_SECTIONS = frozenset(Config.model_fields) - {"secrets", "pod"}


# --- loading -------------------------------------------------------------------------------


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        kind = err["type"]
        if kind == "missing":
            what = "required"
        elif kind == "extra_forbidden":
            what = "unknown field (check the spelling; see config/align.yaml for every field)"
        else:
            what = str(err["msg"]).removeprefix("Value error, ")
            if "input" in err and kind not in ("model_type", "dict_type", "url"):
                what += f" (got {err['input']!r})" if _printable(err["input"]) else ""
        lines.append(f"  {path or '<top>'}: {what}")
    return "\n".join(lines)


def _printable(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) < 80)


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    keys = [k for k in path.split(".") if k]
    if not keys:
        raise ConfigError(f"empty override path {path!r}")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {path}: {key} is not a mapping")
        node = child
    node[keys[-1]] = value


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (``problem_mark``: the second, ``first_mark``: the
    first). YAML says a mapping's keys are unique; PyYAML's safe_load lets the last one win."""

    def __init__(self, key: object, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key
        self.first_mark = first
        self.problem_mark = again


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a repeated key: an environment listed twice would
    otherwise silently replace the first (YAML 1.2.2 section 3.2.1.1: the keys of a mapping
    are unique; go-yaml v3 refuses them too, "mapping key already defined"). A key that a
    merge (``<<``) brings in may be overridden: that is what merging is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the constructor below says so
                continue
            if first is not None:
                raise DuplicateKeyError(key, first.start_mark, key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (``DuplicateKeyError``)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_error(source: object, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, DuplicateKeyError):
        again, first = exc.problem_mark, exc.first_mark
        return ConfigError(
            f"{source}: duplicate key {exc.key!r} at line {again.line + 1}, column "
            f"{again.column + 1} (first at line {first.line + 1}): the second would silently "
            "replace the first; remove or rename one"
        )
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return ConfigError(f"{source} is not valid YAML{where}")


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> (path, YAML-parsed value)."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"--set takes PATH=VALUE (e.g. git.branch=main), got {text!r}")
    try:
        value = load_yaml(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise _yaml_error(f"--set {path}", exc) from None
    return path.strip(), value


def setting_variable(name: str) -> str | None:
    """The settings path (``git.branch``) a ``ROTATOR_*`` variable sets, or None when it is not
    a setting (a switch, ROTATOR_CONFIG, a secret's variable): a setting's name has ``__`` or
    is one whole section (``ROTATOR_LOCK``)."""
    rest = name.removeprefix(ENV_PREFIX)
    if rest == name or not rest or rest.startswith("_"):
        return None
    parts = rest.lower().split(ENV_NESTING)
    if len(parts) == 1 and parts[0] not in _SECTIONS:
        return None
    return ".".join(parts)


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, Any]]:
    out = []
    for name, raw in sorted(environ.items()):
        path = setting_variable(name)
        if path is None and name.startswith(DEPRECATED_ENV_PREFIX):
            new = ENV_PREFIX + name.removeprefix(DEPRECATED_ENV_PREFIX)
            if new in environ:
                log.warning("environment variable %s is ignored: %s is set too", name, new)
                continue
            log.warning(
                "environment variable %s is deprecated: rename it %s (the old name is read "
                "until the next release)",
                name,
                new,
            )
            path = setting_variable(new)
        if path is None:
            continue
        try:
            value = load_yaml(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise _yaml_error(f"environment variable {name}", exc) from None
        out.append((path, value))
    return out


def _read_secret(
    source: SecretSource | None, path: str, environ: Mapping[str, str], missing: dict[str, str]
) -> Secret | None:
    if source is None:
        return None
    if source.env is not None:
        value = environ.get(source.env, "").strip()
        if not value:
            missing[path] = f"environment variable {source.env} is not set"
            return None
        return Secret(value)
    assert source.file is not None
    try:
        value = source.file.read_text().strip()
    except OSError as exc:
        missing[path] = f"cannot read {source.file}: {exc.strerror}"
        return None
    if not value:
        missing[path] = f"{source.file} is empty"
        return None
    return Secret(value)


def resolve_secrets(config: Config, environ: Mapping[str, str]) -> Secrets:
    missing: dict[str, str] = {}
    reset = config.posthog.reset
    session = reset if reset.method is ResetMethod.SESSION else None
    return Secrets(
        posthog_personal_api_key=_read_secret(
            config.posthog.personal_api_key, "posthog.personal_api_key", environ, missing
        ),
        posthog_password=_read_secret(
            session.password if session else None, "posthog.reset.password", environ, missing
        ),
        posthog_totp_secret=_read_secret(
            session.totp_secret if session else None,
            "posthog.reset.totp_secret",
            environ,
            missing,
        ),
        slack_webhook_url=_read_secret(
            config.slack.webhook_url if config.slack.enabled else None,
            "slack.webhook_url",
            environ,
            missing,
        ),
        git_https_token=_read_secret(config.git.https_token, "git.https_token", environ, missing),
        missing=missing,
    )


def config_path(explicit: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if environ.get("ROTATOR_CONFIG"):
        return Path(environ["ROTATOR_CONFIG"])
    return DEFAULT_CONFIG_PATH


def load_config(
    path: Path | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the configuration; resolve secrets. Raises ``ConfigError``."""
    environ = os.environ if environ is None else environ
    source = config_path(path, environ)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {source} not found; pass --config PATH or set ROTATOR_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from None
    try:
        tree = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    for opath, value in [*_env_overrides(environ), *(parse_override(o) for o in overrides)]:
        _set_path(tree, opath, value)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(source))) from None
    return config.model_copy(
        update={"secrets": resolve_secrets(config, environ), "pod": JobPod.from_env(environ)}
    )


class RunSwitches(_Model):
    """Switches for one run, from ``ROTATOR_*`` env (CronJob manual trigger) and CLI flags."""

    envs: tuple[str, ...] = ()
    dry_run: bool = False
    no_reset: bool = False
    force: bool = False
    trigger: Literal["cron", "manual", "schedule", "watch", "cli", "demo", "test"] = "cli"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunSwitches:
        environ = os.environ if environ is None else environ

        def flag(name: str) -> bool:
            raw = environ.get(name, "").strip().lower()
            if raw in ("", "0", "false", "no"):
                return False
            if raw in ("1", "true", "yes"):
                return True
            raise ConfigError(f"{name}={raw!r}: use true or false")

        envs = tuple(e for e in environ.get("ROTATOR_ENVS", "").replace(",", " ").split() if e)
        trigger = environ.get("ROTATOR_TRIGGER", "cli")
        if trigger not in ("cron", "manual", "schedule", "cli", "demo", "test"):
            raise ConfigError(f"ROTATOR_TRIGGER={trigger!r}: use cron, manual, schedule or cli")
        return cls(
            envs=envs,
            dry_run=flag("ROTATOR_DRY_RUN"),
            no_reset=flag("ROTATOR_NO_RESET"),
            force=flag("ROTATOR_FORCE"),
            trigger=trigger,
        )


def effective_config_text(config: Config) -> str:
    """The effective config as YAML, with every secret masked by its fingerprint."""
    return yaml.safe_dump(effective_config_tree(config), sort_keys=False)


def effective_config_output(config: Config, *, output: str = "text") -> str:
    """``rotator config check -o text|json|yaml``: text and yaml are the same YAML."""
    if output == "json":
        return json.dumps(effective_config_tree(config), indent=2) + "\n"
    return effective_config_text(config)


def effective_config_tree(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with every secret masked by its fingerprint."""
    tree = config.model_dump(mode="json", exclude={"secrets"})
    secrets = config.secrets
    resolved = {
        "posthog.personal_api_key": secrets.posthog_personal_api_key,
        "posthog.reset.password": secrets.posthog_password,
        "posthog.reset.totp_secret": secrets.posthog_totp_secret,
        "slack.webhook_url": secrets.slack_webhook_url,
        "git.https_token": secrets.git_https_token,
    }
    status: dict[str, str] = {}
    for path, secret in resolved.items():
        if secret is not None:
            status[path] = f"set ({secret.fingerprint})"
        elif path in secrets.missing:
            status[path] = f"MISSING: {secrets.missing[path]}"
    tree["secrets (resolved, masked)"] = status
    return tree
