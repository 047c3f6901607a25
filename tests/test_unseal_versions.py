"""Where the sealed-secrets status lies or is missing (issue 12 item 6), against the stand-in
controller at each upstream behaviour (bitnami-labs/sealed-secrets pkg/controller/controller.go
``updateSealedSecretStatus`` and ``processNextItem`` at v0.24.1, v0.24.2 and v0.36.6), with
rotator's real client waiting on it: a stale or missing status falls back to the effect, the
Secret's key-fingerprint annotation (read metadata-only), and where the Secret cannot be read to
the controller's ``Unsealed`` Event newer than the apply; one ``Synced=False`` is final only for
a decryption failure."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from rotator.clients.kube import Kube as RotatorKube
from rotator.clients.kube import (
    SealedSecretState,
    SecretMetadata,
    secret_metadata_from,
    unseal_status,
)
from rotator.clients.sealing import load_cert, update_sealed_file
from rotator.config import Config, SealingScope
from rotator.errors import KubeError, WaitTimeout
from rotator.redact import Secret
from rotator.report import Outcome, to_text
from rotator.steps import Step
from rotator_sandbox.controllers.base import SEALED_SECRET, SECRET, Obj, meta
from rotator_sandbox.controllers.sealedsecrets import (
    LATEST,
    V0_24_1,
    V0_24_2,
    SealedSecretsController,
    parse_version,
)
from rotator_sandbox.unseal import ControllerKeyPair, generate_key_pair
from tests.e2e_fixtures import MakeSandbox, e2e_key_pair, make_sandbox, rotate
from tests.sandbox_fixtures import KubeWorld, key_pair, kube_world, wait_for

FIXTURES = (key_pair, kube_world, e2e_key_pair, make_sandbox)  # pytest fixtures, by name
NS, NAME = "align-preview", "align-posthog"
ROTATOR = "rotator-under-test"


def sealed(pair: ControllerKeyPair, value: str) -> Obj:
    cert = load_cert(pair.cert_pem, source="test", now=datetime.now(UTC))
    text = update_sealed_file(
        None,
        value=Secret(value),
        namespace=NS,
        name=NAME,
        data_key="POSTHOG_API_KEY",
        scope=SealingScope.STRICT,
        cert=cert,
    ).text
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def client(kube_world: KubeWorld, tmp_path: Path) -> Iterator[RotatorKube]:
    """rotator's client, as its own user (``ROTATOR``) so its requests stand apart in the
    audit log from the controller's."""
    kube_world.api.add_token("rotator-test-token", user=ROTATOR)
    kubeconfig = kube_world.api.write_kubeconfig(
        tmp_path / "rotator-kubeconfig", token="rotator-test-token", user=ROTATOR
    )
    config = Config.model_validate(
        {
            "environments": {
                "preview": {
                    "posthog_project_id": 1,
                    "namespace": NS,
                    "sealed_file": "sealedsecrets/preview/posthog.yaml",
                    "argocd_app": {"name": "align-preview"},
                    "deployment": "align-preview-gateway",
                }
            },
            "git": {"remote": "file:///nonexistent.git"},
            "kubernetes": {"kubeconfig": str(kubeconfig)},
            "waits": {"poll_interval_s": 0.1, "watch_timeout_s": 2},
        }
    )
    kube = RotatorKube.from_config(config)
    yield kube
    kube.close()


def ss(world: KubeWorld) -> Obj:
    obj = world.kube.get(SEALED_SECRET, NS, NAME)
    assert obj is not None
    return obj


def synced(obj: Obj) -> Obj:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Synced":
            return dict(cond)
    return {}


def first_key_unsealed(world: KubeWorld, pair: ControllerKeyPair) -> None:
    """The old key is in the cluster, unsealed, and its status written."""
    world.kube.create(SEALED_SECRET, NS, sealed(pair, "phc_old_key_for_the_test"))
    wait_for(lambda: synced(ss(world)).get("status") == "True", what="the first unseal")


