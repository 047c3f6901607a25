"""Contract tests for the Kubernetes API stand-in, driven through the official client."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from rotator_sandbox.kubeapi import KubeApiServer
from tests.kube_fixtures import client_for, kube_api, kube_client, namespace, register_backend

__all__ = ["kube_api", "kube_client"]

NS = "align-prod"


def deployment(name: str = "gw", *, image: str = "gateway:1") -> dict[str, Any]:
    labels = {"app": "align-gateway", "env": "prod"}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "gateway",
                            "image": image,
                            "env": [{"name": "A", "value": "1"}],
                            "ports": [{"containerPort": 8080}],
                        },
                        {"name": "sidecar", "image": "side:1"},
                    ]
                },
            },
        },
    }


def sealed_secret(name: str = "align-posthog") -> dict[str, Any]:
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"encryptedData": {"POSTHOG_API_KEY": "AgB="}, "template": {"type": "Opaque"}},
    }


def application(name: str = "align-prod") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd"},
        "spec": {"project": "default", "source": {"repoURL": "file:///ops", "path": "deploy/prod"}},
    }


@pytest.fixture
def api(kube_client: client.ApiClient) -> client.ApiClient:
    namespace(kube_client, NS)
    namespace(kube_client, "argocd")
    return kube_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def raw(server: KubeApiServer, method: str, path: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
    headers = {"Authorization": f"Bearer {server.admin_token}", **kwargs.pop("headers", {})}
    return urllib3.request(method, server.url + path, headers=headers, timeout=5, **kwargs)


# --- CRUD -----------------------------------------------------------------------------------


def test_create_returns_the_object_with_uid_resource_version_and_timestamp(
    core: client.CoreV1Api,
) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"a": "b"}})
    assert made.metadata.uid
    assert int(made.metadata.resource_version) > 0
    assert made.metadata.creation_timestamp is not None
    assert made.metadata.namespace == NS
    assert core.read_namespaced_config_map("c", NS).data == {"a": "b"}


def test_creating_twice_is_409_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    assert info.value.status == 409
    status = status_of(info.value)
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == 'configmaps "c" already exists'


def test_a_missing_object_is_404_not_found_with_the_real_message(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("nope", NS)
    status = status_of(info.value)
    assert info.value.status == 404
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_creating_in_a_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_secret("ghost", {"metadata": {"name": "s"}})
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'namespaces "ghost" not found'


def test_generate_name_makes_a_unique_name(core: client.CoreV1Api) -> None:
    pod = {"metadata": {"generateName": "gw-"}, "spec": {"containers": [{"name": "c"}]}}
    first = core.create_namespaced_pod(NS, pod)
    second = core.create_namespaced_pod(NS, pod)
    assert first.metadata.name.startswith("gw-")
    assert first.metadata.name != second.metadata.name
    assert first.status.phase == "Pending"


def test_an_invalid_name_is_422_invalid(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "Bad_Name"}})
    assert info.value.status == 422
    assert status_of(info.value)["reason"] == "Invalid"


def test_secret_string_data_is_folded_into_base64_data(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_secret(
        NS,
        {"metadata": {"name": "align-posthog"}, "stringData": {"POSTHOG_API_KEY": "phc_x"}},
    )
    assert made.data == {"POSTHOG_API_KEY": base64.b64encode(b"phc_x").decode()}
    assert made.string_data is None
    assert made.type == "Opaque"


def test_replace_with_a_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    made.data = {"v": "2"}
    core.replace_namespaced_config_map("c", NS, made)
    made.data = {"v": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("c", NS, made)
    assert info.value.status == 409
    status = status_of(info.value)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert core.read_namespaced_config_map("c", NS).data == {"v": "2"}


def test_a_custom_resource_update_needs_a_resource_version(
    custom: client.CustomObjectsApi,
) -> None:
    custom.create_namespaced_custom_object(
        "bitnami.com", "v1alpha1", NS, "sealedsecrets", sealed_secret()
    )
    body = sealed_secret()
    with pytest.raises(ApiException) as info:
        custom.replace_namespaced_custom_object(
            "bitnami.com", "v1alpha1", NS, "sealedsecrets", "align-posthog", body
        )
    assert info.value.status == 422
    assert "must be specified for an update" in status_of(info.value)["message"]


def test_a_write_that_changes_nothing_keeps_the_resource_version(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"a": "b"}})
    again = core.patch_namespaced_config_map("c", NS, {"data": {"a": "b"}})
    assert again.metadata.resource_version == made.metadata.resource_version


def test_delete_removes_the_object_and_returns_a_status(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "s"}})
    result = core.delete_namespaced_secret("s", NS)
    assert result["status"] == "Success"
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret("s", NS)
    assert info.value.status == 404


def test_deleting_an_owner_deletes_its_dependents(
    apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    dep = apps.create_namespaced_deployment(NS, deployment())
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw", "uid": dep.metadata.uid}
    rs = apps.create_namespaced_replica_set(
        NS,
        {
            "metadata": {"name": "gw-1", "ownerReferences": [owner]},
            "spec": deployment()["spec"],
        },
    )
    rs_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "gw-1",
        "uid": rs.metadata.uid,
    }
    core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": "gw-1-a", "ownerReferences": [rs_owner]},
            "spec": {"containers": [{"name": "c"}]},
        },
    )
    apps.delete_namespaced_deployment("gw", NS)
    assert apps.list_namespaced_replica_set(NS).items == []
    assert core.list_namespaced_pod(NS).items == []


def test_deleting_a_namespace_deletes_what_is_in_it(core: client.CoreV1Api) -> None:
    namespace(core.api_client, "doomed")
    core.create_namespaced_secret("doomed", {"metadata": {"name": "s"}})
    core.delete_namespace("doomed")
    assert (
        core.list_secret_for_all_namespaces(field_selector="metadata.namespace=doomed").items == []
    )
    with pytest.raises(ApiException):
        core.read_namespace("doomed")


def test_the_default_namespaces_and_service_accounts_exist(core: client.CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert core.read_namespaced_service_account("default", "default").metadata.name == "default"


# --- lists and selectors ----------------------------------------------------------------------


def test_a_list_carries_the_current_resource_version(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    listed = core.list_namespaced_config_map(NS)
    assert [c.metadata.name for c in listed.items] == ["c"]
    assert listed.metadata.resource_version == made.metadata.resource_version


def test_label_selectors_support_equality_sets_and_existence(core: client.CoreV1Api) -> None:
    for name, labels in (
        ("a", {"env": "prod", "tier": "web"}),
        ("b", {"env": "preview"}),
        ("c", {}),
    ):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        items = core.list_namespaced_config_map(NS, label_selector=selector).items
        return [c.metadata.name for c in items]

    assert names("env=prod") == ["a"]
    assert names("env==prod") == ["a"]
    assert names("env!=prod") == ["b", "c"]
    assert names("env in (prod, preview)") == ["a", "b"]
    assert names("env notin (prod)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("env=prod,tier=web") == ["a"]


def test_field_selectors_match_name_and_namespace(core: client.CoreV1Api) -> None:
    namespace(core.api_client, "other")
    core.create_namespaced_config_map(NS, {"metadata": {"name": "a"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "b"}})
    core.create_namespaced_config_map("other", {"metadata": {"name": "a"}})
    found = core.list_config_map_for_all_namespaces(field_selector="metadata.name=a").items
    assert sorted(c.metadata.namespace for c in found) == [NS, "other"]
    found = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.name=a,metadata.namespace!={NS}"
    ).items
    assert [c.metadata.namespace for c in found] == ["other"]


def test_an_unsupported_field_label_is_400(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map(NS, field_selector="data.x=1")
    assert info.value.status == 400
    assert status_of(info.value)["message"] == "field label not supported: data.x"


def test_kind_specific_field_selectors_work(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "o"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "t"}, "type": "kubernetes.io/tls"})
    found = core.list_namespaced_secret(NS, field_selector="type=kubernetes.io/tls").items
    assert [s.metadata.name for s in found] == ["t"]


def test_lists_are_paginated_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"c{i}"}})
    first = core.list_namespaced_config_map(NS, limit=2)
    assert [c.metadata.name for c in first.items] == ["c0", "c1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["c2", "c3", "c4"]
    assert rest.metadata._continue is None


def test_an_expired_continue_token_is_410_gone(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    for i in range(3):
        core.create_namespaced_config_map(NS, {"metadata": {"name": f"c{i}"}})
    first = core.list_namespaced_config_map(NS, limit=1)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "later"}})
    kube_api.expire_watch_history()
    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map(NS, limit=1, _continue=first.metadata._continue)
    assert info.value.status == 410
    assert status_of(info.value)["reason"] == "Expired"


# --- patches --------------------------------------------------------------------------------


def test_strategic_merge_merges_containers_by_name_and_env_by_name(
    apps: client.AppsV1Api,
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    patched = apps.patch_namespaced_deployment(
        "gw",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "gateway",
                                "image": "gateway:2",
                                "env": [{"name": "B", "value": "2"}],
                            }
                        ]
                    }
                }
            }
        },
    )
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == ["gateway", "sidecar"]
    assert containers[0].image == "gateway:2"
    assert [(e.name, e.value) for e in containers[0].env] == [("A", "1"), ("B", "2")]
    assert containers[0].ports[0].container_port == 8080


def test_strategic_merge_understands_delete_and_replace_directives(
    apps: client.AppsV1Api,
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    patched = apps.patch_namespaced_deployment(
        "gw",
        NS,
        {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}},
    )
    assert [c.name for c in patched.spec.template.spec.containers] == ["gateway"]
    patched = apps.patch_namespaced_deployment(
        "gw",
        NS,
        {"metadata": {"labels": {"$patch": "replace", "only": "this"}}},
    )
    assert patched.metadata.labels == {"only": "this"}


def test_a_rollout_restart_patch_bumps_the_deployment_generation(apps: client.AppsV1Api) -> None:
    made = apps.create_namespaced_deployment(NS, deployment())
    assert made.metadata.generation == 1
    patched = apps.patch_namespaced_deployment(
        "gw",
        NS,
        {
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
                    }
                }
            }
        },
    )
    assert patched.metadata.generation == 2
    assert patched.spec.template.metadata.annotations == {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"
    }


def test_a_label_change_does_not_bump_the_generation(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    patched = apps.patch_namespaced_deployment("gw", NS, {"metadata": {"labels": {"x": "y"}}})
    assert patched.metadata.generation == 1


def test_the_deployment_status_is_written_only_through_the_status_subresource(
    apps: client.AppsV1Api,
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    ignored = apps.patch_namespaced_deployment("gw", NS, {"status": {"replicas": 5}})
    assert ignored.status.replicas is None
    written = apps.patch_namespaced_deployment_status(
        "gw", NS, {"status": {"observedGeneration": 1, "replicas": 2}, "spec": {"replicas": 9}}
    )
    assert written.status.replicas == 2
    assert written.spec.replicas == 2
    assert written.metadata.generation == 1


def test_json_merge_patch_follows_rfc_7386(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(
        NS, {"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}
    )
    patched = core.patch_namespaced_config_map(
        "c",
        NS,
        {"metadata": {"labels": {"a": None, "c": "3"}}, "data": {"y": "2"}},
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.labels == {"b": "2", "c": "3"}
    assert patched.data == {"x": "1", "y": "2"}


def test_json_patch_follows_rfc_6902(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"x": "1"}})
    patched = core.patch_namespaced_config_map(
        "c",
        NS,
        [
            {"op": "test", "path": "/data/x", "value": "1"},
            {"op": "add", "path": "/data/y", "value": "2"},
            {"op": "copy", "from": "/data/y", "path": "/data/z"},
            {"op": "move", "from": "/data/x", "path": "/data/w"},
            {"op": "replace", "path": "/data/z", "value": "3"},
            {"op": "remove", "path": "/data/y"},
        ],
    )
    assert patched.data == {"w": "1", "z": "3"}


def test_a_failed_json_patch_test_is_422_and_changes_nothing(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}, "data": {"x": "1"}})
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "c",
            NS,
            [
                {"op": "replace", "path": "/data/x", "value": "2"},
                {"op": "test", "path": "/data/x", "value": "1"},
            ],
        )
    assert info.value.status == 422
    assert core.read_namespaced_config_map("c", NS).data == {"x": "1"}


def test_a_patch_pinning_a_stale_resource_version_is_409(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    core.patch_namespaced_config_map("c", NS, {"data": {"a": "1"}})
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "c",
            NS,
            {"metadata": {"resourceVersion": made.metadata.resource_version}, "data": {"a": "2"}},
        )
    assert info.value.status == 409


def test_strategic_merge_on_a_custom_resource_is_415(
    custom: client.CustomObjectsApi,
) -> None:
    custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", application()
    )
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object(
            "argoproj.io",
            "v1alpha1",
            "argocd",
            "applications",
            "align-prod",
            {"metadata": {"annotations": {"a": "b"}}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert info.value.status == 415
    status = status_of(info.value)
    assert status["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in status["message"]


def test_custom_objects_patch_sends_merge_patch(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", application()
    )
    patched = custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        "align-prod",
        {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}},
    )
    assert patched["metadata"]["annotations"] == {"argocd.argoproj.io/refresh": "normal"}
    assert patched["metadata"]["generation"] == 1


def test_an_application_has_no_status_subresource_and_status_bumps_generation(
    custom: client.CustomObjectsApi,
) -> None:
    custom.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", {**application(), "status": {"x": 1}}
    )
    patched = custom.patch_namespaced_custom_object(
        "argoproj.io",
        "v1alpha1",
        "argocd",
        "applications",
        "align-prod",
        {"status": {"sync": {"status": "Synced", "revision": "abc"}}},
    )
    assert patched["status"] == {"x": 1, "sync": {"status": "Synced", "revision": "abc"}}
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object_status(
            "argoproj.io", "v1alpha1", "argocd", "applications", "align-prod", {"status": {}}
        )
    assert info.value.status == 404


def test_a_sealed_secret_status_goes_through_its_status_subresource(
    custom: client.CustomObjectsApi,
) -> None:
    args = ("bitnami.com", "v1alpha1", NS, "sealedsecrets")
    made = custom.create_namespaced_custom_object(*args, {**sealed_secret(), "status": {"x": 1}})
    assert "status" not in made
    ignored = custom.patch_namespaced_custom_object(*args, "align-posthog", {"status": {"y": 1}})
    assert "status" not in ignored
    condition = {"type": "Synced", "status": "True"}
    written = custom.patch_namespaced_custom_object_status(
        *args,
        "align-posthog",
        {"status": {"observedGeneration": 1, "conditions": [condition]}},
    )
    assert written["status"]["conditions"] == [condition]
    assert written["metadata"]["generation"] == 1
    respec = custom.patch_namespaced_custom_object(
        *args, "align-posthog", {"spec": {"encryptedData": {"POSTHOG_API_KEY": "AgC="}}}
    )
    assert respec["metadata"]["generation"] == 2
    assert respec["status"]["observedGeneration"] == 1


# --- watch ----------------------------------------------------------------------------------


def _collect(stream: Iterator[dict[str, Any]], count: int) -> list[tuple[str, str]]:
    seen = []
    for event in stream:
        obj = event["object"]
        name = obj["metadata"]["name"] if isinstance(obj, dict) else obj.metadata.name
        seen.append((event["type"], name))
        if len(seen) == count:
            break
    return seen


def test_a_watch_from_a_resource_version_sees_later_changes_in_order(
    core: client.CoreV1Api,
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    core.patch_namespaced_secret("a", NS, {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_secret("a", NS)
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_secret, NS, resource_version=start, timeout_seconds=5)
    assert _collect(stream, 3) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    w.stop()


def test_a_watch_without_resource_version_starts_with_the_current_state(
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_secret, NS, timeout_seconds=5)
    assert _collect(stream, 1) == [("ADDED", "a")]
    w.stop()


def test_a_watch_delivers_a_change_made_while_it_waits(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version

    def later() -> None:
        time.sleep(0.1)
        core.create_namespaced_secret(NS, {"metadata": {"name": "late"}})

    writer = threading.Thread(target=later)
    writer.start()
    w = watch.Watch()
    began = time.monotonic()
    stream = w.stream(
        core.list_namespaced_secret,
        NS,
        resource_version=start,
        timeout_seconds=5,
        _request_timeout=10,
    )
    assert _collect(stream, 1) == [("ADDED", "late")]
    assert time.monotonic() - began < 1.0
    w.stop()
    writer.join()


def test_a_watch_ends_after_timeout_seconds(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    began = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_secret, NS, resource_version=start, timeout_seconds=1
        )
    )
    assert events == []
    assert 0.9 < time.monotonic() - began < 3


def test_a_watch_honours_label_and_field_selectors(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "a", "labels": {"k": "v"}}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "b", "labels": {"k": "v"}}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "c"}})
    core.patch_namespaced_secret("b", NS, {"metadata": {"annotations": {"last": "event"}}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_secret,
        NS,
        resource_version=start,
        label_selector="k=v",
        field_selector="metadata.name=b",
        timeout_seconds=5,
    )
    assert _collect(stream, 2) == [("ADDED", "b"), ("MODIFIED", "b")]
    w.stop()


def test_an_object_leaving_a_watched_selector_is_reported_deleted(
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "a", "labels": {"k": "v"}}})
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.patch_namespaced_secret("a", NS, {"metadata": {"labels": {"k": "w"}}})
    core.patch_namespaced_secret("a", NS, {"metadata": {"labels": {"k": "v"}}})
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_secret,
        NS,
        resource_version=start,
        label_selector="k=v",
        timeout_seconds=5,
    )
    assert _collect(stream, 2) == [("DELETED", "a"), ("ADDED", "a")]
    w.stop()


def test_a_watch_from_an_expired_resource_version_gets_410_gone(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    kube_api.expire_watch_history()
    # the stream itself carries the 410 as an ERROR event, like the real watch cache
    resp = raw(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{NS}/secrets?watch=true&resourceVersion={start}&timeoutSeconds=1",
    )
    event = json.loads(resp.data.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {start}")
    # and the official client surfaces it as an ApiException(410) after its one retry
    with pytest.raises(ApiException) as info:
        list(
            watch.Watch().stream(
                core.list_namespaced_secret, NS, resource_version=start, timeout_seconds=1
            )
        )
    assert info.value.status == 410


def test_a_small_watch_history_expires_old_resource_versions(tmp_path: Path) -> None:
    with KubeApiServer(watch_history=2) as server:
        api = client_for(server)
        core = client.CoreV1Api(api)
        start = core.list_namespaced_secret("default").metadata.resource_version
        for i in range(6):
            core.create_namespaced_secret("default", {"metadata": {"name": f"s{i}"}})
        with pytest.raises(ApiException) as info:
            list(
                watch.Watch().stream(
                    core.list_namespaced_secret,
                    "default",
                    resource_version=start,
                    timeout_seconds=1,
                )
            )
        assert info.value.status == 410
        api.close()


def test_watch_bookmarks_carry_the_current_resource_version(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    resp = raw(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{NS}/secrets?watch=1&resourceVersion={start}"
        "&timeoutSeconds=1&allowWatchBookmarks=true",
    )
    events = [json.loads(line) for line in resp.data.splitlines()]
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == start


def test_a_custom_resource_watch_works_through_custom_objects_api(
    custom: client.CustomObjectsApi,
) -> None:
    args = ("argoproj.io", "v1alpha1", "argocd", "applications")
    listed = custom.list_namespaced_custom_object(*args)
    custom.create_namespaced_custom_object(*args, application())
    w = watch.Watch()
    stream = w.stream(
        custom.list_namespaced_custom_object,
        *args,
        resource_version=listed["metadata"]["resourceVersion"],
        timeout_seconds=5,
    )
    assert _collect(stream, 1) == [("ADDED", "align-prod")]
    w.stop()


# --- discovery and kubeconfig -------------------------------------------------------------------


def test_discovery_lists_every_served_group_and_resource(kube_client: client.ApiClient) -> None:
    groups = {g.name: g for g in client.ApisApi(kube_client).get_api_versions().groups}
    assert {"apps", "batch", "coordination.k8s.io", "rbac.authorization.k8s.io"} <= set(groups)
    assert groups["bitnami.com"].preferred_version.group_version == "bitnami.com/v1alpha1"
    core = client.CoreV1Api(kube_client).get_api_resources()
    by_name = {r.name: r for r in core.resources}
    assert {
        "namespaces",
        "secrets",
        "services",
        "endpoints",
        "pods",
        "configmaps",
        "events",
    } <= set(by_name)
    assert by_name["namespaces"].namespaced is False
    assert "pods/exec" in by_name
    argo = client.CustomObjectsApi(kube_client).get_api_resources("argoproj.io", "v1alpha1")
    app = argo.resources[0]
    assert (app.name, app.kind, app.short_names) == ("applications", "Application", ["app", "apps"])
    assert [r.name for r in argo.resources] == ["applications", "appprojects"]
    assert argo.resources[1].short_names == ["appproj", "appprojs"]
    sealed = client.CustomObjectsApi(kube_client).get_api_resources("bitnami.com", "v1alpha1")
    assert [r.name for r in sealed.resources] == ["sealedsecrets", "sealedsecrets/status"]
    deploy = client.AppsV1Api(kube_client).get_api_resources()
    assert "deploy" in {r.name: r for r in deploy.resources}["deployments"].short_names


def test_version_is_served_without_a_token(kube_api: KubeApiServer) -> None:
    resp = urllib3.request("GET", kube_api.url + "/version", timeout=5)
    assert resp.status == 200
    assert json.loads(resp.data)["major"] == "1"


def test_the_written_kubeconfig_works_with_the_official_client(
    kube_api: KubeApiServer, tmp_path: Path
) -> None:
    path = kube_api.write_kubeconfig(tmp_path / "kc", namespace="default")
    assert path.stat().st_mode & 0o777 == 0o600
    api = config.new_client_from_config(config_file=str(path))
    try:
        assert client.CoreV1Api(api).read_namespace("default").metadata.name == "default"
    finally:
        api.close()


# --- auth, RBAC ---------------------------------------------------------------------------------


def test_anonymous_requests_are_allowed_only_without_rbac(kube_api: KubeApiServer) -> None:
    # like --anonymous-auth=true: no credentials -> system:anonymous, then the authorizer decides
    resp = urllib3.request("GET", kube_api.url + "/api/v1/namespaces", timeout=5)
    assert resp.status == 200
    with KubeApiServer(rbac=True) as strict:
        resp = urllib3.request("GET", strict.url + "/api/v1/namespaces", timeout=5)
        assert resp.status == 403
        assert json.loads(resp.data)["message"] == (
            'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" '
            'in API group "" at the cluster scope'
        )
        assert urllib3.request("GET", strict.url + "/version", timeout=5).status == 200
        assert urllib3.request("GET", strict.url + "/apis", timeout=5).status == 403


def test_https_serves_a_certificate_the_kubeconfig_trusts(tmp_path: Path) -> None:
    with KubeApiServer(tls=True, rbac=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        path = server.write_kubeconfig(tmp_path / "kc")
        api = config.new_client_from_config(config_file=str(path))
        try:
            assert client.CoreV1Api(api).read_namespace("default").metadata.name == "default"
        finally:
            api.close()


def test_a_request_without_a_valid_token_is_401(kube_api: KubeApiServer) -> None:
    api = client_for(kube_api, "wrong")
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).list_namespace()
    assert info.value.status == 401
    assert status_of(info.value)["reason"] == "Unauthorized"
    api.close()


def test_without_rbac_any_known_token_may_do_anything(kube_api: KubeApiServer) -> None:
    kube_api.add_token("t1", user="system:serviceaccount:default:x")
    api = client_for(kube_api, "t1")
    client.CoreV1Api(api).create_namespaced_secret("default", {"metadata": {"name": "s"}})
    api.close()


@pytest.fixture
def rbac_api() -> Iterator[KubeApiServer]:
    server = KubeApiServer(rbac=True).start()
    admin = client_for(server)
    namespace(admin, NS)
    server.add_token("job-token", user=f"system:serviceaccount:{NS}:rotator")
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        NS,
        {
            "metadata": {"name": "rotator"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get"],
                    "resourceNames": ["align-posthog"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["list", "watch"],
                    "resourceNames": ["align-posthog"],
                },
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        NS,
        {
            "metadata": {"name": "rotator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotator"},
            "subjects": [{"kind": "ServiceAccount", "name": "rotator", "namespace": NS}],
        },
    )
    core = client.CoreV1Api(admin)
    core.create_namespaced_secret(NS, {"metadata": {"name": "align-posthog"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "other"}})
    admin.close()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def job(rbac_api: KubeApiServer) -> Iterator[client.ApiClient]:
    api = client_for(rbac_api, "job-token")
    try:
        yield api
    finally:
        api.close()


def test_rbac_allows_what_a_role_binding_grants(job: client.ApiClient) -> None:
    core = client.CoreV1Api(job)
    assert core.read_namespaced_secret("align-posthog", NS).metadata.name == "align-posthog"
    client.CoordinationV1Api(job).create_namespaced_lease(
        NS, {"metadata": {"name": "rotator-posthog"}, "spec": {"holderIdentity": "me"}}
    )


def test_rbac_forbids_with_the_real_message(job: client.ApiClient) -> None:
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(job).read_namespaced_secret("other", NS)
    status = status_of(info.value)
    assert info.value.status == 403
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        'secrets "other" is forbidden: User "system:serviceaccount:align-prod:rotator" '
        'cannot get resource "secrets" in API group "" in the namespace "align-prod"'
    )
    with pytest.raises(ApiException) as info:
        client.AppsV1Api(job).delete_namespaced_deployment("gw", NS)
    assert status_of(info.value)["message"] == (
        'deployments.apps "gw" is forbidden: User "system:serviceaccount:align-prod:rotator" '
        'cannot delete resource "deployments" in API group "apps" in the namespace "align-prod"'
    )


def test_resource_names_do_not_narrow_an_unnamed_list(job: client.ApiClient) -> None:
    core = client.CoreV1Api(job)
    with pytest.raises(ApiException) as info:
        core.list_namespaced_secret(NS)
    assert info.value.status == 403
    assert status_of(info.value)["message"].startswith("secrets is forbidden: User")
    named = core.list_namespaced_secret(NS, field_selector="metadata.name=align-posthog")
    assert [s.metadata.name for s in named.items] == ["align-posthog"]


def test_a_name_limited_watch_is_allowed_by_resource_names(job: client.ApiClient) -> None:
    core = client.CoreV1Api(job)
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_secret,
        NS,
        field_selector="metadata.name=align-posthog",
        timeout_seconds=5,
    )
    assert _collect(stream, 1) == [("ADDED", "align-posthog")]
    w.stop()


def test_rbac_checks_subresources_separately(
    rbac_api: KubeApiServer, job: client.ApiClient
) -> None:
    with pytest.raises(ApiException) as info:
        client.AppsV1Api(job).patch_namespaced_deployment_status("gw", NS, {"status": {}})
    assert 'cannot patch resource "deployments/status"' in status_of(info.value)["message"]
    resp = urllib3.request(
        "POST",
        f"{rbac_api.url}/api/v1/namespaces/{NS}/pods/p/exec?command=env",
        headers={"Authorization": "Bearer job-token"},
        timeout=5,
    )
    assert resp.status == 403
    assert 'cannot create resource "pods/exec"' in json.loads(resp.data)["message"]


def test_cluster_role_bindings_grant_across_namespaces(rbac_api: KubeApiServer) -> None:
    admin = client_for(rbac_api)
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_cluster_role(
        {
            "metadata": {"name": "ns-reader"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "ns-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ns-reader",
            },
            "subjects": [{"kind": "Group", "name": "readers"}],
        }
    )
    rbac_api.add_token("reader", user="alice", groups=["readers"])
    reader = client_for(rbac_api, "reader")
    assert NS in {n.metadata.name for n in client.CoreV1Api(reader).list_namespace().items}
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(reader).delete_namespace(NS)
    assert status_of(info.value)["message"] == (
        f'namespaces "{NS}" is forbidden: User "alice" cannot delete resource "namespaces" '
        'in API group "" in the namespace "align-prod"'
    )
    reader.close()
    admin.close()


def test_the_audit_log_records_every_decision(
    rbac_api: KubeApiServer, job: client.ApiClient
) -> None:
    core = client.CoreV1Api(job)
    core.read_namespaced_secret("align-posthog", NS)
    with pytest.raises(ApiException):
        core.read_namespaced_secret("other", NS)
    user = f"system:serviceaccount:{NS}:rotator"
    mine = [e for e in rbac_api.audit_log() if e.user == user]
    assert [(e.verb, e.resource, e.namespace, e.name, e.allowed) for e in mine] == [
        ("get", "secrets", NS, "align-posthog", True),
        ("get", "secrets", NS, "other", False),
    ]


def test_a_self_subject_access_review_answers_from_rbac(job: client.ApiClient) -> None:
    auth = client.AuthorizationV1Api(job)

    def can(verb: str, resource: str, name: str = "", group: str = "") -> bool:
        review = auth.create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "namespace": NS,
                        "verb": verb,
                        "group": group,
                        "resource": resource,
                        "name": name,
                    }
                }
            }
        )
        return bool(review.status.allowed)

    assert can("get", "secrets", "align-posthog")
    assert not can("get", "secrets", "other")
    assert can("patch", "deployments", "gw", "apps")
    assert not can("delete", "deployments", "gw", "apps")


# --- service proxy ------------------------------------------------------------------------------


class _CertHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/v1/cert.pem":
            self.send_error(404)
            return
        body = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/x-pem-file")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.send_response(200 if b"good" in body else 409)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def controller(api: client.ApiClient) -> Iterator[int]:
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler)
    thread = threading.Thread(target=backend.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    port = backend.server_address[1]
    core = client.CoreV1Api(api)
    core.create_namespaced_service(
        "kube-system",
        {
            "metadata": {"name": "sealed-secrets-controller"},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        },
    )
    register_backend(api, port)
    try:
        yield port
    finally:
        backend.shutdown()
        backend.server_close()


def test_the_service_proxy_reaches_the_pod_named_by_the_endpoint_slice(
    core: client.CoreV1Api, controller: int
) -> None:
    resp = core.connect_get_namespaced_service_proxy_with_path(
        "http:sealed-secrets-controller:http", "kube-system", "v1/cert.pem", _preload_content=False
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-pem-file"
    assert resp.data.startswith(b"-----BEGIN CERTIFICATE-----")


def test_the_service_proxy_forwards_posts_and_the_backend_status(
    kube_api: KubeApiServer, controller: int
) -> None:
    base = "/api/v1/namespaces/kube-system/services"
    ok = raw(
        kube_api,
        "POST",
        f"{base}/http:sealed-secrets-controller:http/proxy/v1/verify",
        body=b"good",
    )
    assert ok.status == 200
    # a numeric port selects the Service port, whose name picks the Endpoints port
    bad = raw(
        kube_api, "POST", f"{base}/sealed-secrets-controller:8080/proxy/v1/verify", body=b"bad"
    )
    assert bad.status == 409


def test_a_proxy_port_name_that_matches_no_endpoint_is_503(
    core: client.CoreV1Api, controller: int
) -> None:
    with pytest.raises(ApiException) as info:
        core.connect_get_namespaced_service_proxy_with_path(
            "http:sealed-secrets-controller:https", "kube-system", "v1/cert.pem"
        )
    assert info.value.status == 503
    status = status_of(info.value)
    assert status["reason"] == "ServiceUnavailable"
    # k8s.io/apiserver pkg/util/proxy RandomEndpoint names the bare Service
    assert status["message"] == 'no endpoints available for service "sealed-secrets-controller"'


@pytest.mark.parametrize(
    ("pod_ip", "target_ref"),
    [("127.0.0.2", True), ("127.0.0.1", False)],
    ids=["pod-ip-differs", "no-target-ref"],
)
def test_the_service_proxy_reaches_only_an_address_its_target_pod_lists(
    api: client.ApiClient, core: client.CoreV1Api, pod_ip: str, target_ref: bool
) -> None:
    """kubernetes pkg/registry/core/service/storage/storage.go isValidAddress: the endpoint's
    targetRef Pod must list the address in status.podIPs, else no backend (503)."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler)
    try:
        core.create_namespaced_service(
            "kube-system",
            {
                "metadata": {"name": "sealed-secrets-controller"},
                "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
            },
        )
        register_backend(api, backend.server_address[1], pod_ip=pod_ip, target_ref=target_ref)
        with pytest.raises(ApiException) as info:
            core.connect_get_namespaced_service_proxy_with_path(
                "http:sealed-secrets-controller:http", "kube-system", "v1/cert.pem"
            )
        assert info.value.status == 503
    finally:
        backend.server_close()


