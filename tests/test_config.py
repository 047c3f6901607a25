from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rotator.cli import main
from rotator.config import Config, RunSwitches, effective_config_text, load_config
from rotator.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "align.yaml"


def write(tmp_path: Path, tree: object) -> Path:
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def base_tree() -> dict[str, object]:
    tree = yaml.safe_load(REPO_CONFIG.read_text())
    assert isinstance(tree, dict)
    return tree


def test_the_shipped_config_is_valid_and_groups_both_envs_under_one_project() -> None:
    config = load_config(REPO_CONFIG, environ={})
    assert config.env_names() == ["preview", "prod"]
    assert config.project_groups() == [(12345, ["preview", "prod"])]


def test_separate_projects_rotate_preview_first(tmp_path: Path) -> None:
    tree = base_tree()
    tree["environments"]["prod"]["posthog_project_id"] = 999  # type: ignore[index]
    config = load_config(write(tmp_path, tree), environ={})
    assert config.project_groups() == [(12345, ["preview"]), (999, ["prod"])]


def test_a_missing_field_is_named_by_its_path(tmp_path: Path) -> None:
    tree = base_tree()
    del tree["environments"]["prod"]["namespace"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"environments\.prod\.namespace: required"):
        load_config(write(tmp_path, tree), environ={})


def test_an_unknown_field_is_an_error_that_names_it(tmp_path: Path) -> None:
    tree = base_tree()
    tree["git"]["branchh"] = "main"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"git\.branchh: unknown field"):
        load_config(write(tmp_path, tree), environ={})


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("environments.prod.namespace", "Align_Prod", "lower-case DNS label"),
        ("environments.prod.posthog_project_id", "@current", "posthog_project_id"),
        ("environments.prod.sealed_file", "../escape.yaml", "relative .yaml path"),
        ("environments.prod.scope", "global", "strict"),
        ("environments.prod.restart", "bounce", "rollout-restart"),
        ("posthog.app_host", "http://eu.posthog.com", "use https"),
        ("git.remote", "https://user:pw@example.com/ops.git", "must not carry credentials"),
        ("waits.argocd_s", -1, "waits.argocd_s"),
    ],
)
def test_bad_values_name_their_path_and_the_fix(
    tmp_path: Path, path: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(REPO_CONFIG, overrides=[f"{path}={value}"], environ={})
    assert path in str(info.value)


def test_secrets_cannot_be_written_into_the_file(tmp_path: Path) -> None:
    tree = base_tree()
    tree["secrets"] = {"posthog_personal_api_key": "phx_x"}
    with pytest.raises(ConfigError, match="secrets come from env vars or mounted files"):
        load_config(write(tmp_path, tree), environ={})


def test_secrets_are_read_from_env_and_files_and_masked(tmp_path: Path) -> None:
    webhook = tmp_path / "webhook"
    webhook.write_text("https://hooks.slack.com/services/T000/B000/XXXXSECRET\n")
    env = {"ROTATOR_POSTHOG_PERSONAL_API_KEY": "phx_personalsecretvalue123"}
    config = load_config(
        REPO_CONFIG, overrides=[f"slack.webhook_url={{file: {webhook}}}"], environ=env
    )
    assert config.secrets.posthog_personal_api_key is not None
    assert config.secrets.posthog_personal_api_key.reveal() == "phx_personalsecretvalue123"
    text = effective_config_text(config)
    assert "phx_personalsecretvalue123" not in text
    assert "XXXXSECRET" not in text
    assert config.secrets.posthog_personal_api_key.fingerprint in text


def test_a_missing_secret_is_recorded_not_fatal_at_load() -> None:
    config = load_config(REPO_CONFIG, environ={})
    assert "posthog.personal_api_key" in config.secrets.missing


def test_env_overrides_sit_between_file_and_flags() -> None:
    env = {"ROTATOR_GIT__BRANCH": "from-env"}
    assert load_config(REPO_CONFIG, environ=env).git.branch == "from-env"
    flagged = load_config(REPO_CONFIG, overrides=["git.branch=from-flag"], environ=env)
    assert flagged.git.branch == "from-flag"


def test_config_is_frozen() -> None:
    config = load_config(REPO_CONFIG, environ={})
    with pytest.raises(Exception, match="frozen"):
        config.git.branch = "other"  # type: ignore[misc]
    assert isinstance(config, Config)


def test_a_missing_config_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config PATH or set ROTATOR_CONFIG"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("git:\n  remote: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path, environ={})


