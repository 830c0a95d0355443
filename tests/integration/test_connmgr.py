"""The connection manager: peer exchange, degree, pruning, rejoining from the book."""

from __future__ import annotations

import os
import random

import pytest
import trio

from meshd.p2p import peerbook
from meshd.p2p.connmgr import ConnectionManager, Degree
from meshd.p2p.direct import Code, DirectRequestFailed
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.peerbook import PeerBook
from meshd.testing import eventually
from tests.integration.p2p_helpers import LOOPBACK, NET_A, open_hosts, wait_until


async def manage(nursery: trio.Nursery, host: P2PHost, degree: Degree,
                 bootstrap: list[str], book: PeerBook | None = None,
                 prune_grace: float = 0.0) -> ConnectionManager:
    manager = ConnectionManager(host, book or PeerBook(), None, degree, bootstrap,
                                rng=random.Random(1), prune_grace=prune_grace)
    await nursery.start(manager.run)
    return manager


async def test_spokes_find_each_other_through_peer_exchange() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A, NET_A) as (hub, b, c, d), \
                trio.open_nursery() as nursery:
            hub_address = [hub.listen_addrs()[0]]
            await manage(nursery, hub, Degree(0, 3, 10), [])
            spokes = [await manage(nursery, s, Degree(3, 3, 10), hub_address)
                      for s in (b, c, d)]
            # each spoke knows only the hub; exchange tells it of the others
            for spoke in (b, c, d):
                await wait_until(spoke, lambda s=spoke: s.peer_count() >= 1)
            for manager in spokes:
                await manager.exchange_with(hub.peer_id)
                await manager.maintain()
            for spoke in (b, c, d):
                await wait_until(spoke, lambda s=spoke: s.peer_count() == 3)
            nursery.cancel_scope.cancel()


async def test_above_the_high_watermark_connections_are_pruned() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A, NET_A) as (hub, b, c, d), \
                trio.open_nursery() as nursery:
            await manage(nursery, hub, Degree(0, 1, 2), [])
            for spoke in (b, c, d):  # each succeeds; spokes never disconnect by themselves
                await spoke.connect(hub.listen_addrs()[0])
            # The hub's manager prunes (on the membership change) down to its target.
            await wait_until(hub, lambda: hub.peer_count() == 1)
            # and the pruned spokes see it: exactly one keeps its connection
            await eventually(lambda: sum(s.peer_count() for s in (b, c, d)) == 1,
                             timeout=10, interval=0.02, what="exactly one spoke to stay connected")
            nursery.cancel_scope.cancel()


async def test_new_connections_are_not_pruned_during_the_grace_period() -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A, NET_A) as (hub, b, c, d), \
                trio.open_nursery() as nursery:
            manager = await manage(nursery, hub, Degree(0, 1, 2), [], prune_grace=3600)
            for spoke in (b, c, d):
                await spoke.connect(hub.listen_addrs()[0])
            await wait_until(hub, lambda: hub.peer_count() == 3)
            await manager.maintain()  # above the high watermark, but all are new
            assert hub.peer_count() == 3
            nursery.cancel_scope.cancel()


async def test_a_restarted_node_rejoins_from_its_book_without_bootstrap(tmp_path: object) -> None:
    with trio.fail_after(60):
        async with open_hosts(NET_A) as (survivor,):
            seed = os.urandom(32)
            # First life: meet the survivor, and save the book.
            async with open_p2p_host(seed, LOOPBACK, NET_A) as first, \
                    trio.open_nursery() as nursery:
                book = PeerBook()
                await manage(nursery, first, Degree(1, 1, 4), [], book)
                await first.connect(survivor.listen_addrs()[0])
                await ConnectionManager(first, book, None, Degree(), []).maintain()
                nursery.cancel_scope.cancel()
            assert survivor.peer_id in book.peers
            peerbook.save(book, tmp_path)  # type: ignore[arg-type]
            # Second life: no bootstrap at all, only the saved book.
            async with open_p2p_host(seed, LOOPBACK, NET_A) as second, \
                    trio.open_nursery() as nursery:
                await manage(nursery, second, Degree(1, 1, 4), [],
                             peerbook.load(tmp_path))  # type: ignore[arg-type]
                await wait_until(second, lambda: second.peer_count() == 1)
                nursery.cancel_scope.cancel()


async def test_a_malformed_peer_exchange_request_is_refused() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b), trio.open_nursery() as nursery:
            await manage(nursery, a, Degree(0, 1, 4), [])
            await b.connect(a.listen_addrs()[0])
            with pytest.raises(DirectRequestFailed, match="not a RequestPeers") as refused:
                await b.direct.request(a.peer_id, "peers", b"\xff\xff\xff")
            assert refused.value.code == Code.CODE_INVALID
            nursery.cancel_scope.cancel()
