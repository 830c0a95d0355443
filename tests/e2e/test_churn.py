"""Eight meshd processes: three are SIGKILLed and restarted, then a partition heals.

Both scenarios end with gossip reaching every subscriber again: first probes
until each subscriber has been grafted into the topic's mesh, then a batch
that every subscriber must receive whole.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

from tests.e2e.harness import (
    Meshd,
    Subscription,
    free_port,
    gossip_delivers_all,
    gossip_reaches,
)

NODES = 8


def start_network(node: Callable[..., Meshd], count: int) -> list[Meshd]:
    """Node 0 bootstraps; the others know only it. Fixed ports, kept across restarts."""
    boot = node("n0")
    address = boot.status()["listen_addrs"][0]
    return [boot] + [node(f"n{i}", "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}",
                          "--bootstrap", address, loopback=False) for i in range(1, count)]


def peer_ids(process: Meshd) -> set[str]:
    return {p["peer_id"] for p in json.loads(process.ctl("peers", "ls", "--json").stdout)}


def test_sigkilled_nodes_restart_rejoin_and_receive_gossip_again(
        node: Callable[..., Meshd]) -> None:
    nodes = start_network(node, NODES)
    publisher, victims = nodes[1], nodes[5:]
    subs = {n.data_dir.name: Subscription(n, "churn") for n in nodes if n is not publisher}
    try:
        gossip_reaches(publisher, list(subs.values()), "before")
        gossip_delivers_all(publisher, list(subs.values()), "before")

        for victim in victims:
            victim.stop(signal.SIGKILL)
            subs.pop(victim.data_dir.name).close()
        # The survivors' mesh heals around the dead nodes.
        gossip_delivers_all(publisher, list(subs.values()), "during")

        for victim in victims:
            victim.start()  # same data dir: same identity, port and known peers
            subs[victim.data_dir.name] = Subscription(victim, "churn")
        for victim in victims:
            victim.watch_until(lambda s: s.peer_count >= 1)
        gossip_reaches(publisher, list(subs.values()), "after")
        gossip_delivers_all(publisher, list(subs.values()), "after")
        for victim in victims:
            assert victim.process is not None and victim.process.poll() is None
    finally:
        for subscription in subs.values():
            subscription.close()


def test_a_partition_heals_and_gossip_flows_again(node: Callable[..., Meshd]) -> None:
    nodes = start_network(node, 6)
    ids = {n.data_dir.name: n.status()["peer_id"] for n in nodes}
    side_a, side_b = nodes[:3], nodes[3:]
    publisher = nodes[1]
    subs = [Subscription(n, "churn") for n in nodes if n is not publisher]
    try:
        gossip_reaches(publisher, subs, "joined")

        # The partition: every node blocks every node of the other side (a fault
        # hook through the operator's own command).
        for here, there in ((side_a, side_b), (side_b, side_a)):
            for process in here:
                for other in there:
                    process.ctl("peers", "block", ids[other.data_dir.name])
        b_ids = {ids[n.data_dir.name] for n in side_b}
        for process in side_a:
            assert not peer_ids(process) & b_ids
        side_a_subs = [s for s in subs if s.node in side_a]
        side_b_subs = [s for s in subs if s.node in side_b]
        gossip_delivers_all(publisher, side_a_subs, "split")
        assert not any(m.startswith("split") for s in side_b_subs for m in s.received())

        for here, there in ((side_a, side_b), (side_b, side_a)):
            for process in here:
                for other in there:
                    process.ctl("peers", "unblock", ids[other.data_dir.name])
        # The connection managers dial across again (below their low watermark).
        gossip_reaches(publisher, subs, "healed")
        gossip_delivers_all(publisher, subs, "healed")
        assert any(peer_ids(process) & b_ids for process in side_a)
    finally:
        for subscription in subs:
            subscription.close()