def test_run_switches_come_from_env_for_the_cronjob() -> None:
    switches = RunSwitches.from_env(
        {"ROTATOR_DRY_RUN": "true", "ROTATOR_ENVS": "preview,prod", "ROTATOR_TRIGGER": "manual"}
    )
    assert switches.dry_run
    assert not switches.no_reset
    assert switches.envs == ("preview", "prod")
    with pytest.raises(ConfigError, match="ROTATOR_NO_RESET"):
        RunSwitches.from_env({"ROTATOR_NO_RESET": "maybe"})


def test_config_check_prints_the_effective_config_and_exits_zero(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    webhook = tmp_path / "webhook-url"
    webhook.write_text("https://hooks.slack.test/services/FAKE/TEST/fixture")
    monkeypatch.setenv("ROTATOR_POSTHOG_PERSONAL_API_KEY", "phx_fake_test_fixture")
    monkeypatch.setenv("ROTATOR_POSTHOG_PASSWORD", "fake test fixture password")
    monkeypatch.setenv("ROTATOR_POSTHOG_TOTP_SECRET", "JBSWY3DPEHPK3PXP")
    argv = ["--config", str(REPO_CONFIG), "config", "check"]
    assert main([*argv, "--set", f"slack.webhook_url.file={webhook}"]) == 0
    captured = capsys.readouterr()
    assert "align-preview-gateway" in captured.out
    assert "config OK" in captured.err


def test_config_check_reports_every_missing_secret_and_exits_two(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROTATOR_POSTHOG_PERSONAL_API_KEY", raising=False)
    monkeypatch.delenv("ROTATOR_SLACK_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("ROTATOR_POSTHOG_PASSWORD", raising=False)
    monkeypatch.delenv("ROTATOR_POSTHOG_TOTP_SECRET", raising=False)
    assert main(["--config", str(REPO_CONFIG), "config", "check"]) == 2
    captured = capsys.readouterr()
    assert "align-preview-gateway" in captured.out  # still printed: it shows what is missing
    assert "error: posthog.personal_api_key:" in captured.err
    assert "error: slack.webhook_url:" in captured.err
    assert "error: posthog.reset.password:" in captured.err
    assert "error: posthog.reset.totp_secret:" in captured.err
    assert "config NOT OK: 4 secret(s) missing" in captured.err
    assert "config OK" not in captured.err


def test_config_check_exits_two_on_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"git": {}})
    assert main(["--config", str(path), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "environments: required" in err
    assert "git.remote: required" in err


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("environments:\n  prod: {}\n  prod: {}\n", "prod", 3, 2),
        ("git:\n  branch: main\n  remote: x\n  branch: release\n", "branch", 4, 2),
        ("lock: {name: a, name: b}\n", "name", 1, 1),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, key: str, line: int, first: int
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert f"duplicate key {key!r} at line {line}," in message
    assert f"(first at line {first})" in message
    assert str(path) in message


def test_a_key_a_merge_brings_in_may_be_overridden(tmp_path: Path) -> None:
    from rotator.config import load_yaml

    tree = load_yaml("base: &b {a: 1, b: 2}\nchild:\n  <<: *b\n  b: 3\n")
    assert tree["child"] == {"a": 1, "b": 3}


def test_a_duplicate_key_in_a_set_value_or_an_env_override_is_refused_too(tmp_path: Path) -> None:
    from rotator.config import parse_override

    with pytest.raises(ConfigError, match=r"--set lock: duplicate key 'name' at line 1"):
        parse_override("lock={name: a, name: b}")
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match="environment variable ROTATOR_LOCK: duplicate key"):
        load_config(path, environ={"ROTATOR_LOCK": "{name: a, name: b}"})
    with pytest.raises(ConfigError, match="environment variable ROTATOR_LOCK is not valid YAML"):
        load_config(path, environ={"ROTATOR_LOCK": "{unclosed"})
