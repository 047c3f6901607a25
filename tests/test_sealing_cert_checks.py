"""The sealing cert before the reset (issue 12 item 10): a PEM bundle is refused unless exactly
one cert matches the controller's; the controller must open a throwaway value sealed with the
chosen cert (``/v1/verify``, rate-limited like upstream); a 5xx on the cert fetch is retried.
Against the sealed-secrets stand-in behind the Kubernetes API stand-in's service proxy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.clients.kube import Kube as RotatorKube
from rotator.clients.sealing import ensure_controller_opens, fetch_cert, load_cert
from rotator.config import CertSource, Config, ControllerRef, SealingScope
from rotator.errors import CertError, KubeError, RateLimited
from rotator.report import Outcome, to_text
from rotator_sandbox.controllers.sealedsecrets import RateLimiter, SealedSecretsController
from rotator_sandbox.unseal import ControllerKeyPair, generate_key_pair
from tests.e2e_fixtures import MakeSandbox, e2e_key_pair, make_sandbox, resets, rotate
from tests.sandbox_fixtures import KubeWorld, key_pair, kube_world

FIXTURES = (key_pair, kube_world, e2e_key_pair, make_sandbox)  # pytest fixtures, by name


@pytest.fixture(scope="module")
def other_pair() -> ControllerKeyPair:
    return generate_key_pair(2048, common_name="not-the-controller")


@pytest.fixture
def controller(kube_world: KubeWorld, key_pair: ControllerKeyPair) -> SealedSecretsController:
    return kube_world.run(SealedSecretsController(kube_world.kubeconfig, key_pairs=[key_pair]))


@pytest.fixture
def proxy(kube_world: KubeWorld) -> Iterator[RotatorKube]:
    config = Config.model_validate(
        {
            "environments": {
                "preview": {
                    "posthog_project_id": 1,
                    "namespace": "align-preview",
                    "sealed_file": "sealedsecrets/preview/posthog.yaml",
                    "argocd_app": {"name": "align-preview"},
                    "deployment": "align-preview-gateway",
                }
            },
            "git": {"remote": "file:///nonexistent.git"},
            "kubernetes": {"kubeconfig": str(kube_world.kubeconfig)},
            "timeouts": {"connect_s": 2, "read_s": 5, "attempts": 4},
        }
    )
    kube = RotatorKube.from_config(config)
    yield kube
    kube.close()


def check(cert_pem: bytes, proxy: RotatorKube) -> None:
    ensure_controller_opens(
        load_cert(cert_pem, source="test", now=datetime.now(UTC)),
        proxy=proxy,
        controller=ControllerRef(),
        namespace="align-preview",
        name="align-posthog",
        data_key="POSTHOG_API_KEY",
        scope=SealingScope.STRICT,
    )


def test_a_pem_bundle_is_refused_when_nothing_says_which_cert_the_controller_serves(
    key_pair: ControllerKeyPair, other_pair: ControllerKeyPair
) -> None:
    # kubeseal's ParseKey takes the bundle's first cert silently, which may be a key the
    # controller does not have.
    bundle = other_pair.cert_pem + key_pair.cert_pem
    with pytest.raises(CertError, match="bundle of 2 certificates"):
        load_cert(bundle, source="file bundle.pem", now=datetime.now(UTC))


def test_a_pem_bundle_is_narrowed_to_the_one_cert_the_controller_serves(
    tmp_path: Path,
    key_pair: ControllerKeyPair,
    other_pair: ControllerKeyPair,
    controller: SealedSecretsController,
    proxy: RotatorKube,
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(other_pair.cert_pem + key_pair.cert_pem)
    source = CertSource(file=bundle, check_with=ControllerRef())
    cert = fetch_cert(source, proxy=proxy, timeout=(2, 5), now=datetime.now(UTC))
    assert (
        cert.fingerprint
        == load_cert(key_pair.cert_pem, source="x", now=datetime.now(UTC)).fingerprint
    )
    assert "the controller's of 2" in cert.source

    bundle.write_bytes(other_pair.cert_pem + other_pair.cert_pem)
    with pytest.raises(CertError, match="0 of them match the controller's current cert"):
        fetch_cert(source, proxy=proxy, timeout=(2, 5), now=datetime.now(UTC))


def test_the_controller_opens_a_throwaway_value_sealed_with_its_own_cert_and_not_another(
    key_pair: ControllerKeyPair,
    other_pair: ControllerKeyPair,
    controller: SealedSecretsController,
    proxy: RotatorKube,
) -> None:
    check(key_pair.cert_pem, proxy)
    with pytest.raises(CertError, match=r"cannot open a value sealed with .*409"):
        check(other_pair.cert_pem, proxy)


def test_verify_is_rate_limited_like_upstream_and_rotator_waits_out_the_429(
    key_pair: ControllerKeyPair, controller: SealedSecretsController, proxy: RotatorKube
) -> None:
    # A frozen clock: the budget never refills by itself, so the limit is hit deterministically.
    frozen = [0.0]
    controller.verify_limiter = RateLimiter(2, 2, clock=lambda: frozen[0])
    for _ in range(3):  # GCRA: 2/s with a burst of 2 lets three through at once
        check(key_pair.cert_pem, proxy)
    with pytest.raises(RateLimited, match="HTTP 429") as info:
        check(key_pair.cert_pem, proxy)  # retried (attempts 4), never refilled: gives up
    assert info.value.retry_after_s == 1  # the controller's Retry-After, through the proxy
    frozen[0] += 0.5  # half a second later, one more
    check(key_pair.cert_pem, proxy)


def test_the_rate_limiter_refills_at_two_per_second() -> None:
    now = [100.0]
    limiter = RateLimiter(2, 2, clock=lambda: now[0])
    assert [limiter.allow("k")[0] for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("k")[1] == pytest.approx(0.5)
    assert limiter.allow("other")[0]  # per path and X-Forwarded-For
    now[0] += 0.5
    assert limiter.allow("k") == (True, 0.0)


def test_verify_answers_500_for_a_body_that_is_not_a_sealed_secret(
    controller: SealedSecretsController, proxy: RotatorKube
) -> None:
    with pytest.raises(KubeError, match="HTTP 500"):
        proxy.post("kube-system", "sealed-secrets-controller", "http", "/v1/verify", b"[1, 2]")


def test_one_5xx_on_the_cert_fetch_is_retried_like_every_read(
    key_pair: ControllerKeyPair, controller: SealedSecretsController, proxy: RotatorKube
) -> None:
    controller.fail_cert_requests = 1
    cert = fetch_cert(
        CertSource(controller=ControllerRef()), proxy=proxy, timeout=(2, 5), now=datetime.now(UTC)
    )
    assert cert.pem == key_pair.cert_pem
    assert controller.fail_cert_requests == 0  # the first answer was the 500


def test_a_cert_the_controller_cannot_open_aborts_the_run_before_the_reset(
    make_sandbox: MakeSandbox, other_pair: ControllerKeyPair, tmp_path: Path
) -> None:
    world = make_sandbox()
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(other_pair.cert_pem)
    report = rotate(
        world,
        *(
            override
            for env in ("preview", "prod")
            for override in (
                f"environments.{env}.cert.controller=null",
                f"environments.{env}.cert.file={wrong}",
                f"environments.{env}.cert.check_with.name=sealed-secrets-controller",
            )
        ),
    )
    assert (report.outcome, int(report.exit_code)) == (Outcome.ABORTED, 3), to_text(report)
    assert "cannot open a value sealed with" in (report.error or "")
    assert resets(world) == 0
