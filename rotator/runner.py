"""The shell around the pure core: observe -> decide -> act -> observe again.

``run_once(config, switches)`` is the one path that the CronJob, a manual Job, the CLI and the
scheduler all take. It returns a ``RunReport`` and never raises for an outcome: the report
says what happened, and the CLI turns it into an exit code. Dry run is checked only at the leaf
side effects (``dry run: skipping <what>``).

Order: preflight (reads only) -> lock (Lease) -> per PostHog project: observe, decide, then
rotate (the point of no return) -> seal -> commit/push -> per environment in parallel:
ArgoCD sync of the exact commit -> unseal -> restart and rollout -> verify. Report always runs.
"""

from __future__ import annotations

import contextvars
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rotator.clock import Clock, SystemClock
from rotator.config import (
    Config,
    EnvironmentConfig,
    ResetMethod,
    RestartStrategy,
    RunSwitches,
)
from rotator.errors import (
    ClientError,
    ConfigError,
    KubeError,
    LockHeld,
    PreflightError,
    QueryThrottled,
    ResetForbidden,
    ResetOutcomeUnknown,
    RotatorError,
    SlackError,
    StepFailed,
    VerificationFailed,
    WaitTimeout,
)
from rotator.interrupts import StopSignals, finish
from rotator.logs import IN_REPORT, AnomalyCollector, collecting_anomalies, log_context
from rotator.names import (
    COMPONENT,
    FINGERPRINT_ANNOTATION,
    TRAILER_KEY_FINGERPRINT,
    TRAILER_RUN_ID,
    TRAILER_TRIGGER,
    EnvName,
    Fingerprint,
    ProjectId,
)
from rotator.progress import waiting
from rotator.redact import Secret, scrub
from rotator.report import (
    EventCounts,
    KeyChange,
    Outcome,
    RunReport,
    StepResult,
    StepStatus,
    to_slack,
)
from rotator.run.ledger import (
    DryRun,
    GroupVerified,
    Inconclusive,
    InFlight,
    KeyChangedDuringRun,
    KeyReset,
    LeaseLost,
    Ledger,
    Pushed,
    ResetMayHaveHappened,
    Restarted,
    Resuming,
    StepCrashed,
    StopKind,
    Stopped,
    in_flight,
)
from rotator.run.outcome import classify, needs_in_flight_probe
from rotator.steps import EnvObservation, GroupObservation, Plan, Step, dark_window_s, decide

if TYPE_CHECKING:
    from rotator.clients.argocd import AppState, ArgoCD
    from rotator.clients.gitrepo import OpsRepo
    from rotator.clients.kube import Kube, UnsealedEvent
    from rotator.clients.posthog import PostHogClient, PostHogSession, Project
    from rotator.clients.sealing import SealingCert
    from rotator.clients.slack import SlackClient

log = logging.getLogger(__name__)

T = TypeVar("T")

# Recorded on the gateway's pod template by our restart: which key the pods were started for.
INTERRUPTED = "interrupted (SIGTERM or SIGINT)"


@dataclass
class Clients:
    """The outside systems, built once per run (tests and the bench inject their own)."""

    posthog: PostHogClient
    kube: Kube
    argocd: ArgoCD
    slack: SlackClient | None
    open_repo: Callable[[Path], OpsRepo]
    # posthog.reset.method: session: a fresh, not yet logged-in session of the service user.
    posthog_session: Callable[[], PostHogSession] | None = None


def build_clients(config: Config, *, clock: Clock) -> Clients:
    from rotator.clients.argocd import ArgoCD
    from rotator.clients.gitrepo import OpsRepo
    from rotator.clients.kube import Kube
    from rotator.clients.posthog import PostHogClient, PostHogSession
    from rotator.clients.slack import SlackClient

    kube = Kube.from_config(config, clock=clock)

    def open_repo(workdir: Path) -> OpsRepo:
        return OpsRepo.open(config.git, token=config.secrets.git_https_token, workdir=workdir)

    slack = None
    if config.slack.enabled and config.secrets.slack_webhook_url is None:
        # Preflight reports it with every other missing prerequisite (a run aborts); building
        # the other clients must not fail on it, or every check would report it again.
        log.warning("slack.webhook_url is missing: this run cannot post to Slack")
    else:
        slack = SlackClient.from_config(config, clock=clock)
    return Clients(
        posthog=PostHogClient.from_config(config, clock=clock),
        kube=kube,
        argocd=ArgoCD(kube),
        slack=slack,
        open_repo=open_repo,
        posthog_session=lambda: PostHogSession.from_config(config, clock=clock),
    )


class _Problems:
    """Preflight's failures, collected: a laptop dry run learns everything that is missing at
    once, not one thing per run."""

    def __init__(self) -> None:
        self.errors: list[PreflightError] = []

    def add(self, error: PreflightError) -> None:
        self.errors.append(error)

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except PreflightError as exc:
            self.errors.append(exc)

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            listed = "; ".join(f"({i}) {e}" for i, e in enumerate(self.errors, 1))
            raise PreflightError(
                f"{len(self.errors)} problems, fix them all before the next run: {listed}"
            ) from self.errors[0]


@dataclass
class _GroupState:
    project_id: ProjectId
    envs: list[EnvName]
    project: Project | None = None
    key: Secret | None = None
    old_fingerprint: Fingerprint | None = None
    plan: Plan | None = None
    commit: str | None = None
    reset_at: datetime | None = None
    rollouts_done: list[datetime] = field(default_factory=list)
    key_since: datetime | None = None  # when PostHog's current key was set, where known
    # Lower bounds for when ArgoCD applied our SealedSecrets: the push of this run, else the
    # commit that recorded the key (an Unsealed event after it proves the unseal).
    pushed_at: datetime | None = None
    last_rotation_at: datetime | None = None
    # The Unsealed Events of each environment's SealedSecret just before the push: they are
    # the old key's, even when one shares the push's second (Event times are whole seconds).
    unsealed_seen: dict[EnvName, frozenset[UnsealedEvent]] = field(default_factory=dict)