def test_a_proxy_to_a_missing_service_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.connect_get_namespaced_service_proxy_with_path(
            "http:sealed-secrets:http", "kube-system", "v1/cert.pem"
        )
    assert info.value.status == 404
    assert status_of(info.value)["message"] == 'services "sealed-secrets" not found'


# --- odds and ends ------------------------------------------------------------------------------


def test_pod_exec_exists_but_never_executes(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_pod(
        NS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    )
    resp = raw(kube_api, "POST", f"/api/v1/namespaces/{NS}/pods/p/exec?command=env")
    assert resp.status == 400
    assert json.loads(resp.data)["message"] == "Upgrade request required"


def test_the_scale_subresource_reads_and_sets_replicas(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    assert apps.read_namespaced_deployment_scale("gw", NS).spec.replicas == 2
    apps.patch_namespaced_deployment_scale("gw", NS, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("gw", NS).spec.replicas == 3


def test_events_can_be_created_and_selected_by_involved_object(core: client.CoreV1Api) -> None:
    event = {
        "metadata": {"name": "align-posthog.1"},
        "involvedObject": {"kind": "SealedSecret", "name": "align-posthog", "namespace": NS},
        "reason": "Unsealed",
        "message": "SealedSecret unsealed successfully",
        "type": "Normal",
    }
    core.create_namespaced_event(NS, event)
    found = core.list_namespaced_event(
        NS, field_selector="involvedObject.name=align-posthog,reason=Unsealed"
    ).items
    assert [e.reason for e in found] == ["Unsealed"]


def test_batch_and_coordination_kinds_are_served(api: client.ApiClient) -> None:
    client.BatchV1Api(api).create_namespaced_cron_job(
        NS,
        {
            "metadata": {"name": "rotator"},
            "spec": {
                "schedule": "0 3 * * 1",
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r"}]}}}},
            },
        },
    )
    assert client.BatchV1Api(api).read_namespaced_cron_job("rotator", NS).metadata.generation == 1
    lease = client.CoordinationV1Api(api).create_namespaced_lease(
        NS, {"metadata": {"name": "rotator-posthog"}, "spec": {"holderIdentity": "a"}}
    )
    assert lease.spec.holder_identity == "a"


def test_a_simple_get_is_fast(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}})
    began = time.perf_counter()
    for _ in range(200):
        core.read_namespaced_config_map("c", NS)
    per_request = (time.perf_counter() - began) / 200
    assert per_request < 0.05  # generous: the suite shares 2 cores with others


def test_dry_run_validates_without_storing(core: client.CoreV1Api) -> None:
    made = core.create_namespaced_config_map(NS, {"metadata": {"name": "c"}}, dry_run="All")
    assert made.metadata.name == "c"
    assert core.list_namespaced_config_map(NS).items == []


def test_delete_collection_removes_what_the_selector_matches(core: client.CoreV1Api) -> None:
    for name, labels in (("a", {"x": "1"}), ("b", {"x": "1"}), ("c", {})):
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})
    core.delete_collection_namespaced_config_map(NS, label_selector="x=1")
    assert [c.metadata.name for c in core.list_namespaced_config_map(NS).items] == ["c"]


