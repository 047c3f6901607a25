"""watch.yaml: the `rotator watch` Deployment beside cronjob.yaml, with no rights of its own."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from rotator.cli import parse_args
from tests.test_dockerfile import tool
from tests.test_manifests import K8S_VERSIONS, ROOT, pod_spec

WATCH = ROOT / "watch.yaml"
Obj = dict[str, Any]


def documents() -> list[Obj]:
    return [d for d in yaml.safe_load_all(WATCH.read_text()) if d]


def deployment() -> Obj:
    (dep,) = [d for d in documents() if d["kind"] == "Deployment"]
    return dep


@pytest.mark.parametrize("version", [K8S_VERSIONS[0], K8S_VERSIONS[-1]])
def test_watch_yaml_validates_against_the_kubernetes_schema(version: str) -> None:
    result = subprocess.run(
        [str(tool("kubernetes-validate")), "--strict", "--quiet", "-k", version, str(WATCH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_watch_yaml_with_only_its_annotated_skips() -> None:
    checkov = (str(tool("checkov")), "-f", str(WATCH), "--framework", "kubernetes")
    result = subprocess.run(
        [*checkov, "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    annotated = {
        value.partition("=")[0]
        for key, value in deployment()["metadata"]["annotations"].items()
        if key.startswith("checkov.io/skip")
    }
    assert {c["check_id"] for c in report["results"]["skipped_checks"]} == annotated


def test_the_watch_is_one_replica_running_rotator_watch_never_two_at_once() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    (container,) = spec["template"]["spec"]["containers"]
    args = parse_args(container["args"])
    assert args.command == "watch"
    assert args.log_format == "json"


def test_the_watch_pod_is_the_cronjobs_pod_with_the_same_account_secrets_and_image() -> None:
    watch = deployment()["spec"]["template"]["spec"]
    job = pod_spec()
    for field in ("serviceAccountName", "securityContext", "volumes"):
        assert watch[field] == job[field], field
    (wc,) = watch["containers"]
    (jc,) = job["containers"]
    for field in ("image", "securityContext", "volumeMounts"):
        assert wc[field] == jc[field], field


def test_the_watch_grants_itself_no_rights_and_carries_no_secret() -> None:
    kinds = sorted(d["kind"] for d in documents())
    assert kinds == ["Deployment", "NetworkPolicy"]
    policy = next(d for d in documents() if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"] == []
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == deployment()["spec"]["template"]["metadata"]["labels"]
