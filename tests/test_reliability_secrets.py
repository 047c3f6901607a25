"""The secret-leak scan (issue 7): a full rotation, a failed one (after the reset) and a crashed
one, then every byte the job produced is searched for every secret it handled (the old key,
each new key, the PostHog personal API key, the Slack webhook URL, the service user's password and
TOTP secret, every session cookie and CSRF token PostHog issued), raw and base64-encoded at any
alignment: zero hits.

Scanned: stdout and stderr of the subprocess runs; every log record of the in-process run
(captured unredacted, before any handler's filter, tracebacks included); the JSON and text
reports and the error (exception) texts; every Slack delivery the receiver got; every object in
the bare git repo (commits, trees, blobs: ``git cat-file --batch-all-objects``) and the files of
rotator's checkout; the Kubernetes objects of every kind rotator or the controllers write
(Applications, SealedSecrets, Deployments, ReplicaSets, Pods, Leases, Events, ConfigMaps), read
through the API. Excluded: the Secret objects, which hold the key base64-encoded by design
(that is their job); the scan is shown to work by finding the key there.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from rotator.report import Outcome, to_json_text, to_text
from rotator_sandbox.controllers.base import (
    APPLICATION,
    CONFIGMAP,
    DEPLOYMENT,
    EVENT,
    LEASE,
    POD,
    REPLICASET,
    SEALED_SECRET,
    SECRET,
)
from tests.reliability_fixtures import (  # noqa: F401 - fixtures
    World,
    log_message,
    make_world,
    reliability_key_pair,
    run_and_kill,
)

NAMESPACES = ("align-preview", "align-prod", "argocd", "kube-system")
KINDS = (APPLICATION, SEALED_SECRET, DEPLOYMENT, REPLICASET, POD, LEASE, EVENT, CONFIGMAP)


def forms(secret: str) -> set[str]:
    """The secret raw, and the part of its base64 encoding that does not depend on the bytes
    around it, for each of the three alignments (so it is found inside any base64 blob)."""
    raw = secret.encode()
    out = {secret}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):
            text = encode(b"\0" * pad + raw).decode()
            start = -(-pad * 4 // 3) + (1 if pad else 0)  # chars touched by the pad bytes
            core = text[start : len(text) - 4]  # the last group depends on what follows
            if len(core) >= 16:
                out.add(core)
    return out


def find_leaks(secrets: dict[str, str], blobs: Iterable[tuple[str, str]]) -> list[str]:
    patterns = {name: forms(value) for name, value in secrets.items()}
    hits = []
    for where, text in blobs:
        for name, needles in patterns.items():
            if any(n in text for n in needles):
                hits.append(f"{name} in {where}")
    return hits


def git_objects(bare: Path) -> str:
    done = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=bare,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return done.stdout.decode(errors="replace")


def checkout_files(workdir: Path) -> Iterable[tuple[str, str]]:
    for path in sorted(workdir.rglob("*")):
        if path.is_file() and "/.git/objects/" not in str(path):
            yield str(path), path.read_bytes().decode(errors="replace")


def kube_objects(world: World) -> Iterable[tuple[str, str]]:
    client = world.sb.client
    assert client is not None
    for kind in KINDS:
        for ns in NAMESPACES:
            items, _ = client.list(kind, ns)
            for obj in items:
                name = (obj.get("metadata") or {}).get("name")
                yield f"{kind.kind} {ns}/{name}", json.dumps(obj)


def test_no_secret_appears_in_anything_a_run_produces(
    make_world: Callable[..., World],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world()
    sb = world.sb
    assert sb.personal_key is not None
    assert sb.slack is not None
    assert sb.service_password is not None
    assert sb.totp_secret is not None
    assert sb.posthog is not None
    secrets = {
        "old key": sb.initial_keys["prod"].reveal(),
        "personal API key": sb.personal_key.reveal(),
        "Slack webhook URL": sb.slack.url.reveal(),
        "service user password": sb.service_password.reveal(),
        "TOTP secret": sb.totp_secret.reveal(),
    }
    blobs: list[tuple[str, str]] = []

    # 1. A full rotation, as the CronJob runs it (JSON logs on stderr, JSON report on stdout).
    full = run_and_kill(world.popen("run", "--json"), kill_after=None)
    assert full.returncode == 0, full.stderr[-2000:]
    secrets["first new key"] = world.current_key().reveal()
    blobs += [("stdout of the full run", full.stdout), ("stderr of the full run", full.stderr)]

    # 2. A rotation that fails after the reset (ArgoCD never picks the commit up), in-process,
    # with every log record captured before any filter could scrub it.
    sb.stick_argocd("prod")
    with caplog.at_level(logging.DEBUG):
        failed = world.run("policy.min_interval_s=0", "waits.argocd_s=2")
    assert failed.outcome is Outcome.FAILED_AFTER_RESET, failed.error
    secrets["second new key"] = world.current_key().reveal()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        blobs.append((f"log record {record.name}:{record.lineno}", text))
    blobs += [
        ("the failed run's JSON report", to_json_text(failed)),
        ("the failed run's text report", to_text(failed)),
        ("the failed run's error", failed.error or ""),
    ]
    sb.clear_faults()

    # 3. A run killed mid-way (it resumes the failed rotation and dies after the unseal).
    crashed = run_and_kill(
        world.popen("run", "--json", log_format="text"),
        kill_after=lambda line: "unseal: done" in log_message(line),
    )
    assert crashed.killed_after is not None, crashed.stderr[-2000:]
    blobs += [
        ("stdout of the crashed run", crashed.stdout),
        ("stderr of the crashed run", crashed.stderr),
    ]

    # Everything the job wrote elsewhere.
    blobs += [
        (f"Slack delivery {i}", json.dumps(d.payload)) for i, d in enumerate(sb.slack.deliveries)
    ]
    assert len(sb.slack.deliveries) >= 2
    blobs.append(("the bare git repo (all objects)", git_objects(sb.git.path)))
    blobs += list(checkout_files(sb.root / "checkout"))
    blobs += list(kube_objects(world))

    # Every session cookie and CSRF token PostHog handed the runs (they reset by session).
    issued = sb.posthog.login_flow.issued_secrets()
    assert len(issued) >= 6
    secrets.update({f"session cookie or CSRF token {i}": v for i, v in enumerate(issued)})

    assert len(blobs) > 50
    assert find_leaks(secrets, blobs) == []

    # The scan finds a key where it is meant to be: the Secret the controller unsealed.
    client = sb.client
    assert client is not None
    secret_obj = client.get(SECRET, "align-prod", "align-posthog")
    assert secret_obj is not None
    assert find_leaks(
        {"current key": world.current_key().reveal()}, [("Secret", json.dumps(secret_obj))]
    ) == ["current key in Secret"]


def test_the_base64_forms_are_found_inside_any_blob() -> None:
    secret = "phc_0123456789abcdefghijABCDEFGHIJ"
    for prefix in (b"", b"a", b"ab", b"abc"):
        blob = base64.b64encode(prefix + secret.encode() + b"tail").decode()
        assert find_leaks({"k": secret}, [("blob", blob)]) == ["k in blob"]
    assert find_leaks({"k": secret}, [("text", "no secret here")]) == []
