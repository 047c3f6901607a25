"""The seeded content of the sandbox's ops repo and the ArgoCD Applications (names: FACTS 1).

Layout of the ops repo (one ArgoCD Application per environment, ONE source each)::

    apps/<env>/gateway.yaml               Deployment align-<env>-gateway
    sealedsecrets/<env>/posthog.yaml      SealedSecret align-posthog (key POSTHOG_API_KEY)
    argocd/<env>.yaml                     the Application itself (for reference; the sandbox
                                          creates it through the API, as `argocd app create` would)

Application ``align-<env>`` (namespace ``argocd``): ``spec.source`` with ``repoURL`` = the bare
repo, ``targetRevision: main``, ``path: .``, ``directory.recurse: true`` and
``directory.include: '{apps/<env>/*.yaml,sealedsecrets/<env>/*.yaml}'``, destination namespace
``align-<env>``, ``syncPolicy.automated`` (no prune, no self-heal). A single source keeps
``status.sync.revision`` a single commit sha (multi-source apps report ``revisions`` instead),
while the files stay where rotator's config expects them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from rotator.clients.sealing import SealingCert, update_sealed_file
from rotator.config import SealingScope
from rotator.redact import Secret

ENVS = ("preview", "prod")
SECRET_NAME = "align-posthog"
DATA_KEY = "POSTHOG_API_KEY"
IMAGE = "align/gateway:1.0"
ARGOCD_NAMESPACE = "argocd"
APP_PROJECT = "default"
APP_LABEL = "align-gateway"


def namespace(env: str) -> str:
    return f"align-{env}"


def deployment_name(env: str) -> str:
    return f"align-{env}-gateway"


def app_name(env: str) -> str:
    return f"align-{env}"


def sealed_path(env: str) -> str:
    return f"sealedsecrets/{env}/posthog.yaml"


def deployment_path(env: str) -> str:
    return f"apps/{env}/gateway.yaml"


def gateway_deployment(
    env: str, *, replicas: int = 1, image: str = IMAGE, progress_deadline_s: int = 600
) -> dict[str, Any]:
    labels = {"app": APP_LABEL, "env": env}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(env),
            "namespace": namespace(env),
            "labels": dict(labels),
        },
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline_s,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "gateway",
                            "image": image,
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "env": [
                                {"name": "ENVIRONMENT", "value": env},
                                {
                                    "name": DATA_KEY,
                                    "valueFrom": {
                                        "secretKeyRef": {"name": SECRET_NAME, "key": DATA_KEY}
                                    },
                                },
                            ],
                        }
                    ]
                },
            },
        },
    }


def application(env: str, *, repo_url: str, branch: str = "main") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": app_name(env), "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "project": APP_PROJECT,
            "source": {
                "repoURL": repo_url,
                "targetRevision": branch,
                "path": ".",
                "directory": {
                    "recurse": True,
                    "include": f"{{apps/{env}/*.yaml,sealedsecrets/{env}/*.yaml}}",
                },
            },
            "destination": {
                "server": "https://kubernetes.default.svc",
                "namespace": namespace(env),
            },
            "syncPolicy": {"automated": {"prune": False, "selfHeal": False}},
        },
    }


def app_project() -> dict[str, Any]:
    """The ``default`` AppProject as argo-cd server/server.go ``initializeDefaultProject``
    creates it (any repo, any destination, every cluster resource), without sync windows."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": APP_PROJECT, "namespace": ARGOCD_NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


def sealed_posthog(env: str, *, key: Secret, cert: SealingCert) -> str:
    """The SealedSecret file for ``env``, sealed (strict scope) with the fingerprint annotation."""
    return update_sealed_file(
        None,
        value=key,
        namespace=namespace(env),
        name=SECRET_NAME,
        data_key=DATA_KEY,
        scope=SealingScope.STRICT,
        cert=cert,
        path=sealed_path(env),
    ).text


def dump(obj: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(obj, sort_keys=False)


def ops_repo_files(
    *,
    keys: dict[str, Secret],
    cert: SealingCert,
    repo_url: str,
    replicas: int = 1,
    branch: str = "main",
    envs: Sequence[str] = ENVS,
) -> dict[str, str]:
    """Path -> content of the seed commit; ``keys`` maps env -> its initial project key."""
    files: dict[str, str] = {
        "README.md": "# ops\n\nGitOps repo of the align gateway (rotator sandbox).\n",
    }
    for env in envs:
        files[deployment_path(env)] = dump(gateway_deployment(env, replicas=replicas))
        files[sealed_path(env)] = sealed_posthog(env, key=keys[env], cert=cert)
        files[f"argocd/{env}.yaml"] = dump(application(env, repo_url=repo_url, branch=branch))
    return files
