"""The Helm chart (charts/rotator): it renders the objects cronjob.yaml holds, its Roles follow
the config it is given, and helm lint, kubernetes-validate and checkov find nothing.

helm comes from .ci/tools-go.sh (the Go module proxy); the linters from .ci/tools-venv.sh.
Without them the tests skip, naming the script.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from rotator.clients.kube import required_rbac
from rotator.config import Config
from tests.go_tools import go_tool
from tests.test_dockerfile import tool
from tests.test_manifests import MANIFEST, _atoms

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "rotator"
KUBE_VERSION = "1.33.0"  # helm's own default (1.20, when built without release flags) is too old

Obj = dict[str, Any]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(go_tool("helm")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def render(*values: str, tmp_path: Path | None = None, overrides: Obj | None = None) -> str:
    args = ["template", "rotator", str(CHART), "--kube-version", KUBE_VERSION]
    if overrides is not None:
        assert tmp_path is not None
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(overrides))
        args += ["-f", str(path)]
    for value in values:
        args += ["--set", value]
    return helm(*args).stdout


def docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(doc: Obj) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


def normalised(doc: Obj) -> Obj:
    """Compare meaning, not spelling: the config as a validated Config, rules as atoms."""
    doc = json.loads(json.dumps(doc))
    if doc["kind"] == "ConfigMap":
        config = Config.model_validate(yaml.safe_load(doc["data"]["config.yaml"]))
        doc["data"]["config.yaml"] = config.model_dump(mode="json")
    if doc["kind"] == "Role":
        doc["rules"] = sorted(_atoms(doc["metadata"]["namespace"], doc["rules"]))
    return doc


def test_the_chart_renders_the_same_objects_as_cronjob_yaml() -> None:
    chart = {key(d): normalised(d) for d in docs(render())}
    manifest = {key(d): normalised(d) for d in docs(MANIFEST.read_text())}
    assert sorted(chart) == sorted(manifest)
    for name, doc in manifest.items():
        assert chart[name] == doc, name


def test_helm_lint_passes_strictly() -> None:
    out = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION).stdout
    assert "0 chart(s) failed" in out


def test_the_rendered_chart_validates_against_the_kubernetes_schema(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render())
    result = subprocess.run(
        [
            str(tool("kubernetes-validate")),
            "--strict",
            "--quiet",
            "-k",
            KUBE_VERSION,
            str(rendered),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_the_rendered_chart_with_only_the_manifests_skip(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render())
    result = subprocess.run(
        [str(tool("checkov")), "-f", str(rendered), "--framework", "kubernetes",
         "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["parsing_errors"] == 0
    assert {c["check_id"] for c in report["results"]["skipped_checks"]} == {"CKV_K8S_38"}


def _granted(objects: list[Obj]) -> set[tuple[str, str, str, str, str]]:
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in objects
        if d["kind"] == "Role"
    }
    atoms: set[tuple[str, str, str, str, str]] = set()
    for binding in (d for d in objects if d["kind"] == "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        assert binding["subjects"][0]["name"] == "rotator"
        atoms |= _atoms(ns, roles[(ns, binding["roleRef"]["name"])]["rules"])
    return atoms


def _needed(config: Config, job_namespace: str) -> set[tuple[str, str, str, str, str]]:
    atoms: set[tuple[str, str, str, str, str]] = set()
    by_ns: dict[str, tuple[list[str], list[str]]] = {}
    apps: dict[str, tuple[list[str], list[str]]] = {}
    for env in config.environments.values():
        sealed, deployments = by_ns.setdefault(env.namespace, ([], []))
        sealed.append(env.secret_name)
        deployments.append(env.deployment)
        names, projects = apps.setdefault(env.argocd_app.namespace, ([], []))
        names.append(env.argocd_app.name)
        projects.append(env.argocd_app.project)
        assert env.cert.controller is not None
        rules = required_rbac(controller=env.cert.controller)["controller"]
        atoms |= _atoms(env.cert.controller.namespace, [r.to_rule() for r in rules])
    for ns, (sealed, deployments) in by_ns.items():
        rules = required_rbac(sealed_secrets=tuple(sealed), deployments=tuple(deployments))["app"]
        atoms |= _atoms(ns, [r.to_rule() for r in rules])
    for ns, (names, projects) in apps.items():
        rules = required_rbac(applications=tuple(names), projects=tuple(projects))["argocd"]
        atoms |= _atoms(ns, [r.to_rule() for r in rules])
    rules = required_rbac(lease_name=config.lock.name)
    atoms |= _atoms(config.lock.namespace, [r.to_rule() for r in rules["lock"]])
    atoms |= _atoms(job_namespace, [r.to_rule() for r in rules["job"]])
    return atoms


def test_the_roles_follow_the_config_a_new_environment_and_a_lock_elsewhere(tmp_path: Path) -> None:
    staging = {
        "posthog_project_id": 777,
        "namespace": "align-staging",
        "secret_name": "staging-posthog",
        "sealed_file": "sealedsecrets/staging/posthog.yaml",
        "argocd_app": {"name": "align-staging", "namespace": "argocd-staging", "project": "stg"},
        "deployment": "align-staging-gateway",
        "cert": {
            "controller": {"name": "sealed-secrets", "namespace": "sealed", "port_name": "http"}
        },
    }
    overrides = {
        "config": {"environments": {"staging": staging}, "lock": {"namespace": "locks"}},
        "sealedSecretsController": {"name": "ss", "namespace": "kube-system", "port_name": "web"},
    }
    objects = docs(render(tmp_path=tmp_path, overrides=overrides))
    (configmap,) = [d for d in objects if d["kind"] == "ConfigMap"]
    config = Config.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert set(config.environments) == {"preview", "prod", "staging"}
    prod = config.environments["prod"].cert.controller
    assert prod is not None
    assert (prod.name, prod.port_name) == ("ss", "web")  # the chart's default controller
    assert _granted(objects) == _needed(config, "rotator")
    assert ("locks", "", "events", "create", "*") not in _granted(objects)
    assert ("rotator", "", "events", "create", "*") in _granted(objects)


def test_the_schedule_and_image_come_from_one_place_each() -> None:
    (cronjob,) = [
        d
        for d in docs(render("config.schedule.cron=0 7 * * 2", "image.digest=sha256:" + "a" * 64))
        if d["kind"] == "CronJob"
    ]
    assert cronjob["spec"]["schedule"] == "0 7 * * 2"
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/align/rotator:0.1.0@sha256:" + "a" * 64


def test_the_watch_switch_renders_the_same_deployment_as_watch_yaml_and_no_new_rights() -> None:
    without = {key(d) for d in docs(render())}
    chart = {key(d): normalised(d) for d in docs(render("watch.enabled=true"))}
    manifest = {key(d): normalised(d) for d in docs((ROOT / "watch.yaml").read_text())}
    assert sorted(set(chart) - without) == sorted(manifest)
    for name, doc in manifest.items():
        assert chart[name] == doc, name


def test_no_secret_is_rendered_or_accepted_as_a_value() -> None:
    kinds = {d["kind"] for d in docs(render())}
    assert "Secret" not in kinds
