"""The namespaced Kademlia DHT across several hosts in one process."""

from __future__ import annotations

import pytest
import trio

from meshd import errors
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


async def test_values_and_providers_across_the_network() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (hub, b, c):
            await star(hub, b, c)
            await b.dht.put("greeting", b"hello mesh")
            assert await c.dht.get("greeting") == b"hello mesh"
            await b.dht.provide("some-content")
            providers = await c.dht.find_providers("some-content", 5)
            assert b.peer_id in [p.peer_id for p in providers]
            with pytest.raises(errors.NotFound):
                await c.dht.get("nobody-put-this")
            with pytest.raises(errors.InvalidArgument):
                await c.dht.put("k", b"x" * (64 * 1024 + 1))
            with pytest.raises(errors.InvalidArgument):
                await c.dht.get("")


async def test_a_peer_of_another_network_never_enters_the_routing_table() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A, NET_B) as (a, b, foreign):
            await star(a, b)
            with pytest.raises(errors.FailedPrecondition):
                await foreign.connect(a.listen_addrs()[0])
            await wait_until(a, lambda: a.connection_count() == 1)
            assert a.dht.routing_table_size() == 1
            assert foreign.dht.routing_table_size() == 0
