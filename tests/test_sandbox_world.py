"""The sandbox world as a whole: config for rotator, kubectl, git faults, ``rotator sandbox up``."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from rotator.redact import Secret
from rotator_sandbox import manifests
from rotator_sandbox.controllers.base import DEPLOYMENT, SECRET, Kube
from rotator_sandbox.gitremote import GitRemote, git
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import FAST, Sandbox, SandboxTiming
from tests.sandbox_fixtures import key_pair, sandbox

FIXTURES = (key_pair, sandbox)  # used as pytest fixtures by name
KUBECTL = shutil.which("kubectl")


def test_the_config_it_writes_loads_with_every_secret_resolved(sandbox: Sandbox) -> None:
    config = sandbox.load_config()
    assert sandbox.posthog is not None
    assert config.secrets.missing == {}
    assert config.secrets.posthog_personal_api_key == sandbox.personal_key
    assert config.posthog.app_host == sandbox.posthog.url
    assert config.git.remote == sandbox.git_remote_url
    assert config.kubernetes.kubeconfig == sandbox.kubeconfig_path
    assert config.waits.ingestion_window_s == pytest.approx(sandbox.posthog.window_s)
    assert set(config.environments) == {"preview", "prod"}
    prod = config.env("prod")
    assert (prod.namespace, prod.deployment, prod.sealed_file) == (
        "align-prod",
        "align-prod-gateway",
        "sealedsecrets/prod/posthog.yaml",
    )
    assert config.project_groups() == [(1, ["preview", "prod"])]
    assert sandbox.environ()["ROTATOR_CONFIG"] == str(sandbox.config_path)
    # Secrets are referenced, never written into the config.
    text = sandbox.config_path.read_text()
    assert sandbox.environ()["ROTATOR_POSTHOG_PERSONAL_API_KEY"] not in text
    assert sandbox.environ()["ROTATOR_SLACK_WEBHOOK_URL"] not in text


def test_the_seed_commit_holds_both_sealed_files_with_the_initial_fingerprint(
    sandbox: Sandbox,
) -> None:
    key = sandbox.initial_keys["prod"]
    for env in manifests.ENVS:
        text = sandbox.git.read(manifests.sealed_path(env))
        assert f"rotator.align.dev/key-fingerprint: {key.fingerprint}" in text
        assert key.reveal() not in text
        assert sandbox.pod_key_fingerprints(env) == {key.fingerprint}


def test_separate_projects_give_each_environment_its_own_key(
    tmp_path: Path, key_pair: ControllerKeyPair
) -> None:
    with Sandbox(tmp_path, key_pair=key_pair, separate_projects=True) as world:
        preview, prod = world.initial_keys["preview"], world.initial_keys["prod"]
        assert preview != prod
        assert world.pod_key_fingerprints("preview") == {preview.fingerprint}
        assert world.pod_key_fingerprints("prod") == {prod.fingerprint}
        config = world.load_config()
        assert config.project_groups() == [(1, ["preview"]), (2, ["prod"])]


def test_timing_scales_every_delay() -> None:
    assert SandboxTiming().scaled(120) == 120
    assert FAST.scaled(150) == pytest.approx(3.0)
    assert FAST.with_scale(1.0) == SandboxTiming()
    assert FAST.gateway_interval_s >= 0.1


# --- the git remote -------------------------------------------------------------------------------


def _checkout(remote: GitRemote, where: Path) -> Path:
    git("clone", "--quiet", remote.url, str(where))
    return where


def test_a_push_after_a_concurrent_commit_is_rejected_and_the_retry_lands(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "remote")
    remote.create({"sealedsecrets/prod/posthog.yaml": "old\n"})
    work = _checkout(remote, tmp_path / "work")
    (work / "sealedsecrets/prod/posthog.yaml").write_text("new\n")
    git("commit", "--quiet", "-am", "Rotate", cwd=work)
    remote.arm_concurrent_commit()
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    assert "concurrent commit" in rejected.value.stderr
    assert remote.log()[0] == "colleague: concurrent change"
    git("pull", "--quiet", "--rebase", "origin", "main", cwd=work)
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    assert remote.log()[:2] == ["Rotate", "colleague: concurrent change"]
    assert remote.read("sealedsecrets/prod/posthog.yaml") == "new\n"


def test_an_unreachable_remote_fails_a_fetch_until_it_is_back(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "remote")
    head = remote.create({"README.md": "x\n"})
    work = _checkout(remote, tmp_path / "work")
    with remote.unreachable(), pytest.raises(subprocess.CalledProcessError):
        git("fetch", "--quiet", "origin", cwd=work)
    git("fetch", "--quiet", "origin", cwd=work)
    assert remote.head() == head


def test_rejected_pushes_can_be_switched_on_and_off(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "remote")
    remote.create({"README.md": "x\n"})
    work = _checkout(remote, tmp_path / "work")
    git("commit", "--quiet", "--allow-empty", "-m", "empty", cwd=work)
    remote.reject_pushes("protected branch")
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    assert "protected branch" in rejected.value.stderr
    remote.accept_pushes()
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    assert remote.log()[0] == "empty"


# --- rotator sandbox up --------------------------------------------------------------------------


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError("sandbox up did not print its summary:\n" + "".join(lines))


def test_sandbox_up_prints_where_everything_is_and_stops_on_sigint(tmp_path: Path) -> None:
    root = tmp_path / "world"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rotator", "sandbox", "up", "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        out = _read_until(proc, "Ctrl-C stops it", timeout=60)
        assert f"export KUBECONFIG={root / 'kubeconfig'}" in out
        assert str(root / "rotator.yaml") in out
        assert str(root / "ops.git") in out
        secrets_dir = root / "secrets"
        for name in ("posthog-personal-api-key", "slack-webhook-url"):
            path = secrets_dir / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert path.read_text().strip() not in out
            assert f"$(cat {path})" in out
        if KUBECTL:
            listed = subprocess.run(
                [
                    KUBECTL,
                    "--kubeconfig",
                    str(root / "kubeconfig"),
                    "get",
                    "deploy,sealedsecrets,applications",
                    "-A",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            for name in ("align-preview-gateway", "align-prod-gateway", "align-posthog"):
                assert name in listed
            assert "align-preview" in listed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_pushed_key_is_only_a_fingerprint_in_the_commit(sandbox: Sandbox) -> None:
    key = Secret("phc_" + "k" * 43)
    revision = sandbox.push_sealed_key(("preview",), key, message="Rotate preview")
    assert sandbox.git.files_changed(revision) == ["sealedsecrets/preview/posthog.yaml"]
    assert key.reveal() not in sandbox.git.read("sealedsecrets/preview/posthog.yaml")


def test_with_rbac_rotator_gets_exactly_its_roles_and_no_secret_but_the_unsealed_one(
    tmp_path: Path, key_pair: ControllerKeyPair
) -> None:
    with Sandbox(tmp_path, key_pair=key_pair, rbac=True) as world:
        rotator = Kube(world.kubeconfig_path)
        try:
            assert rotator.get(DEPLOYMENT, "align-prod", "align-prod-gateway") is not None
            # get on the unsealed Secret (the run reads it metadata-only), nothing else
            assert rotator.get(SECRET, "align-prod", "align-posthog") is not None
            with pytest.raises(ApiException) as denied:
                rotator.get(SECRET, "align-prod", "another-secret")
            assert denied.value.status == 403
            with pytest.raises(ApiException) as denied:
                rotator.list(SECRET, "align-prod")
            assert denied.value.status == 403
        finally:
            rotator.close()