def test_send_initial_events_ends_the_initial_state_with_a_bookmark(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    resp = raw(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{NS}/secrets?watch=1&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        preload_content=False,
    )
    first = json.loads(resp.readline())
    second = json.loads(resp.readline())
    resp.release_conn()
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_the_legacy_watch_path_streams_events(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    resp = raw(
        kube_api,
        "GET",
        f"/api/v1/watch/namespaces/{NS}/secrets?resourceVersion={start}&timeoutSeconds=1",
        preload_content=False,
    )
    event = json.loads(resp.readline())
    resp.release_conn()
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "a")


def test_a_pod_becomes_ready_through_its_status_subresource(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(
        NS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "gateway"}]}}
    )
    ready = {"type": "Ready", "status": "True"}
    core.patch_namespaced_pod_status(
        "p", NS, {"status": {"phase": "Running", "conditions": [ready]}}
    )
    again = core.patch_namespaced_pod_status(
        "p", NS, {"status": {"conditions": [{"type": "Initialized", "status": "True"}]}}
    )
    assert again.status.phase == "Running"
    assert [(c.type, c.status) for c in again.status.conditions] == [
        ("Ready", "True"),
        ("Initialized", "True"),
    ]


def test_custom_resources_list_across_namespaces(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(
        "bitnami.com", "v1alpha1", NS, "sealedsecrets", sealed_secret()
    )
    listed = custom.list_cluster_custom_object("bitnami.com", "v1alpha1", "sealedsecrets")
    assert listed["kind"] == "SealedSecretList"
    assert [(i["kind"], i["metadata"]["namespace"]) for i in listed["items"]] == [
        ("SealedSecret", NS)
    ]


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [
        (
            {"metadata": {"finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b", "a"]}},
            {"metadata": {"finalizers": ["a", "b"]}},
        ),
        (
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b"]}},
        ),
        (
            {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}},
            {"spec": {"ports": [{"port": 80, "name": "web"}]}},
            {"spec": {"ports": [{"port": 80, "name": "web"}, {"port": 443}]}},
        ),
        (
            {"spec": {"tolerations": [{"key": "a"}]}},
            {"spec": {"tolerations": [{"key": "b"}]}},
            {"spec": {"tolerations": [{"key": "b"}]}},
        ),
        (
            {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}},
            {"spec": {"containers": [{"$patch": "replace"}, {"name": "c"}]}},
            {"spec": {"containers": [{"name": "c"}]}},
        ),
        ({"a": {"b": 1}}, {"a": {"$patch": "delete"}}, {}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ],
)
def test_strategic_merge_table(original: Any, patch: Any, expected: Any) -> None:
    from rotator_sandbox.kubeapi.patch import strategic_merge

    assert strategic_merge(original, patch, kind="Service") == expected


