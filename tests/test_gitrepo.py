from __future__ import annotations

import base64
import inspect
import logging
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import git
import pytest
import yaml

from rotator.clients.gitrepo import (
    LIBRARY_ERRORS,
    OpsRepo,
    git_environment,
    translate_git_error,
)
from rotator.config import Config, GitConfig, load_config
from rotator.errors import GitError
from rotator.names import TRAILER_KEY_FINGERPRINT, TRAILER_RUN_ID, TRAILER_TRIGGER
from rotator.redact import Secret, fingerprint
from tests.git_fixtures import (
    BareRemote,
    git_http_server,
    make_remote,
    run_git,
    silent_server,
)

SEALED = "sealedsecrets/preview/posthog.yaml"
SEALED_PROD = "sealedsecrets/prod/posthog.yaml"
TRAILERS = {
    TRAILER_RUN_ID: "run-1",
    TRAILER_TRIGGER: "test",
    TRAILER_KEY_FINGERPRINT: "sha256:0123456789ab",
}


@pytest.fixture(scope="module")
def seeded_remote(tmp_path_factory: pytest.TempPathFactory) -> BareRemote:
    return make_remote(
        tmp_path_factory.mktemp("seed") / "remote",
        {SEALED: "old preview\n", SEALED_PROD: "old prod\n", "apps/preview/deploy.yaml": "x\n"},
    )


@pytest.fixture
def remote(seeded_remote: BareRemote, tmp_path: Path) -> BareRemote:
    return seeded_remote.copy_to(tmp_path / "remote")


def config(remote: str, **changes: object) -> GitConfig:
    fields: dict[str, object] = {"branch": "main", "author_name": "rotator", **changes}
    return GitConfig(remote=remote, **fields)


@pytest.fixture
def repo(remote: BareRemote, tmp_path: Path) -> Iterator[OpsRepo]:
    with OpsRepo.open(config(remote.file_url), token=None, workdir=tmp_path / "work") as ops:
        yield ops


def new_files(_: OpsRepo) -> Mapping[str, str]:
    return {SEALED: "new preview\n", SEALED_PROD: "new prod\n"}


# --- open --------------------------------------------------------------------------------


def test_open_fetches_the_branch_and_reads_files_at_the_tip(
    repo: OpsRepo, remote: BareRemote
) -> None:
    assert repo.head() == remote.tip()
    assert repo.read_file(SEALED) == "old preview\n"
    assert repo.read_file("sealedsecrets/staging/posthog.yaml") is None


def test_open_works_with_a_plain_path_remote(remote: BareRemote, tmp_path: Path) -> None:
    with OpsRepo.open(config(str(remote.path)), token=None, workdir=tmp_path / "w") as ops:
        assert ops.head() == remote.tip()


def test_a_missing_branch_is_a_git_error_that_names_it(remote: BareRemote, tmp_path: Path) -> None:
    cfg = config(remote.file_url, branch="release")
    with pytest.raises(
        GitError, match=r"fetch release from .*create it or fix git\.branch"
    ) as info:
        OpsRepo.open(cfg, token=None, workdir=tmp_path / "w")
    assert not info.value.retryable
    assert isinstance(info.value.__cause__, git.exc.GitCommandError)


