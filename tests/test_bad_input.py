"""Bad input (issue 7): each case ends with a clear message naming the field or the file, exit 2
(configuration) or 3 (aborted before the reset), and nothing changed: no reset, no commit.

Configuration errors go through ``rotator.cli.main`` (the CronJob's entry point). The other
cases run against a sandbox; the sandbox's env vars are set with ``monkeypatch`` (a process
edge), exactly as the CronJob's Secret would set them.
"""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from rotator.cli import main
from rotator_sandbox.posthog import generate_token
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    assert_nothing_changed,
    make_world,
    reliability_key_pair,
    self_signed_cert,
    write,
)

GOOD_CONFIG = """\
posthog:
  app_host: http://127.0.0.1:9
  ingest_host: http://127.0.0.1:9
environments:
  prod:
    posthog_project_id: 1
    namespace: align-prod
    sealed_file: sealedsecrets/prod/posthog.yaml
    argocd_app: {name: align-prod}
    deployment: align-prod-gateway
git:
  remote: /nonexistent/ops.git
slack:
  enabled: false
"""


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    # main() sets up logging for a process: its handler on the root logger (writing to this
    # test's captured stderr) and the levels of the root and the noisy libraries' loggers.
    # Put all of it back, so later tests in this worker see logging as they left it.
    names = ("", "urllib3", "kubernetes", "git")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        code = main(list(argv))
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "rotator"]:
            root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    out, err = capsys.readouterr()
    return code, out + err


# --- configuration: exit 2 with the field path ----------------------------------------------


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        ("malformed-yaml", "environments: [unclosed\n", ("not valid YAML", "line")),
        ("not-a-mapping", "- just\n- a list\n", ("top level must be a mapping",)),
        (
            "incomplete",
            GOOD_CONFIG.replace("git:\n  remote: /nonexistent/ops.git\n", ""),
            ("git: required",),
        ),
        (
            "missing-env-field",
            GOOD_CONFIG.replace("    deployment: align-prod-gateway\n", ""),
            ("environments.prod.deployment: required",),
        ),
        (
            "unknown-field",
            GOOD_CONFIG.replace("namespace: align-prod", "namespace: align-prod\n    namesapce: x"),
            ("environments.prod.namesapce: unknown field",),
        ),
        (
            "wrong-type",
            GOOD_CONFIG.replace("posthog_project_id: 1", "posthog_project_id: one"),
            ("environments.prod.posthog_project_id",),
        ),
        (
            "wrong-type-nested",
            GOOD_CONFIG + "lock:\n  duration_s: soon\n",
            ("lock.duration_s",),
        ),
        (
            "bad-value",
            GOOD_CONFIG.replace("namespace: align-prod", "namespace: Align_Prod"),
            ("environments.prod.namespace", "DNS label"),
        ),
        (
            "inline-secret",
            GOOD_CONFIG + "secrets:\n  posthog_personal_api_key: phx_inline\n",
            ("`secrets` cannot be set in the file",),
        ),
    ],
    ids=[
        "malformed-yaml",
        "not-a-mapping",
        "incomplete",
        "missing-env-field",
        "unknown-field",
        "wrong-type",
        "wrong-type-nested",
        "bad-value",
        "inline-secret",
    ],
)
def test_a_bad_config_exits_2_naming_the_field(
    case: str,
    text: str,
    expected: tuple[str, ...],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path / "rotator.yaml", text)
    code, output = _cli(capsys, "--config", str(path), "run")
    assert code == 2, output
    for word in expected:
        assert word in output, output
    assert "Traceback" not in output


def test_a_missing_config_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    code, output = _cli(capsys, "--config", str(missing), "run")
    assert code == 2
    assert str(missing) in output


def test_a_bad_override_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "rotator.yaml", GOOD_CONFIG)
    code, output = _cli(capsys, "--config", str(path), "--set", "waits.argocd_s=-5", "run")
    assert code == 2
    assert "waits.argocd_s" in output


# --- a personal key where the project key belongs -------------------------------------------


def test_sealing_a_personal_key_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "rotator.yaml", GOOD_CONFIG)
    cert = write(tmp_path / "cert.pem", self_signed_cert())
    repo = tmp_path / "ops"
    repo.mkdir()
    personal = generate_token("phx_")
    monkeypatch.setattr("sys.stdin", io.StringIO(personal + "\n"))
    code, output = _cli(
        capsys,
        "--config",
        str(config),
        "seal",
        "--env",
        "prod",
        "--repo",
        str(repo),
        "--cert",
        str(cert),
        "--from-stdin",
    )
    assert code == 2, output
    assert "personal API key (phx_...), not the project key" in output
    assert personal not in output
    assert list(repo.rglob("*")) == []