@pytest.mark.parametrize(
    ("document", "operations", "expected"),
    [
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1, 2]}),
        ({"a/b": 1}, [{"op": "remove", "path": "/a~1b"}], {}),
        ({"m~n": 1}, [{"op": "replace", "path": "/m~0n", "value": 2}], {"m~n": 2}),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a/b", "path": "/c"}], {"a": {}, "c": 1}),
    ],
)
def test_json_patch_table(document: Any, operations: Any, expected: Any) -> None:
    from rotator_sandbox.kubeapi.patch import json_patch

    before = json.dumps(document)
    assert json_patch(document, operations) == expected
    assert json.dumps(document) == before  # the input is never mutated


def test_json_merge_patch_table() -> None:
    from rotator_sandbox.kubeapi.patch import merge_patch

    # the examples of RFC 7386 appendix A
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch(["a", "b"], ["c", "d"]) == ["c", "d"]
    assert merge_patch({"a": "foo"}, "bar") == "bar"
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_an_immutable_secret_refuses_new_data(core: client.CoreV1Api) -> None:
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}, "immutable": True}
    )
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_secret("s", NS, {"stringData": {"k": "w"}})
    assert info.value.status == 422
    assert "field is immutable when `immutable` is set" in status_of(info.value)["message"]


def test_a_deployment_selector_must_match_its_template_and_never_change(
    apps: client.AppsV1Api,
) -> None:
    bad = deployment()
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment(NS, bad)
    assert info.value.status == 422
    assert "`selector` does not match template `labels`" in status_of(info.value)["message"]
    apps.create_namespaced_deployment(NS, deployment())
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment(
            "gw", NS, {"spec": {"selector": {"matchLabels": {"env": None}}}}
        )
    assert status_of(info.value)["message"] == (
        'Deployment.apps "gw" is invalid: spec.selector: Invalid value: field is immutable'
    )