def apply(world: KubeWorld, pair: ControllerKeyPair, value: str) -> datetime:
    """ArgoCD applies our resealed file (a new generation); returns the time before it."""
    before = datetime.now(UTC)
    current = ss(world)
    new = sealed(pair, value)
    body = dict(current, spec=new["spec"])
    world.kube.replace(SEALED_SECRET, NS, NAME, body)
    return before


def unsealed_count(world: KubeWorld, controller: SealedSecretsController, n: int) -> None:
    wait_for(lambda: controller.unsealed >= n, what=f"{n} unseals")


def test_versions_are_read_like_upstream_releases() -> None:
    assert parse_version("v0.19.5") == V0_24_1
    assert parse_version("0.24.1") == V0_24_1
    assert parse_version("v0.24.2") == V0_24_2
    assert parse_version("v0.24.3") == LATEST
    assert parse_version("v0.36.6") == LATEST
    with pytest.raises(ValueError, match="not a sealed-secrets version"):
        parse_version("latest")


def test_v0_24_2_never_moves_observed_generation_and_the_unsealed_event_proves_the_unseal(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], version="v0.24.2")
    )
    first_key_unsealed(kube_world, key_pair)
    before = apply(kube_world, key_pair, "phc_new_key_for_the_test")
    unsealed_count(kube_world, controller, 2)
    stale = ss(kube_world)
    assert stale["status"]["observedGeneration"] == meta(stale)["generation"] - 1  # #1295

    state = client.wait_for_unseal(
        NS,
        NAME,
        fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
        deadline_s=20,
        applied_after=before,
    )
    assert state.generation == meta(stale)["generation"]


def test_v0_24_1_keeps_a_failed_first_attempt_and_the_event_of_the_retry_proves_the_unseal(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], version="v0.24.1")
    )
    first_key_unsealed(kube_world, key_pair)
    controller.fail_secret_writes = 1  # the first attempt of the new generation fails
    before = apply(kube_world, key_pair, "phc_new_key_for_the_test")
    unsealed_count(kube_world, controller, 2)  # the retry succeeded
    kept = ss(kube_world)
    assert kept["status"]["observedGeneration"] == meta(kept)["generation"]
    assert synced(kept)["status"] == "False"  # the first result of the generation stays
    assert "etcdserver" in synced(kept)["message"]

    state = client.wait_for_unseal(
        NS,
        NAME,
        fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
        deadline_s=20,
        applied_after=before,
    )
    assert state.synced is False  # and yet unsealed


def test_the_current_release_writes_the_retry_s_result(
    kube_world: KubeWorld, key_pair: ControllerKeyPair
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair])
    )
    first_key_unsealed(kube_world, key_pair)
    controller.fail_secret_writes = 1
    apply(kube_world, key_pair, "phc_new_key_for_the_test")
    wait_for(
        lambda: (
            synced(ss(kube_world)).get("status") == "True"
            and ss(kube_world)["status"]["observedGeneration"] == meta(ss(kube_world))["generation"]
        ),
        what="Synced=True for the new generation after the retry",
    )


def test_with_update_status_false_there_is_no_status_and_the_event_proves_the_unseal(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], update_status=False)
    )
    before = datetime.now(UTC)
    kube_world.kube.create(SEALED_SECRET, NS, sealed(key_pair, "phc_new_key_for_the_test"))
    unsealed_count(kube_world, controller, 1)
    assert "status" not in ss(kube_world) or not ss(kube_world)["status"]

    state = client.wait_for_unseal(
        NS,
        NAME,
        fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
        deadline_s=20,
        applied_after=before,
    )
    assert state.observed_generation is None