class Run:
    """One rotation run: holds what it has learned and what it has done."""

    def __init__(
        self,
        config: Config,
        switches: RunSwitches,
        *,
        clock: Clock,
        clients: Clients | None = None,
        run_id: str | None = None,
        signals: StopSignals | None = None,
    ) -> None:
        self.config = config
        self.signals = signals
        self.switches = switches
        self.clock = clock
        self._clients = clients
        self.run_id = run_id or f"rot-{clock.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.started_at = clock.now()
        self.results: list[StepResult] = []
        self._results_lock = threading.Lock()
        self._git_lock = threading.Lock()
        self.env_names = self._select_envs()
        self.groups = [
            _GroupState(pid, [e for e in names if e in self.env_names])
            for pid, names in config.project_groups()
            if any(e in self.env_names for e in names)
        ]
        self.repo: OpsRepo | None = None
        self.certs: dict[EnvName, SealingCert] = {}
        # What the run did and found, as facts: the outcome is classified from them alone.
        self.ledger = Ledger()
        if switches.dry_run:
            self.ledger.record(DryRun())
        self.events = EventCounts()
        self._gateway_counts: dict[str, int] = {}
        self._marker_after: float | None = None
        # A programming error logged with its traceback where it struck (logged once).
        self._crashes_logged: list[BaseException] = []
        self._workdir: Path | None = None
        self._lease: _LeaseKeeper | None = None
        self._session: PostHogSession | None = None
        self._query_failure: str | None = None
        self.reset_by = "none"
        self.plan_lines: list[str] = []
        self._anomalies: AnomalyCollector | None = None
        # Sealed files git holds for PostHog's key that the controller failed to open.
        self._reseal: set[str] = set()

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = build_clients(self.config, clock=self.clock)
        return self._clients

    @property
    def dry_run(self) -> bool:
        return self.switches.dry_run

    @property
    def changed(self) -> bool:
        """Did the run change something in a system (a reset, a push, a restart)?"""
        return self.ledger.changed

    def inconclusive(self, detail: str) -> None:
        self.ledger.record(Inconclusive(detail))

    def _inconclusive_count(self) -> int:
        return len(self.ledger.of(Inconclusive))

    def _select_envs(self) -> list[EnvName]:
        if not self.switches.envs:
            return self.config.env_names()
        for name in self.switches.envs:
            self.config.env(name)  # ConfigError for an unknown name
        return [e for e in self.config.env_names() if e in self.switches.envs]

    def record(
        self,
        step: Step,
        status: StepStatus,
        detail: str,
        *,
        env: str | None = None,
        duration_s: float = 0.0,
    ) -> None:
        with self._results_lock:
            self.results.append(StepResult(step, status, scrub(detail), env, duration_s))

    @contextmanager
    def step(self, step: Step, *, env: str | None = None, detail: str = "") -> Iterator[list[str]]:
        """Time a step, log it, record its result; rotator's own errors become ``StepFailed``.
        Any other exception is a bug: logged here with its traceback, recorded, and raised on
        as it is (the outcome never says "nothing changed" for a side effect it cut short)."""
        start = self.clock.monotonic()
        notes: list[str] = []
        with log_context(step=step.value, env=env or "-"):
            log.info("%s: started%s", step.value, f" ({detail})" if detail else "")
            try:
                yield notes
            except StepFailed:
                raise
            except Exception as exc:
                if not isinstance(exc, RotatorError):
                    self._crashed(step, env, exc, elapsed=self.clock.monotonic() - start)
                    raise
                elapsed = self.clock.monotonic() - start
                self.record(step, StepStatus.FAILED, str(exc), env=env, duration_s=elapsed)
                log.error(
                    "%s: failed after %.1fs: %s",
                    step.value,
                    elapsed,
                    scrub(str(exc)),
                    extra=IN_REPORT,
                )
                raise StepFailed(step, env, exc) from exc
            elapsed = self.clock.monotonic() - start
            status = (
                StepStatus.DRY_RUN if self.dry_run and notes[:1] == ["dry-run"] else (StepStatus.OK)
            )
            text = "; ".join(n for n in notes if n != "dry-run") or detail or "done"
            self.record(step, status, text, env=env, duration_s=elapsed)
            log.info("%s: done in %.1fs: %s", step.value, elapsed, text)

    def _crashed(self, step: Step, env: str | None, exc: Exception, *, elapsed: float) -> None:
        kind = type(exc).__name__
        self.record(
            step, StepStatus.FAILED, f"unexpected error: {kind}: {exc}", env=env, duration_s=elapsed
        )
        log.error(
            "%s: unexpected error after %.1fs (a bug of rotator's)",
            step.value,
            elapsed,
            exc_info=exc,
            extra=IN_REPORT,
        )
        self.ledger.record(StepCrashed(step.value, env, kind))
        with self._results_lock:
            self._crashes_logged.append(exc)

    def _skip_dry(self, notes: list[str], what: str) -> bool:
        if self.dry_run:
            log.info("dry run: skipping %s", what)
            if notes[:1] != ["dry-run"]:
                notes.insert(0, "dry-run")
            notes.append(f"dry run: skipped {what}")
            return True
        return False

    def _env(self, name: EnvName) -> EnvironmentConfig:
        return self.config.environments[name]

    # --- the run -----------------------------------------------------------------------------

    def execute(self) -> RunReport:
        with collecting_anomalies(self.run_id) as self._anomalies:
            return self._execute()

    def _execute(self) -> RunReport:
        stopped: Exception | KeyboardInterrupt | None = None
        try:
            try:
                self._preflight()
                self._lock()
                self._preflight_session()
                self._run_groups()
            except (Exception, KeyboardInterrupt) as exc:  # the report must always be written
                stopped = exc
            # The work is over: a signal from now on (a second SIGTERM, Ctrl-C twice) must not
            # cut the classification, the Lease release or the report short.
            if self.signals is not None:
                self.signals.disarm()
            outcome, error = self._outcome(stopped)
        finally:
            finish(self.signals, "release the Lease", self._release)
            self._cleanup()
        return self._report(outcome, error)

    def _outcome(self, stopped: Exception | KeyboardInterrupt | None) -> tuple[Outcome, str | None]:
        """The outcome for how the work ended (``stopped``: what stopped it, None: it ran to
        its end): recorded as a fact, then classified from the ledger."""
        if stopped is not None:
            self.ledger.record(self._stop_fact(stopped))
        if needs_in_flight_probe(self.ledger.facts()):
            # Reading the cluster takes time: not after a signal (the report comes first).
            kind = self.ledger.of(Stopped)[0].kind
            reads_cluster = kind is StopKind.UNEXPECTED or (
                kind is not StopKind.INTERRUPTED and not self._stopping()
            )
            self._probe_groups(probe=reads_cluster)
        return classify(self.ledger.facts())

    def _stop_fact(self, stopped: Exception | KeyboardInterrupt) -> Stopped:
        if isinstance(stopped, StepFailed) and isinstance(stopped.cause, LockHeld):
            stopped = stopped.cause  # raised inside the lock step, so wrapped
        if isinstance(stopped, LockHeld):
            return Stopped(StopKind.LOCKED, str(stopped))
        if isinstance(stopped, (PreflightError, ConfigError)):
            return Stopped(StopKind.PREFLIGHT, str(stopped))
        if isinstance(stopped, KeyboardInterrupt):  # SIGINT, or SIGTERM (runcmd maps it)
            log.error("interrupted: stopping, releasing the Lease and reporting", extra=IN_REPORT)
            return Stopped(StopKind.INTERRUPTED, INTERRUPTED)
        if isinstance(stopped, RotatorError):
            return Stopped(StopKind.FAILED, str(stopped))
        if not any(stopped is logged for logged in self._crashes_logged):
            log.error("unexpected error", exc_info=stopped, extra=IN_REPORT)
        return Stopped(StopKind.UNEXPECTED, f"unexpected error: {type(stopped).__name__}")

    def _stopping(self) -> bool:
        return self.signals is not None and self.signals.stopping

    def final_anomalies(self) -> tuple[str, ...]:
        """What the run got past, the stop signals included (they may come while it reports)."""
        found = self._anomalies.anomalies() if self._anomalies else ()
        summary = self.signals.summary() if self.signals is not None else None
        return (*found, summary) if summary else found

    def _run_groups(self) -> None:
        """Project groups one after the other; a later group starts only if the earlier passed."""
        for i, group in enumerate(self.groups):
            inconclusive_before = self._inconclusive_count()
            try:
                self._run_group(group)
            except Exception:
                self._record_not_started(group, self.groups[i + 1 :])
                raise
            later = self.groups[i + 1 :]
            if later and self._inconclusive_count() > inconclusive_before:
                # Prod is rotated only after preview PASSED its check; unproven is not passed.
                self._record_not_started(group, later, why="its check was inconclusive")
                return

    def _record_not_started(
        self, failed: _GroupState, later: list[_GroupState], *, why: str = "failed first"
    ) -> None:
        """Name the project groups a failure kept from starting: their keys were not reset."""
        for group in later:
            for env in group.envs:
                self.record(
                    Step.ROTATE,
                    StepStatus.NOT_RUN,
                    f"not started: {', '.join(failed.envs)} (project {failed.project_id}) "
                    f"{why}; project {group.project_id}'s key was not reset",
                    env=env,
                )

    def _probe_groups(self, *, probe: bool) -> None:
        """Is a rotation in flight for a project group the run has not planned yet (it stopped
        in preflight or before its plan)? What the run has read, and with ``probe`` the
        SealedSecrets and Deployments too; each one found is recorded in the ledger."""
        known = in_flight(self.ledger.facts())
        for group in self.groups:
            if group.plan is not None or int(group.project_id) in known:
                continue
            reason = self._probe_in_flight(group, read_cluster=probe)
            if reason:
                log.warning(
                    "project %s: a rotation is in flight (%s): this run leaves it incomplete",
                    group.project_id,
                    reason,
                )
                self.ledger.record(InFlight(int(group.project_id), reason))

    def _probe_in_flight(self, group: _GroupState, *, read_cluster: bool) -> str | None:
        """Best effort, after a failure: the fingerprints git and the cluster record for the
        group's environments, against PostHog's key as preflight read it. One that differs
        (or, PostHog unread, two that disagree) means an earlier run reset the key and did
        not finish rolling it out. Unreadable places are left out; nothing is changed."""

        if read_cluster and self.repo is None:
            self._open_repo_for_probe()
        seen: list[tuple[str, Fingerprint]] = []
        for env in group.envs:
            cfg = self._env(env)
            try:
                if self.repo is not None:
                    fp = self._read_git_fingerprint(env)
                    if fp:
                        seen.append((f"{env}: git has {fp}", fp))
                if not read_cluster:
                    continue
                kube = self.clients.kube
                sealed = kube.get_sealed_secret(cfg.namespace, cfg.secret_name)
                held = _fp(sealed.template_fingerprint if sealed else None)
                if held:
                    seen.append((f"{env}: SealedSecret has {held}", held))
                if cfg.restart is RestartStrategy.ROLLOUT_RESTART:
                    dep = kube.get_deployment(cfg.namespace, cfg.deployment)
                    started = _fp(_template_annotation(dep, FINGERPRINT_ANNOTATION))
                    if started:
                        seen.append((f"{env}: pods started for {started}", started))
            except RotatorError as exc:
                log.debug("probing %s for a rotation in flight: %s", env, exc)
        current = group.key.fingerprint if group.key else None
        if current is not None:
            behind = [where for where, fp in seen if fp != current]
            return f"PostHog has {current}, but {'; '.join(behind)}" if behind else None
        if len({fp for _, fp in seen}) > 1:
            return f"PostHog's key unread, and {'; '.join(w for w, _ in seen)}"
        return None

    # --- preflight ---------------------------------------------------------------------------

    def _preflight(self) -> None:
        """Every check, each on its own: one run names every missing prerequisite (a check
        that needs an earlier one, like git's files needing the checkout, is skipped)."""
        with self.step(Step.PREFLIGHT) as notes:
            problems = _Problems()
            missing = dict(self.config.secrets.missing)
            if not self._may_reset:  # no login happens: the service user's secrets are moot
                missing = {p: w for p, w in missing.items() if not p.startswith("posthog.reset.")}
            for path, why in sorted(missing.items()):
                fix = " (or set slack.enabled=false)" if path == "slack.webhook_url" else ""
                problems.add(PreflightError(f"{path}: {why}{fix}"))
            if "posthog.personal_api_key" in missing:
                problems.raise_if_any()  # no client can be built without it
            with problems.check():
                for group in self.groups:
                    group.project = self._read_project(group.project_id)
                    group.key = group.project.api_token
                    group.old_fingerprint = group.key.fingerprint
                notes.append(f"PostHog: {len(self.groups)} project(s) readable")
            with problems.check():
                self._check_gateway_filters(notes)
            with problems.check():
                self._workdir = (
                    self.config.git.workdir
                    if self.config.git.workdir
                    else Path(tempfile.mkdtemp(prefix="rotator-ops-"))
                )
                self.repo = self._guard(
                    PreflightError, "git", lambda: self.clients.open_repo(self._workdir or Path())
                )
                # A branch that moved meanwhile is fetched again there; what is left is a rule.
                self._guard(PreflightError, "git push check", self.repo.check_push_access)
                for env in self.env_names:
                    self._read_git_fingerprint(env)
                notes.append(
                    f"git: {self.config.git.branch} at {self.repo.head()[:12]}, push allowed"
                )
            opened = 0
            for env in self.env_names:
                with problems.check():
                    self.certs[env] = self._fetch_cert(env)
                    self._ensure_controller_opens(env)
                    opened += 1
            if opened == len(self.env_names):
                notes.append("sealing certs valid and opened by the controller")
            checked = 0
            for env in self.env_names:
                with problems.check():
                    self._check_cluster_objects(env)
                    checked += 1
            if checked == len(self.env_names):
                notes.append("ArgoCD apps and Deployments found")
            problems.raise_if_any()

    def _open_repo_for_probe(self) -> None:
        """The checkout, when preflight stopped before it (PostHog unreadable): git's
        fingerprints may show a rotation in flight. Best effort; cleaned up as usual."""
        if self._workdir is None:
            self._workdir = self.config.git.workdir or Path(tempfile.mkdtemp(prefix="rotator-ops-"))
        try:
            self.repo = self.clients.open_repo(self._workdir)
        except RotatorError as exc:
            log.debug("opening the checkout to look for a rotation in flight: %s", exc)

    @property
    def _may_reset(self) -> bool:
        return not self.switches.no_reset

    def _preflight_session(self) -> None:
        """The last preflight check, once the Lease is held: log the service user in and check
        it may reset every project, so a broken login aborts with nothing changed instead of
        at the point of no return. After the Lease, because a TOTP code is single-use per
        30 s step: a run that would be refused the Lease must not spend the step's code."""
        if not self._may_reset or self.config.posthog.reset.method is not ResetMethod.SESSION:
            return
        with self.step(Step.PREFLIGHT, detail="PostHog session") as notes:
            self._log_in(notes)

    def _log_in(self, notes: list[str]) -> None:
        from rotator.errors import LoginFailed

        factory = self.clients.posthog_session
        if self.config.posthog.reset.email is None:
            raise PreflightError(
                "posthog.reset.email: required with posthog.reset.method: session (the PostHog "
                "service user's email; or run with --no-reset)"
            )
        if factory is None:
            raise PreflightError("posthog.reset.method is session but no session client is set")
        try:
            session = self._session = factory()
            session.login()
            for group in self.groups:
                session.ensure_may_reset(group.project_id)
        except (LoginFailed, ConfigError) as exc:
            raise PreflightError(str(exc)) from exc
        notes.append(
            f"PostHog: logged in as {session.email}, admin of {len(self.groups)} project(s)"
        )

    def _check_gateway_filters(self, notes: list[str]) -> None:
        """Each gateway_event_filter parses and PostHog runs it, before anything changes."""
        from rotator.clients.posthog import ensure_condition

        checked = 0
        for group in self.groups:
            filters: dict[str, str] = {}
            for env in group.envs:
                where = self._env(env).gateway_event_filter
                if where is None:
                    continue
                try:
                    filters[env] = ensure_condition(where)
                except ValueError as exc:
                    raise PreflightError(
                        f"environments.{env}.gateway_event_filter: {exc}; fix the HogQL condition"
                    ) from None
            if not filters:
                continue
            since = self.clock.now() - timedelta(minutes=5)
            try:
                self.clients.posthog.count_gateway_events(
                    group.project_id, filters=filters, since=since
                )
            except ClientError as exc:
                if exc.status not in (400, 403):
                    # Not the filter's fault (PostHog's query API is down or throttled): only a
                    # reset must not start on it (see _run_group); a resume may still go on.
                    self._query_failure = f"counting gateway events failed in preflight: {exc}"
                    log.warning("%s", self._query_failure)
                    continue
                raise PreflightError(self._name_bad_filter(group.project_id, filters, exc)) from exc
            checked += len(filters)
        if checked:
            notes.append(f"gateway_event_filter of {checked} environment(s) ran in PostHog")

    def _name_bad_filter(
        self, project_id: ProjectId, filters: Mapping[str, str], exc: ClientError
    ) -> str:
        """A refused combined query: name the environment whose filter PostHog refuses."""
        if exc.status == 400 and len(filters) > 1:
            since = self.clock.now() - timedelta(minutes=5)
            for env, where in filters.items():
                try:
                    self.clients.posthog.count_gateway_events(
                        project_id, filters={env: where}, since=since
                    )
                except ClientError as single:
                    return f"environments.{env}.gateway_event_filter: PostHog refused it: {single}"
        if exc.status == 400:
            env = next(iter(filters))
            return f"environments.{env}.gateway_event_filter: PostHog refused it: {exc}"
        return f"counting gateway events in PostHog project {project_id}: {exc}"

    def _guard(self, error: type[RotatorError], what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ClientError, WaitTimeout) as exc:
            raise error(f"{what}: {exc}") from exc

    def _read_project(self, project_id: ProjectId) -> Project:
        return self._guard(
            PreflightError,
            f"PostHog project {project_id}",
            lambda: self.clients.posthog.get_project(project_id),
        )

    def _read_git_fingerprint(self, env: EnvName) -> Fingerprint | None:
        from rotator.clients.sealing import read_sealed_file

        assert self.repo is not None
        cfg = self._env(env)
        text = self.repo.read_file(cfg.sealed_file)
        if text is None:
            return None
        info = self._guard(
            PreflightError,
            f"{cfg.sealed_file}",
            lambda: read_sealed_file(text, path=cfg.sealed_file),
        )
        if info.namespace != cfg.namespace or info.name != cfg.secret_name:
            raise PreflightError(
                f"{cfg.sealed_file} seals {info.namespace}/{info.name}, but "
                f"environments.{env} expects {cfg.namespace}/{cfg.secret_name}: fix the file "
                "or the config"
            )
        return info.fingerprint

    def _fetch_cert(self, env: EnvName) -> SealingCert:
        from rotator.clients.sealing import fetch_cert

        cfg = self._env(env)
        for other, cert in self.certs.items():  # one fetch per cert source (controller) a run
            if self._env(other).cert == cfg.cert:
                return cert
        timeouts = self.config.timeouts
        return self._guard(
            PreflightError,
            f"sealing cert for {env}",
            lambda: fetch_cert(
                cfg.cert,
                proxy=self.clients.kube,
                timeout=(timeouts.connect_s, timeouts.read_s),
                now=self.clock.now(),
            ),
        )

    def _ensure_controller_opens(self, env: EnvName) -> None:
        """Before the reset: the controller must open a throwaway value sealed with the chosen
        cert, so a wrong cert aborts with nothing changed instead of failing after the reset."""
        from rotator.clients.sealing import ensure_controller_opens

        cfg = self._env(env)
        controller = cfg.cert.checking_controller
        if controller is None:
            log.warning(
                "%s: the sealing cert is not checked with the controller before the reset; set "
                "environments.%s.cert.check_with to have it checked",
                env,
                env,
            )
            return
        self._guard(
            PreflightError,
            f"sealing cert for {env}",
            lambda: ensure_controller_opens(
                self.certs[env],
                proxy=self.clients.kube,
                controller=controller,
                namespace=cfg.namespace,
                name=cfg.secret_name,
                data_key=cfg.secret_key,
                scope=cfg.scope,
            ),
        )

    def _check_cluster_objects(self, env: EnvName) -> None:
        cfg = self._env(env)
        app = self._guard(
            PreflightError,
            f"ArgoCD app {cfg.argocd_app.name}",
            lambda: self.clients.argocd.get_app(cfg.argocd_app.namespace, cfg.argocd_app.name),
        )
        if app is None:
            raise PreflightError(
                f"ArgoCD Application {cfg.argocd_app.namespace}/{cfg.argocd_app.name} not "
                f"found (environments.{env}.argocd_app)"
            )
        self._ensure_app_would_sync(env, app)
        dep = self._guard(
            PreflightError,
            f"Deployment {cfg.deployment}",
            lambda: self.clients.kube.get_deployment(cfg.namespace, cfg.deployment),
        )
        if dep is None:
            raise PreflightError(
                f"Deployment {cfg.namespace}/{cfg.deployment} not found "
                f"(environments.{env}.deployment)"
            )
        if dep.paused and cfg.restart is RestartStrategy.ROLLOUT_RESTART:
            raise PreflightError(
                f"Deployment {cfg.namespace}/{cfg.deployment} is paused: run `kubectl rollout "
                f"resume deploy/{cfg.deployment} -n {cfg.namespace}` first"
            )

    def _ensure_app_would_sync(self, env: EnvName, app: AppState) -> None:
        """Nothing that silently stops a sync (FACTS 4): skip-reconcile, another repo or branch,
        a sync window denying syncs now. Found after the reset, each is a run that waits out
        its deadline while the old key is dead."""
        from rotator.clients.argocd import sync_stoppers

        ref = self._env(env).argocd_app
        where = f"ArgoCD app {ref.namespace}/{ref.name}"
        if app.project != ref.project:
            raise PreflightError(
                f"{where} is in AppProject {app.project!r}, but "
                f"environments.{env}.argocd_app.project is {ref.project!r}: set it to "
                f"{app.project!r} (and grant get on that AppProject)"
            )
        project = self._guard(
            PreflightError,
            f"AppProject {ref.namespace}/{ref.project}",
            lambda: self.clients.argocd.get_project(ref.namespace, ref.project),
        )
        if project is None:
            raise PreflightError(
                f"{where}: its AppProject {ref.namespace}/{ref.project} does not exist"
            )
        windows = (project.get("spec") or {}).get("syncWindows") or []
        problems = sync_stoppers(
            app,
            repo_url=self.config.git.remote,
            branch=self.config.git.branch,
            windows=windows if isinstance(windows, list) else [],
            now=self.clock.now(),
        )
        if problems:
            raise PreflightError(f"{where} would not sync our commit: {'; '.join(problems)}")

    def _ensure_whole_project(self, group: _GroupState) -> None:
        """A reset revokes the key of every environment on the project, selected or not."""
        sharing = dict(self.config.project_groups()).get(group.project_id, group.envs)
        left_out = [e for e in sharing if e not in group.envs]
        if left_out:
            raise PreflightError(
                f"PostHog project {group.project_id} also serves {', '.join(left_out)}: a reset "
                "would revoke its key there too; select every environment on the project "
                f"({' '.join(f'--env {e}' for e in sharing)}) or none, or use --no-reset"
            )

    def _ensure_healthy_before_reset(self, group: _GroupState) -> None:
        """Everything the reset depends on must be green now; after it we only roll forward."""
        problems: list[str] = []
        for env in group.envs:
            cfg = self._env(env)
            app = self.clients.argocd.get_app(cfg.argocd_app.namespace, cfg.argocd_app.name)
            if app is None:
                problems.append(f"{env}: ArgoCD app {cfg.argocd_app.name} missing")
            elif app.sync_status != "Synced" or app.health != "Healthy":
                problems.append(
                    f"{env}: ArgoCD app {cfg.argocd_app.name} is {app.sync_status}/{app.health}; "
                    "it must be Synced and Healthy before a reset"
                )
            dep = self.clients.kube.get_deployment(cfg.namespace, cfg.deployment)
            if dep is not None:
                ok, why = self.clients.kube.is_rolled_out(dep)
                if not ok:
                    problems.append(f"{env}: Deployment {cfg.deployment} not rolled out ({why})")
        if problems:
            raise PreflightError("; ".join(problems))

    # --- lock --------------------------------------------------------------------------------

    def _ensure_lease_held(self) -> None:
        """Renew the Lease right before the reset: the background renewal only logs a loss, and
        a run whose Lease another run has taken over would reset the same key a second time."""
        if self._lease is None:  # dry run: no Lease taken, no reset made
            return
        lock = self.config.lock
        try:
            self.clients.kube.renew_lease(lock.namespace, lock.name, holder=self.run_id)
        except ClientError as exc:
            raise PreflightError(
                f"lock {lock.namespace}/{lock.name}: {exc}; the key was not reset"
            ) from exc

    def _lock(self) -> None:
        with self.step(Step.LOCK) as notes:
            if self._skip_dry(notes, "taking the Lease"):
                return
            lock = self.config.lock
            try:
                self.clients.kube.acquire_lease(
                    lock.namespace, lock.name, holder=self.run_id, duration_s=lock.duration_s
                )
            except LockHeld:
                raise
            except ClientError as exc:
                raise PreflightError(f"lock {lock.namespace}/{lock.name}: {exc}") from exc
            self._lease = _LeaseKeeper(self, interval_s=max(1.0, lock.duration_s / 3))
            self._lease.start()
            notes.append(f"Lease {lock.namespace}/{lock.name} held by {self.run_id}")

    def _release(self) -> None:
        if self._lease is None:
            return
        self._lease.stop()
        lock = self.config.lock
        try:
            self.clients.kube.release_lease(lock.namespace, lock.name, holder=self.run_id)
        except ClientError as exc:
            log.warning("could not release the Lease (it expires on its own): %s", exc)
        self._lease = None

    def _cleanup(self) -> None:
        if self._session is not None:
            self._session.logout()
            self._session.close()
            self._session = None
        if self.repo is not None:
            self.repo.close()
        if self._workdir is not None and self.config.git.workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # --- one project group -------------------------------------------------------------------

    def _observe(self, group: _GroupState) -> GroupObservation:
        from rotator.clients.kube import unseal_status

        assert group.key is not None
        assert self.repo is not None
        envs: list[EnvObservation] = []
        for env in group.envs:
            cfg = self._env(env)
            sealed = self.clients.kube.get_sealed_secret(cfg.namespace, cfg.secret_name)
            dep = self.clients.kube.get_deployment(cfg.namespace, cfg.deployment)
            rolled, _ = self.clients.kube.is_rolled_out(dep) if dep else (False, "missing")
            git_fingerprint = self._read_git_fingerprint(env)
            phase, why = unseal_status(sealed, group.key.fingerprint)
            if phase == "failed":
                # The controller cannot open what git holds for this key (sealed with a cert
                # it does not have, or it failed once and never retries the same spec):
                # count git as stale so the file is sealed again with the current cert.
                log.warning("%s: %s; sealing %s again", env, why, cfg.sealed_file)
                self._reseal.add(cfg.sealed_file)
                git_fingerprint = None
            envs.append(
                EnvObservation(
                    env=env,
                    git_fingerprint=git_fingerprint,
                    cluster_fingerprint=_fp(sealed.template_fingerprint if sealed else None),
                    unsealed=bool(
                        sealed and sealed.synced and sealed.observed_generation == sealed.generation
                    ),
                    deployment_fingerprint=_fp(_template_annotation(dep, FINGERPRINT_ANNOTATION)),
                    rolled_out=rolled,
                    restart_managed=cfg.restart is RestartStrategy.ROLLOUT_RESTART,
                )
            )
        last_at, last_run = self._last_rotation(group, group.key.fingerprint)
        return GroupObservation(
            project_id=group.project_id,
            posthog_fingerprint=group.key.fingerprint,
            envs=tuple(envs),
            now=self.clock.now(),
            last_rotation_at=last_at,
            last_rotation_run=last_run,
        )

    def _last_rotation(
        self, group: _GroupState, current: Fingerprint
    ) -> tuple[datetime | None, str | None]:
        assert self.repo is not None
        path = self._env(group.envs[0]).sealed_file
        for commit in self.repo.history(path, max_count=20):
            if commit.trailers.get(TRAILER_KEY_FINGERPRINT) == current:
                return commit.authored_at, commit.trailers.get(TRAILER_RUN_ID)
        return None, None

    def _run_group(self, group: _GroupState) -> None:
        # Re-read PostHog's key under the lock: another run may have rotated since preflight.
        group.project = self._read_current_project(group)
        group.key = group.project.api_token
        obs = self._observe(group)
        group.key_since = obs.last_rotation_at
        group.last_rotation_at = obs.last_rotation_at
        plan = decide(
            obs,
            no_reset=self.switches.no_reset,
            min_interval_s=self.config.policy.min_interval_s,
            force=self.switches.force,
        )
        group.plan = plan
        if plan.resume:
            self.ledger.record(Resuming(int(group.project_id), plan.get(Step.ROTATE).reason))
        reason = _in_flight(obs, plan, min_interval_s=self.config.policy.min_interval_s)
        if reason is not None:
            self.ledger.record(InFlight(int(group.project_id), reason))
        self.plan_lines.extend(
            f"project {group.project_id}: {p.step.value}: {'do' if p.needed else 'skip'} - "
            f"{p.reason}"
            for p in plan.steps
        )
        if plan.reset:
            if self._query_failure is not None:
                raise PreflightError(
                    f"{self._query_failure}; the new key could not be verified: not resetting, "
                    "nothing changed"
                )
            self._ensure_whole_project(group)
            self._ensure_healthy_before_reset(group)
            self._ensure_lease_held()
        elif (
            plan.resume
            and obs.last_rotation_at is None
            and not any(e.drift(obs.posthog_fingerprint) for e in obs.envs)
        ):
            # Same key everywhere but not converged, and no rotator commit records this key:
            # no run of ours is in flight, the world is just unhealthy (e.g. a rollout someone
            # started is stuck). Touch nothing: abort like the checks before a reset.
            self._ensure_healthy_before_reset(group)
        sealing = plan.is_needed(Step.SEAL) or plan.reset
        # Read the sealed files before the reset: after it, sealing is only the crypto.
        prepared = self._read_sealed_texts(group) if sealing else {}
        self._rotate(group, plan)
        key = group.key
        assert key is not None
        if sealing:
            files = self._seal(group, key, prepared)
            self._push(group, files, key)
        else:
            self.record(Step.SEAL, StepStatus.SKIPPED, plan.get(Step.SEAL).reason)
            self.record(Step.PUSH, StepStatus.SKIPPED, plan.get(Step.PUSH).reason)
        if group.commit is None:
            assert self.repo is not None
            group.commit = self.repo.head()
        self._converge(group, plan, key)
        self._verify(group, key)
        if not self.dry_run:
            self._ensure_unselected_envs_on_key(group, key)
        self.ledger.record(GroupVerified(int(group.project_id)))  # what was in flight is done

    def _ensure_unselected_envs_on_key(self, group: _GroupState, key: Secret) -> None:
        """An environment on the same project that --env left out keeps the key its
        SealedSecret holds: if that is not PostHog's key, it is revoked and its gateway's
        events are dropped. Say so instead of reporting success."""
        sharing = dict(self.config.project_groups()).get(group.project_id, group.envs)
        behind: list[str] = []
        for env in (e for e in sharing if e not in group.envs):
            cfg = self._env(env)
            try:
                sealed = self.clients.kube.get_sealed_secret(cfg.namespace, cfg.secret_name)
            except ClientError as exc:
                self.inconclusive(f"{env} (not selected): key not readable: {exc}")
                continue
            held = sealed.template_fingerprint if sealed else None
            if held != key.fingerprint:
                behind.append(f"{env} (its SealedSecret has {held or 'no fingerprint'})")
        if behind:
            detail = (
                f"PostHog project {group.project_id}'s key is {key.fingerprint}, but "
                f"{', '.join(behind)} was not selected and still runs a revoked key: "
                f"run again with {' '.join(f'--env {e}' for e in sharing)}"
            )
            self.record(Step.VERIFY, StepStatus.FAILED, detail)
            raise VerificationFailed(detail)

    def _rotate(self, group: _GroupState, plan: Plan) -> None:
        planned = plan.get(Step.ROTATE)
        if not planned.needed:
            self.record(Step.ROTATE, StepStatus.SKIPPED, planned.reason)
            log.info("rotate: skipped: %s", planned.reason)
            return
        with self.step(Step.ROTATE) as notes:
            old = group.key
            assert old is not None
            if self._skip_dry(notes, "the PostHog key reset (sealing a throwaway value)"):
                group.key = Secret(f"phc_dryrun{uuid.uuid4().hex}")
                return
            group.reset_at = self.clock.now()
            resetter = self._session or self.clients.posthog
            if self.config.posthog.reset.method is ResetMethod.SESSION and self._session is None:
                raise PreflightError("no PostHog session to reset with; nothing changed")
            project_no = int(group.project_id)
            try:
                with self.ledger.sending("reset", f"project {project_no}"):
                    project = resetter.reset_key(group.project_id)
            except ResetForbidden as exc:
                group.reset_at = None
                raise PreflightError(str(exc)) from exc
            except KeyboardInterrupt:
                # SIGTERM/SIGINT while the PATCH was out: PostHog may have reset the key. Never
                # report that as "nothing changed"; the next run reads the key back.
                self.ledger.record(ResetMayHaveHappened(project_no, INTERRUPTED))
                group.key = None
                raise
            except ResetOutcomeUnknown as exc:
                log.warning("reset outcome unknown (%s); reading the key back", exc)
                group.key = None  # unknown until read back: never report the old one as new
                project = self._read_back_after_lost_reset(group, old, cause=exc)
            except Exception:
                group.key = None  # a bug after the PATCH went out: the key is unknown
                raise
            self.ledger.record(KeyReset(project_no, old.fingerprint, project.api_token.fingerprint))
            group.project = project
            group.key = project.api_token
            group.key_since = group.reset_at
            self.reset_by = (
                f"session of {self._session.email}" if self._session else "personal API key"
            )
            notes.append(f"{old.fingerprint} -> {group.key.fingerprint} (reset by {self.reset_by})")

    def _read_back_after_lost_reset(
        self, group: _GroupState, old: Secret, *, cause: Exception
    ) -> Project:
        """A lost answer and one read that still shows the old key prove nothing: PostHog may
        apply the reset seconds later (a proxy answered while the app still worked on it), and
        a read replica may lag. Read back over ``waits.reset_readback_s``: any other key means
        the reset happened; only the old key on every read, the last one at the window's end,
        means it did not; a failed last read leaves the outcome unknown."""
        waits = self.config.waits
        deadline = self.clock.monotonic() + waits.reset_readback_s
        reads = 0
        failed: ClientError | None = None
        while True:
            try:
                project = self.clients.posthog.get_project(group.project_id)
            except ClientError as exc:
                failed = exc
            else:
                failed = None
                reads += 1
                if project.api_token.fingerprint != old.fingerprint:
                    return project
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                break
            log.info(
                "reset outcome unknown: PostHog %s; reading the key back again for %.0fs more",
                f"still shows {old.fingerprint}" if failed is None else f"unreadable ({failed})",
                remaining,
            )
            self.clock.sleep(min(waits.poll_interval_s, remaining))
        if failed is not None or reads == 0:
            # We cannot tell whether the old key is dead: report it as after-reset.
            self.ledger.record(
                ResetMayHaveHappened(
                    int(group.project_id), f"reading the key back failed: {failed}"
                )
            )
            raise VerificationFailed(
                f"the reset's outcome is unknown and reading the key back failed ({failed}); "
                "run again: the next run reads the key back and never resets twice"
            ) from cause
        group.reset_at = None
        raise PreflightError(
            f"the reset's answer was lost and PostHog still had key {old.fingerprint} on "
            f"{reads} reads over {waits.reset_readback_s:.0f}s: the reset did not happen, "
            "nothing changed; run again"
        ) from cause

    def _replaced_fingerprints(self, group: _GroupState) -> dict[Fingerprint, str]:
        """Keys PostHog has provably replaced (fingerprint -> the rotation commit that did).

        Git's newest rotation commit (``Rotator-Key-Fingerprint`` trailer) was pushed after
        PostHog minted its key, which revoked every key the sealed file held before it. PostHog
        never mints a key twice, so PostHog answering one of those is a lagging read (a read
        replica), never its current key. (A hand-made commit after the rotation, a revert
        say, does not count: only rotator's trailers say what PostHog did.)"""
        from rotator.clients.sealing import read_sealed_file

        assert self.repo is not None
        path = self._env(group.envs[0]).sealed_file
        replaced: dict[Fingerprint, str] = {}
        rotation: str | None = None
        newest: str | None = None
        for commit in self.repo.history(path, max_count=20):
            if rotation is None:
                newest = commit.trailers.get(TRAILER_KEY_FINGERPRINT)
                if newest:
                    rotation = commit.sha
                continue
            text = self.repo.read_file(path, rev=commit.sha)
            try:
                fp = read_sealed_file(text, path=path).fingerprint if text else None
            except RotatorError:
                fp = None
            for old in (fp, commit.trailers.get(TRAILER_KEY_FINGERPRINT)):
                if old and old != newest:
                    replaced.setdefault(Fingerprint(old), rotation)
        return replaced

    def _read_current_project(self, group: _GroupState) -> Project:
        """PostHog's key, never one git shows was already replaced (a lagging read replica):
        such a read is repeated over ``waits.reset_readback_s``, then the run stops with
        nothing changed rather than seal and roll out a revoked key."""
        project = self._read_project(group.project_id)
        replaced = self._replaced_fingerprints(group) if self.repo is not None else {}
        deadline = self.clock.monotonic() + self.config.waits.reset_readback_s
        while project.api_token.fingerprint in replaced:
            fp = project.api_token.fingerprint
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise PreflightError(
                    f"PostHog answered key {fp}, which commit {replaced[fp][:12]} already "
                    "replaced: a lagging read (read replica), not PostHog's current key; "
                    "nothing changed, run again"
                )
            log.warning(
                "PostHog answered key %s, which git shows was replaced (commit %s): a lagging "
                "read; reading again for %.0fs more",
                fp,
                replaced[fp][:12],
                remaining,
            )
            self.clock.sleep(min(self.config.waits.poll_interval_s, remaining))
            project = self._read_project(group.project_id)
        return project

    def _read_sealed_texts(self, group: _GroupState) -> dict[str, str | None]:
        """Each environment's sealed file at the fetched tip (None: absent)."""
        assert self.repo is not None
        return {
            self._env(env).sealed_file: self.repo.read_file(self._env(env).sealed_file)
            for env in group.envs
        }

    def _seal(
        self, group: _GroupState, key: Secret, prepared: Mapping[str, str | None]
    ) -> dict[str, str]:
        with self.step(Step.SEAL, detail=key.fingerprint) as notes:
            files = self._sealed_files(group, key, prepared=prepared)
            notes.append(f"{len(files)} file(s) for {key.fingerprint}")
            if self.dry_run:
                notes.insert(0, "dry-run")
            return files

    def _sealed_files(
        self,
        group: _GroupState,
        key: Secret,
        *,
        prepared: Mapping[str, str | None] | None = None,
    ) -> dict[str, str]:
        """Seal ``key`` into each environment's file at the repo's current tip (idempotent).
        ``prepared``: the files' texts already read at that tip (a re-apply after a rejected
        push reads them again)."""
        from rotator.clients.sealing import read_sealed_file, update_sealed_file

        assert self.repo is not None
        files: dict[str, str] = {}
        for env in group.envs:
            cfg = self._env(env)
            if prepared is not None and cfg.sealed_file in prepared:
                existing = prepared[cfg.sealed_file]
            else:
                existing = self.repo.read_file(cfg.sealed_file)
            if existing is not None:
                info = read_sealed_file(existing, path=cfg.sealed_file)
                if info.fingerprint == key.fingerprint and cfg.sealed_file not in self._reseal:
                    continue
            update = update_sealed_file(
                existing,
                value=key,
                namespace=cfg.namespace,
                name=cfg.secret_name,
                data_key=cfg.secret_key,
                scope=cfg.scope,
                cert=self.certs[env],
            )
            files[cfg.sealed_file] = update.text
        return files

    def _push(self, group: _GroupState, files: Mapping[str, str], key: Secret) -> None:
        assert self.repo is not None
        with self.step(Step.PUSH) as notes:
            first: list[Mapping[str, str]] = [files]

            def files_fn(repo: OpsRepo) -> Mapping[str, str] | None:
                if first:
                    return first.pop()
                return self._sealed_files(group, key) or None

            envs = ", ".join(group.envs)
            message = f"Rotate the PostHog project key for {envs}\n\nNew key {key.fingerprint}"
            if group.old_fingerprint and group.old_fingerprint != key.fingerprint:
                message += f", replacing {group.old_fingerprint}"
            message += f".\nSealed by rotator run {self.run_id}."
            if not self.dry_run:
                for env in group.envs:
                    cfg = self._env(env)
                    group.unsealed_seen[env] = self.clients.kube.unsealed_events_seen(
                        cfg.namespace, cfg.secret_name
                    )
            pushing_at = self.clock.now()
            with self.ledger.sending("push", f"project {int(group.project_id)}"):
                result = self.repo.commit_and_push(
                    files_fn,
                    message=message,
                    trailers={
                        TRAILER_RUN_ID: self.run_id,
                        TRAILER_TRIGGER: self.switches.trigger,
                        TRAILER_KEY_FINGERPRINT: key.fingerprint,
                    },
                    attempts=self.config.git.push_attempts,
                    dry_run=self.dry_run,
                )
            if self.dry_run:
                notes.insert(0, "dry-run")
                notes.append("committed locally, push skipped")
                group.commit = result.sha if result else None
                return
            if result is None:
                notes.append("nothing to commit: git already records this key")
                return
            self.ledger.record(Pushed(int(group.project_id), result.sha))
            group.commit = result.sha
            group.pushed_at = pushing_at
            extra = f" after {result.attempts} attempts (re-applied)" if result.reapplied else ""
            notes.append(f"pushed {result.sha[:12]}{extra}")

    # --- converge: ArgoCD -> unseal -> rollout, environments in parallel ----------------------

    def _converge(self, group: _GroupState, plan: Plan, key: Secret) -> None:
        if self.dry_run:
            for step in (Step.ARGOCD, Step.UNSEAL, Step.ROLLOUT):
                self.record(step, StepStatus.DRY_RUN, f"dry run: skipped {step.value}")
            return
        if not any(plan.is_needed(s) for s in (Step.ARGOCD, Step.UNSEAL, Step.ROLLOUT)):
            for step in (Step.ARGOCD, Step.UNSEAL, Step.ROLLOUT):
                self.record(step, StepStatus.SKIPPED, plan.get(step).reason)
            return
        commit = group.commit
        assert commit is not None
        errors = self._parallel(
            group.envs, lambda env: self._converge_env(group, env, plan, key, commit)
        )
        if errors:
            raise errors[0]

    def _parallel(self, envs: list[EnvName], fn: Callable[[EnvName], None]) -> list[StepFailed]:
        """Run ``fn`` per environment in daemon threads (each with the caller's log context).

        Daemon threads, not a pool: on SIGTERM the main thread stops waiting at once, releases
        the Lease and reports; a pool would first wait out every environment's deadline.
        """
        outcomes: dict[EnvName, BaseException | None] = {}

        def work(env: EnvName, context: contextvars.Context) -> None:
            try:
                context.run(fn, env)
                outcomes[env] = None
            except BaseException as exc:  # handed to the main thread below
                outcomes[env] = exc

        threads = [
            threading.Thread(
                target=work,
                args=(env, contextvars.copy_context()),
                name=f"rotator-{env}",
                daemon=True,
            )
            for env in envs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive() and not _stopped(outcomes):
                thread.join(timeout=0.5)
        if _stopped(outcomes):
            # A stop reached one environment's wait (the scheduler's StoppingClock): stop
            # waiting for the others, as the main thread does on SIGTERM.
            raise KeyboardInterrupt
        errors: list[StepFailed] = []
        for env in envs:
            exc = outcomes.get(env)
            if isinstance(exc, StepFailed):
                errors.append(exc)
            elif exc is not None:
                raise exc
        return errors

    def _converge_env(
        self, group: _GroupState, env: EnvName, plan: Plan, key: Secret, commit: str
    ) -> None:
        cfg = self._env(env)
        touched = (Step.ARGOCD, Step.SEAL)
        if not plan.reset and not any(env in plan.get(s).envs for s in touched):
            # Neither its file nor its cluster is behind: the commit may not touch this app,
            # and ArgoCD runs no sync for a revision with nothing to apply (FACTS 4).
            self.record(Step.ARGOCD, StepStatus.SKIPPED, "its SealedSecret has the key", env=env)
        else:
            self._sync_env(env, commit)
        with self.step(Step.UNSEAL, env=env) as notes:
            self.clients.kube.wait_for_unseal(
                cfg.namespace,
                cfg.secret_name,
                fingerprint=key.fingerprint,
                deadline_s=self.config.waits.unseal_s,
                applied_after=group.pushed_at or group.last_rotation_at,
                events_seen=group.unsealed_seen.get(env, frozenset()),
            )
            notes.append(f"{cfg.namespace}/{cfg.secret_name} unsealed with {key.fingerprint}")
        with self.step(Step.ROLLOUT, env=env) as notes:
            self._restart_and_wait(group, env, key, notes)

    def _sync_env(self, env: EnvName, commit: str) -> None:
        cfg = self._env(env)
        with self.step(Step.ARGOCD, env=env) as notes:
            app = cfg.argocd_app
            self.clients.argocd.refresh(app.namespace, app.name)
            if self._retry_failed_sync(app.namespace, app.name, commit):
                notes.append(f"retried the failed sync of {commit[:12]}")
            elif recreated := self._sync_missing_sealed_secret(env, commit):
                notes.append(recreated)
            state = self.clients.argocd.wait_for_revision(
                app.namespace,
                app.name,
                revision=commit,
                deadline_s=self.config.waits.argocd_s,
                # A resealed file: the SealedSecret shows the old spec's failure (Degraded)
                # until the controller has seen ours; the unseal wait below is the judge.
                degraded_fails=cfg.sealed_file not in self._reseal,
                repo_url=self.config.git.remote,
                descends_from_revision=lambda revision: self._descends_from(commit, revision),
            )
            synced = ",".join(r[:12] for r in state.synced_revisions()) or commit[:12]
            if synced != commit[:12]:
                # Someone pushed on top of our commit: ArgoCD synced the branch tip. The unseal
                # wait that follows still proves that OUR key landed (its fingerprint).
                synced = f"{synced} (descends from {commit[:12]})"
            notes.append(f"{app.name} synced {synced}, {state.health}")

    def _descends_from(self, commit: str, revision: str) -> bool:
        """Whether ``revision`` (what ArgoCD synced) is ``commit`` or a descendant of it, on the
        ops repo's branch; a commit we do not have yet is fetched once. Environments call this
        from their own threads: one git process at a time."""
        from rotator.errors import GitError

        repo = self.repo
        if repo is None:
            return False
        with self._git_lock:
            try:
                return repo.is_ancestor(commit, revision)
            except GitError:
                pass  # not fetched yet (or not a commit of the branch at all)
            try:
                repo.fetch()
                return repo.is_ancestor(commit, revision)
            except GitError as exc:
                log.info(
                    "%s is not a commit of the branch after %s: %s", revision[:12], commit[:12], exc
                )
                return False

    def _sync_missing_sealed_secret(self, env: EnvName, commit: str) -> str | None:
        """A SealedSecret deleted from the cluster comes back only from a sync: ArgoCD's
        auto-sync never syncs a revision it has already synced (argo-cd controller/
        appcontroller.go ``autoSync``: alreadyAttemptedSync; ``selfHeal`` is off), so the
        Application stays OutOfSync at our commit. Start that sync ourselves, of the revision
        ArgoCD already has when it descends from ours (never roll someone's commit back)."""
        cfg = self._env(env)
        if self.clients.kube.get_sealed_secret(cfg.namespace, cfg.secret_name) is not None:
            return None
        app = cfg.argocd_app
        state = self.clients.argocd.get_app(app.namespace, app.name)
        if state is None or state.has_operation:
            return None  # a sync is already running (or the wait names the missing app)
        revision = commit
        if state.sync_revision and self._descends_from(commit, state.sync_revision):
            revision = state.sync_revision
        log.info(
            "sealedsecret %s/%s is missing from the cluster; syncing %s to recreate it",
            cfg.namespace,
            cfg.secret_name,
            revision[:12],
        )
        self.clients.argocd.sync(app.namespace, app.name, revision=revision, username=COMPONENT)
        return f"the SealedSecret was missing: synced {revision[:12]} to recreate it"

    def _retry_failed_sync(self, namespace: str, name: str, commit: str) -> bool:
        """ArgoCD's auto-sync never tries a revision again once its sync failed
        (alreadyAttemptedSync): a re-run starts that sync itself, once."""
        from rotator.clients.argocd import FAILED_PHASES

        state = self.clients.argocd.get_app(namespace, name)
        if state is None or state.has_operation:
            return False
        if not (state.operation_phase in FAILED_PHASES and state.operation_is_for(commit)):
            return False
        log.info(
            "application %s/%s: its sync of %s failed before; syncing again",
            namespace,
            name,
            commit[:12],
        )
        started = self.clients.argocd.sync(namespace, name, revision=commit, username=COMPONENT)
        # Until ArgoCD takes the operation up, the failed attempt's SyncError is still shown.
        limit = min(30.0, self.config.waits.argocd_s)
        deadline = self.clock.monotonic() + limit
        what = f"application {namespace}/{name} to take up the new sync"
        with waiting(
            "argocd",
            what,
            clock=self.clock,
            deadline_s=limit,
            interval_s=self.config.waits.heartbeat_s,
        ) as heartbeat:
            while self.clock.monotonic() < deadline:
                now = self.clients.argocd.get_app(namespace, name)
                if now is None or all(kind != "SyncError" for kind, _ in now.conditions):
                    break
                heartbeat.observe("the failed attempt's SyncError is still shown")
                self.clock.sleep(self.config.waits.poll_interval_s)
        return started

    def _restart_and_wait(
        self, group: _GroupState, env: EnvName, key: Secret, notes: list[str]
    ) -> None:

        cfg = self._env(env)
        kube = self.clients.kube
        dep = kube.get_deployment(cfg.namespace, cfg.deployment)
        if dep is None:
            raise KubeError(f"Deployment {cfg.namespace}/{cfg.deployment} disappeared")
        min_generation = dep.generation
        if cfg.restart is RestartStrategy.ROLLOUT_RESTART:
            if _template_annotation(dep, FINGERPRINT_ANNOTATION) != key.fingerprint:
                with self.ledger.sending("restart", env):
                    dep = kube.restart_deployment(
                        cfg.namespace,
                        cfg.deployment,
                        at=self.clock.now(),
                        annotations={FINGERPRINT_ANNOTATION: key.fingerprint},
                    )
                min_generation = dep.generation
                self.ledger.record(Restarted(env, key.fingerprint))
                notes.append("restarted")
            else:
                notes.append("already restarted for this key")
        else:
            notes.append("restart not managed (restart: none)")
        done = kube.wait_for_rollout(
            cfg.namespace,
            cfg.deployment,
            min_generation=min_generation,
            deadline_s=self.config.waits.rollout_s,
        )
        with self._results_lock:
            group.rollouts_done.append(done.finished_at)
        notes.append(f"{done.state.updated}/{done.state.replicas} pods updated and available")

    # --- verify ------------------------------------------------------------------------------

    def _verify(self, group: _GroupState, key: Secret) -> None:

        waits = self.config.waits
        posthog = self.clients.posthog
        with self.step(Step.VERIFY, detail="marker event") as notes:
            if self._skip_dry(notes, "the Live Events check"):
                return
            check_id = str(uuid.uuid4())
            posthog.send_marker(key, check_id=check_id, properties={"run_id": self.run_id})
            try:
                hit = posthog.find_marker(
                    group.project_id,
                    check_id=check_id,
                    deadline_s=waits.marker_s,
                    poll_s=waits.poll_interval_s,
                    heartbeat_s=waits.heartbeat_s,
                )
            except QueryThrottled as exc:
                detail = (
                    f"throttled: PostHog's query API refused to look for marker {check_id} "
                    f"until the {waits.marker_s:.0f}s deadline ({exc}); whether key "
                    f"{key.fingerprint} is live is unknown, not disproven: run `rotator verify` "
                    "later"
                )
                self.inconclusive(detail)
                notes.append(detail)
                return
            if hit is None:
                raise VerificationFailed(
                    f"marker event {check_id} sent with key {key.fingerprint} was not readable "
                    f"through the query API within {waits.marker_s:.0f}s: the key may not be live"
                )
            self._marker_after = hit.seen_after_s
            notes.append(f"marker read back after {hit.seen_after_s:.1f}s ({hit.polls} polls)")
        self._verify_gateways(group, self._gateway_since(group))
        self._ensure_key_unchanged(group, key)

    def _ensure_key_unchanged(self, group: _GroupState, key: Secret) -> None:
        """Read PostHog's key back after the checks. If it was reset during the run (e.g. in
        the UI), the revoked key's events still landed inside PostHog's token-cache window
        (FACTS 2): the checks prove nothing and the gateways run a dead key."""
        try:
            project = self.clients.posthog.get_project(group.project_id)
            if group.old_fingerprint not in (None, key.fingerprint) and (
                project.api_token.fingerprint == group.old_fingerprint
            ):
                # The key this run replaced: a lagging read, never a step backwards.
                project = self._read_current_project(group)
        except ClientError as exc:
            self.inconclusive(f"reading PostHog's key back after the checks failed: {exc}")
            return
        except PreflightError as exc:
            self.inconclusive(f"reading PostHog's key back after the checks: {exc}")
            return
        if project.api_token.fingerprint == key.fingerprint:
            return
        # By someone else: the key the gateways run is revoked.
        self.ledger.record(
            KeyChangedDuringRun(int(group.project_id), project.api_token.fingerprint)
        )
        group.project, group.key = project, project.api_token
        detail = (
            f"PostHog's key changed during the run to {project.api_token.fingerprint}; the "
            f"gateways run {key.fingerprint}, which is revoked: run again to roll it out"
        )
        self.record(Step.VERIFY, StepStatus.FAILED, detail)
        raise VerificationFailed(detail)

    def _gateway_since(self, group: _GroupState) -> datetime:
        """Events after this moment can only have been ingested with the new key."""
        candidates = [self.clock.now() if not group.rollouts_done else max(group.rollouts_done)]
        if group.reset_at is not None:
            window = timedelta(seconds=self.config.waits.ingestion_window_s)
            candidates.append(group.reset_at + window)
        return max(candidates)

    def _verify_gateways(self, group: _GroupState, since: datetime) -> None:
        """Every environment's gateway events in ONE query per poll (``countIf`` per filter):
        PostHog's HogQL budget is 120/hour per key on legacy teams and self-hosted. Throttling
        that outlasts the deadline is "throttled" (inconclusive), never "no traffic"."""

        waits = self.config.waits
        start = self.clock.monotonic()
        pending: dict[str, str] = {}
        for env in group.envs:
            where = self._env(env).gateway_event_filter
            if where is None:
                detail = "gateway events not checked: no gateway_event_filter configured"
                self.inconclusive(f"{env}: {detail}")
                self.record(Step.VERIFY, StepStatus.INCONCLUSIVE, detail, env=env)
            else:
                pending[env] = where
        if not pending:
            return
        stamp = since.isoformat(timespec="seconds")
        what = f"gateway events on the new key since {stamp} ({', '.join(pending)})"
        deadline = start + waits.gateway_events_s
        throttled: str | None = None
        with (
            log_context(step=Step.VERIFY.value),
            waiting(
                Step.VERIFY.value,
                what,
                clock=self.clock,
                deadline_s=waits.gateway_events_s,
                interval_s=waits.heartbeat_s,
            ) as heartbeat,
        ):
            polls = 0
            while pending:
                wait_until = (since - self.clock.now()).total_seconds()
                if wait_until > 0:
                    self.clock.sleep(min(wait_until, max(0.0, deadline - self.clock.monotonic())))
                polls += 1
                counts: dict[str, int] = {}
                try:
                    counts = self.clients.posthog.count_gateway_events(
                        group.project_id, filters=pending, since=since
                    )
                    throttled = None
                except ClientError as exc:
                    throttled = (
                        str(exc) if isinstance(exc, QueryThrottled) or exc.status == 429 else None
                    )
                    log.warning("counting gateway events failed: %s", exc)
                heartbeat.observe(f"{counts or 'no counts'} after {polls} queries")
                for name, count in counts.items():
                    if count > 0:
                        pending.pop(name)
                        with self._results_lock:
                            self._gateway_counts[name] = count
                        self.record(
                            Step.VERIFY,
                            StepStatus.OK,
                            f"{count} gateway event(s) on the new key since {stamp}",
                            env=name,
                            duration_s=self.clock.monotonic() - start,
                        )
                if not pending or self.clock.monotonic() >= deadline:
                    break
                self.clock.sleep(
                    min(
                        waits.poll_interval_s * min(polls, 5),
                        max(0.0, deadline - self.clock.monotonic()),
                    )
                )
        self._record_unproven(list(pending), throttled=throttled, stamp=stamp, start=start)

    def _record_unproven(
        self, envs: list[str], *, throttled: str | None, stamp: str, start: float
    ) -> None:
        waits = self.config.waits
        for name in envs:
            if throttled is not None:
                detail = (
                    f"throttled: PostHog's query API refused the gateway-event count until the "
                    f"{waits.gateway_events_s:.0f}s deadline ({throttled}); the gateway's use of "
                    "the key is unproven, not disproven: run `rotator verify` later"
                )
            else:
                detail = (
                    f"no gateway events since {stamp} within {waits.gateway_events_s:.0f}s: the "
                    "key is live, but the gateway's use of it is unproven (is there traffic?)"
                )
            self.inconclusive(f"{name}: {detail}")
            self.record(
                Step.VERIFY,
                StepStatus.INCONCLUSIVE,
                detail,
                env=name,
                duration_s=self.clock.monotonic() - start,
            )

    # --- report ------------------------------------------------------------------------------

    def _report(self, outcome: Outcome, error: str | None) -> RunReport:
        reset_at = min((g.reset_at for g in self.groups if g.reset_at), default=None)
        rollouts = [t for g in self.groups for t in g.rollouts_done]
        broken = resume = None
        resume_argv: tuple[str, ...] = ()
        resume_job_argv: tuple[str, ...] = ()
        if outcome is Outcome.FAILED_AFTER_RESET or outcome is Outcome.FAILED:
            resume_argv = ("rotator", "run", *(a for e in self.env_names for a in ("--env", e)))
            job = f"rotator-resume-{self.run_id.removeprefix('rot-')}".lower()[:63].rstrip("-")
            resume_job_argv = (
                "kubectl",
                "-n",
                "rotator",
                "create",
                "job",
                "--from=cronjob/rotator",
                job,
            )
            envs = " ".join(f"--env {e}" for e in self.env_names)
            resume = (
                f"rotator run {envs} (or: kubectl create job --from=cronjob/rotator "
                "rotator-resume-$(date +%s)); it completes the rotation with PostHog's current "
                "key and never resets again"
            )
            # Only the projects whose key moved: a later project a failure kept from starting
            # still runs its old key.
            flying = in_flight(self.ledger.facts())
            moved = [
                g
                for g in self.groups
                if g.reset_at or (g.plan and g.plan.resume) or int(g.project_id) in flying
            ]
            new = ", ".join(
                f"{g.key.fingerprint if g.key else 'unknown (`rotator status` reads it back)'} "
                f"({', '.join(g.envs)})"
                for g in moved or self.groups
            )
            broken = (
                f"PostHog's key is now {new}; until the gateways run it, their events are "
                f"dropped once PostHog's {self.config.waits.ingestion_window_s:.0f}s token cache "
                "expires"
                if outcome is Outcome.FAILED_AFTER_RESET
                else "a change was made but not completed"
            )
        fingerprints = {
            f"project {g.project_id}": (g.old_fingerprint, g.key.fingerprint if g.key else None)
            for g in self.groups
        }
        commit = next((g.commit for g in reversed(self.groups) if g.commit), None)
        mode = "dry-run" if self.dry_run else ("adopt" if self.switches.no_reset else "rotate")
        return RunReport(
            run_id=self.run_id,
            trigger=self.switches.trigger,
            mode=mode,
            outcome=outcome,
            started_at=self.started_at,
            finished_at=self.clock.now(),
            envs=tuple(self.env_names),
            steps=tuple(self.results),
            fingerprints=fingerprints,
            commit=commit,
            reset_at=reset_at,
            dark_window_s=dark_window_s(reset_at, rollouts),
            ingestion_window_s=self.config.waits.ingestion_window_s,
            error=scrub(error) if error else None,
            broken_now=broken,
            resume_command=resume,
            resume_argv=resume_argv,
            resume_job_argv=resume_job_argv,
            keys=tuple(
                KeyChange(
                    int(g.project_id),
                    tuple(g.envs),
                    g.old_fingerprint,
                    g.key.fingerprint if g.key else None,
                )
                for g in self.groups
            ),
            events=replace(
                self.events,
                marker_seen_after_s=self._marker_after,
                gateway_events=dict(self._gateway_counts),
            ),
            plan=tuple(scrub(p) for p in self.plan_lines),
            anomalies=self.final_anomalies(),
            rotated=outcome is Outcome.SUCCEEDED
            and not self.dry_run
            and any(g.reset_at or (g.plan and g.plan.resume) for g in self.groups),
            key_since={}
            if self.dry_run
            else {str(g.project_id): g.key_since for g in self.groups if g.key_since},
        )


def _in_flight(obs: GroupObservation, plan: Plan, *, min_interval_s: float) -> str | None:
    """PURE: why the group's old key is already dead before this run resets anything: an
    earlier run's rotation is unfinished (the plan resumes it: some place still records
    another key, or a rotator commit records this one and it has not converged), or it was
    reset so recently that this run only verifies it. None: nothing of ours is in flight."""
    drifted = any(e.drift(obs.posthog_fingerprint) for e in obs.envs)
    if plan.resume and (drifted or obs.last_rotation_at is not None):
        return plan.get(Step.ROTATE).reason
    recent = obs.last_rotation_at is not None and obs.now - obs.last_rotation_at < timedelta(
        seconds=min_interval_s
    )
    if recent and not plan.reset:
        assert obs.last_rotation_at is not None
        return (
            f"reset at {obs.last_rotation_at.isoformat(timespec='seconds')} by run "
            f"{obs.last_rotation_run or '?'}; this run verifies it"
        )
    return None


def _stopped(outcomes: Mapping[EnvName, BaseException | None]) -> bool:
    return any(isinstance(e, KeyboardInterrupt) for e in list(outcomes.values()))


def _fp(value: str | None) -> Fingerprint | None:
    return None if value is None else Fingerprint(value)


def _template_annotation(dep: Any, key: str) -> str | None:
    if dep is None:
        return None
    annotations: Mapping[str, str] = getattr(dep, "template_annotations", {}) or {}
    return annotations.get(key)


class _LeaseKeeper:
    """Renews the run's Lease in the background until stopped."""

    def __init__(self, run: Run, *, interval_s: float) -> None:
        self._run = run
        self._interval = interval_s
        self._stop = threading.Event()
        # In the run's log context, so that a failed renewal is one of the run's anomalies.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name="rotator-lease", daemon=True
        )
        self.lost = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        lock = self._run.config.lock
        while not self._stop.wait(self._interval):
            try:
                self._run.clients.kube.renew_lease(
                    lock.namespace, lock.name, holder=self._run.run_id
                )
            except ClientError as exc:
                self.lost = True
                self._run.ledger.record(LeaseLost(str(exc)))
                log.warning("renewing the Lease failed: %s", exc)


