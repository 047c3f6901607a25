"""Every URL in the config is validated as a URL: a bad one is one line naming the field and
the fix, and never quotes a credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.config import load_config
from rotator.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "align.yaml"

HTTPS_FIELDS = [
    "posthog.app_host",
    "posthog.ingest_host",
    "environments.prod.trigger_url",
]


def _error_line(override: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(REPO_CONFIG, overrides=[override], environ={})
    header, *lines = str(info.value).splitlines()
    assert header.startswith("invalid configuration in ")
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("field", HTTPS_FIELDS)
@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ("eu.posthog.com", "relative URL without a base"),
        ("https://eu posthog.com", "invalid international domain name"),
        ("https://eu.posthog.com:99999", "invalid port number"),
        ("https://", "empty host"),
        ("https:/eu.posthog.com", "no host in https:/eu.posthog.com"),
        ("ftp://eu.posthog.com", "URL scheme should be 'http' or 'https'"),
    ],
)
def test_a_malformed_url_is_one_line_naming_the_field_and_how_to_write_it(
    field: str, value: str, fault: str
) -> None:
    line = _error_line(f"{field}={value}")
    assert line.startswith(f"  {field}: ")
    assert fault in line
    if "scheme" not in fault:
        assert "write it as https://host[:port][/path]" in line


@pytest.mark.parametrize("field", HTTPS_FIELDS)
def test_plain_http_to_an_outside_host_is_refused_with_the_fix(field: str) -> None:
    line = _error_line(f"{field}=http://eu.posthog.com")
    assert line == f"  {field}: use https (plain http is allowed only for loopback addresses)"


@pytest.mark.parametrize("field", [*HTTPS_FIELDS, "metrics.pushgateway_url"])
def test_a_url_with_credentials_is_refused_without_quoting_them(field: str) -> None:
    line = _error_line(f"{field}=https://user:tok3n-s3cret@eu.posthog.com")
    assert line == f"  {field}: URLs must not carry credentials; use a secret source instead"
    # even when the URL is also malformed, the user-info is masked
    line = _error_line(f"{field}=https://user:tok3n-s3cret@eu posthog.com")
    assert "tok3n-s3cret" not in line
    assert "https://***@eu posthog.com" in line


def test_the_cert_url_is_checked_like_the_others() -> None:
    line = _error_line("environments.prod.cert={url: 'https://certs example/cert.pem'}")
    assert line.startswith("  environments.prod.cert.url: not a valid URL")


def test_the_pushgateway_url_must_be_a_url_but_may_be_plain_http_in_the_cluster() -> None:
    line = _error_line("metrics.pushgateway_url=pushgateway:9091")
    assert line.startswith("  metrics.pushgateway_url: not a valid URL")
    config = load_config(
        REPO_CONFIG,
        overrides=["metrics.pushgateway_url=http://pushgateway.monitoring:9091/"],
        environ={},
    )
    assert config.metrics.pushgateway_url == "http://pushgateway.monitoring:9091"


def test_good_urls_load_as_written_without_a_trailing_slash() -> None:
    config = load_config(
        REPO_CONFIG,
        overrides=[
            "posthog.app_host=https://posthog.example.com:8443/",
            "posthog.ingest_host=http://[::1]:8000",
            "environments.prod.trigger_url=https://gateway.example.com/signup?test=1",
        ],
        environ={},
    )
    assert config.posthog.app_host == "https://posthog.example.com:8443"
    assert config.posthog.ingest_host == "http://[::1]:8000"
    assert config.environments["prod"].trigger_url == "https://gateway.example.com/signup?test=1"
