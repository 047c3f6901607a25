"""A whole rotation as a least-privilege ServiceAccount, with RBAC enforced (issue 6).

``Sandbox(rbac=True)`` gives rotator's kubeconfig the ServiceAccount ``align-prod/rotator`` and
grants it exactly ``rotator.clients.kube.required_rbac`` as Roles and RoleBindings; the API
stand-in then authorizes every request of that identity and records each decision in its audit
log. (The same run against the Roles of ``cronjob.yaml`` is in ``tests/test_manifests.py``.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.clients.kube import METADATA_ONLY, Kube, required_rbac
from rotator.report import Outcome, to_text
from rotator.status import collect_status
from rotator_sandbox import manifests
from rotator_sandbox.controllers.base import ROLE
from rotator_sandbox.unseal import ControllerKeyPair
from rotator_sandbox.world import Sandbox
from tests.e2e_fixtures import ENVS, config_for, e2e_key_pair, resets, rotate, start_sandbox

FIXTURES = (e2e_key_pair,)  # used as pytest fixtures by name

ROTATOR_USER = "system:serviceaccount:align-prod:rotator"
ENV_NAMESPACES = tuple(manifests.namespace(e) for e in ENVS)


def _allowed_by_required_rbac() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples the Roles grant, in any namespace."""
    rules = required_rbac()
    return {
        (rule.api_group, rule.resource, verb)
        for part in rules.values()
        for rule in part
        for verb in rule.verbs
    }


@pytest.fixture(scope="module")
def rbac_world(
    tmp_path_factory: pytest.TempPathFactory, e2e_key_pair: ControllerKeyPair
) -> Iterator[tuple[Sandbox, Kube]]:
    """One RBAC-enforcing sandbox and the job's own Kubernetes client, for the module."""
    world = start_sandbox(tmp_path_factory.mktemp("rbac") / "sandbox", e2e_key_pair, rbac=True)
    kube = None
    try:
        kube = Kube.from_config(config_for(world))
        yield world, kube
    finally:
        if kube is not None:
            kube.close()
        world.stop()


def test_a_full_rotation_as_the_least_privilege_service_account_is_never_denied(
    rbac_world: tuple[Sandbox, Kube],
) -> None:
    world, _ = rbac_world
    assert world.kube is not None
    assert world.posthog is not None
    assert world.sealed is not None
    start = len(world.kube.audit_log())

    # --update-status=false: the Secret's metadata is what proves the unseal
    world.sealed.update_status = False
    try:
        report = rotate(world, product_clients=True)
    finally:
        world.sealed.update_status = True

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    assert resets(world) == 1
    key = world.posthog.current_key(1)
    for env in ENVS:
        assert world.pod_key_fingerprints(env) == {key.fingerprint}
    calls = [e for e in world.kube.audit_log()[start:] if e.user == ROTATOR_USER]
    assert calls, "the run did not act as the ServiceAccount"
    denied = [e for e in calls if not e.allowed]
    assert denied == []
    used = {(e.api_group, e.resource, e.verb) for e in calls}
    # It really did its writes as the ServiceAccount, and nothing outside the Roles' list.
    assert ("apps", "deployments", "patch") in used
    assert ("argoproj.io", "applications", "patch") in used
    assert ("coordination.k8s.io", "leases", "update") in used
    assert ("", "services/proxy", "get") in used
    assert ("", "secrets", "get") in used
    assert used <= _allowed_by_required_rbac()
    # The only Secret requests: metadata-only GETs of the unsealed Secret, never its data.
    secret_calls = {
        (e.verb, e.namespace, e.name, e.accept) for e in calls if e.resource == "secrets"
    }
    assert secret_calls == {
        ("get", world_ns, "align-posthog", METADATA_ONLY) for world_ns in ENV_NAMESPACES
    }

    # `rotator status` reads only what the Roles allow, too.
    before = len(world.kube.audit_log())
    rows = collect_status(config_for(world))
    assert [r for r in rows if "error" in str(r)] == []
    status_calls = [e for e in world.kube.audit_log()[before:] if e.user == ROTATOR_USER]
    assert status_calls
    assert [e for e in status_calls if not e.allowed] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/namespaces/align-prod/secrets/rotator-posthog"),
        ("GET", "/api/v1/namespaces/align-preview/secrets"),
        ("POST", "/api/v1/namespaces/align-prod/pods/align-prod-gateway-x/exec?command=env"),
        ("GET", "/api/v1/namespaces"),
        ("GET", "/api/v1/namespaces/align-prod/pods"),
        ("DELETE", "/apis/apps/v1/namespaces/align-prod/deployments/align-prod-gateway"),
        ("GET", "/apis/apps/v1/namespaces/align-prod/deployments/another-app"),
    ],
    ids=[
        "read another Secret",
        "list Secrets",
        "pods/exec",
        "list namespaces",
        "list pods",
        "delete the gateway",
        "read another Deployment",
    ],
)
def test_a_call_outside_the_roles_is_denied_with_403(
    rbac_world: tuple[Sandbox, Kube], method: str, path: str
) -> None:
    world, kube = rbac_world
    assert world.kube is not None
    target, _, query = path.partition("?")
    params = [(k, v) for k, _, v in (q.partition("=") for q in query.split("&"))] if query else None
    response = kube.raw(method, target, query=params)
    assert response.status == 403, response.data[:300]
    mine = [e for e in world.kube.audit_log() if e.user == ROTATOR_USER]
    assert mine[-1].allowed is False