def test_a_conflicting_status_write_is_never_retried_and_the_event_proves_the_unseal(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair])
    )
    first_key_unsealed(kube_world, key_pair)

    def someone_writes_meanwhile(obj: Obj) -> None:  # e.g. ArgoCD's tracking annotation
        controller.before_status_write = None
        current = ss(kube_world)
        annotations = dict(meta(current).get("annotations") or {}, touched="yes")
        kube_world.kube.replace(
            SEALED_SECRET,
            NS,
            NAME,
            dict(current, metadata=dict(meta(current), annotations=annotations)),
        )

    controller.before_status_write = someone_writes_meanwhile
    before = apply(kube_world, key_pair, "phc_new_key_for_the_test")
    unsealed_count(kube_world, controller, 2)
    stale = ss(kube_world)
    assert stale["status"]["observedGeneration"] == meta(stale)["generation"] - 1

    state = client.wait_for_unseal(
        NS,
        NAME,
        fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
        deadline_s=20,
        applied_after=before,
    )
    assert not state.is_observed


def test_an_unsealed_event_from_before_the_apply_proves_nothing(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], version="v0.24.2")
    )
    first_key_unsealed(kube_world, key_pair)  # an Unsealed event, for the old key
    controller.stop()  # the controller is down: our spec is never unsealed
    # Event times are whole seconds: let the second of the old event pass.
    old_second = datetime.now(UTC).replace(microsecond=0)
    wait_for(lambda: datetime.now(UTC).replace(microsecond=0) > old_second, what="a new second")
    before = apply(kube_world, key_pair, "phc_new_key_for_the_test")
    with pytest.raises(WaitTimeout) as info:
        client.wait_for_unseal(
            NS,
            NAME,
            fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
            deadline_s=1.5,
            applied_after=before,
        )
    assert "its Secret still carries key" in str(info.value)


def test_one_synced_false_is_final_only_for_a_decryption_failure(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    kube_world.run(SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair]))
    other = generate_key_pair(2048)
    before = datetime.now(UTC)
    kube_world.kube.create(SEALED_SECRET, NS, sealed(other, "phc_sealed_for_another_key"))
    with pytest.raises(KubeError, match="no key could decrypt secret"):
        client.wait_for_unseal(
            NS,
            NAME,
            fingerprint=Secret("phc_sealed_for_another_key").fingerprint,
            deadline_s=20,
            applied_after=before,
        )


@pytest.mark.parametrize("version", ["v0.24.1", "v0.24.2"])
def test_a_whole_rotation_succeeds_against_a_controller_whose_status_lies(
    make_sandbox: MakeSandbox, version: str
) -> None:
    world = make_sandbox(sealed_secrets_version=version)
    report = rotate(world)
    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)
    unseal = [r for r in report.steps if r.step is Step.UNSEAL]
    assert unseal
    assert all("unsealed with" in r.detail for r in unseal), unseal


def test_a_sealed_secret_deleted_from_the_cluster_is_recreated_by_the_resume(
    make_sandbox: MakeSandbox,
) -> None:
    # ArgoCD auto-sync never syncs a revision again once it has (alreadyAttemptedSync, no
    # selfHeal): the deleted object comes back only from a sync that rotator starts itself.
    world = make_sandbox()
    assert world.client is not None
    assert world.client.delete(SEALED_SECRET, "align-prod", NAME)
    world.refresh_app("prod")
    report = rotate(world, "waits.argocd_s=15")
    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)
    assert world.client.get(SEALED_SECRET, "align-prod", NAME) is not None
    argocd = [r for r in report.steps if r.step is Step.ARGOCD and r.env == "prod"]
    assert any("recreate" in r.detail for r in argocd), argocd


