from __future__ import annotations

import argparse
import io
import logging
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from rotator.cli import main, parse_args
from rotator.clients.sealing import (
    load_cert,
    read_sealed_file,
    seal_manifest,
)
from rotator.commands.seal import seal_command
from rotator.config import SealingScope, load_config
from rotator.errors import SealingError
from rotator.names import FINGERPRINT_ANNOTATION
from rotator.redact import fingerprint
from rotator_sandbox.unseal import unseal_manifest
from tests.sealing_fixtures import NOW, controller_keys, expired_cert, git_checkout
from tests.test_sealing import FakeControllerProxy

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "align.yaml"
KEY = "phc_Zx9QwErTy1234567890abcdefGHIJKLmnopQRSTuv"
SEALED = Path("sealedsecrets/preview/posthog.yaml")


@pytest.fixture
def ops_repo(tmp_path: Path) -> Path:
    return git_checkout(tmp_path / "ops")


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    path = tmp_path / "cert.pem"
    path.write_bytes(controller_keys(4096).cert_pem)
    return path


class FakeStdin(io.StringIO):
    def __init__(self, text: str = "", *, tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def seal(repo: Path, cert: Path | str, *extra: str) -> int:
    return main(
        [
            "--config",
            str(REPO_CONFIG),
            "seal",
            "--env",
            "preview",
            "--repo",
            str(repo),
            "--cert",
            str(cert),
            *extra,
        ]
    )


def test_seal_writes_a_file_that_decrypts_to_exactly_the_typed_key_and_nothing_leaks(
    ops_repo: Path,
    cert_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(KEY + "\n"))
    with caplog.at_level(logging.DEBUG):
        code = seal(ops_repo, cert_file, "--from-stdin")
    out, err = capsys.readouterr()
    assert code == 0, err
    path = ops_repo / SEALED
    assert out == (f"sealed {path} for align-preview/align-posthog (key {fingerprint(KEY)})\n")
    manifest = yaml.safe_load(path.read_text())
    opened = unseal_manifest(manifest, [controller_keys(4096).private_key])
    assert opened == {"POSTHOG_API_KEY": KEY.encode()}
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {FINGERPRINT_ANNOTATION: fingerprint(KEY)}

    # The key is nowhere in clear: not printed, not logged, not in any file.
    assert KEY not in out
    assert KEY not in err
    for record in caplog.records:
        assert KEY not in record.getMessage()
    for file in ops_repo.parent.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file
    status = subprocess.run(
        ["git", "-C", str(ops_repo), "status", "--porcelain"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert status == "?? sealedsecrets/\n"  # only the new file; no temp files left behind


def test_sealing_again_keeps_the_other_items(
    ops_repo: Path, cert_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ops_repo / SEALED
    path.parent.mkdir(parents=True)
    path.write_text(
        seal_manifest(
            {"POSTHOG_API_KEY": b"phc_old", "OTHER": b"other"},
            namespace="align-preview",
            name="align-posthog",
            scope=SealingScope.STRICT,
            cert=load_cert(controller_keys(2048).cert_pem, source="test", now=NOW),
        )
    )
    other = yaml.safe_load(path.read_text())["spec"]["encryptedData"]["OTHER"]
    monkeypatch.setattr("sys.stdin", FakeStdin(KEY))
    assert seal(ops_repo, cert_file, "--from-stdin") == 0
    manifest = yaml.safe_load(path.read_text())
    assert manifest["spec"]["encryptedData"]["OTHER"] == other
    keys = [controller_keys(2048).private_key, controller_keys(4096).private_key]
    assert unseal_manifest(manifest, keys) == {"POSTHOG_API_KEY": KEY.encode(), "OTHER": b"other"}
    assert read_sealed_file(path.read_text(), path=str(path)).fingerprint == fingerprint(KEY)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("phx_" + "a" * 40, "personal API key (phx_...), not the project key"),
        ("sk_live_abcdefghijkl", "not a PostHog project key"),
        ("phc_" + "a" * 61, "65 characters; a project key has at most 64"),
        ("phc_abc-def_ghij", "characters a project key never has"),
        ("phc_one\nphc_two", "exactly one line"),
        ("", "exactly one line"),
    ],
    ids=["personal-key", "foreign", "too-long", "not-base62", "two-lines", "empty"],
)
def test_only_a_project_key_is_accepted(
    typed: str,
    message: str,
    ops_repo: Path,
    cert_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(typed))
    assert seal(ops_repo, cert_file, "--from-stdin") == 2
    out, err = capsys.readouterr()
    assert message in err
    for line in typed.splitlines():
        if len(line) >= 8:
            assert line not in out + err
    assert not (ops_repo / SEALED).exists()


def test_the_hidden_prompt_asks_twice_and_compares(
    ops_repo: Path,
    cert_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers = iter([KEY, KEY + "x"])
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", FakeStdin(tty=True))
    monkeypatch.setattr("getpass.getpass", getpass)
    assert seal(ops_repo, cert_file) == 2
    assert "the two entries differ" in capsys.readouterr().err
    assert len(prompts) == 2
    assert not (ops_repo / SEALED).exists()

    answers = iter([KEY, KEY])
    assert seal(ops_repo, cert_file) == 0
    assert fingerprint(KEY) in capsys.readouterr().out


def test_without_a_terminal_the_prompt_asks_for_from_stdin(
    ops_repo: Path,
    cert_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(KEY))
    assert seal(ops_repo, cert_file) == 2
    assert "pass --from-stdin" in capsys.readouterr().err


def test_an_expired_cert_is_refused_before_the_key_is_read(
    ops_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert = tmp_path / "old.pem"
    cert.write_bytes(expired_cert())
    stdin = FakeStdin(KEY)
    monkeypatch.setattr("sys.stdin", stdin)
    assert seal(ops_repo, cert, "--from-stdin") == 1
    assert "expired on" in capsys.readouterr().err
    assert stdin.tell() == 0  # the key was never read
    assert not (ops_repo / SEALED).exists()


def test_an_unknown_environment_is_a_config_error(
    ops_repo: Path, cert_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--config", str(REPO_CONFIG), "seal", "--env", "staging", "--repo", str(ops_repo)])
    assert code == 2
    assert "unknown environment 'staging'" in capsys.readouterr().err


def seal_args(repo: Path, env: str, *extra: str) -> argparse.Namespace:
    return parse_args(
        ["--config", str(REPO_CONFIG), "seal", "--env", env, "--repo", str(repo), *extra]
    )


def test_verify_asks_the_controller_and_writes_only_what_it_can_decrypt(
    ops_repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(REPO_CONFIG, environ={})
    # prod takes its cert from the controller (kube-system/sealed-secrets-controller, port http)
    args = seal_args(ops_repo, "prod", "--from-stdin", "--verify")

    monkeypatch.setattr("sys.stdin", FakeStdin(KEY))
    good = FakeControllerProxy()
    assert seal_command(args, config, clock=FixedClock(), proxy=good) == 0
    assert ("kube-system", "sealed-secrets-controller", "http", "/v1/cert.pem") in good.calls
    assert ("kube-system", "sealed-secrets-controller", "http", "/v1/verify") in good.calls
    path = ops_repo / "sealedsecrets/prod/posthog.yaml"
    assert unseal_manifest(yaml.safe_load(path.read_text()), [good.keys.private_key])
    before = path.read_text()

    # A controller that hands out one cert but holds another key answers 409: nothing written.
    monkeypatch.setattr("sys.stdin", FakeStdin(KEY))
    confused = FakeControllerProxy(slot=1, cert_slot=0)
    with pytest.raises(SealingError, match=r"cannot decrypt the result.*nothing was written"):
        seal_command(args, config, clock=FixedClock(), proxy=confused)
    assert path.read_text() == before
    assert KEY not in capsys.readouterr().out


class FixedClock:
    def monotonic(self) -> float:
        return 0.0

    def now(self) -> datetime:
        return NOW

    def sleep(self, seconds: float) -> None:
        raise AssertionError("sealing never waits")


def test_verify_needs_a_controller_in_the_config(
    ops_repo: Path,
    cert_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", FakeStdin(KEY))
    code = main(
        [
            "--config",
            str(REPO_CONFIG),
            "--set",
            f"environments.preview.cert={{file: {cert_file}}}",
            "seal",
            "--env",
            "preview",
            "--repo",
            str(ops_repo),
            "--from-stdin",
            "--verify",
        ]
    )
    assert code == 2
    assert "environments.preview.cert names no controller" in capsys.readouterr().err
