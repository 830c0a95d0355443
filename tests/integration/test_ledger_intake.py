"""Gossiped entries through the intake (meshd/ledger/intake.py) into a real store:
checked in batches on worker threads, queued in the order they came."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from mesh.ledger.v1 import ledger_pb2, sync_pb2
from meshcore.ledger.entry import EntryError, Verified
from meshd.ledger.committer import GroupCommitter
from meshd.ledger.intake import GossipIntake, hash_of
from tests.integration.test_ledger_store import ALICE, BOB, NET, Author, open_store


@dataclass
class Counters:
    received: int = 0
    invalid: int = 0


def message(*raws: bytes) -> bytes:
    return sync_pb2.LedgerEntries(entries=list(raws)).SerializeToString()


async def test_messages_are_checked_together_stored_in_order_and_bad_ones_cost(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    alice, bob = Author(ALICE), Author(BOB)
    chain = [alice.next() for _ in range(200)]
    b1 = bob.next(deps=[chain[-1].hash])  # needs the last entry of an earlier message
    forged = ledger_pb2.Entry.FromString(bob.next().raw)
    forged.signature = bytes(64)
    seen = Author(bytes(range(3, 35))).next()  # stored lately, as gossip echoes one
    penalties: list[tuple[str, str]] = []
    decided: list[tuple[str, list[EntryError | None]]] = []

    async def penalise(sender: str, why: str) -> None:
        penalties.append((sender, why))

    async def admitted(items: list[Verified], results: list[EntryError | None],
                       sender: str) -> None:
        decided.append((sender, results))

    committer = GroupCommitter(store)
    counters = Counters()
    intake = GossipIntake(committer, NET, stored_lately={seen.hash}, penalise=penalise,
                          admitted=admitted, counters=counters)
    send, receive = trio.open_memory_channel[tuple[str, bytes]](100)
    for start in range(0, len(chain), 8):  # 25 messages of 8, all waiting at once
        send.send_nowait(("peer-a", message(*(e.raw for e in chain[start:start + 8]))))
    send.send_nowait(("peer-b", message(b1.raw, b"\x01garbage", seen.raw)))
    send.send_nowait(("peer-c", b"\xff\xffnot a LedgerEntries"))
    send.send_nowait(("peer-d", message(forged.SerializeToString())))
    send.close()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            await intake.run(receive)
            nursery.cancel_scope.cancel()

    # Every good entry stored, b1 at once after the message it needs (no wait for
    # its past); the batches held several messages.
    assert store.count() == 201
    assert all(r is None for _, results in decided for r in results)
    assert sum(len(results) for _, results in decided) == 201
    assert committer.batches < 26
    # Each bad one cost its sender; the entry stored lately was not checked again.
    assert sorted((s, why.split(":")[0]) for s, why in penalties) == [
        ("peer-b", "sent an invalid entry"), ("peer-c", "sent a gossip message that is not "
                                                         "a LedgerEntries"),
        ("peer-d", "sent an invalid entry")]
    assert "signature does not verify" in dict(penalties)["peer-d"]
    assert (counters.received, counters.invalid) == (203, 2)
    assert hash_of(b1.raw) == b1.hash and hash_of(b"\xff") == b""
