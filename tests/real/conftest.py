"""Fixtures of the real tier: one private network namespace and one control plane per test
process (they take ~20-60 s to start on 2 cores), shared by the tier's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.cluster import Cluster, NetNs, RealTierUnavailable
from tests.real.peers import Peers, peers


@pytest.fixture(scope="session")
def real_peers() -> Peers:
    return peers()


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNs]:
    try:
        ns = NetNs()
    except RealTierUnavailable as exc:
        pytest.skip(f"real control plane unavailable: {exc}")
    yield ns
    ns.close()


@pytest.fixture(scope="session")
def cluster(
    netns: NetNs, real_peers: Peers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("real-cluster"))
    c = Cluster(real_peers, root, netns)
    try:
        c.start(controller_manager=True)
    except BaseException:
        c.stop()
        raise
    yield c
    c.stop()


@pytest.fixture
def inside(cluster: Cluster) -> Iterator[Cluster]:
    """The test's thread in the cluster's network namespace (and back out after it)."""
    with cluster.netns.inside():
        yield cluster
