"""Kademlia random walks: a node learns of peers nobody introduced it to."""

from __future__ import annotations

import trio

from tests.integration.p2p_helpers import NET_A, open_hosts, wait_until


async def test_a_random_walk_fills_the_routing_table_through_a_chain() -> None:
    # a - b - c: a knows only b. A random walk (py-libp2p's RTRefreshManager,
    # enabled by meshd: every 2 minutes, here triggered) asks b for random keys
    # and so learns c, which enters a's routing table once admitted.
    with trio.fail_after(60):
        async with open_hosts(NET_A, NET_A, NET_A) as (a, b, c):
            await c.connect(b.listen_addrs()[0])
            await a.connect(b.listen_addrs()[0])
            kad = a.dht._dht  # the py-libp2p KadDHT under meshd's wrapper
            manager = kad.rt_refresh_manager
            assert manager is not None, "random walks are off"
            done = trio.Event()
            manager.add_refresh_done_callback(done.set)
            await manager.trigger_refresh()
            await done.wait()
            await wait_until(a, lambda: a.membership.is_admitted(c.peer_id))
            assert c.peer_id in {str(p) for p in kad.routing_table.get_peer_ids()}


async def test_random_walks_run_every_ten_minutes_each_node_at_its_own_pace() -> None:
    # Upstream walks every 120 s on every node; 30 daemons started together
    # walked together, a burst of connections that tripled the gossip p99
    # (docs/py-libp2p.md#found-random-walk-every-two-minutes).
    import inspect

    from libp2p.discovery.random_walk.rt_refresh_manager import RTRefreshManager

    from meshd.p2p.dht import RANDOM_WALK_INTERVAL

    # The periodic task sleeps for the attribute meshd sets, read at each turn.
    assert "trio.sleep(self.refresh_interval)" in inspect.getsource(
        RTRefreshManager._periodic_refresh_task)
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            intervals = []
            for host in (a, b):
                manager = host.dht._dht.rt_refresh_manager
                assert manager is not None, "random walks are off"
                intervals.append(manager.refresh_interval)
    assert all(0.8 * RANDOM_WALK_INTERVAL <= i <= 1.2 * RANDOM_WALK_INTERVAL for i in intervals)
    assert intervals[0] != intervals[1]
    assert RANDOM_WALK_INTERVAL >= 600
