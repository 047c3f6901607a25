"""kubeseal itself opens what ``rotator seal`` writes, and writes the same layout.

The real kubeseal (built by ``.ci/peers.sh``), not our own decryptor: ``--recovery-unseal`` with
the controller's private key decrypts each file ``rotator seal`` wrote, in all three scopes, and
``kubeseal --format yaml`` for the same Secret gives a manifest that differs from rotator's only
in the ciphertexts (sealing is randomised).
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
import yaml

from rotator.cli import main
from rotator.names import FINGERPRINT_ANNOTATION
from rotator.redact import fingerprint
from tests.real.peers import peers
from tests.real.realfix import run, write_private_key
from tests.sealing_fixtures import controller_keys, git_checkout

pytestmark = pytest.mark.real
NEEDS = ("kubeseal",)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "align.yaml"
KEY = "phc_RealTierKey0123456789abcdefGHIJKLmnopQRSTu"  # a fake project key, for this test only
SEALED = Path("sealedsecrets/preview/posthog.yaml")
SCOPES = ("strict", "namespace-wide", "cluster-wide")
PEERS = peers()


def rotator_seal(tmp_path: Path, scope: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``rotator seal --env preview --from-stdin`` with the preview environment in ``scope``."""
    tree = yaml.safe_load(REPO_CONFIG.read_text())
    tree["environments"]["preview"]["scope"] = scope
    config = tmp_path / "rotator.yaml"
    config.write_text(yaml.safe_dump(tree))
    cert = tmp_path / "cert.pem"
    cert.write_bytes(controller_keys(4096).cert_pem)
    repo = git_checkout(tmp_path / "ops")
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    argv = ["--config", str(config), "seal", "--env", "preview", "--repo", str(repo)]
    assert main([*argv, "--cert", str(cert), "--from-stdin"]) == 0
    return repo / SEALED


def kubeseal_env(tmp_path: Path) -> dict[str, str]:
    """No cluster: an empty kubeconfig, so kubeseal can never reach one by accident."""
    kubeconfig = tmp_path / "no-cluster.kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    return {"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize("version", PEERS.sealed_secrets_versions)
@pytest.mark.parametrize("scope", SCOPES)
def test_kubeseal_recovery_unseal_opens_what_rotator_seal_wrote(
    scope: str, version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = rotator_seal(tmp_path, scope, monkeypatch)
    key_file = write_private_key(controller_keys(4096), tmp_path / "controller.key")
    out = run(
        [
            PEERS.kubeseal(version),
            "--recovery-unseal",
            "--recovery-private-key",
            key_file,
            "--format",
            "yaml",
        ],
        stdin=sealed.read_bytes(),
        env=kubeseal_env(tmp_path),
    )
    secret = yaml.safe_load(out)
    assert secret["kind"] == "Secret"
    assert (secret["metadata"]["namespace"], secret["metadata"]["name"]) == (
        "align-preview",
        "align-posthog",
    )
    assert base64.b64decode(secret["data"]["POSTHOG_API_KEY"]).decode() == KEY
    annotations = secret["metadata"]["annotations"]
    assert annotations[FINGERPRINT_ANNOTATION] == fingerprint(KEY)


def test_kubeseal_refuses_a_strict_file_moved_to_another_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label binds the strict ciphertext to namespace/name: kubeseal itself says no."""
    sealed = rotator_seal(tmp_path, "strict", monkeypatch)
    doc = yaml.safe_load(sealed.read_text())
    doc["metadata"]["name"] = "another-name"
    key_file = write_private_key(controller_keys(4096), tmp_path / "controller.key")
    argv = [PEERS.kubeseal(PEERS.current), "--recovery-unseal", "--recovery-private-key", key_file]
    with pytest.raises(AssertionError, match="decrypt"):
        run(argv, stdin=yaml.safe_dump(doc).encode(), env=kubeseal_env(tmp_path))


def _without_ciphertexts(text: str) -> str:
    """The manifest text with each ``encryptedData`` value replaced by a placeholder."""
    return re.sub(r"^(    [A-Za-z0-9_.-]+: )[A-Za-z0-9+/=]{64,}$", r"\1<sealed>", text, flags=re.M)


@pytest.mark.parametrize("scope", SCOPES)
def test_rotator_writes_exactly_the_layout_of_kubeseal_format_yaml(
    scope: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same keys, order, quoting and document markers as kubeseal (current release) for the
    same Secret; only the (randomised) ciphertexts differ."""
    sealed = rotator_seal(tmp_path, scope, monkeypatch)
    ours = sealed.read_text()
    template = yaml.safe_load(ours)["spec"]["template"]["metadata"]
    # The Secret a person would pipe into kubeseal: rotator's template metadata minus the
    # scope annotation (kubeseal adds that itself from --scope).
    annotations = {
        k: v for k, v in (template.get("annotations") or {}).items() if not k.startswith("sealed")
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": template["name"],
            "namespace": template["namespace"],
            "annotations": annotations,
        },
        "type": "Opaque",
        "data": {"POSTHOG_API_KEY": base64.b64encode(KEY.encode()).decode()},
    }
    cert = tmp_path / "cert.pem"
    theirs = run(
        [PEERS.kubeseal(PEERS.current), "--format", "yaml", "--cert", cert, "--scope", scope],
        stdin=yaml.safe_dump(secret).encode(),
        env=kubeseal_env(tmp_path),
    ).decode()
    assert _without_ciphertexts(theirs) != theirs, "no ciphertext found in kubeseal's output"
    assert _without_ciphertexts(ours) == _without_ciphertexts(theirs)
