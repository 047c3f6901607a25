"""End to end in the sandbox: whole rotator runs against the real HTTP stand-ins (issue 5).

Every run here is ``runner.run_once`` with the sandbox's config: a real reset in the PostHog
stand-in, real sealing, GitPython pushing to a bare repo, the simulated ArgoCD, sealed-secrets
and rollout controllers talking to the Kubernetes API stand-in, and the Live Events check
reading events back through the query API. Faults come from the sandbox's hooks. Most runs
space PostHog queries 0.1 s apart instead of 1.5 s (``sandbox_clients``: the stand-in has no
rate limit); the full-rotation world uses exactly the clients the CronJob builds.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import requests

from rotator.config import RunSwitches
from rotator.redact import Secret, fingerprint
from rotator.report import Outcome, RunReport, StepStatus, to_json_text, to_text
from rotator.runner import verify_only
from rotator.steps import Step
from rotator_sandbox import manifests
from rotator_sandbox.controllers.base import (
    APPLICATION,
    DEPLOYMENT,
    LEASE,
    SEALED_SECRET,
    SECRET,
)
from rotator_sandbox.gitremote import git
from rotator_sandbox.slack import blocks_error
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import FAST, Sandbox
from tests.e2e_fixtures import (
    ENVS,
    LEASE_NAME,
    LEASE_NAMESPACE,
    MakeSandbox,
    WorldState,
    capture_logs,
    config_for,
    e2e_key_pair,
    find_leaks,
    lease,
    make_sandbox,
    resets,
    rotate,
    sandbox_clients,
    start_sandbox,
)
from tests.test_contract import validate_against_published_schema

FIXTURES = (e2e_key_pair, make_sandbox)  # used as pytest fixtures by name

TRAILER = re.compile(r"^(Rotator-[A-Za-z-]+): (.+)$", re.M)


def trailers(sandbox: Sandbox, rev: str) -> dict[str, str]:
    return dict(TRAILER.findall(git("show", "-s", "--format=%B", rev, cwd=sandbox.git.path)))


def commits_since(sandbox: Sandbox, rev: str) -> list[str]:
    out = git("rev-list", f"{rev}..{sandbox.git.branch}", cwd=sandbox.git.path)
    return out.split()


def step_results(report: RunReport, step: Step) -> list[str]:
    return [r.status.value for r in report.steps if r.step is step]


def send_event(sandbox: Sandbox, key: Secret, env: str) -> None:
    """One gateway-style capture with ``key`` (a straggler pod that still has it)."""
    assert sandbox.posthog is not None
    body = {
        "api_key": key.reveal(),
        "event": "gateway_heartbeat",
        "distinct_id": f"straggler-{env}",
        "properties": {"environment": env, "source": "gateway", "pod": "straggler"},
    }
    response = requests.post(f"{sandbox.posthog.ingest_url}/i/v0/e/", json=body, timeout=5)
    assert response.status_code == 200


# --- one full rotation, shared by the tests that only read what it left ---------------------


@dataclass(frozen=True)
class Rotated:
    sandbox: Sandbox
    report: RunReport
    logs: str
    old_key: Secret
    new_key: Secret
    seed_head: str


@pytest.fixture(scope="module")
def rotated(
    tmp_path_factory: pytest.TempPathFactory, e2e_key_pair: ControllerKeyPair
) -> Iterator[Rotated]:
    """A sandbox after one full rotation (with its logs captured). Tests only read it."""
    # Twice FAST's delays: a 6 s ingestion window, so that the dark window's comparison with it
    # holds on a loaded CI machine too (rotator's own CPU time does not shrink with the scale).
    world = start_sandbox(
        tmp_path_factory.mktemp("rotated") / "sandbox",
        e2e_key_pair,
        timing=FAST.with_scale(2 * FAST.time_scale),
    )
    try:
        assert world.posthog is not None
        old_key = world.posthog.current_key(world.project_id("prod"))
        seed_head = world.git.head()
        with capture_logs() as stream:
            report = rotate(world, product_clients=True)  # exactly what the CronJob builds
        yield Rotated(
            sandbox=world,
            report=report,
            logs=stream.getvalue(),
            old_key=old_key,
            new_key=world.posthog.current_key(world.project_id("prod")),
            seed_head=seed_head,
        )
    finally:
        world.stop()


def test_a_full_rotation_succeeds_the_gateways_send_with_the_new_key_and_slack_hears_of_it(
    rotated: Rotated,
) -> None:
    world, report, new_key = rotated.sandbox, rotated.report, rotated.new_key
    assert world.posthog is not None
    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)
    assert new_key != rotated.old_key

    # PostHog: exactly one reset, through the API.
    assert world.posthog.calls("reset_token") == 1
    assert dict(world.posthog.counters().resets) == {world.project_id("prod"): 1}

    # git: both sealed files in ONE new commit, with the run's trailers and no key.
    new_commits = commits_since(world, rotated.seed_head)
    assert new_commits == [report.commit]
    assert sorted(world.git.files_changed(new_commits[0])) == sorted(
        manifests.sealed_path(e) for e in ENVS
    )
    assert trailers(world, new_commits[0]) == {
        "Rotator-Run-Id": report.run_id,
        "Rotator-Trigger": "test",
        "Rotator-Key-Fingerprint": new_key.fingerprint,
    }
    for env in ENVS:
        sealed = world.git.read(manifests.sealed_path(env))
        assert f"rotator.align.dev/key-fingerprint: {new_key.fingerprint}" in sealed

    # The cluster: every Ready gateway pod started with the new key.
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {new_key.fingerprint}, env

    # The gateways' events were counted under the new key, in the report and in PostHog.
    for env in ENVS:
        assert report.events.gateway_events.get(env, 0) > 0, env
    assert world.posthog.counters().for_key(new_key).ingested > 0
    envs_on_new_key = {
        e.properties.get("environment")
        for e in world.posthog.events()
        if e.key_fingerprint == new_key.fingerprint
        and e.properties.get("source") == "gateway"
        and e.outcome == "ingested"
    }
    assert envs_on_new_key == set(ENVS)
    assert report.events.marker_seen_after_s is not None

    # The dark window (reset -> last pod Ready on the new key) is measured and lies inside the
    # run. How short it is, against the floor and PostHog's window, is `rotator bench`'s job:
    # performance targets live in the benchmark, never in a timed test.
    assert report.reset_at is not None
    assert report.dark_window_s is not None
    assert 0 < report.dark_window_s < report.duration_s, to_text(report)

    # Old-key events after PostHog's window are dropped, not ingested: a pod that still ran
    # the old key now (the window is over: the run waited it out before counting gateway
    # events) would be dark.
    window_ends = report.reset_at.timestamp() + world.posthog.window_s
    verified = [r for r in report.steps if r.step is Step.VERIFY and r.env]
    assert [r.status for r in verified] == [StepStatus.OK] * len(ENVS)
    assert time.time() > window_ends
    send_event(world, rotated.old_key, "prod")
    send_event(world, rotated.new_key, "prod")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if world.posthog.counters().for_key(rotated.old_key).pending == 0:
            break
        time.sleep(0.05)
    old = world.posthog.counters().for_key(rotated.old_key)
    assert old.dropped >= 1
    late_ingested = [
        e
        for e in world.posthog.events()
        if e.key_fingerprint == rotated.old_key.fingerprint
        and e.outcome == "ingested"
        and e.received_at + world.posthog.lag_s >= window_ends
    ]
    assert late_ingested == []

    # One Slack message for the run, valid Block Kit.
    assert world.slack is not None
    assert report.slack == "sent"
    payloads = world.slack.payloads
    assert len(payloads) == 1
    payload = payloads[0]
    assert blocks_error(payload["blocks"]) is None
    assert payload["blocks"][0]["type"] == "header"
    assert "succeeded" in payload["text"]
    text = json.dumps(payload)
    assert report.run_id in text
    assert rotated.new_key.fingerprint in text


def test_no_secret_appears_in_the_report_logs_slack_git_or_the_objects_the_run_wrote(
    rotated: Rotated,
) -> None:
    world, report = rotated.sandbox, rotated.report
    assert world.personal_key is not None
    assert world.slack is not None
    assert world.client is not None
    secrets = {
        "old project key": rotated.old_key.reveal(),
        "new project key": rotated.new_key.reveal(),
        "personal API key": world.personal_key.reveal(),
        "Slack webhook URL": world.slack.url.reveal(),
    }
    # The checks below look at real output: make sure there is some.
    assert "reset" in rotated.logs
    assert "urllib3" in rotated.logs or "HTTP" in rotated.logs

    outputs = {
        "text report": to_text(report),
        "JSON report": to_json_text(report),
        "logs": rotated.logs,
        "Slack payloads": json.dumps(world.slack.payloads),
        "git history": git("log", "--all", "-p", "--format=%H%n%B", cwd=world.git.path),
    }
    objects = []
    for env in ENVS:
        ns = manifests.namespace(env)
        objects += world.client.list(DEPLOYMENT, ns)[0]
        objects += world.client.list(SEALED_SECRET, ns)[0]
    objects += world.client.list(APPLICATION, manifests.ARGOCD_NAMESPACE)[0]
    objects += world.client.list(LEASE, LEASE_NAMESPACE)[0]
    assert len(objects) >= 7
    outputs["Kubernetes objects"] = json.dumps(objects)
    leaks = {where: find_leaks(text, secrets) for where, text in outputs.items()}
    assert {where: found for where, found in leaks.items() if found} == {}
    # Only fingerprints name the keys.
    assert rotated.new_key.fingerprint in outputs["text report"]
    assert rotated.new_key.fingerprint in outputs["logs"]


# --- runs that change the world: each gets its own sandbox -----------------------------------


def test_a_second_run_right_after_does_not_reset_but_a_forced_one_does(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    config = config_for(world)
    assert config.policy.min_interval_s >= 3600  # the guard is on in the sandbox's config

    first = rotate(world, config=config)
    assert first.outcome is Outcome.SUCCEEDED, to_text(first)
    key = world.posthog.current_key(1)
    head = world.git.head()
    assert resets(world) == 1

    second = rotate(world, config=config)
    assert second.outcome is Outcome.SUCCEEDED, to_text(second)
    assert resets(world) == 1
    assert world.posthog.current_key(1) == key
    assert world.git.head() == head
    assert step_results(second, Step.ROTATE) == ["skipped"]
    assert any("rotated recently" in r.detail for r in second.steps if r.step is Step.ROTATE)
    for step in (Step.SEAL, Step.PUSH, Step.ARGOCD, Step.UNSEAL, Step.ROLLOUT):
        assert step_results(second, step) == ["skipped"], step
    assert set(step_results(second, Step.VERIFY)) == {"ok"}  # it verified, and only that
    assert second.dark_window_s is None
    assert "PostHog key verified; no reset in this run" in to_text(second)  # not "rotated"

    forced = rotate(world, config=config, force=True)
    assert forced.outcome is Outcome.SUCCEEDED, to_text(forced)
    assert resets(world) == 2
    newer = world.posthog.current_key(1)
    assert newer != key
    assert commits_since(world, head) == [forced.commit]
    assert trailers(world, head)["Rotator-Key-Fingerprint"] == key.fingerprint
    assert trailers(world, world.git.head())["Rotator-Key-Fingerprint"] == newer.fingerprint
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {newer.fingerprint}


def test_adopt_mode_after_a_ui_reset_completes_with_the_ui_key_without_resetting(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    ui_key = world.posthog.reset_key_out_of_band(1)
    head = world.git.head()

    report = rotate(world, no_reset=True)

    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)
    assert report.mode == "adopt"
    assert "current key rolled out and verified (no reset in this run)" in to_text(report)
    assert resets(world) == 0
    assert world.posthog.current_key(1) == ui_key
    assert commits_since(world, head) == [report.commit]
    assert trailers(world, world.git.head())["Rotator-Key-Fingerprint"] == ui_key.fingerprint
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {ui_key.fingerprint}
        assert report.events.gateway_events.get(env, 0) > 0


def test_a_run_that_finds_posthog_ahead_of_git_resumes_with_the_current_key_and_never_resets(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    ui_key = world.posthog.reset_key_out_of_band(1)

    report = rotate(world)  # a normal run: no --no-reset

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert resets(world) == 0
    assert world.posthog.current_key(1) == ui_key
    assert step_results(report, Step.ROTATE) == ["skipped"]
    assert any("in flight" in r.detail for r in report.steps if r.step is Step.ROTATE)
    assert trailers(world, world.git.head())["Rotator-Key-Fingerprint"] == ui_key.fingerprint
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {ui_key.fingerprint}


def test_a_run_that_died_after_its_push_is_finished_by_the_next_run_without_a_second_reset(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    # What a run killed right after its push leaves: PostHog on a new key, git sealed for it,
    # the cluster and the pods still on the old one.
    key = world.posthog.reset_key_out_of_band(1)
    pushed = world.push_sealed_key(ENVS, key)

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert resets(world) == 0
    assert world.posthog.current_key(1) == key
    assert world.git.head() == pushed  # git already had the key: nothing new to commit
    assert step_results(report, Step.PUSH) == ["skipped"]
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {key.fingerprint}


def test_a_run_killed_during_the_rollout_is_finished_by_the_next_run_without_reset_or_restart(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    assert world.client is not None
    # What a run killed after its restart leaves: PostHog on a new key, rotator's commit (with
    # its trailers) synced and unsealed, the gateways restarted for the new key.
    key = world.posthog.reset_key_out_of_band(1)
    pushed = world.push_sealed_key(
        ENVS,
        key,
        message=(
            f"Rotate the PostHog project key for preview, prod\n\n"
            f"Rotator-Run-Id: rot-killed\nRotator-Trigger: cron\n"
            f"Rotator-Key-Fingerprint: {key.fingerprint}"
        ),
    )
    for env in ENVS:
        world.refresh_app(env)

    def unsealed(env: str) -> bool:
        secret = world.client.get(SECRET, manifests.namespace(env), manifests.SECRET_NAME) or {}
        raw = (secret.get("data") or {}).get(manifests.DATA_KEY, "")
        return bool(raw) and fingerprint(base64.b64decode(raw).decode()) == key.fingerprint

    world.wait_for(
        lambda: all(world.is_converged(e, pushed) and unsealed(e) for e in ENVS),
        timeout=30,
        what="ArgoCD to sync and the controller to unseal the pushed key",
    )
    # New pods take 6 s to start, so the next run (preflight, lock, observe: ~1 s, a few on a
    # loaded machine) finds the rollout still going.
    assert world.rollout is not None
    world.rollout.pod_start_s = 6.0
    for env in ENVS:
        world.restart(env, key_fingerprint=key.fingerprint)
    templates = [world.deployment(e)["spec"]["template"]["metadata"] for e in ENVS]

    report = rotate(world)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert resets(world) == 0
    assert world.posthog.current_key(1) == key
    assert world.git.head() == pushed
    assert any("not converged" in r.detail for r in report.steps if r.step is Step.ROTATE)
    rollouts = [r.detail for r in report.steps if r.step is Step.ROLLOUT]
    assert len(rollouts) == 2
    assert all(d.startswith("already restarted for this key") for d in rollouts), rollouts
    # Not restarted a second time: the pod template is the one the killed run wrote.
    assert [world.deployment(e)["spec"]["template"]["metadata"] for e in ENVS] == templates
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {key.fingerprint}


def test_a_run_stuck_at_argocd_fails_after_the_reset_and_the_next_run_finishes_with_that_key(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    world.stick_argocd("prod")

    failed = rotate(world, "waits.argocd_s=2")

    assert (failed.outcome, int(failed.exit_code)) == (Outcome.FAILED_AFTER_RESET, 1), to_text(
        failed
    )
    assert resets(world) == 1
    key = world.posthog.current_key(1)
    assert failed.resume_command is not None
    assert "rotator run" in failed.resume_command
    assert failed.broken_now is not None
    assert key.fingerprint in failed.broken_now
    assert "resume with: rotator run" in to_text(failed)
    assert "argocd" in (failed.error or "")
    # The JSON report carries the resume as argument lists and the keys per project.
    doc = json.loads(to_json_text(failed))
    validate_against_published_schema("report", doc)
    assert doc["resume"]["argv"] == ["rotator", "run", "--env", "preview", "--env", "prod"]
    assert doc["resume"]["job_argv"][:6] == (
        ["kubectl", "-n", "rotator", "create", "job", "--from=cronjob/rotator"]
    )
    assert doc["fingerprints"] == [
        {
            "project_id": 1,
            "environments": ["preview", "prod"],
            "old": doc["fingerprints"][0]["old"],
            "new": key.fingerprint,
        }
    ]
    assert world.slack is not None
    assert "failed-after-reset" in world.slack.payloads[-1]["text"]
    pushed = world.git.head()

    world.clear_faults()
    finished = rotate(world)

    assert finished.outcome is Outcome.SUCCEEDED, to_text(finished)
    assert resets(world) == 1  # no second reset
    assert world.posthog.current_key(1) == key
    assert world.git.head() == pushed
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {key.fingerprint}


def test_a_rollout_that_never_becomes_ready_fails_after_the_reset_and_the_next_run_finishes_it(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.posthog is not None
    world.never_ready("prod")

    failed = rotate(world, "waits.rollout_s=2")

    assert (failed.outcome, int(failed.exit_code)) == (Outcome.FAILED_AFTER_RESET, 1), to_text(
        failed
    )
    assert failed.resume_command is not None
    assert "rollout" in (failed.error or "")
    assert resets(world) == 1
    key = world.posthog.current_key(1)

    world.clear_faults()
    finished = rotate(world)

    assert finished.outcome is Outcome.SUCCEEDED, to_text(finished)
    assert resets(world) == 1
    assert world.posthog.current_key(1) == key
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {key.fingerprint}


def test_a_second_concurrent_run_is_refused_by_the_lock_and_changes_nothing(
    make_sandbox: MakeSandbox,
) -> None:
    from rotator.clients.kube import Kube

    world = make_sandbox()
    config = config_for(world)
    other = Kube.from_config(config)
    try:
        other.acquire_lease(LEASE_NAMESPACE, LEASE_NAME, holder="rot-other-run", duration_s=120)
    finally:
        other.close()
    before = WorldState.of(world)

    report = rotate(world, config=config)

    assert (report.outcome, int(report.exit_code)) == (Outcome.LOCKED, 4), to_text(report)
    assert "rot-other-run" in (report.error or "")
    assert WorldState.of(world) == before  # no reset, no commit, the Lease still theirs
    held = lease(world)
    assert held is not None
    assert held["spec"]["holderIdentity"] == "rot-other-run"
    assert step_results(report, Step.ROTATE) == []


def test_preview_failing_stops_prod_when_the_projects_are_separate(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox(separate_projects=True)
    assert world.posthog is not None
    prod_key = world.posthog.current_key(world.project_id("prod"))
    world.inject_sync_error("preview", "admission webhook denied the request")

    report = rotate(world, "waits.argocd_s=5")

    assert report.outcome is Outcome.FAILED_AFTER_RESET, to_text(report)
    resets_by_project = dict(world.posthog.counters().resets)
    assert resets_by_project.get(world.project_id("preview")) == 1
    assert resets_by_project.get(world.project_id("prod"), 0) == 0
    assert world.posthog.current_key(world.project_id("prod")) == prod_key
    assert world.pod_key_fingerprints("prod") == {prod_key.fingerprint}
    # The report says prod was left alone.
    prod_steps = [r for r in report.steps if r.env == "prod"]
    assert prod_steps
    assert all(r.status is StepStatus.NOT_RUN for r in prod_steps), prod_steps
    assert "project 2's key was not reset" in to_text(report)
    old, new = report.fingerprints[f"project {world.project_id('prod')}"]
    assert old == new == prod_key.fingerprint
    assert report.broken_now is not None
    assert "(preview)" in report.broken_now
    assert prod_key.fingerprint not in report.broken_now


def test_prod_refusing_its_reset_after_preview_rotated_is_not_reported_as_nothing_changed(
    make_sandbox: MakeSandbox,
) -> None:
    """Separate projects: preview rotates; prod's pre-reset check then fails. Preview's key did
    change, so the run must not say "aborted, nothing changed" (exit 3)."""
    world = make_sandbox(separate_projects=True)
    assert world.posthog is not None
    prod_key = world.posthog.current_key(world.project_id("prod"))
    world.inject_degraded("prod", "injected: prod is degraded")

    report = rotate(world)

    assert (report.outcome, int(report.exit_code)) == (Outcome.FAILED, 1), to_text(report)
    assert "Degraded" in (report.error or ""), report.error
    resets_by_project = dict(world.posthog.counters().resets)
    assert resets_by_project.get(world.project_id("preview")) == 1
    assert resets_by_project.get(world.project_id("prod"), 0) == 0
    assert world.posthog.current_key(world.project_id("prod")) == prod_key


def test_a_reset_is_refused_when_the_selected_environments_leave_out_one_on_the_same_project(
    make_sandbox: MakeSandbox,
) -> None:
    """One project serves preview and prod: `--env prod` alone must not revoke preview's key."""
    world = make_sandbox()
    before = WorldState.of(world)

    report = rotate(world, envs=("prod",))

    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert "also serves preview" in (report.error or "")
    assert "--env preview --env prod" in (report.error or "")
    after = WorldState.of(world)
    assert replace(after, lease=None) == before  # no reset, no commit, no restart
    assert after.lease is not None
    assert after.lease.get("holderIdentity") is None  # the run's Lease, released


