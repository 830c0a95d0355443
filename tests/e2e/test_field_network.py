"""Networks on real hosts (network namespaces, meshd.testing.netns): issue 16.

Every node listens on the default wildcard address, as an operator runs it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.testing import eventually_blocking
from meshd.testing.netns import Testbed, open_testbed
from tests.e2e.harness import Meshd, identity, run_meshd

NODES = 8
PORT = 4001
CONVERGE_SECONDS = 30
MIN_PEERS = 4
PEER = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with open_testbed(NODES) as testbed:
        yield testbed


def unspecified(address: str) -> bool:
    parts = address.split("/")
    return len(parts) > 2 and parts[1] in ("ip4", "ip6") \
        and ipaddress.ip_address(parts[2]).is_unspecified


def test_nodes_on_wildcard_listeners_meet_each_other_not_only_the_bootstrap(
        bed: Testbed, tmp_path: Path, genesis: Path) -> None:
    boot_id = identity(tmp_path / "boot")
    boot_address = f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
    nodes = [Meshd(tmp_path, "boot", genesis, "--port", str(PORT), command="bootstrap",
                   host=bed.hosts[0])]
    nodes += [Meshd(tmp_path, f"n{i}", genesis, "--bootstrap", boot_address, host=host)
              for i, host in enumerate(bed.hosts[1:], start=1)]
    try:
        for node in nodes:
            node.start()
        eventually_blocking(lambda: [node.status()["peer_count"] for node in nodes],
                            lambda counts: min(counts) >= MIN_PEERS, timeout=CONVERGE_SECONDS,
                            interval=0.5, what=f"every node to have {MIN_PEERS} peers")
        statuses = [node.status() for node in nodes]
        for host, status in zip(bed.hosts, statuses, strict=True):
            addrs = status["listen_addrs"]
            assert addrs[0] == f"/ip4/{host.ip}/tcp/{PORT}/p2p/{status['peer_id']}", addrs
            assert not any(unspecified(a) for a in addrs), addrs
        assert statuses[0]["listen_addrs"][0] == boot_address
    finally:
        for node in nodes:
            node.stop()
    for node in nodes:  # what identify and peer exchange taught each node, saved at exit
        book = json.loads((node.data_dir / "peers.json").read_text())["peers"]
        learned = [a for entry in book for a in entry["addrs"]]
        assert learned and not any(unspecified(a) for a in learned)
        assert all(a.startswith("/ip4/10.231.") for a in learned), learned


def test_a_node_joins_by_network_id_and_refuses_another_networks_genesis(
        tmp_path: Path, genesis: Path) -> None:
    founder = Meshd(tmp_path, "founder", genesis, "--listen", "/ip4/127.0.0.1/tcp/0").start()
    try:
        network_id = founder.status()["network_id"]
        address = founder.status()["listen_addrs"][0]
        joiner = Meshd(tmp_path, "joiner", None, "--listen", "/ip4/127.0.0.1/tcp/0",
                       "--network-id", network_id, "--bootstrap", address, command="join")
        joiner.start()
        assert joiner.status()["network_id"] == network_id
        stored = (joiner.data_dir / "genesis.toml").read_text()
        assert stored == (founder.data_dir / "genesis.toml").read_text()
        joiner.stop()
        # Later starts need neither flag: the genesis is the data dir's.
        again = Meshd(tmp_path, "joiner", None, "--listen", "/ip4/127.0.0.1/tcp/0").start()
        assert again.status()["network_id"] == network_id
        again.stop()

        # Asked for another network, the founder's node is not a member of it:
        # nothing is stored, the joiner keeps asking and says why.
        other = "net_" + "a" * 26
        stray = Meshd(tmp_path, "stray", None, "--listen", "/ip4/127.0.0.1/tcp/0",
                      "--network-id", other, "--bootstrap", address, command="join")
        stray.start(wait=False)
        try:
            eventually_blocking(lambda: "no genesis from a bootstrap peer" in stray.log(),
                                timeout=20, what="the joiner to say why it has no genesis")
            assert stray.process is not None and stray.process.poll() is None
            assert not (stray.data_dir / "genesis.toml").exists()
            assert network_id in stray.log()  # the founder's node named its network
        finally:
            stray.stop()
    finally:
        founder.stop()


def test_join_needs_a_network_id_that_is_one_and_a_bootstrap_peer(tmp_path: Path) -> None:
    bad = run_meshd("join", "--data-dir", str(tmp_path / "a"), "--network-id", "net_nope",
                    "--bootstrap", f"/ip4/127.0.0.1/tcp/1/p2p/{PEER}")
    assert bad.returncode == 2 and "node.network_id" in bad.stderr
    alone = run_meshd("join", "--data-dir", str(tmp_path / "b"), "--network-id",
                      "net_" + "a" * 26)
    assert alone.returncode == 2 and "--bootstrap" in alone.stderr
    scheme = run_meshd("join", "--data-dir", str(tmp_path / "c"), "--network-id",
                       "net_" + "a" * 26, "--bootstrap", "http://boot.example.com:8080")
    assert scheme.returncode == 2 and "unknown URL scheme 'http'" in scheme.stderr


def test_two_nodes_on_one_lan_find_each_other_by_mdns_alone(
        tmp_path: Path, genesis: Path) -> None:
    """No bootstrap node, no address given: two hosts on one switch (a home
    LAN) meet by mDNS; a third whose operator turned mDNS off stays alone."""
    quiet = tmp_path / "quiet.toml"
    quiet.write_text("[p2p]\nmdns = false\n")
    with open_testbed(3) as lan:
        nodes = [Meshd(tmp_path, f"pi{i}", genesis, host=host)
                 for i, host in enumerate(lan.hosts[:2])]
        nodes.append(Meshd(tmp_path, "pi-quiet", genesis, "--config", str(quiet),
                           host=lan.hosts[2]))
        try:
            for node in nodes:
                node.start()
            ids = [node.status()["peer_id"] for node in nodes]
            eventually_blocking(lambda: [node.status()["peer_count"] for node in nodes[:2]],
                                lambda counts: counts == [1, 1], timeout=30, interval=0.5,
                                what="the two nodes to meet by mDNS")
            for node, other in ((nodes[0], ids[1]), (nodes[1], ids[0])):
                peers = json.loads(node.ctl("peers", "ls", "--json").stdout)
                assert [p["peer_id"] for p in peers] == [other]
            assert "mDNS announcing" in nodes[0].log()
            assert "mDNS" not in nodes[2].log() and nodes[2].status()["peer_count"] == 0
        finally:
            for node in nodes:
                node.stop()


def test_a_node_joins_by_network_id_and_a_websocket_url(tmp_path: Path, genesis: Path) -> None:
    """The seed's join: a Network ID and ws://HOST:PORT, no peer ID. The
    bootstrap node serves libp2p over TCP and WebSocket on one port."""
    with open_testbed(2) as bed:
        boot = Meshd(tmp_path, "boot", genesis, "--port", "8080", command="bootstrap",
                     host=bed.hosts[0]).start()
        try:
            status = boot.status()
            assert f"/ip4/{bed.hosts[0].ip}/tcp/8080/ws/p2p/{status['peer_id']}" \
                in status["listen_addrs"]
            joiner = Meshd(tmp_path, "joiner", None, "--network-id", status["network_id"],
                           "--bootstrap", f"ws://{bed.hosts[0].ip}:8080", command="join",
                           host=bed.hosts[1]).start()
            try:
                assert joiner.status()["network_id"] == status["network_id"]
                eventually_blocking(lambda: joiner.status()["peer_count"], lambda n: n == 1,
                                    timeout=30, interval=0.5, what="the joiner to connect")
                assert "bootstrap URL answered" in joiner.log()
                assert status["peer_id"] in joiner.log()  # the ID it learnt, to pin
                # The same port over plain TCP, by URL, from the CLI.
                again = json.loads(joiner.ctl("peers", "connect", f"tcp://{bed.hosts[0].ip}:8080",
                                              "--json").stdout)
                assert again["peer_id"] == status["peer_id"]
            finally:
                joiner.stop()
        finally:
            boot.stop()
