"""Reachability and NAT traversal on real hosts (network namespaces): issue 16.

Three public hosts on the test bed's switch (one runs the bootstrap node), one
host behind an endpoint-independent NAT (a home router) and one behind a
symmetric NAT (carrier-grade). Every node listens on the default wildcard
address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.testing import eventually_blocking
from meshd.testing.netns import Nat, Testbed, open_testbed
from tests.e2e.harness import Meshd, identity

PORT = 4001
PUBLIC = 3


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with open_testbed(PUBLIC, nat=[Nat.ENDPOINT_INDEPENDENT, Nat.SYMMETRIC]) as testbed:
        yield testbed


def start_network(bed: Testbed, tmp_path: Path, genesis: Path) -> list[Meshd]:
    """The bootstrap node, the other public nodes, then the two NAT'd ones."""
    boot_id = identity(tmp_path / "boot")
    boot = f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
    nodes = [Meshd(tmp_path, "boot", genesis, "--port", str(PORT), command="bootstrap",
                   host=bed.hosts[0])]
    nodes += [Meshd(tmp_path, f"pub{i}", genesis, "--bootstrap", boot, host=host)
              for i, host in enumerate(bed.hosts[1:], start=1)]
    nodes += [Meshd(tmp_path, f"nat{i}", genesis, "--bootstrap", boot, host=site.hosts[0])
              for i, site in enumerate(bed.sites)]
    for node in nodes:
        node.start()
    return nodes


def test_public_nodes_are_public_and_nodes_behind_nat_are_private(
        bed: Testbed, tmp_path: Path, genesis: Path) -> None:
    nodes = start_network(bed, tmp_path, genesis)
    try:
        expected = ["public"] * PUBLIC + ["private"] * len(bed.sites)
        eventually_blocking(lambda: [node.status()["reachability"] for node in nodes],
                            lambda seen: seen == expected, timeout=60, interval=0.5,
                            what="every node's AutoNAT verdict")
        for node, host in zip(nodes, bed.hosts, strict=False):
            # The address members reached it at is the one it advertises first.
            assert node.status()["listen_addrs"][0].startswith(f"/ip4/{host.ip}/tcp/{PORT}/")
    finally:
        for node in nodes:
            node.stop()
