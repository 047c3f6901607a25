"""`rotator status`, `verify`, `run --dry-run` and `demo` through ``rotator.cli.main``.

The sandbox's secrets and config path reach the CLI the way they reach the CronJob: through the
process environment (``Sandbox.environ()``, set with ``monkeypatch.setenv``). None of these
commands may change anything; each test checks that against the world's state.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.cli import main
from rotator_sandbox.controllers.base import LEASE
from rotator_sandbox.gitremote import git
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import (
    ENVS,
    LEASE_NAME,
    LEASE_NAMESPACE,
    NOISY_LOGGERS,
    MakeSandbox,
    WorldState,
    e2e_key_pair,
    lease,
    make_sandbox,
    start_sandbox,
)
from tests.test_contract import validate_against_published_schema

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, e2e_key_pair: ControllerKeyPair
) -> Iterator[Sandbox]:
    """One sandbox for the module: every command here only reads (and each test checks it)."""
    sandbox = start_sandbox(tmp_path_factory.mktemp("commands") / "sandbox", e2e_key_pair)
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(autouse=True)
def restore_process_state() -> Iterator[None]:
    """``main`` installs its log handler on the root logger (and a command may install signal
    handlers): put the process back as it was afterwards."""
    root = logging.getLogger()
    level = root.level
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    for handler in list(root.handlers):
        if handler.get_name() == "rotator":
            root.removeHandler(handler)
    root.setLevel(level)
    for name, saved in noisy.items():
        logging.getLogger(name).setLevel(saved)


def set_environ(world: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment the CronJob would give rotator for this world."""
    for name, value in world.environ().items():
        monkeypatch.setenv(name, value)
    for switch in (
        "ROTATOR_DRY_RUN",
        "ROTATOR_NO_RESET",
        "ROTATOR_FORCE",
        "ROTATOR_ENVS",
        "ROTATOR_TRIGGER",
    ):
        monkeypatch.delenv(switch, raising=False)


