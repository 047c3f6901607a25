"""One environment namespace, ROTATOR_: settings are ROTATOR_<SECTION>__<FIELD>, switches and
secrets ROTATOR_<NAME>; the old ROTATOR__<SECTION>__<FIELD> still works for one release, with a
warning that names the new name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rotator.config import RunSwitches, load_config
from rotator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIG = ROOT / "config" / "align.yaml"


def test_a_setting_is_rotator_section_double_underscore_field() -> None:
    env = {
        "ROTATOR_GIT__BRANCH": "release",
        "ROTATOR_ENVIRONMENTS__PROD__NAMESPACE": "align-live",
        "ROTATOR_LOCK": "{name: whole-section, duration_s: 60}",
    }
    config = load_config(REPO_CONFIG, environ=env)
    assert config.git.branch == "release"
    assert config.environments["prod"].namespace == "align-live"
    assert (config.lock.name, config.lock.duration_s) == ("whole-section", 60)


def test_switches_and_secret_variables_share_the_namespace_but_are_never_settings() -> None:
    env = {
        "ROTATOR_DRY_RUN": "true",
        "ROTATOR_ENVS": "prod",
        "ROTATOR_TRIGGER": "manual",
        "ROTATOR_CONFIG": str(REPO_CONFIG),
        "ROTATOR_POSTHOG_PERSONAL_API_KEY": "phx_" + "p" * 40,
        "ROTATOR_SLACK_WEBHOOK_URL": "https://hooks.slack.invalid/x",
    }
    config = load_config(None, environ=env)
    assert config.secrets.posthog_personal_api_key is not None
    switches = RunSwitches.from_env(env)
    assert (switches.dry_run, switches.envs, switches.trigger) == (True, ("prod",), "manual")


def test_a_misspelt_section_is_an_error_naming_it_not_silently_ignored() -> None:
    with pytest.raises(ConfigError, match=r"gti: unknown field"):
        load_config(REPO_CONFIG, environ={"ROTATOR_GTI__BRANCH": "x"})


def test_the_old_double_underscore_prefix_still_works_and_warns_once_naming_the_new_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="rotator.config"):
        config = load_config(REPO_CONFIG, environ={"ROTATOR__GIT__BRANCH": "old-style"})
    assert config.git.branch == "old-style"
    warnings = [r.getMessage() for r in caplog.records if "ROTATOR__GIT__BRANCH" in r.getMessage()]
    assert warnings == [
        "environment variable ROTATOR__GIT__BRANCH is deprecated: rename it ROTATOR_GIT__BRANCH "
        "(the old name is read until the next release)"
    ]


def test_when_both_names_are_set_the_new_one_wins_and_the_old_one_is_reported_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"ROTATOR__GIT__BRANCH": "old", "ROTATOR_GIT__BRANCH": "new"}
    with caplog.at_level(logging.WARNING, logger="rotator.config"):
        assert load_config(REPO_CONFIG, environ=env).git.branch == "new"
    assert [r.getMessage() for r in caplog.records] == [
        "environment variable ROTATOR__GIT__BRANCH is ignored: ROTATOR_GIT__BRANCH is set too"
    ]


def test_a_bad_value_names_the_variable_as_the_user_spelt_it() -> None:
    with pytest.raises(ConfigError, match="environment variable ROTATOR__LOCK is not valid YAML"):
        load_config(REPO_CONFIG, environ={"ROTATOR__LOCK": "{unclosed"})
    with pytest.raises(ConfigError, match="environment variable ROTATOR_LOCK is not valid YAML"):
        load_config(REPO_CONFIG, environ={"ROTATOR_LOCK": "{unclosed"})


def test_no_shipped_manifest_or_doc_uses_the_old_prefix_except_to_name_it_deprecated() -> None:
    for path in [ROOT / "README.md", ROOT / "cronjob.yaml", ROOT / "watch.yaml", REPO_CONFIG]:
        for line in path.read_text().splitlines():
            if "ROTATOR__" in line:
                assert "deprecated" in line, f"{path.name}: {line}"
