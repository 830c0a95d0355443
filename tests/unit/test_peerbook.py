"""The peer book: learning, backoff with jitter, bounds, persistence."""

from __future__ import annotations

import random
from pathlib import Path

from meshd.p2p import peerbook
from meshd.p2p.peerbook import BACKOFF_MAX, MAX_PEERS, PeerBook

A = "/ip4/10.0.0.1/tcp/4001"


def test_learns_only_dialable_addresses_and_merges() -> None:
    book = PeerBook()
    book.learn("p1", ["/ip4/0.0.0.0/tcp/1", f"{A}/p2p/p1", "/ip4/10.0.0.2/udp/1", A], 5.0)
    assert book.peers["p1"].addrs == [A]
    book.learn("p1", ["/ip4/10.0.0.9/tcp/2"], 7.0)
    assert book.peers["p1"].addrs == ["/ip4/10.0.0.9/tcp/2", A]
    assert book.peers["p1"].last_seen == 7.0
    book.learn("p2", ["/ip6/::/tcp/1"], 1.0)  # nothing dialable: not learned
    assert "p2" not in book.peers
    assert book.peers["p1"].address() == "/ip4/10.0.0.9/tcp/2/p2p/p1"


def test_relay_addresses_are_kept_to_reach_a_node_behind_nat() -> None:
    relay = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
    circuit = f"{A}/p2p/{relay}/p2p-circuit"
    book = PeerBook()
    book.learn("p1", ["/ip4/192.168.1.10/tcp/4001", circuit,
                      f"{circuit}/p2p/p1",  # names the target: not an address of p1's to keep
                      f"/ip4/0.0.0.0/tcp/1/p2p/{relay}/p2p-circuit",  # no relay to dial
                      "/p2p-circuit"], 5.0)
    assert book.peers["p1"].addrs == ["/ip4/192.168.1.10/tcp/4001", circuit]


def test_backoff_doubles_with_jitter_and_resets_on_success() -> None:
    book, rng = PeerBook(), random.Random(7)
    book.learn("p1", [A], 1.0)
    delays = []
    for _ in range(12):
        book.dialled("p1", False, now=100.0, rng=rng)
        delays.append(book.peers["p1"].retry_at - 100.0)
    for failures, delay in enumerate(delays, start=1):
        nominal = min(2 ** (failures - 1), BACKOFF_MAX)
        assert nominal * 0.5 <= delay <= nominal * 1.5
    assert book.candidates(set(), now=100.0) == []
    book.dialled("p1", True, now=100.0, rng=rng)
    assert [p.peer_id for p in book.candidates(set(), now=100.0)] == ["p1"]


def test_candidates_exclude_and_order_by_recency() -> None:
    book = PeerBook()
    book.learn("old", [A], 1.0)
    book.learn("new", ["/ip4/10.0.0.2/tcp/1"], 9.0)
    book.learn("me", ["/ip4/10.0.0.3/tcp/1"], 5.0)
    assert [p.peer_id for p in book.candidates({"me"}, now=0.0)] == ["new", "old"]


def test_bounded_forgets_the_least_recently_seen() -> None:
    book = PeerBook()
    for i in range(MAX_PEERS + 10):
        book.learn(f"p{i}", [A], float(i))
    assert len(book.peers) == MAX_PEERS
    assert "p0" not in book.peers and f"p{MAX_PEERS + 9}" in book.peers


def test_save_and_load(tmp_path: Path) -> None:
    book = PeerBook()
    book.learn("p1", [A], 3.0)
    peerbook.save(book, tmp_path)
    assert not book.dirty
    loaded = peerbook.load(tmp_path)
    assert loaded.peers["p1"].addrs == [A] and loaded.peers["p1"].last_seen == 3.0


def test_a_corrupt_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    (tmp_path / peerbook.PEERS_FILE).write_text("{not json")
    assert peerbook.load(tmp_path).peers == {}
    (tmp_path / peerbook.PEERS_FILE).write_text('{"peers": [{"addrs": 3}]}')
    assert peerbook.load(tmp_path).peers == {}
