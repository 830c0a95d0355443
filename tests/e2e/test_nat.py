"""Reachability and NAT traversal on real hosts (network namespaces): issue 16.

Three public hosts on the test bed's switch (one runs the bootstrap node), two
hosts each behind an endpoint-independent NAT (a home router) and one behind a
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
    with open_testbed(PUBLIC, nat=[Nat.ENDPOINT_INDEPENDENT, Nat.ENDPOINT_INDEPENDENT,
                                   Nat.SYMMETRIC]) as testbed:
        yield testbed


def start_network(bed: Testbed, tmp_path: Path, genesis: Path,
                  nat_args: tuple[str, ...] = (),
                  pub2_args: tuple[str, ...] = ()) -> list[Meshd]:
    """The bootstrap node, the other public nodes, then the NAT'd ones."""
    boot_id = identity(tmp_path / "boot")
    boot = f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
    nodes = [Meshd(tmp_path, "boot", genesis, "--port", str(PORT), command="bootstrap",
                   host=bed.hosts[0])]
    nodes += [Meshd(tmp_path, f"pub{i}", genesis, "--bootstrap", boot,
                    *(pub2_args if i == 2 else ()), host=host)
              for i, host in enumerate(bed.hosts[1:], start=1)]
    nodes += [Meshd(tmp_path, f"nat{i}", genesis, "--bootstrap", boot, *nat_args,
                    host=site.hosts[0])
              for i, site in enumerate(bed.sites)]
    for node in nodes:
        node.start()
    return nodes


def stop_all(nodes: list[Meshd]) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.stop()


def relay_addresses(node: Meshd) -> list[str]:
    return [a for a in node.status()["listen_addrs"] if "/p2p-circuit/" in a]


def peer_addrs(node: Meshd, peer_id: str) -> list[str]:
    """The addresses of ``node``'s connection to ``peer_id`` ([] when none)."""
    for peer in json.loads(node.ctl("peers", "ls", "--json").stdout):
        if peer["peer_id"] == peer_id:
            return list(peer["addrs"])
    return []


def direct(node: Meshd, peer_id: str, timeout: float = 30) -> None:
    eventually_blocking(lambda: peer_addrs(node, peer_id),
                        lambda addrs: addrs and "/p2p-circuit" not in addrs[0],
                        timeout=timeout, interval=0.5, what="a direct connection")


def test_nodes_behind_nat_are_reached_through_a_relay_then_directly(
        bed: Testbed, tmp_path: Path, genesis: Path) -> None:
    """AutoNAT tells public from private; the NAT'd nodes keep one peer of
    their own (the bootstrap node, which relays): others reach them through it
    first, then directly where a NAT lets them."""
    lonely = tmp_path / "lonely.toml"
    lonely.write_text("[p2p]\nlow_watermark = 1\ntarget_peers = 1\n")
    # pub2 wants every member as a peer (it dials while below its low watermark).
    hungry = tmp_path / "hungry.toml"
    hungry.write_text("[p2p]\nlow_watermark = 8\ntarget_peers = 8\n")
    nodes = start_network(bed, tmp_path, genesis, nat_args=("--config", str(lonely)),
                          pub2_args=("--config", str(hungry)))
    boot, pub1 = nodes[0], nodes[1]
    home, home2, carrier = nodes[PUBLIC:]  # EIM, EIM, symmetric NAT
    boot_id = boot.status()["peer_id"]
    ids = {node: node.status()["peer_id"] for node in nodes}
    try:
        expected = ["public"] * PUBLIC + ["private"] * len(bed.sites)
        eventually_blocking(lambda: [node.status()["reachability"] for node in nodes],
                            lambda seen: seen == expected, timeout=60, interval=0.5,
                            what="every node's AutoNAT verdict")
        for node, host in zip(nodes, bed.hosts, strict=False):
            # The address members reached it at is the one it advertises first.
            assert node.status()["listen_addrs"][0].startswith(f"/ip4/{host.ip}/tcp/{PORT}/")

        circuits = {}
        for behind in (home, home2, carrier):
            addrs = eventually_blocking(lambda b=behind: relay_addresses(b), timeout=60,
                                        interval=0.5, what="a relay address")
            assert addrs[0].startswith(f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
                                       "/p2p-circuit/p2p/"), addrs
            circuits[behind] = addrs[0]

        # Nobody tells pub2 about them: peer exchange gives it their relay
        # addresses, and its connection manager reaches them through the relay.
        pub2 = nodes[2]
        eventually_blocking(lambda: {p["peer_id"] for p in json.loads(
                                pub2.ctl("peers", "ls", "--json").stdout)},
                            lambda seen: {ids[home], ids[home2], ids[carrier]} <= seen,
                            timeout=60, interval=1, what="pub2 to reach every NAT'd node")

        # A public node reaches each through the relay; the NAT'd node then
        # dials it back, and the connection is direct.
        for behind in (home, carrier):
            pub1.ctl("peers", "connect", circuits[behind])
            direct(pub1, ids[behind])
            pub1.ctl("peers", "ping", ids[behind], "-c", "2")

        # Two home routers: the relayed connection is upgraded by a hole punch.
        home2.ctl("peers", "connect", circuits[home])
        direct(home2, ids[home])
        assert "hole punched" in home.log() + home2.log()
        # Behind a symmetric NAT, no punch gets through: the connection stays
        # relayed, and works.
        home.ctl("peers", "connect", circuits[carrier])
        eventually_blocking(lambda: "connection stays relayed" in carrier.log(), timeout=60,
                            interval=0.5, what="the punch to give up")
        assert "/p2p-circuit" in peer_addrs(home, ids[carrier])[0]
        home.ctl("peers", "ping", ids[carrier], "-c", "2")

        # A chunk kept by the node behind the symmetric NAT alone is fetched from
        # it by the node behind the home router, through the relay.
        original = tmp_path / "kept.bin"
        original.write_bytes(os.urandom(300_000))
        name = carrier.ctl("plugins", "call", "storage", "STORE_FILE", "--file",
                           str(original)).stdout.strip()
        home.ctl("plugins", "call", "storage", "RETRIEVE_FILE", name, "--peer", ids[carrier],
                 "-o", str(tmp_path / "copy.bin"))
        assert (tmp_path / "copy.bin").read_bytes() == original.read_bytes()

        # The relay dies: the NAT'd node finds another public member, reserves
        # there, and is reached through it.
        boot.stop()
        addrs = eventually_blocking(
            lambda: relay_addresses(carrier), lambda found: found and boot_id not in found[0],
            timeout=60, interval=0.5, what="a relay address through another relay")
        eventually_blocking(lambda: home.ctl("peers", "connect", addrs[0], check=False),
                            lambda done: done.returncode == 0, timeout=30, interval=1,
                            what="home to reach carrier through the new relay")
        home.ctl("peers", "ping", ids[carrier], "-c", "1")
    finally:
        stop_all(nodes)
