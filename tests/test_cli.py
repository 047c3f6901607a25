"""The command line behaves like kubectl's: global flags anywhere, -o, suggestions, completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.cli import main, parse_args
from rotator.commands.options import output_of
from rotator.version import REVISION_ENV

ROOT = Path(__file__).resolve().parent.parent
REPO_CONFIG = ROOT / "config" / "align.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "status"],
        ["status", "--config", "c.yaml"],
        ["--config", "other.yaml", "status", "--config", "c.yaml"],
    ],
)
def test_the_config_flag_is_accepted_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = parse_args(argv)
    assert args.config == Path("c.yaml")
    assert args.command == "status"


def test_set_overrides_before_and_after_the_subcommand_add_up_in_order() -> None:
    args = parse_args(["--set", "a.b=1", "config", "--set", "c=2", "check", "--set", "d=3", "-v"])
    assert args.set == ["a.b=1", "c=2", "d=3"]
    assert args.verbose is True
    assert args.command == "config"


def test_log_format_after_the_subcommand_wins_over_one_before_it() -> None:
    args = parse_args(["--log-format", "text", "run", "--log-format", "json", "--dry-run"])
    assert args.log_format == "json"
    assert args.dry_run is True


@pytest.mark.parametrize("command", [["run"], ["status"], ["verify"], ["config", "check"]])
@pytest.mark.parametrize("output", ["text", "json", "yaml"])
def test_output_is_a_flag_of_run_status_verify_and_config_check(
    command: list[str], output: str
) -> None:
    assert parse_args([*command, "-o", output]).output == output
    assert parse_args([*command, f"--output={output}"]).output == output


def test_the_old_json_flag_still_means_json_output() -> None:
    args = parse_args(["status", "--json"])
    assert args.output == "json"
    assert args.json is True
    assert output_of(parse_args(["status"])) == "text"


def test_an_unknown_output_format_is_refused_with_the_choices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["status", "-o", "xml"]) == 2
    err = capsys.readouterr().err
    assert "'xml' is not one of 'text', 'json', 'yaml'" in err


def test_a_mistyped_command_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stauts"]) == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in capsys.readouterr().err


def test_a_mistyped_flag_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--dry-rn"]) == 2
    assert "Did you mean '--dry-run'?" in capsys.readouterr().err


def test_env_is_repeatable_and_absent_means_every_environment() -> None:
    assert parse_args(["run", "--env", "preview", "--env", "prod"]).envs == ["preview", "prod"]
    assert parse_args(["run"]).envs is None


def test_bench_replicas_take_a_list() -> None:
    assert parse_args(["bench", "--replicas", "1,3"]).replicas == [1, 3]
    assert parse_args(["bench", "--replicas", "2", "--replicas", "5"]).replicas == [2, 5]
    assert parse_args(["bench"]).replicas is None


def test_version_names_the_git_revision_of_the_checkout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REVISION_ENV, raising=False)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rotator 0.1.0 (revision ")
    assert head in out


def test_version_in_the_image_names_the_revision_it_was_built_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REVISION_ENV, "0123456789ab")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "rotator 0.1.0 (revision 0123456789ab)"


def test_completion_prints_a_script_that_completes_commands() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "rotator", "completion", "bash"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "_ROTATOR_COMPLETE=bash_complete" in script
    # What the script asks rotator when the user types `rotator sta<TAB>`:
    env = {**os.environ, "_ROTATOR_COMPLETE": "bash_complete", "COMP_WORDS": "rotator sta"}
    env["COMP_CWORD"] = "1"
    answer = subprocess.run(
        [sys.executable, "-m", "rotator"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    ).stdout
    assert "plain,status" in answer.splitlines()


def test_config_check_json_is_parseable_and_masks_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    webhook = tmp_path / "webhook"
    webhook.write_text("https://hooks.slack.test/services/FAKE/TEST/fixture")
    monkeypatch.setenv("ROTATOR_POSTHOG_PERSONAL_API_KEY", "phx_fake_test_fixture_key")
    monkeypatch.setenv("ROTATOR_POSTHOG_PASSWORD", "fake test fixture password")
    monkeypatch.setenv("ROTATOR_POSTHOG_TOTP_SECRET", "JBSWY3DPEHPK3PXP")
    override = f"slack.webhook_url.file={webhook}"
    code = main(["config", "check", "-o", "json", "--config", str(REPO_CONFIG), "--set", override])
    out = capsys.readouterr().out
    assert code == 0
    tree = json.loads(out)
    assert tree["secrets (resolved, masked)"]["posthog.personal_api_key"].startswith("set (sha256:")
    assert "phx_fake_test_fixture_key" not in out


def test_dev_env_puts_rotator_on_path() -> None:
    venv = Path(os.environ.get("ROTATOR_VENV", ROOT / ".venv"))
    if not (venv / "bin" / "rotator").exists():
        pytest.skip(f"no virtualenv at {venv} (./dev builds it)")
    found = subprocess.run(
        ["bash", "-c", 'eval "$(./dev env)" && command -v rotator'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    ).stdout.strip()
    assert Path(found) == venv / "bin" / "rotator"
