"""A node's own chain: where its next entry goes (meshd/ledger/ledger.py, Ledger._append)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import accounts, entry
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.p2p.host import peer_id_of
from tests.integration.test_ledger_settlement import make_genesis


async def test_own_writes_keep_the_head_and_entries_stored_by_sync_move_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed, other = os.urandom(32), os.urandom(32)
    genesis = make_genesis([seed], dt.datetime.now(dt.UTC).replace(microsecond=0), [other])
    reloads: list[int] = []
    load_own_chain = Ledger.load_own_chain

    async def counted(ledger: Ledger) -> None:
        reloads.append(1)
        await load_own_chain(ledger)

    monkeypatch.setattr(Ledger, "load_own_chain", counted)
    async with open_ledger(tmp_path, seed, genesis) as ledger:
        reloads.clear()  # opening loads the chain once
        written = [await ledger.transfer(peer_id_of(other), 1) for _ in range(3)]
        assert [w.seq for w in written] == [1, 2, 3]
        # Its own entries were appended where the head was: no re-reading.
        assert reloads == []

        # An own entry stored by another path (sync bringing back what a
        # restored data directory lacked) moves the head: the next write
        # follows it instead of forking the chain.
        body = ledger_pb2.EntryBody(
            network_id=genesis.network_id, author=ledger.key, seq=4, prev=written[-1].hash,
            epoch=ledger.entry_epoch(),
            transfer=ledger_pb2.Transfer(to=accounts.key_of(peer_id_of(other)), amount=1))
        synced = entry.verify(entry.sign(seed, body), genesis.network_id)
        await ledger.committer.append(synced)
        after = await ledger.transfer(peer_id_of(other), 1)
        assert (after.seq, after.body.prev) == (5, synced.hash)
        assert reloads == [1]

