"""The connection manager picks peers across /24 (IPv4) and /48 (IPv6) networks."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from meshd.p2p.connmgr import ConnectionManager, Degree, _network_of
from meshd.p2p.peerbook import PeerBook


def manager(book: PeerBook, seed: int) -> ConnectionManager:
    host: Any = SimpleNamespace(peer_id="self",
                                membership=SimpleNamespace(holds_off=lambda peer_id: False))
    return ConnectionManager(host, book, None, Degree(), [], rng=random.Random(seed),
                             clock=lambda: 0.0)


def book_of(addresses: dict[str, str]) -> PeerBook:
    book = PeerBook()
    for peer_id, address in addresses.items():
        book.learn(peer_id, [address], seen_at=1.0)
    return book


def test_networks_of_addresses() -> None:
    assert _network_of("/ip4/10.0.1.7/tcp/4001") == "10.0.1.0/24"
    assert _network_of("/ip6/2001:db8:1:2::5/tcp/4001") == "2001:db8:1::/48"
    assert _network_of("/dns4/boot.example.org/tcp/4001") == "boot.example.org"


def test_new_peers_come_from_networks_not_yet_connected() -> None:
    book = book_of({"member": "/ip4/10.0.1.1/tcp/1", "a1": "/ip4/10.0.1.2/tcp/1",
                    "a2": "/ip4/10.0.1.3/tcp/1", "b": "/ip4/10.0.2.1/tcp/1",
                    "c": "/ip4/10.0.3.1/tcp/1"})
    for seed in range(20):  # whatever the random order
        picked = manager(book, seed)._pick(2, {"member"})
        assert {p.peer_id for p in picked} == {"b", "c"}


def test_a_network_is_reused_only_once_every_network_has_a_peer() -> None:
    book = book_of({"a1": "/ip4/10.0.1.2/tcp/1", "a2": "/ip4/10.0.1.3/tcp/1",
                    "a3": "/ip4/10.0.1.4/tcp/1", "b": "/ip4/10.0.2.1/tcp/1"})
    for seed in range(20):
        picked = [p.peer_id for p in manager(book, seed)._pick(3, set())]
        assert len(picked) == 3 and len(set(picked)) == 3
        assert "b" in picked[:2]  # one per network first
