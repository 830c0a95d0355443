"""Regression tests for the py-libp2p workarounds meshd/p2p/host.py relies on."""

from __future__ import annotations

import os
import time

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from meshd.p2p.host import open_p2p_host, peer_id_of
from tests.integration.p2p_helpers import wait_until

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NET = "net_testtesttesttesttesttesttest"


async def test_dial_is_fast_with_one_connection_per_peer() -> None:
    # docs/py-libp2p.md#trap-1: with the default max_connections_per_peer=3 every
    # dial waits ~250 ms.
    # (connect includes the Mesh handshake: a few ms more.) The fastest of three
    # dials between fresh hosts: the trap slows every dial, while a test beside
    # this one loading both cores slowed one to 229 ms (fresh-clone run 60).
    timings = []
    for _ in range(3):
        with trio.fail_after(20):
            async with open_p2p_host(os.urandom(32), LOOPBACK, NET) as a, \
                    open_p2p_host(os.urandom(32), LOOPBACK, NET) as b:
                begun = time.monotonic()
                await b.connect(a.listen_addrs()[0])
                timings.append(time.monotonic() - begun)
                assert b.peer_count() == 1
                # a decides about b on its own handshake, a moment later
                await wait_until(a, lambda: a.peer_count() == 1)
    assert min(timings) < 0.15, f"dials took {[round(t * 1000) for t in timings]} ms"


async def test_only_noise_is_offered() -> None:
    # docs/py-libp2p.md#trap-12: by default py-libp2p also offers plaintext, secio and TLS.
    key_pair = create_new_key_pair(os.urandom(32))
    plaintext_only = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        listen_addrs=[multiaddr.Multiaddr(LOOPBACK[0])])
    with trio.fail_after(20):
        async with open_p2p_host(os.urandom(32), LOOPBACK, NET) as ours, \
                plaintext_only.run([multiaddr.Multiaddr(LOOPBACK[0])]):
            with pytest.raises(Exception):  # noqa: B017 (py-libp2p raises several kinds)
                await plaintext_only.connect(info_from_p2p_addr(
                    multiaddr.Multiaddr(ours.listen_addrs()[0])))
            assert ours.peer_count() == 0


async def test_peer_id_comes_from_the_identity_seed_and_admissions_are_reported() -> None:
    seed = os.urandom(32)
    changes: list[int] = []
    with trio.fail_after(20):
        async with open_p2p_host(seed, LOOPBACK, NET) as a, \
                open_p2p_host(os.urandom(32), LOOPBACK, NET, changes.append) as b:
            assert a.peer_id == peer_id_of(seed)
            assert a.listen_addrs()[0].endswith(f"/p2p/{a.peer_id}")
            await b.connect(a.listen_addrs()[0])
            assert changes == [1]  # b admitted a, and said so with the new count


async def test_a_stopped_host_is_seen_leaving() -> None:
    # py-libp2p leaks the sockets of a host cancelled from outside once its
    # connections are older than yamux's first RTT ping (0.5 s): the peer keeps
    # a dead connection and never sees us leave. meshd shields and closes in order.
    a_changed = trio.Event()

    def on_a_change(peer_count: int) -> None:
        nonlocal a_changed
        a_changed.set()

    with trio.fail_after(20):
        async with open_p2p_host(os.urandom(32), LOOPBACK, NET, on_a_change) as a:
            async with trio.open_nursery() as nursery:
                connected = trio.Event()

                async def run_b() -> None:
                    async with open_p2p_host(os.urandom(32), LOOPBACK, NET) as b:
                        await b.connect(a.listen_addrs()[0])
                        connected.set()
                        await trio.sleep_forever()

                nursery.start_soon(run_b)
                await connected.wait()
                # The scenario, not a wait for a condition: a connection 1 s old.
                await trio.sleep(1.0)
                a_changed = trio.Event()
                nursery.cancel_scope.cancel()  # b stops the way the daemon stops it
            with trio.move_on_after(5):
                while a.peer_count():
                    await a_changed.wait()
                    a_changed = trio.Event()
            assert a.peer_count() == 0, "the peer never saw the stopped host leave"


async def test_the_auto_connector_is_stopped() -> None:
    # docs/py-libp2p.md#trap-10: it dials every peer the DHT learns of (and
    # redials disconnected ones).
    with trio.fail_after(20):
        async with open_p2p_host(os.urandom(32), LOOPBACK, NET) as a:
            connector = a._host.get_network().auto_connector
            assert not connector._started
            await connector.maybe_connect()  # a no-op once stopped
            assert a.connection_count() == 0
