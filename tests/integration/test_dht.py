"""The namespaced Kademlia DHT across several hosts in one process."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from meshcore.ledger.accounts import peer_id_of
from meshd import errors
from meshd.p2p.dht import LookupTrace
from meshd.p2p.host import P2PHost
from meshd.p2p.membership import protocol_id
from tests.integration.p2p_helpers import NET_A, NET_B, open_hosts, wait_until


async def wait_routing(host: P2PHost, size: int) -> None:
    with trio.fail_after(10):
        while host.dht.routing_table_size() < size:
            await host.dht.next_change()


async def star(hub: P2PHost, *spokes: P2PHost) -> None:
    """Connect every spoke to the hub only, and wait until the hub routes to all."""
    for spoke in spokes:
        await spoke.connect(hub.listen_addrs()[0])
        await wait_routing(spoke, 1)
    await wait_routing(hub, len(spokes))


async def test_the_dht_speaks_only_the_namespaced_protocol() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await star(a, b)
            raw = b._host  # the real host, below the DHT's namespaced view
            stream = await raw.new_stream(a._host.get_id(), [protocol_id(NET_A, "kad")])
            await stream.reset()
            with pytest.raises(Exception):  # noqa: B017 (negotiation fails: protocol refused)
                await raw.new_stream(a._host.get_id(), ["/ipfs/kad/1.0.0"])


async def test_find_peer_through_the_hub() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (hub, b, c):
            await star(hub, b, c)
            found = await c.dht.find_peer(b.peer_id)
            assert found.peer_id == b.peer_id
            assert any(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in found.addrs)


async def test_a_host_reaches_a_member_it_is_not_connected_to_through_the_dht() -> None:
    # P2PHost.reach: what ctx.request and receipt audits use to reach any member.
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (hub, b, c):
            await star(hub, b, c)
            assert not c.membership.is_admitted(b.peer_id)
            await c.reach(b.peer_id, 10)
            assert c.membership.is_admitted(b.peer_id)
            await c.reach(b.peer_id, 10)  # connected: nothing to do
            with pytest.raises(errors.FailedPrecondition, match="DHT has no address"):
                await c.reach(peer_id_of(bytes(range(32))), 5)  # a key no node holds


async def test_values_and_providers_across_the_network() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (hub, b, c):
            await star(hub, b, c)
            await b.dht.put("greeting", b"hello mesh")
            assert (await c.dht.get("greeting")).value == b"hello mesh"
            await b.dht.provide("some-content")
            providers = await c.dht.find_providers("some-content", 5)
            assert b.peer_id in [p.peer_id for p in providers]
            with pytest.raises(errors.NotFound):
                await c.dht.get("nobody-put-this")
            with pytest.raises(errors.InvalidArgument):
                await c.dht.put("k", b"x" * (64 * 1024 + 1))
            with pytest.raises(errors.InvalidArgument):
                await c.dht.get("")


async def test_hops_count_the_referrals_to_the_value() -> None:
    """Chain a - b - c, the value only at c: a learns of c from b's answer."""
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (a, b, c):
            await c.dht.put("far", b"at c only")  # alone: stored locally, nowhere else
            await b.connect(c.listen_addrs()[0])
            await wait_routing(b, 1)
            await a.connect(b.listen_addrs()[0])
            await wait_routing(a, 1)
            assert a.dht.routing_table_size() == 1  # b only

            found = await a.dht.get("far")
            assert found.value == b"at c only"
            # c was not in a's routing table, b named it: 2 hops. a asked b and c.
            assert (found.hops, found.queried_peers, found.peers_with_value) == (2, 2, 1)

            again = await a.dht.get("far")  # upstream keeps what it found
            assert (again.hops, again.queried_peers) == (0, 0)
            local = await c.dht.get("far")
            assert (local.value, local.hops, local.queried_peers) == (b"at c only", 0, 0)


def test_lookup_trace_counts_the_shortest_referral_chain() -> None:
    """Pure: answers in any order; a peer known at the start is 1 hop even if named later."""
    a, b, c, d, known = (ID(bytes([i]) * 34) for i in range(5))
    trace = LookupTrace([a, known])
    trace.asking(a)
    trace.answered(a, [b, known], has_value=False)
    trace.asking(b)
    trace.asking(known)  # named by a, but known before: 1 hop
    trace.answered(b, [c], has_value=False)
    trace.asking(c)
    trace.answered(c, [d], has_value=True)  # a -> b -> c
    assert trace.hops() == 3
    trace.answered(known, [c], has_value=False)  # a shorter chain to c, learned later
    assert trace.hops() == 2
    trace.answered(known, [], has_value=True)
    assert trace.hops() == 1
    assert (len(trace.queried), len(trace.holders)) == (4, 2)
    nobody = LookupTrace([a])
    nobody.asking(a)
    nobody.answered(a, [], has_value=False)
    assert nobody.hops() is None


async def test_a_peer_of_another_network_never_enters_the_routing_table() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A, NET_B) as (a, b, foreign):
            await star(a, b)
            with pytest.raises(errors.FailedPrecondition):
                await foreign.connect(a.listen_addrs()[0])
            await wait_until(a, lambda: a.connection_count() == 1)
            assert a.dht.routing_table_size() == 1
            assert foreign.dht.routing_table_size() == 0