SLACK_PENDING = "pending (posted after this report)"


def run_once(
    config: Config,
    switches: RunSwitches,
    *,
    clock: Clock | None = None,
    clients: Clients | None = None,
    run_id: str | None = None,
    signals: StopSignals | None = None,
    before_slack: Callable[[RunReport], None] | None = None,
) -> RunReport:
    """One rotation run, reported: the CronJob, CLI and scheduler all come here. ``signals``:
    the process's SIGTERM/SIGINT handling (the CLI's), so that no signal cuts the report.

    ``before_slack`` gets the finished report (``slack`` still pending) before the Slack post
    starts: the CLI prints it there, so the report is on stdout whatever Slack does.
    """
    clock = clock or SystemClock()
    run = Run(config, switches, clock=clock, clients=clients, run_id=run_id, signals=signals)
    report = run.execute()
    record_events(report, run)
    if before_slack is not None:
        before_slack(replace(report, slack=SLACK_PENDING, anomalies=run.final_anomalies()))
    report = send_report(report, run)
    return replace(report, anomalies=run.final_anomalies())


def record_events(report: RunReport, run: Run) -> int:
    """Kubernetes Events for what the run did and found (``rotator.recorder``); best effort:
    a refusal is one warning and never changes the outcome. Returns how many were written."""
    from rotator.recorder import POD, EnvObjects, ObjectRef, events_for

    config = run.config
    if not config.kubernetes.events:
        return 0
    if run.dry_run:
        log.info("dry run: skipping the Kubernetes Events")
        return 0
    objects = {
        name: EnvObjects(env.namespace, env.secret_name, env.deployment)
        for name, env in config.environments.items()
    }
    pod = config.pod
    pod_ref = ObjectRef(*POD, pod.namespace, pod.name, pod.uid) if pod else None
    written = 0
    with log_context(step=Step.REPORT.value):
        try:
            kube = run.clients.kube
            for event in events_for(report, objects, pod=pod_ref):
                written += kube.record_event(event, instance=pod.name if pod else run.run_id)
        except RotatorError as exc:
            log.warning(
                "Kubernetes Events not (all) recorded: %s (grant the job's ServiceAccount "
                "`create` on events, or set kubernetes.events: false)",
                exc,
            )
    if written:
        log.info("recorded %d Kubernetes Event(s) (kubectl describe shows them)", written)
    return written