def test_an_unsealed_event_of_the_old_key_in_the_second_of_the_push_proves_nothing(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    # Core v1 Event times are whole seconds: the old key's Unsealed event and our push can
    # share one. The events seen before the push (client-go events_cache.go: a repeat of an
    # event is the same Event with count + 1) tell the old unseal from a new one.
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], version="v0.24.2")
    )
    first_key_unsealed(kube_world, key_pair)  # an Unsealed event, for the old key
    controller.stop()  # the controller is down: our spec is never unsealed
    seen = client.unsealed_events_seen(NS, NAME)
    assert seen, "the old key's Unsealed event"
    old_event_second = min(datetime.fromisoformat(when) for _name, _count, when in seen)
    apply(kube_world, key_pair, "phc_new_key_for_the_test")
    # No Secret to read (deleted): the Events alone must tell the old unseal from a new one.
    assert kube_world.kube.delete(SECRET, NS, NAME)
    with pytest.raises(WaitTimeout) as info:
        client.wait_for_unseal(
            NS,
            NAME,
            fingerprint=Secret("phc_new_key_for_the_test").fingerprint,
            deadline_s=1.5,
            applied_after=old_event_second,  # the push, in the second of the old event
            events_seen=seen,
        )
    assert "has not observed generation" in str(info.value)


# --- the effect: the Secret's key-fingerprint annotation (metadata only) ----------------------

OLD, NEW = "phc_old_key_for_the_test", "phc_new_key_for_the_test"


def secret_annotations(world: KubeWorld) -> dict[str, str]:
    secret = world.kube.get(SECRET, NS, NAME)
    assert secret is not None
    return dict(meta(secret).get("annotations") or {})


def test_with_no_status_and_its_unsealed_event_lost_the_secret_s_annotation_proves_the_unseal(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], update_status=False)
    )
    controller.drop_events = True  # client-go's spam filter or a full broadcaster queue
    before = datetime.now(UTC)
    kube_world.kube.create(SEALED_SECRET, NS, sealed(key_pair, NEW))
    unsealed_count(kube_world, controller, 1)
    assert not ss(kube_world).get("status")
    assert secret_annotations(kube_world)["rotator.align.dev/key-fingerprint"] == (
        Secret(NEW).fingerprint
    )

    state = client.wait_for_unseal(
        NS, NAME, fingerprint=Secret(NEW).fingerprint, deadline_s=10, applied_after=before
    )
    assert state.observed_generation is None
    log = kube_world.api.audit_log()
    reads = [e for e in log if e.user == ROTATOR and e.resource == "secrets"]
    assert reads, "the Secret's metadata was read"
    assert {(e.verb, e.accept) for e in reads} == {
        ("get", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    }


def test_a_secret_still_at_the_old_key_overrules_an_unsealed_event_in_the_second_of_the_push(
    kube_world: KubeWorld, key_pair: ControllerKeyPair, client: RotatorKube
) -> None:
    # The Events before the push could not be listed (events_seen is best effort), so the old
    # key's Unsealed event, in the push's second, looks new; the Secret says it is not ours.
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], version="v0.24.2")
    )
    first_key_unsealed(kube_world, key_pair)
    controller.stop()  # our spec is never unsealed
    seen = client.unsealed_events_seen(NS, NAME)
    old_event_second = min(datetime.fromisoformat(when) for _name, _count, when in seen)
    apply(kube_world, key_pair, NEW)
    with pytest.raises(WaitTimeout) as info:
        client.wait_for_unseal(
            NS,
            NAME,
            fingerprint=Secret(NEW).fingerprint,
            deadline_s=1.5,
            applied_after=old_event_second,
            events_seen=frozenset(),
        )
    assert f"its Secret still carries key {Secret(OLD).fingerprint}" in str(info.value)


def test_a_missing_secret_leaves_the_proof_to_the_unsealed_event_and_is_logged_once(
    kube_world: KubeWorld,
    key_pair: ControllerKeyPair,
    client: RotatorKube,
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller = kube_world.run(
        SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair], update_status=False)
    )
    before = datetime.now(UTC)
    kube_world.kube.create(SEALED_SECRET, NS, sealed(key_pair, NEW))
    unsealed_count(kube_world, controller, 1)
    assert kube_world.kube.delete(SECRET, NS, NAME)  # gone again (the stand-in never recreates)
    caplog.set_level(logging.INFO, logger="rotator.clients.kube")

    client.wait_for_unseal(
        NS, NAME, fingerprint=Secret(NEW).fingerprint, deadline_s=10, applied_after=before
    )
    missing = [r for r in caplog.records if "does not exist (yet)" in r.getMessage()]
    assert len(missing) == 1