def test_a_leftover_checkout_with_a_stale_local_commit_is_reset_on_open(
    remote: BareRemote, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    with OpsRepo.open(config(remote.file_url), token=None, workdir=workdir) as crashed:
        stale = crashed.commit_files(
            {SEALED: "half-done\n"}, message="rotate (crashed)", trailers=TRAILERS
        )
        (workdir / "junk.txt").write_text("left over")
        # A killed git leaves its lock files behind.
        (workdir / ".git" / "index.lock").write_text("")
        (workdir / ".git" / "refs" / "remotes" / "origin" / "main.lock").write_text("")
    moved_on = remote.push_commit({"apps/preview/deploy.yaml": "y\n"})

    with OpsRepo.open(config(remote.file_url), token=None, workdir=workdir) as ops:
        assert ops.head() == ops.local_head() == moved_on
        assert stale is not None
        assert not ops.is_ancestor(stale, ops.head())
        assert (workdir / SEALED).read_text() == "old preview\n"
        assert not (workdir / "junk.txt").exists()


def test_a_second_process_cannot_use_the_same_workdir(remote: BareRemote, tmp_path: Path) -> None:
    with (
        OpsRepo.open(config(remote.file_url), token=None, workdir=tmp_path / "w"),
        pytest.raises(GitError, match="another rotator process"),
    ):
        OpsRepo.open(config(remote.file_url), token=None, workdir=tmp_path / "w")


def test_a_workdir_with_foreign_files_is_refused(remote: BareRemote, tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "notes.txt").write_text("mine")
    with pytest.raises(GitError, match="not empty and not a rotator checkout"):
        OpsRepo.open(config(remote.file_url), token=None, workdir=tmp_path / "w")


def _load(tmp_path: Path, git_section: dict[str, object], environ: dict[str, str]) -> Config:
    tree = {
        "environments": {
            "preview": {
                "posthog_project_id": 1,
                "namespace": "align-preview",
                "sealed_file": SEALED,
                "argocd_app": {"name": "align-preview"},
                "deployment": "align-preview-gateway",
            }
        },
        "git": git_section,
        "slack": {"enabled": False},
    }
    path = tmp_path / "rotator.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path, environ=environ)


def test_open_from_config_uses_the_configured_workdir_and_token(
    remote: BareRemote, tmp_path: Path
) -> None:
    workdir = tmp_path / "configured"
    section: dict[str, object] = {"remote": remote.file_url, "workdir": str(workdir)}
    cfg = _load(tmp_path, section, {})
    with OpsRepo.open_from_config(cfg) as ops:
        assert ops.workdir == workdir.resolve()
        assert ops.head() == remote.tip()
    missing = _load(tmp_path, {**section, "https_token": {"env": "GIT_TOKEN"}}, {})
    with pytest.raises(GitError, match=r"git\.https_token: environment variable GIT_TOKEN"):
        OpsRepo.open_from_config(missing)


# --- commit and push -----------------------------------------------------------------------


def test_commit_and_push_writes_one_commit_with_the_trailers(
    repo: OpsRepo, remote: BareRemote
) -> None:
    result = repo.commit_and_push(
        new_files, message="Rotate PostHog key", trailers=TRAILERS, attempts=3
    )
    assert result is not None
    assert (result.attempts, result.reapplied, result.pushed) == (1, False, True)
    assert remote.tip() == result.sha == repo.head()
    assert remote.read(SEALED) == "new preview\n"
    assert remote.read(SEALED_PROD) == "new prod\n"
    assert remote.message() == (
        "Rotate PostHog key\n\n"
        "Rotator-Run-Id: run-1\nRotator-Trigger: test\n"
        "Rotator-Key-Fingerprint: sha256:0123456789ab\n\n"
    )
    author = run_git("log", "-1", "--format=%an <%ae>|%cn", "main", cwd=remote.path).strip()
    assert author == "rotator <rotator@users.noreply.invalid>|rotator"


def test_a_concurrent_push_makes_push_reapply_onto_the_new_tip(
    repo: OpsRepo, remote: BareRemote
) -> None:
    ours = repo.commit_files(new_files(repo), message="Rotate PostHog key", trailers=TRAILERS)
    theirs = remote.push_commit({"apps/preview/deploy.yaml": "replicas: 3\n"})
    seen_tips: list[str] = []

    def reapply(ops: OpsRepo) -> Mapping[str, str]:
        seen_tips.append(ops.head())
        assert ops.read_file("apps/preview/deploy.yaml") == "replicas: 3\n"
        return new_files(ops)

    result = repo.push(reapply=reapply, message="Rotate PostHog key", trailers=TRAILERS, attempts=3)

    assert seen_tips == [theirs]
    assert (result.attempts, result.reapplied) == (2, True)
    assert result.sha != ours
    assert remote.tip() == result.sha
    assert repo.is_ancestor(theirs, result.sha)
    assert remote.read("apps/preview/deploy.yaml") == "replicas: 3\n"
    assert remote.read(SEALED) == "new preview\n"
    assert remote.read(SEALED_PROD) == "new prod\n"
    assert "Rotator-Run-Id: run-1" in remote.message()
    assert remote.count() == 3


def test_push_gives_up_after_its_attempts_when_the_branch_keeps_moving(
    repo: OpsRepo, remote: BareRemote
) -> None:
    repo.commit_files(new_files(repo), message="Rotate", trailers=TRAILERS)
    counter = iter(range(100))
    remote.push_commit({"apps/preview/deploy.yaml": "moved 0\n"})

    def reapply_while_someone_pushes(ops: OpsRepo) -> Mapping[str, str]:
        remote.push_commit({"apps/preview/deploy.yaml": f"moved {next(counter) + 1}\n"})
        return new_files(ops)

    with pytest.raises(GitError, match="non-fast-forward after 2 attempts") as info:
        repo.push(
            reapply=reapply_while_someone_pushes, message="Rotate", trailers=TRAILERS, attempts=2
        )
    assert info.value.retryable
    assert remote.read(SEALED) == "old preview\n"


def test_reapply_finding_the_change_already_there_pushes_nothing(
    repo: OpsRepo, remote: BareRemote
) -> None:
    repo.commit_files(new_files(repo), message="Rotate", trailers=TRAILERS)
    theirs = remote.push_commit(new_files(repo), message="another run got there first")
    result = repo.push(reapply=new_files, message="Rotate", trailers=TRAILERS, attempts=3)
    assert result.sha == theirs == remote.tip()
    assert result.reapplied


def test_a_push_refused_by_the_remote_is_a_git_error_with_the_fix(
    repo: OpsRepo, remote: BareRemote
) -> None:
    remote.reject_pushes("GH006: Protected branch update failed for refs/heads/main.")
    repo.commit_files(new_files(repo), message="Rotate", trailers=TRAILERS)
    calls: list[str] = []

    def reapply(ops: OpsRepo) -> None:
        calls.append(ops.head())

    with pytest.raises(GitError, match="remote refused the push") as info:
        repo.push(
            reapply=reapply,
            message="Rotate",
            trailers=TRAILERS,
            attempts=3,
        )
    assert "Protected branch update failed" in str(info.value)
    assert not info.value.retryable
    assert calls == []
    assert remote.read(SEALED) == "old preview\n"


def test_nothing_changed_means_no_commit(repo: OpsRepo, remote: BareRemote) -> None:
    same = {SEALED: "old preview\n"}
    assert repo.commit_files(same, message="Rotate", trailers=TRAILERS) is None
    assert repo.commit_and_push(lambda _: same, message="R", trailers=TRAILERS, attempts=1) is None
    assert repo.commit_and_push(lambda _: None, message="R", trailers=TRAILERS, attempts=1) is None
    assert remote.count() == 1


def test_dry_run_commits_locally_and_pushes_nothing(
    repo: OpsRepo, remote: BareRemote, caplog: pytest.LogCaptureFixture
) -> None:
    before = remote.tip()
    with caplog.at_level(logging.INFO, logger="rotator"):
        result = repo.commit_and_push(
            new_files, message="Rotate", trailers=TRAILERS, attempts=3, dry_run=True
        )
    assert result is not None
    assert (result.attempts, result.pushed) == (0, False)
    assert result.sha == repo.local_head() != before
    assert remote.tip() == before == repo.head()
    assert "dry run: skipping git push" in caplog.text


# --- reads ---------------------------------------------------------------------------------


def test_history_lists_commits_touching_a_path_newest_first_with_trailers(
    repo: OpsRepo, remote: BareRemote
) -> None:
    first = repo.commit_and_push(new_files, message="Rotate 1", trailers=TRAILERS, attempts=1)
    remote.push_commit({"apps/preview/deploy.yaml": "unrelated\n"})
    repo.sync()
    second_trailers = {**TRAILERS, TRAILER_RUN_ID: "run-2", TRAILER_TRIGGER: "cron"}
    second = repo.commit_and_push(
        lambda _: {SEALED: "newer\n"}, message="Rotate 2", trailers=second_trailers, attempts=1
    )
    assert first is not None
    assert second is not None

    history = repo.history(SEALED)
    assert [c.sha for c in history] == [second.sha, first.sha, history[-1].sha]
    assert [c.subject for c in history] == ["Rotate 2", "Rotate 1", "seed"]
    assert history[0].trailers == second_trailers
    assert history[1].trailers[TRAILER_KEY_FINGERPRINT] == "sha256:0123456789ab"
    assert history[2].trailers == {}
    assert history[0].authored_at.tzinfo is not None
    assert len(repo.history(SEALED, max_count=1)) == 1
    assert repo.read_file(SEALED, rev=first.sha) == "new preview\n"
    assert repo.read_file(SEALED, rev=history[-1].sha) == "old preview\n"


def test_last_rotation_is_the_newest_commit_with_a_fingerprint_trailer(
    repo: OpsRepo, remote: BareRemote
) -> None:
    assert repo.last_rotation(SEALED) is None
    rotated = repo.commit_and_push(new_files, message="Rotate", trailers=TRAILERS, attempts=1)
    remote.push_commit({SEALED: "hand edit\n"}, message="hand edit without trailers")
    repo.sync()
    last = repo.last_rotation(SEALED)
    assert rotated is not None
    assert last is not None
    assert last.sha == rotated.sha
    assert last.trailers[TRAILER_KEY_FINGERPRINT] == "sha256:0123456789ab"


def test_is_ancestor_compares_commits_and_rejects_unknown_ones(
    repo: OpsRepo, remote: BareRemote
) -> None:
    seed = repo.head()
    result = repo.commit_and_push(new_files, message="Rotate", trailers=TRAILERS, attempts=1)
    assert result is not None
    assert repo.is_ancestor(seed, result.sha)
    assert repo.is_ancestor(result.sha, result.sha)
    assert not repo.is_ancestor(result.sha, seed)
    with pytest.raises(GitError, match="compare commits"):
        repo.is_ancestor("0" * 40, seed)


def test_read_file_refuses_paths_outside_the_repo(repo: OpsRepo) -> None:
    for bad in ("../etc/passwd", "/etc/passwd", ".git/config", ""):
        with pytest.raises(GitError, match="relative path"):
            repo.read_file(bad)
    with pytest.raises(GitError, match="not a git revision"):
        repo.read_file(SEALED, rev="--output=/tmp/x")


# --- refusing secrets ------------------------------------------------------------------------


def test_a_commit_message_trailer_or_file_holding_a_secret_is_refused(
    repo: OpsRepo, remote: BareRemote
) -> None:
    key = Secret("phc_" + "S3cretValueThatMustNeverBeCommitted")
    cases: list[tuple[Mapping[str, str], str, Mapping[str, str]]] = [
        (new_files(repo), f"Rotate to {key.reveal()}", TRAILERS),
        (new_files(repo), "Rotate", {**TRAILERS, "Rotator-Key": key.reveal()}),
        ({SEALED: f"value: {key.reveal()}\n"}, "Rotate", TRAILERS),
    ]
    for files, message, trailers in cases:
        with pytest.raises(GitError, match="refusing to commit") as info:
            repo.commit_files(files, message=message, trailers=trailers)
        assert key.reveal() not in str(info.value)
    assert repo.local_head() == remote.tip()


def test_a_file_behind_a_symlink_out_of_the_checkout_is_refused(
    repo: OpsRepo, remote: BareRemote, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo.workdir / "sealedsecrets" / "evil").symlink_to(outside)
    with pytest.raises(GitError, match="leads outside the checkout"):
        repo.commit_files({"sealedsecrets/evil/x.yaml": "x"}, message="R", trailers=TRAILERS)
    assert list(outside.iterdir()) == []


def test_trailers_must_be_single_line_tokens(repo: OpsRepo) -> None:
    for trailers in ({"Bad Key": "x"}, {"Rotator-Run-Id": "a\nb"}, {"Rotator-Run-Id": " "}):
        with pytest.raises(GitError, match="trailer"):
            repo.commit_files(new_files(repo), message="Rotate", trailers=trailers)
    with pytest.raises(GitError, match="message is empty"):
        repo.commit_files(new_files(repo), message="  ", trailers=TRAILERS)


# --- failures: unreachable, hung, denied -----------------------------------------------------


def test_an_unreachable_remote_is_a_retryable_git_error_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GitError, match="unreachable") as info:
        OpsRepo.open(config("http://127.0.0.1:1/ops.git"), token=None, workdir=tmp_path / "w")
    assert info.value.retryable
    assert time.monotonic() - started < 10