# --- the configured cert file: exit 3 naming the file ---------------------------------------


def _not_pem(tmp: Path) -> Path:
    return write(tmp / "not-pem.pem", "this is not a certificate\n")


def _not_rsa(tmp: Path) -> Path:
    return write(tmp / "ec.pem", self_signed_cert(key=ec.generate_private_key(ec.SECP256R1())))


def _too_small(tmp: Path) -> Path:
    return write(tmp / "small.pem", self_signed_cert(bits=1024))


def _expired(tmp: Path) -> Path:
    now = datetime.now(UTC)
    pem = self_signed_cert(not_before=now - timedelta(days=400), not_after=now - timedelta(days=2))
    return write(tmp / "expired.pem", pem)


def _missing(tmp: Path) -> Path:
    return tmp / "no-such-cert.pem"


@pytest.mark.parametrize(
    ("make_cert", "words"),
    [
        (_not_pem, ("not a PEM certificate",)),
        (_not_rsa, ("RSA",)),
        (_too_small, ("1024",)),
        (_expired, ("expired",)),
        (_missing, ("no-such-cert.pem",)),
    ],
    ids=["not-pem", "not-rsa", "too-small", "expired", "missing"],
)
def test_a_bad_cert_file_aborts_with_exit_3_naming_the_file(
    make_cert: Callable[[Path], Path],
    words: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    make_world: Callable[..., World],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # monkeypatch first: its env vars are undone only after the sandbox's threads have stopped.
    world = make_world()
    seed, old = world.head(), world.current_key()
    cert = make_cert(world.tmp)
    code, output = _run_cli(
        world, capsys, monkeypatch, "--set", f"environments.prod.cert={{file: {cert}}}"
    )
    assert code == 3, output
    assert str(cert) in output
    for word in words:
        assert word in output, output
    assert_nothing_changed(world, seed_head=seed, old_key=old)


def _run_cli(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
) -> tuple[int, str]:
    for name, value in world.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(world.tmp)
    return _cli(
        capsys,
        "--config",
        str(world.sb.config_path),
        "--log-format",
        "text",
        *argv,
        "run",
    )


# --- the sealed file in git -----------------------------------------------------------------

SEALED = "sealedsecrets/prod/posthog.yaml"


def _configmap(text: str) -> str:
    return textwrap.dedent(
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: align-posthog
          namespace: align-prod
        data:
          POSTHOG_API_KEY: "see the vault"
        """
    )


def _not_base64(text: str) -> str:
    out = []
    for line in text.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        edited = line.strip().startswith("POSTHOG_API_KEY:")
        out.append(f"{indent}POSTHOG_API_KEY: pasted by hand!" if edited else line)
    return "\n".join(out) + "\n"


def _other_namespace(text: str) -> str:
    return text.replace("namespace: align-prod", "namespace: align-staging")


def _two_documents(text: str) -> str:
    return text + "---\n" + text


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_configmap, ("is not a SealedSecret", "ConfigMap")),
        (_not_base64, ("not base64",)),
        (_other_namespace, ("align-staging", "environments.prod")),
        (_two_documents, ("expected one YAML document",)),
    ],
    ids=["not-a-sealedsecret", "hand-edited-ciphertext", "hand-edited-namespace", "two-docs"],
)
def test_a_broken_sealed_file_in_git_aborts_with_exit_3_naming_it(
    edit: Callable[[str], str],
    words: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    make_world: Callable[..., World],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # monkeypatch first: its env vars are undone only after the sandbox's threads have stopped.
    world = make_world()
    old = world.current_key()
    broken = world.sb.git.commit_directly(
        {SEALED: edit(world.sb.git.read(SEALED))}, message="hand edit"
    )
    code, output = _run_cli(world, capsys, monkeypatch)
    assert code == 3, output
    assert SEALED in output
    for word in words:
        assert word in output, output
    assert world.resets == 0
    assert world.head() == broken
    assert world.current_key() == old


# --- PostHog answers without api_token ------------------------------------------------------


def test_a_posthog_answer_without_api_token_aborts_with_exit_3(
    monkeypatch: pytest.MonkeyPatch,
    make_world: Callable[..., World],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    # monkeypatch first: its env vars are undone only after the sandbox's threads have stopped.
    world = make_world()
    seed, old = world.head(), world.current_key()
    assert world.sb.posthog is not None
    world.sb.posthog.inject("project", "no_api_token", times=10)
    code, output = _run_cli(world, capsys, monkeypatch)
    assert code == 3, output
    assert "has no `api_token`" in output
    assert "PostHog project 1" in output
    assert_nothing_changed(world, seed_head=seed, old_key=old)