@pytest.mark.parametrize(
    ("secret", "event", "phase"),
    [
        ("new", False, "done"),
        ("new", True, "done"),
        ("old", True, "waiting"),
        ("", True, "waiting"),
        (None, True, "done"),
        (None, False, "waiting"),
    ],
    ids=[
        "the Secret at our key",
        "the Secret and the Event",
        "the Secret at the old key, an Event",
        "the Secret without the annotation, an Event",
        "no Secret to read, an Event",
        "no Secret, no Event",
    ],
)
def test_a_stale_status_is_judged_by_the_secret_first_and_by_the_event_only_without_it(
    secret: str | None, event: bool, phase: str
) -> None:
    stale = SealedSecretState(NS, NAME, 2, 1, True, "", "fp-new", "7")
    value = {"new": "fp-new", "old": "fp-old"}.get(secret or "", secret)
    got, why = unseal_status(stale, "fp-new", unsealed_after_apply=event, secret_fingerprint=value)
    assert got == phase, why
    assert unseal_status(stale, "fp-new", secret_fingerprint="fp-new")[1].endswith(
        "(its Secret's key-fingerprint annotation; its status is stale: observedGeneration 1, "
        "not 2)"
    )


def test_a_whole_rotation_succeeds_with_no_status_and_no_unsealed_event(
    make_sandbox: MakeSandbox,
) -> None:
    world = make_sandbox()
    assert world.sealed is not None
    world.sealed.update_status = False
    world.sealed.drop_events = True
    report = rotate(world, "waits.unseal_s=20")
    assert (report.outcome, int(report.exit_code)) == (Outcome.SUCCEEDED, 0), to_text(report)


def test_a_whole_rotation_whose_secret_keeps_the_old_key_does_not_succeed(
    make_sandbox: MakeSandbox,
) -> None:
    # Something rewrites the Secret on its way to storage (a mutating admission webhook that
    # keeps the old value): the controller still records its Unsealed event, and no status.
    world = make_sandbox()
    assert world.sealed is not None
    assert world.client is not None
    client = world.client
    old = {ns: client.get(SECRET, ns, NAME) for ns in ("align-preview", "align-prod")}

    def keep_the_old_value(secret: Obj) -> Obj:
        before = old[str(meta(secret)["namespace"])]
        assert before is not None
        kept = dict(secret, data=before["data"])
        kept["metadata"] = dict(meta(secret), annotations=meta(before).get("annotations"))
        return kept

    world.sealed.update_status = False
    world.sealed.rewrite_secret = keep_the_old_value
    report = rotate(world, "waits.unseal_s=3")
    assert report.outcome is not Outcome.SUCCEEDED, to_text(report)
    unseal = [r for r in report.steps if r.step is Step.UNSEAL]
    assert unseal, to_text(report)
    assert all("its Secret still carries key" in r.detail for r in unseal), unseal


def test_only_a_metadata_only_answer_is_taken_as_the_secret_s_metadata() -> None:
    annotations = {"rotator.align.dev/key-fingerprint": "fp-new"}
    partial = {"kind": "PartialObjectMetadata", "metadata": {"annotations": annotations}}
    assert secret_metadata_from(partial) == SecretMetadata("", "", "fp-new", "")
    full = {"kind": "Secret", "metadata": {"annotations": annotations}, "data": {"k": "dg=="}}
    assert secret_metadata_from(full) is None  # a server that ignored the conversion
    assert secret_metadata_from({"kind": "PartialObjectMetadata"}) == SecretMetadata("", "", "", "")
