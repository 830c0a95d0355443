"""The missing-past buffer and ledger peer scores (docs/ledger.md §8.3, §8.4)."""

from __future__ import annotations

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import entry
from meshcore.ledger.entry import Verified
from meshd.ledger.awaiting_past import WaitingRoom
from meshd.ledger.sender_scores import BLOCK_SECONDS, INVALID_ENTRY_COST, SenderScores

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
SEED = bytes(range(1, 33))


def made(seq: int, memo: str = "") -> Verified:
    body = ledger_pb2.EntryBody(network_id=NET, author=entry.public_key(SEED), seq=seq,
                                prev=b"" if seq == 1 else bytes([seq]) * 32,
                                transfer=ledger_pb2.Transfer(to=bytes(32), amount=1, memo=memo))
    return entry.verify(entry.sign(SEED, body), NET)


def test_an_entry_is_retried_when_what_it_waits_for_is_stored() -> None:
    room = WaitingRoom()
    a, b = made(2), made(3)
    room.add(a, "p1", [b"x" * 32, b"y" * 32], now=0)
    room.add(b, "p2", [b"x" * 32], now=0)
    room.add(b, "p2", [b"x" * 32], now=0)  # twice: kept once
    assert len(room) == 2 and set(room.missing()) == {b"x" * 32, b"y" * 32}
    ready = room.ready(b"x" * 32)
    assert sorted(h.hash for h, _ in ready) == sorted([a.hash, b.hash])
    assert len(room) == 0 and room.bytes == 0 and room.missing() == []
    assert room.ready(b"y" * 32) == []  # a left the room with its other wish


def test_the_room_is_bounded_per_sender_in_total_and_in_time() -> None:
    room = WaitingRoom(max_entries=3, max_per_sender=2, max_seconds=10)
    items = [made(i + 2, memo=str(i)) for i in range(5)]
    room.add(items[0], "p1", [b"m" * 32], now=0)
    room.add(items[1], "p1", [b"m" * 32], now=1)
    room.add(items[2], "p1", [b"m" * 32], now=2)  # p1's oldest goes
    assert items[0].hash not in room and len(room) == 2
    room.add(items[3], "p2", [b"m" * 32], now=3)
    room.add(items[4], "p2", [b"m" * 32], now=4)  # the oldest overall goes
    assert items[1].hash not in room and len(room) == 3 and room.evicted == 2
    assert room.expire(now=12.5) == 1  # items[2], added at 2
    assert len(room) == 2


def test_a_score_falls_with_each_invalid_entry_and_recovers_with_time() -> None:
    scores = SenderScores()
    assert not scores.penalise("p", 50, now=0)
    assert scores.score("p", now=0) == -50
    assert scores.score("p", now=60) == -40  # 10 points a minute
    assert scores.penalise("p", 60, now=60)  # -100: block it
    assert scores.score("p", now=60) == 0  # starts again after the block
    assert scores.penalise("q", INVALID_ENTRY_COST, now=0)  # one invalid entry suffices
    scores.penalise("r", 10, now=0)
    scores.forget_recovered(now=61)
    assert scores.score("r", now=61) == 0
    assert BLOCK_SECONDS == 600