def test_an_older_role_without_the_secret_rule_neither_hangs_nor_fails_the_run(
    tmp_path: Path, e2e_key_pair: ControllerKeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    # The status lies (v0.24.2 never moves observedGeneration while Synced stays True) and the
    # Roles are an older cronjob.yaml's, without get on the Secret: the Unsealed Event decides,
    # and the run says once per Secret what is missing and how to fix it.
    world = start_sandbox(
        tmp_path / "sandbox", e2e_key_pair, rbac=True, sealed_secrets_version="v0.24.2"
    )
    try:
        assert world.client is not None
        assert world.kube is not None
        for ns in ENV_NAMESPACES:
            role = world.client.get(ROLE, ns, "rotator-app")
            assert role is not None
            role["rules"] = [r for r in role["rules"] if r["resources"] != ["secrets"]]
            world.client.replace(ROLE, ns, "rotator-app", role)
        start = len(world.kube.audit_log())
        caplog.set_level(logging.INFO, logger="rotator.clients.kube")

        report = rotate(world, product_clients=True)

        assert report.outcome is Outcome.SUCCEEDED, to_text(report)
        calls = [e for e in world.kube.audit_log()[start:] if e.user == ROTATOR_USER]
        denied = [(e.resource, e.namespace, e.name) for e in calls if not e.allowed]
        assert sorted(denied) == [("secrets", ns, "align-posthog") for ns in ENV_NAMESPACES]
        told = [
            r.getMessage()
            for r in caplog.records
            if "cannot read the key-fingerprint" in r.getMessage()
        ]
        assert len(told) == len(ENV_NAMESPACES), told
        assert all("add the rule get on secrets, resourceNames [align-posthog]" in m for m in told)
    finally:
        world.stop()


def test_a_run_reads_each_sealing_cert_and_each_app_project_once_not_once_per_environment(
    rbac_world: tuple[Sandbox, Kube],
) -> None:
    # Both environments are sealed for one controller and their apps are in one AppProject:
    # one cert fetch (GET /v1/cert.pem through the service proxy) and one AppProject read per
    # run, however many environments share them (issue 16: cost that does not grow with them).
    world, _ = rbac_world
    assert world.kube is not None
    start = len(world.kube.audit_log())

    report = rotate(world, product_clients=True)

    assert report.outcome is Outcome.SUCCEEDED, to_text(report)
    calls = [e for e in world.kube.audit_log()[start:] if e.user == ROTATOR_USER]
    cert_fetches = [e for e in calls if (e.resource, e.verb) == ("services/proxy", "get")]
    project_reads = [e for e in calls if (e.resource, e.verb) == ("appprojects", "get")]
    assert (len(cert_fetches), len(project_reads)) == (1, 1), (cert_fetches, project_reads)