@pytest.fixture
def cli_env(world: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    set_environ(world, monkeypatch)
    return world


def test_status_shows_each_environment_in_sync_with_fingerprints(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cli_env
    assert world.posthog is not None
    key = world.posthog.current_key(1)
    before = WorldState.of(world)

    code = main(["--config", str(world.config_path), "status"])

    out = capsys.readouterr().out
    assert code == 0, out
    for env in ENVS:
        assert f"{env} (PostHog project 1): in sync" in out
    assert out.count(key.fingerprint) >= 4 * len(ENVS)  # posthog, git, SealedSecret, rollout
    assert key.reveal() not in out
    assert WorldState.of(world) == before

    code = main(["--config", str(world.config_path), "status", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    validate_against_published_schema("status", doc)
    assert (doc["schema_version"], doc["in_sync"]) == (1, True)
    assert doc["lock"]["held"] is False
    rows = doc["environments"]
    assert [r["env"] for r in rows] == list(ENVS)
    for row in rows:
        assert row["in_sync"] is True
        assert row["posthog"] == key.fingerprint
        assert row["git"] == key.fingerprint
        assert row["sealed_secret"] == f"{key.fingerprint} (unsealed)"
        assert row["rollout"] == f"{key.fingerprint}, rolled out"
        assert row["argocd"].startswith(f"Synced/Healthy at {world.git.head()[:12]}")


def test_status_exits_one_and_says_so_when_an_environment_is_not_in_sync(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cli_env
    before = WorldState.of(world)
    # prod pointed at a SealedSecret that does not exist: git and PostHog agree, the cluster not.
    argv = ["status", "--config", str(world.config_path), "-o", "json"]
    code = main([*argv, "--set", "environments.prod.secret_name=no-such-secret"])

    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["in_sync"] is False
    in_sync = {r["env"]: r["in_sync"] for r in doc["environments"]}
    assert in_sync == {"preview": True, "prod": False}
    assert WorldState.of(world) == before


def test_status_refuses_an_unknown_environment(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "--env", "staging", "--config", str(cli_env.config_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "unknown environment 'staging'; known: preview, prod" in captured.err


def test_status_names_the_run_that_holds_the_lease_during_a_rotation(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from rotator.clients.kube import micro_time

    world = cli_env
    assert world.client is not None
    now = micro_time(datetime.now(UTC))
    world.client.create(
        LEASE,
        LEASE_NAMESPACE,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE},
            "spec": {
                "holderIdentity": "rot-20261204-010203-abcdef",
                "leaseDurationSeconds": 3600,
                "acquireTime": now,
                "renewTime": now,
            },
        },
    )
    try:
        code = main(["status", "--config", str(world.config_path)])
        out = capsys.readouterr().out
        main(["status", "--config", str(world.config_path), "-o", "json"])
        doc = json.loads(capsys.readouterr().out)
    finally:
        world.client.delete(LEASE, LEASE_NAMESPACE, LEASE_NAME)
    assert code == 0
    assert out.startswith(
        "ROTATION IN PROGRESS: run rot-20261204-010203-abcdef holds Lease "
        f"{LEASE_NAMESPACE}/{LEASE_NAME}"
    )
    assert doc["lock"]["held"] is True
    assert doc["lock"]["holder"] == "rot-20261204-010203-abcdef"


def test_in_the_cluster_run_writes_only_json_lines_and_the_report_among_them(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cli_env
    before = WorldState.of(world)
    code = main(["--log-format", "json", "run", "--dry-run", "--config", str(world.config_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""  # the pod's log stream is JSON only
    records = [json.loads(line) for line in captured.err.splitlines()]  # every line is JSON
    reports = [r for r in records if "report" in r]
    assert len(reports) == 1
    assert reports[0]["report"]["outcome"] == "dry-run"
    validate_against_published_schema("report", reports[0]["report"])
    run_id = reports[0]["report"]["run_id"]
    assert any(r["run_id"] == run_id and r["step"] == "preflight" for r in records)
    assert WorldState.of(world) == before


def test_a_dry_run_names_every_missing_prerequisite_in_one_run(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator_sandbox.world import SLACK_URL_ENV

    world = cli_env
    before = WorldState.of(world)
    monkeypatch.delenv(SLACK_URL_ENV)  # a laptop without the Slack webhook ...
    argv = ["run", "--dry-run", "-o", "json", "--config", str(world.config_path)]
    # ... and with a typo in one Application's name and another in a Deployment's
    argv += ["--set", "environments.prod.argocd_app.name=align-prdo"]
    argv += ["--set", "environments.preview.deployment=align-preview-gatewya"]

    code = main(argv)

    report = json.loads(capsys.readouterr().out)
    assert code == 3, report
    assert report["outcome"] == "aborted-nothing-changed"
    error = report["error"]
    assert error.startswith("preflight: 3 problems, fix them all before the next run: (1) ")
    assert f"slack.webhook_url: environment variable {SLACK_URL_ENV} is not set" in error
    assert "ArgoCD Application argocd/align-prdo not found" in error
    assert "align-preview-gatewya not found (environments.preview.deployment)" in error
    assert WorldState.of(world) == before


def test_verify_proves_the_current_key_and_changes_nothing(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cli_env
    assert world.posthog is not None
    assert world.slack is not None
    key = world.posthog.current_key(1)
    before = WorldState.of(world)
    slack_before = len(world.slack.payloads)

    code = main(["--config", str(world.config_path), "verify", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["outcome"] == "succeeded"
    assert report["mode"] == "verify"
    assert report["events"]["marker_seen_after_s"] is not None
    assert all(report["events"]["gateway_events"].get(env, 0) > 0 for env in ENVS)
    validate_against_published_schema("report", report)
    assert report["fingerprints"] == [
        {
            "project_id": 1,
            "environments": list(ENVS),
            "old": key.fingerprint,
            "new": key.fingerprint,
        }
    ]
    assert WorldState.of(world) == before
    assert lease(world) is None
    assert len(world.slack.payloads) == slack_before


def test_verify_prints_yaml_with_the_config_flag_after_the_subcommand(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    world = cli_env
    code = main(["verify", "-o", "yaml", "--config", str(world.config_path)])

    report = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    assert report["mode"] == "verify"
    assert report["outcome"] == "succeeded"


def test_a_dry_run_reads_everything_changes_nothing_and_prints_the_plan(
    cli_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    world = cli_env
    assert world.posthog is not None
    assert world.slack is not None
    assert world.kube is not None
    before = WorldState.of(world)
    project_reads = world.posthog.calls("project")
    audit_from = len(world.kube.audit_log())
    slack_before = len(world.slack.payloads)

    code = main(["--config", str(world.config_path), "run", "--dry-run"])

    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    assert "DRY-RUN" in out
    assert "Dry run: nothing was changed" in out
    # The plan: a reset and every step after it, as a real run would do them.
    assert "plan:" in out
    assert "project 1: rotate: do - every environment is on" in out
    for step in ("seal", "push", "argocd", "unseal", "rollout", "verify"):
        assert f"project 1: {step}: do" in out, step
    assert "dry run: skipped the PostHog key reset" in out
    assert "committed locally, push skipped" in out

    # Every read happened: PostHog's project, the sealing cert through the service proxy,
    # the Applications and Deployments.
    assert world.posthog.calls("project") > project_reads
    audit = world.kube.audit_log()[audit_from:]
    seen = {(e.verb, e.resource) for e in audit}
    assert ("get", "services/proxy") in seen
    assert ("get", "applications") in seen
    assert ("get", "deployments") in seen
    # ... and nothing changed: no reset, no push, no Lease, no restart, no Slack message.
    assert WorldState.of(world) == before
    assert world.posthog.calls("reset_token") == 0
    assert lease(world) is None
    assert not any(e.verb in ("create", "update") and e.resource == "leases" for e in audit)
    assert len(world.slack.payloads) == slack_before
    assert world.kube is not None
    assert world.client is not None
    assert world.client.list(LEASE, LEASE_NAMESPACE)[0] == []


def test_demo_rotates_the_key_in_a_fresh_sandbox_and_reports_the_dark_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["demo", "--json"])

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, captured.err[-3000:]
    assert report["outcome"] == "succeeded"
    assert report["trigger"] == "demo"
    assert report["dark_window_s"] > 0
    assert report["ingestion_window_s"] > 0
    events = report["events"]
    assert events["sent"] > 0
    assert events["ingested"] > 0
    assert events["dropped"] is not None
    assert "demo finished in" in captured.err


def test_rotator_schedule_runs_one_scheduled_rotation_in_the_sandbox(
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`rotator schedule --run-now --max-runs 1`: APScheduler fires the rotation job now, the
    real run rotates the key, and the command exits with that run's outcome."""
    world = make_sandbox()
    assert world.posthog is not None
    assert world.slack is not None
    set_environ(world, monkeypatch)
    old = world.posthog.current_key(1)
    metrics = tmp_path / "rotator.prom"

    code = main(
        [
            *("--config", str(world.config_path), "--log-format", "text", "schedule"),
            *("--run-now", "--max-runs", "1", "--metrics-file", str(metrics)),
        ]
    )

    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert world.posthog.calls("reset_token") == 1
    new = world.posthog.current_key(1)
    assert new != old
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {new.fingerprint}
    message = git("show", "-s", "--format=%B", world.git.head(), cwd=world.git.path)
    assert "Rotator-Trigger: schedule" in message
    assert f"Rotator-Key-Fingerprint: {new.fingerprint}" in message
    assert [p["text"] for p in world.slack.payloads] == [
        "PostHog key rotated and verified (succeeded)"
    ]
    assert "rotation: run starting (rotate)" in err
    assert "finished: succeeded (exit 0)" in err
    assert "scheduler stopped after 1 run(s)" in err
    text = metrics.read_text()
    assert 'rotator_last_run_outcome{outcome="succeeded"} 1.0' in text
    assert "rotator_last_rotation_timestamp_seconds " in text
    assert "rotator_last_success_timestamp_seconds " in text
    assert "rotator_dark_window_seconds " in text
