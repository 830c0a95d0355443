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

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


async def test_dial_is_fast_with_one_connection_per_peer() -> None:
    # Trap 1: with the default max_connections_per_peer=3 every dial waits ~250 ms.
    with trio.fail_after(20):
        async with open_p2p_host(os.urandom(32), LOOPBACK) as a, \
                open_p2p_host(os.urandom(32), LOOPBACK) as b:
            begun = time.monotonic()
            await b.connect(a.listen_addrs()[0])
            elapsed = time.monotonic() - begun
            assert a.peer_count() == b.peer_count() == 1
    assert elapsed < 0.15, f"dial took {elapsed * 1000:.0f} ms"


async def test_only_noise_is_offered() -> None:
    # Trap 12: by default py-libp2p also offers plaintext, secio and TLS.
    key_pair = create_new_key_pair(os.urandom(32))
    plaintext_only = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        listen_addrs=[multiaddr.Multiaddr(LOOPBACK[0])])
    with trio.fail_after(20):
        async with open_p2p_host(os.urandom(32), LOOPBACK) as ours, \
                plaintext_only.run([multiaddr.Multiaddr(LOOPBACK[0])]):
            with pytest.raises(Exception):  # noqa: B017 (py-libp2p raises several kinds)
                await plaintext_only.connect(info_from_p2p_addr(
                    multiaddr.Multiaddr(ours.listen_addrs()[0])))
            assert ours.peer_count() == 0


async def test_peer_id_comes_from_the_identity_seed_and_connections_are_reported() -> None:
    seed = os.urandom(32)
    changes: list[int] = []
    with trio.fail_after(20):
        async with open_p2p_host(seed, LOOPBACK) as a:
            async with open_p2p_host(os.urandom(32), LOOPBACK,
                                     lambda: changes.append(1)) as b:
                assert a.peer_id == peer_id_of(seed)
                assert a.listen_addrs()[0].endswith(f"/p2p/{a.peer_id}")
                await b.connect(a.listen_addrs()[0])
                assert changes  # connected notification arrived
