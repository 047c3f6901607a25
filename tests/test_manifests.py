"""cronjob.yaml: schema-valid, checkov clean, least-privilege RBAC that matches what the run calls.

The RBAC is checked against ``rotator.clients.kube.required_rbac`` (``REQUIRED_RBAC``): the kube
client's own list of every (apiGroup, resource, verb) the run uses. The Roles must grant exactly
that, narrowed to the configured object names, in the configured namespaces, to the job's
ServiceAccount, and nothing else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rotator.cli import parse_args
from rotator.clients.kube import METADATA_ONLY, REQUIRED_RBAC, RbacRule, required_rbac
from rotator.config import Config, LockConfig, RunSwitches
from rotator.errors import ExitCode
from rotator.interrupts import FINISH_BUDGET_S, GRACE_PERIOD_S
from tests.test_dockerfile import env_of, read_dockerfile, stages, tool

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "cronjob.yaml"
# EKS's supported minor versions when this was written, and the newest schema available.
K8S_VERSIONS = ("1.31.0", "1.33.0", "1.35.0", "1.37.0")
SA = ("rotator", "rotator")  # namespace, name

Obj = dict[str, Any]
Atom = tuple[str, str, str, str, str]  # namespace, apiGroup, resource, verb, name ("*": any)


def documents() -> list[Obj]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def one(kind: str, name: str | None = None) -> Obj:
    found = [d for d in documents() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def job_config() -> Config:
    text = one("ConfigMap", "rotator-config")["data"]["config.yaml"]
    return Config.model_validate(yaml.safe_load(text))


def pod_spec() -> Obj:
    spec: Obj = one("CronJob", "rotator")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container() -> Obj:
    (only,) = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


# --- validators ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_document_validates_against_the_kubernetes_schema(version: str) -> None:
    result = subprocess.run(
        [str(tool("kubernetes-validate")), "--strict", "--quiet", "-k", version, str(MANIFEST)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_would_catch_a_misspelt_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.read_text().replace("concurrencyPolicy:", "concurrencyPolicyy:"))
    result = subprocess.run(
        [str(tool("kubernetes-validate")), "--strict", "--quiet", "-k", K8S_VERSIONS[0], str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "concurrencyPolicyy" in result.stdout + result.stderr


def _skip_annotations() -> dict[str, str]:
    """check id -> reason, from every ``checkov.io/skip<N>: CKV_..=reason`` annotation."""
    skips: dict[str, str] = {}
    for doc in documents():
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, sep, reason = value.partition("=")
                assert sep, f"{key} on {doc['kind']}: write CKV_ID=reason"
                skips[check] = reason
    return skips


def test_checkov_passes_with_only_the_annotated_skips() -> None:
    # --skip-download: no policy or guideline download from the vendor's platform (and this
    # machine has no network besides the package registries).
    checkov = (str(tool("checkov")), "-f", str(MANIFEST), "--framework", "kubernetes")
    result = subprocess.run(
        [*checkov, "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] == len(documents())
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped == set(_skip_annotations())


def test_every_checkov_skip_says_why() -> None:
    for check, reason in _skip_annotations().items():
        assert check.startswith("CKV"), check
        assert len(reason.split()) >= 8, f"{check}: the reason must explain, not just name it"


# --- what is in the file -----------------------------------------------------------------------


def test_the_file_holds_exactly_the_expected_objects_and_no_secret() -> None:
    kinds = sorted(
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in documents()
    )
    assert kinds == sorted(
        [
            ("Namespace", "", "rotator"),
            ("ServiceAccount", "rotator", "rotator"),
            ("ConfigMap", "rotator", "rotator-config"),
            ("CronJob", "rotator", "rotator"),
            *[
                (kind, ns, name)
                for ns, name in [
                    ("align-preview", "rotator-app"),
                    ("align-prod", "rotator-app"),
                    ("rotator", "rotator-lock"),
                    ("argocd", "rotator-argocd"),
                    ("kube-system", "rotator-sealing"),
                ]
                for kind in ("Role", "RoleBinding")
            ],
        ]
    )


def test_the_configmap_is_config_align_yaml_with_the_key_read_from_a_file() -> None:
    mine = yaml.safe_load(one("ConfigMap", "rotator-config")["data"]["config.yaml"])
    team = yaml.safe_load((ROOT / "config" / "align.yaml").read_text())
    assert mine["posthog"].pop("personal_api_key") == {
        "file": "/var/run/secrets/rotator/posthog/personal-api-key"
    }
    assert mine["posthog"]["reset"].pop("password") == {
        "file": "/var/run/secrets/rotator/posthog/password"
    }
    assert mine["posthog"]["reset"].pop("totp_secret") == {
        "file": "/var/run/secrets/rotator/posthog/totp-secret"
    }
    team["posthog"].pop("personal_api_key")
    team["posthog"]["reset"].pop("password")
    team["posthog"]["reset"].pop("totp_secret")
    assert mine == team
    assert mine["kubernetes"]["kubeconfig"] is None, "in the cluster: the ServiceAccount"
    job_config()  # and it is a valid config


# --- the CronJob -------------------------------------------------------------------------------


def test_the_cronjob_runs_on_the_configured_schedule_one_at_a_time() -> None:
    spec = one("CronJob", "rotator")["spec"]
    config = job_config()
    assert spec["schedule"] == config.schedule.cron
    assert spec["timeZone"] == config.schedule.timezone
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == config.schedule.misfire_grace_s
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1


def test_the_job_retries_a_little_fails_fast_where_a_retry_cannot_help_and_is_bounded() -> None:
    job = one("CronJob", "rotator")["spec"]["jobTemplate"]["spec"]
    config = job_config()
    assert 1 <= job["backoffLimit"] <= 3
    # A retry after the reset must not reset again: the runner's guard covers the retries.
    assert config.policy.min_interval_s >= job["activeDeadlineSeconds"] * (job["backoffLimit"] + 1)
    fail_job = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_job[0]["onExitCodes"]["values"] == [ExitCode.CONFIG, ExitCode.LOCKED]
    waits = config.waits
    longest = waits.argocd_s + waits.unseal_s + waits.rollout_s + waits.marker_s
    assert job["activeDeadlineSeconds"] > longest + waits.gateway_events_s
    assert job["ttlSecondsAfterFinished"] >= 7 * 24 * 3600
    assert pod_spec()["restartPolicy"] == "Never"


def test_the_pod_gets_the_grace_period_a_stopped_run_needs_to_release_and_report() -> None:
    # After SIGTERM: release the Lease, post to Slack, push the metrics, each bounded.
    assert GRACE_PERIOD_S >= 3 * FINISH_BUDGET_S + 10
    assert pod_spec()["terminationGracePeriodSeconds"] >= GRACE_PERIOD_S


def test_the_pod_is_locked_down() -> None:
    pod = pod_spec()
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container()["securityContext"]
    assert c["allowPrivilegeEscalation"] is False
    assert c["readOnlyRootFilesystem"] is True
    assert c["capabilities"] == {"drop": ["ALL"]}
    assert c["privileged"] is False
    runtime = stages(read_dockerfile())[1]
    user = [i.args for i in runtime if i.keyword == "USER"][-1]
    assert f"{ctx['runAsUser']}:{ctx['runAsGroup']}" == user == "10001:10001"
    assert pod["serviceAccountName"] == SA[1]
    assert pod["automountServiceAccountToken"] is True
    assert one("ServiceAccount", "rotator").get("automountServiceAccountToken") is False
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


def test_the_only_writable_place_is_an_emptydir_at_tmp_the_images_home() -> None:
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    writable = [p for p, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    env = env_of(stages(read_dockerfile())[1])
    assert env["HOME"] == env["TMPDIR"] == "/tmp"


def test_the_image_is_pinned_by_digest() -> None:
    image = container()["image"]
    assert "@sha256:" in image
    assert len(image.rsplit("@sha256:", 1)[1]) == 64


def test_the_config_is_mounted_where_the_image_looks_for_it() -> None:
    env = {e["name"]: e.get("value", "") for e in container()["env"]}
    image_env = env_of(stages(read_dockerfile())[1])
    assert env["ROTATOR_CONFIG"] == image_env["ROTATOR_CONFIG"] == "/etc/rotator/config.yaml"
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mounts["/etc/rotator"])
    assert volume["configMap"]["name"] == "rotator-config"
    assert volume["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]


def _secret_files() -> dict[str, tuple[str, str, int]]:
    """mounted path -> (Secret name, key, mode) for every Secret volume item."""
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    out = {}
    for volume in pod_spec()["volumes"]:
        secret = volume.get("secret")
        if secret:
            for item in secret["items"]:
                path = f"{mounts[volume['name']]}/{item['path']}"
                out[path] = (secret["secretName"], item["key"], secret["defaultMode"])
    return out


def test_every_secret_the_config_reads_comes_from_a_mounted_secret_reference() -> None:
    config = job_config()
    files = _secret_files()
    wanted = {
        str(config.posthog.personal_api_key.file): ("rotator-posthog", "personal-api-key"),
        str(config.posthog.reset.password.file): ("rotator-posthog", "password"),
        str(config.posthog.reset.totp_secret.file): ("rotator-posthog", "totp-secret"),
        str(config.git.ssh_key_file): ("rotator-git", "ssh-privatekey"),
        str(config.git.known_hosts_file): ("rotator-git", "known_hosts"),
        str(config.slack.webhook_url.file): ("rotator-slack", "webhook-url"),
    }
    assert {path: files[path][:2] for path in files} == wanted
    assert {mode for *_, mode in files.values()} == {0o400}
    assert pod_spec()["securityContext"]["fsGroup"] == 10001  # 0400 files, group-readable


def test_no_secret_value_travels_in_the_environment() -> None:
    env = container()["env"]
    # Only the downward API's pod identity comes from elsewhere (the pod's own Event).
    downward = {e["name"]: e["valueFrom"] for e in env if "valueFrom" in e}
    assert downward == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "POD_UID": {"fieldRef": {"fieldPath": "metadata.uid"}},
    }, "secrets are files, not env vars"
    values = {e["name"]: e.get("value", "") for e in env if "valueFrom" not in e}
    assert set(values) == {
        "ROTATOR_CONFIG",
        "ROTATOR_TRIGGER",
        "ROTATOR_DRY_RUN",
        "ROTATOR_NO_RESET",
        "ROTATOR_ENVS",
        "ROTATOR_FORCE",
    }
    switches = RunSwitches.from_env(values)
    assert switches == RunSwitches(trigger="cron")


def test_the_container_runs_rotator_run() -> None:
    args = parse_args(container()["args"])
    assert args.command == "run"
    assert args.log_format == "json"
    assert "command" not in container(), "the image's ENTRYPOINT is rotator"


# --- RBAC --------------------------------------------------------------------------------------


def _atoms(namespace: str, rules: Iterable[Obj]) -> set[Atom]:
    out: set[Atom] = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or ["*"]:
                        out.add((namespace, group, resource, verb, name))
    return out


def _rbac_rules(rules: Iterable[RbacRule]) -> list[Obj]:
    return [r.to_rule() for r in rules]


def granted() -> set[Atom]:
    """What the ServiceAccount may do, from the Roles that its RoleBindings bind."""
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in documents()
        if d["kind"] == "Role"
    }
    atoms: set[Atom] = set()
    for binding in (d for d in documents() if d["kind"] == "RoleBinding"):
        ns = binding["metadata"]["namespace"]
        subjects = binding["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": SA[1], "namespace": SA[0]}]
        ref = binding["roleRef"]
        assert ref["kind"] == "Role"
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        atoms |= _atoms(ns, roles[(ns, ref["name"])]["rules"])
    return atoms


def needed(config: Config) -> set[Atom]:
    """REQUIRED_RBAC, narrowed to the configured names, in the configured namespaces."""
    atoms: set[Atom] = set()
    controllers = set()
    apps: dict[str, list[str]] = {}
    projects: dict[str, set[str]] = {}
    for env in config.environments.values():
        rules = required_rbac(deployments=(env.deployment,), sealed_secrets=(env.secret_name,))
        atoms |= _atoms(env.namespace, _rbac_rules(rules["app"]))
        apps.setdefault(env.argocd_app.namespace, []).append(env.argocd_app.name)
        projects.setdefault(env.argocd_app.namespace, set()).add(env.argocd_app.project)
        assert env.cert.controller is not None
        controllers.add(env.cert.controller)
    for ns, names in apps.items():
        rules = required_rbac(applications=tuple(names), projects=tuple(sorted(projects[ns])))
        atoms |= _atoms(ns, _rbac_rules(rules["argocd"]))
    for controller in controllers:
        rules = required_rbac(controller=controller)
        atoms |= _atoms(controller.namespace, _rbac_rules(rules["controller"]))
    rules = required_rbac(lease_name=config.lock.name)
    atoms |= _atoms(config.lock.namespace, _rbac_rules(rules["lock"]))
    atoms |= _atoms(one("CronJob", "rotator")["metadata"]["namespace"], _rbac_rules(rules["job"]))
    return atoms


def test_the_roles_grant_exactly_what_the_kube_client_says_the_run_needs() -> None:
    want, have = needed(job_config()), granted()
    assert have - want == set(), "granted but never used"
    assert want - have == set(), "used but not granted"


def test_the_roles_cover_every_kind_of_call_in_required_rbac() -> None:
    shapes = {
        (group, resource, verb)
        for rules in REQUIRED_RBAC.values()
        for rule in rules
        for group, resource, verb in [(rule.api_group, rule.resource, v) for v in rule.verbs]
    }
    assert {(g, r, v) for _, g, r, v, _ in granted()} == shapes


def test_names_narrow_every_verb_that_kubernetes_lets_them_narrow() -> None:
    # create has no name yet; events are listed by involvedObject, not by their own name.
    # list/watch carry a name through the waits' metadata.name field selector, so they are
    # narrowed like get (the API server authorizes such a request for that name).
    for ns, _group, resource, verb, name in granted():
        if verb == "create" or (resource == "events" and verb == "list"):
            continue
        assert name != "*", f"{verb} {resource} in {ns} is not narrowed to a name"


def test_no_secret_but_the_unsealed_one_no_exec_and_nothing_cluster_wide() -> None:
    kinds = {d["kind"] for d in documents()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Secret"}
    app_namespaces = {env.namespace for env in job_config().environments.values()}
    for ns, group, resource, verb, name in granted():
        assert "*" not in (group, resource, verb)
        if resource == "secrets":  # read metadata-only for its key-fingerprint annotation
            assert (ns in app_namespaces, verb, name) == (True, "get", "align-posthog")
        assert resource not in ("pods", "pods/exec", "pods/attach", "serviceaccounts")
        assert not resource.startswith(("roles", "rolebindings", "clusterrole"))
        assert verb not in ("escalate", "bind", "impersonate", "deletecollection", "delete")


def test_the_lease_lives_in_the_jobs_own_namespace_and_no_app_namespace_grants_leases() -> None:
    config = job_config()
    assert config.lock.namespace == one("CronJob", "rotator")["metadata"]["namespace"]
    assert LockConfig().namespace == "rotator"  # the default, too
    app_namespaces = {env.namespace for env in config.environments.values()}
    for ns, _group, resource, verb, _name in granted():
        assert not (ns in app_namespaces and resource == "leases"), (ns, verb)


def test_the_lease_and_proxy_roles_follow_the_config() -> None:
    config = job_config()
    lock = one("Role", "rotator-lock")
    assert lock["metadata"]["namespace"] == config.lock.namespace
    sealing = one("Role", "rotator-sealing")
    (rule,) = sealing["rules"]
    controller = config.environments["prod"].cert.controller
    assert controller is not None
    assert sealing["metadata"]["namespace"] == controller.namespace
    # The API server authorizes the proxy by the path segment <scheme>:<service>:<port name>.
    assert rule["resourceNames"] == [f"http:{controller.name}:{controller.port_name}"]
    assert sorted(rule["verbs"]) == ["create", "get"]  # GET cert.pem, POST /v1/verify


# --- manual trigger (README, operations guide), through kubectl against the API stand-in ---

KUBECTL = shutil.which("kubectl")


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    from rotator_sandbox.kubeapi import KubeApiServer

    server = KubeApiServer(tls=True).start()
    try:
        yield server.write_kubeconfig(tmp_path / "kubeconfig"), server
    finally:
        server.stop()


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_the_documented_manual_trigger_with_switches_creates_the_job(
    api_server: tuple[Path, Any],
) -> None:
    kubeconfig, _ = api_server
    for ns in ("align-preview", "align-prod", "argocd"):
        _kubectl(kubeconfig, "create", "namespace", ns)
    _kubectl(kubeconfig, "apply", "-f", str(MANIFEST))
    # README, "Trigger a run by hand", with switches:
    job = _kubectl(
        kubeconfig,
        *("create", "job", "--from=cronjob/rotator", "rotator-manual-1", "-n", "rotator"),
        *("--dry-run=client", "-o", "yaml"),
    )
    job = _kubectl(
        kubeconfig,
        *("set", "env", "--local", "-f", "-", "-c", "rotator", "-o", "yaml"),
        *("ROTATOR_TRIGGER=manual", "ROTATOR_DRY_RUN=true", "ROTATOR_ENVS=preview"),
        stdin=job,
    )
    _kubectl(kubeconfig, "create", "-f", "-", stdin=job)
    created = json.loads(
        _kubectl(kubeconfig, "get", "job", "rotator-manual-1", "-n", "rotator", "-o", "json")
    )
    (ctr,) = created["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in ctr["env"]}
    switches = RunSwitches.from_env(env)
    assert switches == RunSwitches(envs=("preview",), dry_run=True, trigger="manual")
    assert created["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True  # the template, unchanged


def test_the_operations_guide_shows_the_pipeline_tested_above() -> None:
    guide = (ROOT / "README.md").read_text()
    assert 'create job --from=cronjob/rotator "rotator-manual-$(date +%s)"' in guide
    assert "--dry-run=client -o yaml" in guide
    assert "kubectl set env --local -f - -c rotator -o yaml ROTATOR_TRIGGER=manual" in guide
    assert "kubectl create -f -" in guide
    for name in ("ROTATOR_DRY_RUN", "ROTATOR_NO_RESET", "ROTATOR_ENVS", "ROTATOR_FORCE"):
        assert name in guide


# --- the Roles against an API server that enforces RBAC: a whole rotation as the job ----------


def _apply_rbac_as_admin(admin: Any) -> None:
    """Replace the sandbox's own grants with this file's namespace, ServiceAccount and Roles."""
    from kubernetes import client

    rbac, core = client.RbacAuthorizationV1Api(admin), client.CoreV1Api(admin)
    for ns in ("align-preview", "align-prod", "argocd", "kube-system", "rotator"):
        for binding in rbac.list_namespaced_role_binding(ns).items:
            if binding.metadata.name.startswith("rotator-"):
                rbac.delete_namespaced_role_binding(binding.metadata.name, ns)
        for role in rbac.list_namespaced_role(ns).items:
            if role.metadata.name.startswith("rotator-"):
                rbac.delete_namespaced_role(role.metadata.name, ns)
    core.replace_namespace("rotator", one("Namespace", "rotator"))  # the sandbox made it
    core.create_namespaced_service_account("rotator", one("ServiceAccount", "rotator"))
    for doc in documents():
        ns = doc["metadata"].get("namespace", "")
        if doc["kind"] == "Role":
            rbac.create_namespaced_role(ns, doc)
        elif doc["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(ns, doc)


@pytest.mark.slow
def test_a_whole_rotation_runs_as_the_jobs_service_account_and_nothing_else_is_allowed(
    tmp_path: Path,
) -> None:
    import secrets

    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException

    from rotator.config import load_config
    from rotator.report import Outcome, to_text
    from rotator.runner import run_once
    from rotator_sandbox.world import FAST, Sandbox, cached_key_pair

    user = f"system:serviceaccount:{SA[0]}:{SA[1]}"
    with Sandbox(
        tmp_path / "sandbox", timing=FAST, key_pair=cached_key_pair(2048), seed=1, rbac=True
    ) as world:
        assert world.kube is not None
        admin = kube_config.new_client_from_config(str(world.admin_kubeconfig_path))
        _apply_rbac_as_admin(admin)
        token = secrets.token_urlsafe(24)
        world.kube.add_token(token, user=user)
        kubeconfig = world.kube.write_kubeconfig(
            tmp_path / "rotator-sa.kubeconfig", token=token, user="rotator"
        )
        # The job's pod, as the CronJob's downward API names it to the run.
        pod = client.CoreV1Api(admin).create_namespaced_pod(
            SA[0],
            {
                "metadata": {"name": "rotator-29000000-abcde"},
                "spec": {"containers": [{"name": "rotator", "image": "rotator"}]},
            },
        )
        pod_env = {
            "POD_NAME": pod.metadata.name,
            "POD_NAMESPACE": SA[0],
            "POD_UID": pod.metadata.uid,
        }
        config = load_config(
            world.config_path,
            overrides=[f"kubernetes.kubeconfig={kubeconfig}"],
            environ={**world.environ(), **pod_env},
        )
        report = run_once(config, RunSwitches(trigger="test"))
        assert report.outcome is Outcome.SUCCEEDED, to_text(report)
        calls = [e for e in world.kube.audit_log() if e.user == user]
        assert calls, "the run did not use the ServiceAccount"
        assert [e for e in calls if not e.allowed] == []
        used = {(e.namespace, e.api_group, e.resource, e.verb) for e in calls}
        assert ("align-prod", "apps", "deployments", "patch") in used
        assert ("kube-system", "", "services/proxy", "get") in used
        for ns in ("align-preview", "align-prod", SA[0]):
            assert (ns, "", "events", "create") in used, ns
        # A Secret is only ever read metadata-only, and only the unsealed one.
        assert {(e.verb, e.name, e.accept) for e in calls if e.resource == "secrets"} <= {
            ("get", "align-posthog", METADATA_ONLY)
        }

        # Outside the list: any other Secret, exec into a pod, anything cluster-wide.
        job = kube_config.new_client_from_config(str(kubeconfig))
        core = client.CoreV1Api(job)
        denied = [
            lambda: core.read_namespaced_secret("another-secret", "align-prod"),
            lambda: core.list_namespaced_secret("align-prod"),
            core.list_secret_for_all_namespaces,
            lambda: core.list_namespaced_pod("align-prod"),
            lambda: core.create_namespace({"metadata": {"name": "x"}}),
            lambda: client.AppsV1Api(job).delete_namespaced_deployment(
                "align-prod-gateway", "align-prod"
            ),
            lambda: client.AppsV1Api(job).patch_namespaced_deployment(
                "some-other-app", "align-prod", {"metadata": {"labels": {"x": "y"}}}
            ),
            lambda: core.connect_post_namespaced_pod_exec("any", "align-prod", command=["sh"]),
        ]
        for call in denied:
            with pytest.raises(ApiException) as info:
                call()
            assert info.value.status == 403
        admin.close()
        job.close()