def test_a_watch_of_one_named_object_ignores_its_siblings(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    start = core.list_namespaced_secret(NS).metadata.resource_version
    core.create_namespaced_secret(NS, {"metadata": {"name": "other"}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "a"}})
    resp = raw(
        kube_api,
        "GET",
        f"/api/v1/watch/namespaces/{NS}/secrets/a?resourceVersion={start}&timeoutSeconds=1",
        preload_content=False,
    )
    event = json.loads(resp.readline())
    resp.release_conn()
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "a")


def _pod(name: str, *, node: str | None, grace: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "gateway"}]}
    if node is not None:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name}, "spec": spec}


def test_deleting_a_bound_pod_leaves_it_terminating_until_a_delete_with_grace_zero(
    core: client.CoreV1Api,
) -> None:
    """kubernetes pkg/registry/core/pod/strategy.go CheckGracefulDelete and k8s.io/apiserver
    pkg/registry/rest/delete.go BeforeDelete: the pod stays with deletionTimestamp = now +
    grace until the kubelet deletes it with grace period 0."""
    core.create_namespaced_pod(NS, _pod("bound", node="node-1", grace=45))
    core.delete_namespaced_pod("bound", NS)
    pod = core.read_namespaced_pod("bound", NS)
    assert pod.metadata.deletion_grace_period_seconds == 45
    assert pod.metadata.deletion_timestamp is not None
    left = (pod.metadata.deletion_timestamp - datetime.now(UTC)).total_seconds()
    assert 30 < left <= 46
    # A second delete may only shorten the grace period; grace 0 removes it.
    core.delete_namespaced_pod("bound", NS, grace_period_seconds=60)
    assert core.read_namespaced_pod("bound", NS).metadata.deletion_grace_period_seconds == 45
    core.delete_namespaced_pod("bound", NS, grace_period_seconds=0)
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod("bound", NS)
    assert info.value.status == 404