def send_report(report: RunReport, run: Run) -> RunReport:
    """Post the report to Slack; Slack being down never fails the run."""
    with log_context(step=Step.REPORT.value):
        slack = None
        try:
            slack = run.clients.slack
        except RotatorError as exc:
            return replace(report, slack=f"not sent: {exc}")
        if slack is None:
            return replace(report, slack="disabled")
        if run.dry_run:
            log.info("dry run: skipping the Slack report")
            return replace(report, slack="dry run: not sent")
        if report.mode == "adopt" and report.outcome is Outcome.SUCCEEDED and not run.changed:
            # The frequent adopt-mode check (scheduler) would otherwise post every 10 minutes.
            log.info("adopt check changed nothing: no Slack report")
            return replace(report, slack="not sent: adopt check changed nothing")
        return replace(report, slack=_post_to_slack(slack, report, run))


def _post_to_slack(slack: SlackClient, report: RunReport, run: Run) -> str:
    """Post; the report's ``slack`` field. After a stop signal the post gets a bounded time."""
    payload = to_slack(report, mention=run.config.slack.mention_on_failure)
    try:
        delivered = finish(run.signals, "post the report to Slack", lambda: slack.post(payload))
    except SlackError as exc:
        log.error("Slack report not delivered: %s", exc)
        return f"FAILED: {exc}"
    return "sent" if delivered else "FAILED: not delivered in time after the stop signal"