def test_verify_fails_when_the_gateway_pods_run_another_key_than_posthog(
    make_sandbox: MakeSandbox,
) -> None:
    """Right after a reset in PostHog's UI the revoked key's events still land for PostHog's
    window: `rotator verify` must not count them as proof of the current key."""
    world = make_sandbox()
    assert world.posthog is not None
    old = world.posthog.current_key(1)
    new = world.posthog.reset_key_out_of_band(1)
    config = config_for(world)

    report = verify_only(config, RunSwitches(trigger="test"), clients=sandbox_clients(config))

    assert (report.outcome, int(report.exit_code)) == (Outcome.FAILED, 1), to_text(report)
    assert "PostHog key verification FAILED" in to_text(report)
    assert f"PostHog's key is {new.fingerprint}" in (report.error or "")
    assert f"started for {old.fingerprint}" in (report.error or "")
    assert "rotator run" in (report.error or "")
    assert report.events.gateway_events == {}
    assert resets(world) == 0


def test_a_dry_runs_local_commit_of_a_throwaway_key_is_never_pushed_by_the_next_run(
    make_sandbox: MakeSandbox,
) -> None:
    """The dry run commits a throwaway key in the (persistent) checkout; the real run after it
    must start from the remote's tip, or prod would get a key that does not exist."""
    world = make_sandbox()
    assert world.posthog is not None
    seed = world.git.head()

    dry = rotate(world, dry_run=True)
    assert dry.outcome is Outcome.DRY_RUN, to_text(dry)
    assert world.git.head() == seed
    real = rotate(world)

    assert real.outcome is Outcome.SUCCEEDED, to_text(real)
    key = world.posthog.current_key(1)
    assert commits_since(world, seed) == [real.commit]
    assert trailers(world, world.git.head())["Rotator-Key-Fingerprint"] == key.fingerprint
    for env in ENVS:
        sealed = world.git.read(manifests.sealed_path(env))
        assert f"rotator.align.dev/key-fingerprint: {key.fingerprint}" in sealed
        assert world.pod_key_fingerprints(env) == {key.fingerprint}
