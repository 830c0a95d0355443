"""Reachability and NAT traversal on real hosts (network namespaces): issue 16.

Three public hosts on the test bed's switch (one runs the bootstrap node), one
host behind an endpoint-independent NAT (a home router) and one behind a
symmetric NAT (carrier-grade). Every node listens on the default wildcard
address.
"""

from __future__ import annotations

import json
import os
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


def start_network(bed: Testbed, tmp_path: Path, genesis: Path,
                  nat_args: tuple[str, ...] = ()) -> list[Meshd]:
    """The bootstrap node, the other public nodes, then the two NAT'd ones."""
    boot_id = identity(tmp_path / "boot")
    boot = f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
    nodes = [Meshd(tmp_path, "boot", genesis, "--port", str(PORT), command="bootstrap",
                   host=bed.hosts[0])]
    nodes += [Meshd(tmp_path, f"pub{i}", genesis, "--bootstrap", boot, host=host)
              for i, host in enumerate(bed.hosts[1:], start=1)]
    nodes += [Meshd(tmp_path, f"nat{i}", genesis, "--bootstrap", boot, *nat_args,
                    host=site.hosts[0])
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
        stop_all(nodes)


def stop_all(nodes: list[Meshd]) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.stop()


def relay_addresses(node: Meshd) -> list[str]:
    return [a for a in node.status()["listen_addrs"] if "/p2p-circuit/" in a]


def test_a_node_behind_nat_is_reached_through_a_relay(
        bed: Testbed, tmp_path: Path, genesis: Path) -> None:
    """The NAT'd nodes keep one peer of their own (the bootstrap node, which
    relays): the public node pub1 reaches them only through the relay."""
    lonely = tmp_path / "lonely.toml"
    lonely.write_text("[p2p]\nlow_watermark = 1\ntarget_peers = 1\n")
    nodes = start_network(bed, tmp_path, genesis, nat_args=("--config", str(lonely)))
    boot, pub1, nat0, nat1 = nodes[0], nodes[1], nodes[3], nodes[4]
    boot_id = boot.status()["peer_id"]
    try:
        for behind in (nat0, nat1):
            addrs = eventually_blocking(lambda b=behind: relay_addresses(b), timeout=60,
                                        interval=0.5, what="a relay address")
            assert addrs[0].startswith(f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
                                       "/p2p-circuit/p2p/"), addrs
            pub1.ctl("peers", "connect", addrs[0])
            peer_id = behind.status()["peer_id"]
            seen = {p["peer_id"]: p for p in json.loads(pub1.ctl("peers", "ls", "--json").stdout)}
            assert "/p2p-circuit" in seen[peer_id]["addrs"][0], seen[peer_id]
            pub1.ctl("peers", "ping", peer_id, "-c", "3")

        # A file kept by the node behind the symmetric NAT alone is fetched from
        # it by the public node, through the relay.
        original = tmp_path / "kept.bin"
        original.write_bytes(os.urandom(300_000))
        file_hash = nat1.ctl("storage", "put", str(original), "--replicas", "0").stdout.strip()
        pub1.ctl("storage", "get", file_hash, "-o", str(tmp_path / "copy.bin"))
        assert (tmp_path / "copy.bin").read_bytes() == original.read_bytes()

        # The relay dies: the NAT'd node finds another public member, reserves
        # there, and is reached through it.
        boot.stop()
        addrs = eventually_blocking(
            lambda: relay_addresses(nat1), lambda found: found and boot_id not in found[0],
            timeout=60, interval=0.5, what="a relay address through another relay")
        nat1_id = nat1.status()["peer_id"]
        eventually_blocking(lambda: pub1.ctl("peers", "connect", addrs[0], check=False),
                            lambda done: done.returncode == 0, timeout=30, interval=1,
                            what="pub1 to reach nat1 through the new relay")
        pub1.ctl("peers", "ping", nat1_id, "-c", "1")
    finally:
        stop_all(nodes)