def verify_only(
    config: Config,
    switches: RunSwitches,
    *,
    clock: Clock | None = None,
    clients: Clients | None = None,
    signals: StopSignals | None = None,
) -> RunReport:
    """`rotator verify`: the Live Events check for PostHog's current key; changes nothing."""
    clock = clock or SystemClock()
    run = Run(config, switches, clock=clock, clients=clients, signals=signals)
    with collecting_anomalies(run.run_id) as run._anomalies:
        return _verify_only(run)


def _verify_only(run: Run) -> RunReport:
    outcome, error = Outcome.SUCCEEDED, None
    try:
        with run.step(Step.PREFLIGHT) as notes:
            for group in run.groups:
                group.project = run._read_project(group.project_id)
                group.key = group.project.api_token
                group.old_fingerprint = group.key.fingerprint
            notes.append("PostHog readable")
        for group in run.groups:
            assert group.key is not None
            _ensure_pods_on_key(run, group.envs, group.key.fingerprint)
            run._verify(group, group.key)
        inconclusive = run.ledger.of(Inconclusive)
        if inconclusive:
            outcome, error = Outcome.INCONCLUSIVE, "; ".join(f.detail for f in inconclusive)
    except (PreflightError, ConfigError) as exc:
        outcome, error = Outcome.ABORTED, str(exc)
    except RotatorError as exc:
        outcome, error = Outcome.FAILED, str(exc)
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (runcmd maps it): the check is unfinished
        log.error("interrupted: stopping and reporting", extra=IN_REPORT)
        outcome, error = Outcome.INCONCLUSIVE, INTERRUPTED
    except Exception as exc:  # the report must always be written
        log.error("unexpected error", exc_info=exc, extra=IN_REPORT)
        outcome, error = Outcome.FAILED, f"unexpected error: {type(exc).__name__}"
    if run.signals is not None:
        run.signals.disarm()  # a later signal must not cut the report short
    report = run._report(outcome, error)
    return replace(
        report,
        mode="verify",
        resume_command=None,
        broken_now=None,
        resume_argv=(),
        resume_job_argv=(),
    )


def _ensure_pods_on_key(run: Run, envs: list[EnvName], current: Fingerprint) -> None:
    """Gateway events only prove the key when the pods run it: within PostHog's ingestion
    window after a reset (e.g. in the UI) events of the revoked key still land."""

    with run.step(Step.VERIFY, detail=f"gateway pods started for {current}"):
        behind = []
        for env in envs:
            cfg = run._env(env)
            if cfg.restart is not RestartStrategy.ROLLOUT_RESTART:
                continue  # pods restarted by something else: no record of their key
            dep = run.clients.kube.get_deployment(cfg.namespace, cfg.deployment)
            recorded = _template_annotation(dep, FINGERPRINT_ANNOTATION)
            if recorded != current:
                behind.append(f"{env} ({cfg.deployment} started for {recorded or 'unknown'})")
        if behind:
            raise VerificationFailed(
                f"PostHog's key is {current}, but the gateway pods of {', '.join(behind)} run "
                "another key (reset in PostHog's UI?): `rotator run` rolls the current key out"
            )