def test_a_hung_remote_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    with silent_server() as url:
        started = time.monotonic()
        with pytest.raises(GitError, match="did not answer in time") as info:
            OpsRepo.open(
                config(f"{url}/ops.git"), token=None, workdir=tmp_path / "w", timeout_s=1.0
            )
        elapsed = time.monotonic() - started
    assert info.value.retryable
    assert elapsed < 8


def test_an_unreachable_ssh_remote_fails_quickly_without_prompting(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    cfg = config("ssh://git@127.0.0.1:1/align/ops.git", known_hosts_file=known)
    started = time.monotonic()
    with pytest.raises(GitError, match="unreachable") as info:
        OpsRepo.open(cfg, token=None, workdir=tmp_path / "w", timeout_s=10)
    assert info.value.retryable
    assert time.monotonic() - started < 8


def test_check_push_access_passes_on_a_writable_remote(repo: OpsRepo, remote: BareRemote) -> None:
    repo.check_push_access()
    assert remote.count() == 1


def test_a_colleague_s_push_before_the_push_check_is_fetched_and_checked_again(
    repo: OpsRepo, remote: BareRemote
) -> None:
    # The branch moves between our fetch and `git push --dry-run`: the dry run is refused as
    # non-fast-forward. That is a lost race, not a missing permission.
    theirs = remote.push_commit({"apps/preview/deploy.yaml": "replicas: 3\n"})

    repo.check_push_access()

    assert repo.head() == theirs  # checked against the new tip, which later reads see
    assert repo.read_file("apps/preview/deploy.yaml") == "replicas: 3\n"
    assert remote.tip() == theirs  # a dry run pushes nothing


def test_a_push_check_that_loses_every_race_says_the_branch_keeps_moving_not_permission(
    remote: BareRemote, tmp_path: Path
) -> None:
    moves = iter(range(100))

    class BusyBranch(OpsRepo):
        """Someone pushes again right after each of our fetches."""

        def sync(self) -> str:
            tip = super().sync()
            remote.push_commit({"apps/preview/deploy.yaml": f"moved {next(moves)}\n"})
            return tip

    remote.push_commit({"apps/preview/deploy.yaml": "moved first\n"})  # after our first fetch
    with (
        BusyBranch.open(config(remote.file_url), token=None, workdir=tmp_path / "w") as ops,
        pytest.raises(GitError, match="the branch moved on every one of 3 attempts") as info,
    ):
        ops.check_push_access()
    assert info.value.retryable
    assert "permission" not in str(info.value)


# --- HTTPS token through a real git http-backend --------------------------------------------


TOKEN = "ghp_" + "TokenThatMustStayInTheEnvOnly42"


def test_an_https_token_is_sent_as_a_header_and_pushes(remote: BareRemote, tmp_path: Path) -> None:
    token = Secret(TOKEN)
    with git_http_server(remote.path.parent, token=TOKEN) as (base, state):
        cfg = config(f"{base}/ops.git")
        with OpsRepo.open(cfg, token=token, workdir=tmp_path / "w") as ops:
            ops.check_push_access()
            result = ops.commit_and_push(new_files, message="Rotate", trailers=TRAILERS, attempts=2)
            assert result is not None
            assert result.pushed
            assert run_git("remote", "get-url", "origin", cwd=ops.workdir).strip() == cfg.remote
            assert TOKEN not in (ops.workdir / ".git" / "config").read_text()
    assert remote.read(SEALED) == "new preview\n"
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert expected in state.seen_authorization
    assert any(p.endswith("git-receive-pack") for p in state.seen_paths)


def test_a_missing_or_wrong_token_is_a_credentials_error(
    remote: BareRemote, tmp_path: Path
) -> None:
    with git_http_server(remote.path.parent, token=TOKEN) as (base, _state):
        for n, token in enumerate((None, Secret("ghp_" + "WrongTokenWrongTokenWrong"))):
            with pytest.raises(GitError, match="did not accept rotator's credentials") as info:
                OpsRepo.open(config(f"{base}/ops.git"), token=token, workdir=tmp_path / f"w{n}")
            assert not info.value.retryable


def test_a_read_only_token_fails_the_push_access_check_with_the_fix(
    remote: BareRemote, tmp_path: Path
) -> None:
    with (
        git_http_server(remote.path.parent, token=TOKEN, writable=False) as (base, _state),
        OpsRepo.open(config(f"{base}/ops.git"), token=Secret(TOKEN), workdir=tmp_path / "w") as ops,
        pytest.raises(GitError, match="may read but not push") as info,
    ):
        ops.check_push_access()
    assert not info.value.retryable


def test_the_token_is_never_on_a_command_line_in_a_log_or_in_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = Secret(TOKEN)
    encoded = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    cfg = config("http://127.0.0.1:1/ops.git")
    env = git_environment(cfg, token=token, timeout_s=5)
    assert int(env["GIT_CONFIG_COUNT"]) >= 1
    assert env["GIT_CONFIG_KEY_0"] == "http.http://127.0.0.1:1/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {encoded}"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "GIT_CURL_VERBOSE" not in env  # any value, even "0", switches curl tracing on

    # rotator's log set-up (run by other tests in this process) quiets "git": undo it here.
    with (
        caplog.at_level(logging.DEBUG),
        caplog.at_level(logging.DEBUG, logger="git"),
        pytest.raises(GitError) as info,
    ):
        OpsRepo.open(cfg, token=token, workdir=tmp_path / "w", timeout_s=5)
    popen_lines = [r.getMessage() for r in caplog.records if "Popen(" in r.getMessage()]
    assert popen_lines  # GitPython logs each command line at DEBUG: they are checked too
    for text in (caplog.text, str(info.value), repr(info.value.__cause__), *popen_lines):
        assert TOKEN not in text
        assert encoded not in text
    assert TOKEN not in (tmp_path / "w" / ".git" / "config").read_text()


def test_a_token_is_never_sent_over_plain_http_to_another_host() -> None:
    with pytest.raises(GitError, match="plain http"):
        git_environment(config("http://git.example.com/ops.git"), token=Secret(TOKEN), timeout_s=5)


# --- SSH ------------------------------------------------------------------------------------


def test_an_ssh_deploy_key_is_used_with_a_pinned_known_hosts(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not really a key")
    known = tmp_path / "known_hosts"
    known.write_text("github.com ssh-ed25519 AAAA...\n")
    env = git_environment(
        config("git@github.com:align/ops.git", ssh_key_file=key, known_hosts_file=known),
        token=None,
        timeout_s=60,
    )
    argv = shlex.split(env["GIT_SSH_COMMAND"])
    assert argv[:1] == ["ssh"]
    for option in (
        "IdentitiesOnly=yes",
        f"UserKnownHostsFile={known}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
    ):
        assert option in argv
    assert argv[argv.index("-i") + 1] == str(key)

    with pytest.raises(GitError, match="pin the server's host key"):
        git_environment(
            config("git@github.com:align/ops.git", ssh_key_file=key), token=None, timeout_s=60
        )


# --- the one error boundary -------------------------------------------------------------------


def _library_exception_classes() -> list[type[BaseException]]:
    classes = {
        obj
        for module in (git.exc,)
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ != "builtins"
    }
    return sorted(classes, key=lambda c: c.__name__)


def _example(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, git.exc.GitCommandNotFound):
        return cls(["git"], FileNotFoundError(2, "No such file"))
    if issubclass(cls, git.exc.CommandError):
        return cls(["git", "push"], 128, b"fatal: something")
    if issubclass(cls, git.exc.CheckoutError):
        return cls("checkout failed", [], [], [])
    if issubclass(cls, git.exc.UnmergedEntriesError):
        return cls("unmerged")
    if issubclass(cls, git.exc.RepositoryDirtyError):
        return cls(cast(Any, object()), "dirty")
    return cls("example")


@pytest.mark.parametrize("cls", _library_exception_classes(), ids=lambda c: c.__name__)
def test_every_gitpython_exception_is_mapped_to_git_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, LIBRARY_ERRORS), f"{cls.__name__} would escape the boundary"
    original = _example(cls)
    error = translate_git_error(original, "do something")
    assert isinstance(error, GitError)
    assert error.__cause__ is original
    assert str(error).startswith("do something: ")


def test_gitpython_errors_from_the_odb_are_in_the_list() -> None:
    names = {c.__name__ for c in _library_exception_classes()}
    assert {"BadName", "BadObject", "GitCommandError", "InvalidGitRepositoryError"} <= names
    assert {"NoSuchPathError", "GitCommandNotFound", "ODBError"} <= names


def test_git_stderr_in_an_error_is_scrubbed_and_truncated() -> None:
    secret = Secret("xoxb-" + "SlackishSecretThatLeaked")
    stderr = f"remote: {secret.reveal()}\n" + "remote: noise\n" * 200
    error = translate_git_error(git.exc.GitCommandError(["git", "push"], 1, stderr), "push")
    assert secret.reveal() not in str(error)
    assert str(secret.fingerprint) in str(error)
    assert len(str(error)) < 700
    assert fingerprint(secret.reveal()) == secret.fingerprint