def test_deleting_a_pod_no_node_runs_is_immediate(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(NS, _pod("unbound", node=None, grace=45))
    core.delete_namespaced_pod("unbound", NS)
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod("unbound", NS)
    assert info.value.status == 404


# --- as=PartialObjectMetadata: metadata-only answers (apiserver endpoints/handlers/response.go)

METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def test_a_metadata_only_get_of_a_secret_answers_its_metadata_and_never_its_data(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_secret(
        NS,
        {
            "metadata": {"name": "meta-only", "annotations": {"a": "b"}},
            "stringData": {"k": "the-value-that-must-not-cross"},
        },
    )
    response = raw(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{NS}/secrets/meta-only",
        headers={"Accept": METADATA_ONLY},
    )
    assert response.status == 200
    assert b"the-value" not in response.data
    assert base64.b64encode(b"the-value-that-must-not-cross") not in response.data
    doc = json.loads(response.data)
    assert set(doc) == {"kind", "apiVersion", "metadata"}
    assert (doc["kind"], doc["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
    assert doc["metadata"]["annotations"] == {"a": "b"}
    assert doc["metadata"]["name"] == "meta-only"


def test_a_metadata_only_list_is_a_partial_object_metadata_list(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "meta-list"}, "data": {"k": "dg=="}})
    response = raw(
        kube_api, "GET", f"/api/v1/namespaces/{NS}/secrets", headers={"Accept": METADATA_LIST}
    )
    assert response.status == 200
    doc = json.loads(response.data)
    assert (doc["kind"], doc["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert doc["metadata"]["resourceVersion"]
    assert {i["kind"] for i in doc["items"]} == {"PartialObjectMetadata"}
    assert all(set(i) == {"kind", "apiVersion", "metadata"} for i in doc["items"])
    assert "meta-list" in {i["metadata"]["name"] for i in doc["items"]}


@pytest.mark.parametrize(
    ("path", "accept", "message"),
    [
        (
            f"/api/v1/namespaces/{NS}/secrets/nope",
            "application/json;as=Secretish;g=meta.k8s.io;v=v1",
            "only the following media types are accepted",
        ),
        (
            f"/api/v1/namespaces/{NS}/secrets/nope",
            "application/json;as=PartialObjectMetadata;g=example.com;v=v1",
            "only the following media types are accepted",
        ),
        (
            f"/api/v1/namespaces/{NS}/secrets",
            METADATA_ONLY,
            "you requested PartialObjectMetadata, but the requested object is a list",
        ),
    ],
    ids=["an unknown kind", "another group", "a single-object conversion of a list"],
)
def test_a_conversion_the_server_cannot_make_is_406_not_acceptable(
    api: client.ApiClient, kube_api: KubeApiServer, path: str, accept: str, message: str
) -> None:
    response = raw(kube_api, "GET", path, headers={"Accept": accept})
    assert response.status == 406  # before the 404 of a missing object: negotiation comes first
    doc = json.loads(response.data)
    assert (doc["reason"], doc["code"]) == ("NotAcceptable", 406)
    assert message in doc["message"]


def test_a_list_conversion_of_one_object_is_406(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "meta-one"}})
    response = raw(
        kube_api,
        "GET",
        f"/api/v1/namespaces/{NS}/secrets/meta-one",
        headers={"Accept": METADATA_LIST},
    )
    assert response.status == 406
    assert "is not a list" in json.loads(response.data)["message"]


def test_a_later_plain_clause_is_answered_when_the_conversion_is_not_acceptable(
    core: client.CoreV1Api, kube_api: KubeApiServer
) -> None:
    core.create_namespaced_secret(NS, {"metadata": {"name": "meta-plain"}, "data": {"k": "dg=="}})
    accept = "application/json;as=Nothing;g=meta.k8s.io;v=v1,application/json"
    response = raw(
        kube_api, "GET", f"/api/v1/namespaces/{NS}/secrets/meta-plain", headers={"Accept": accept}
    )
    assert response.status == 200
    assert json.loads(response.data)["data"] == {"k": "dg=="}
