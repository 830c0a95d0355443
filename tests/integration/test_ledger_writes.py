"""A node's own chain: where its next entry goes (meshd/ledger/ledger.py, Ledger._append)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import RequiredPlugin
from meshcore.ledger import accounts, entry
from meshcore.ledger.evidence_rules import encode_claim, sign_claim
from meshcore.ledger.rules import MAX_EPOCH_AHEAD
from meshd import errors
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.p2p.host import peer_id_of
from tests.integration.test_ledger_settlement import EPOCH_SECONDS, make_genesis


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



async def test_a_node_behind_the_settlements_refuses_entries_that_would_count_nothing(
        tmp_path: Path) -> None:
    """A node restarted after a long stop knows only old final epochs; the
    clock is far ahead. An entry may claim at most fin + MAX_EPOCH_AHEAD, so a
    vote or a task receipt dated by the clock cannot be written yet, and one
    dated back would be void (issue 14). It is refused with a retryable error
    instead; a transfer, whose effect does not depend on its epoch, is written."""
    seed, validator, provider = os.urandom(32), os.urandom(32), os.urandom(32)
    behind = 5 * MAX_EPOCH_AHEAD
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(
        seconds=behind * EPOCH_SECONDS)
    genesis = dataclasses.replace(make_genesis([validator], start, [seed]),
                                  plugins=(RequiredPlugin("compute", ""),))
    async with open_ledger(tmp_path, seed, genesis) as ledger:
        assert ledger.final_epoch == -1 and ledger.clock_epoch() >= behind
        with pytest.raises(errors.Unavailable, match=r"settlement catching up.*retry in"):
            ledger.entry_epoch()
        claim = encode_claim(ledger_pb2.TaskClaim(
            network_id=genesis.network_id, task_id=bytes(32), plugin="compute",
            requester=ledger.key, provider=entry.public_key(provider),
            epoch=MAX_EPOCH_AHEAD - 1, units=1, result_digest=bytes(32)))
        receipt = ledger_pb2.TaskReceipt(claim=claim, provider_signature=sign_claim(provider,
                                                                                    claim))
        with pytest.raises(errors.Unavailable, match="a task receipt written now would be "
                                                     f"dated epoch {MAX_EPOCH_AHEAD - 1}"):
            await ledger.write(task_receipt=receipt)
        with pytest.raises(errors.Unavailable, match="a vote written now"):
            await ledger.write(gov_vote=ledger_pb2.GovVote(proposal=bytes(32), option=1))
        assert await ledger.history() == []  # nothing was written

        paid = await ledger.transfer(peer_id_of(validator), 1)
        assert paid.body.epoch == MAX_EPOCH_AHEAD - 1  # as far as its past allows


async def test_several_own_entries_are_chained_and_committed_at_once(tmp_path: Path) -> None:
    seed, other = os.urandom(32), os.urandom(32)
    genesis = make_genesis([seed], dt.datetime.now(dt.UTC).replace(microsecond=0), [other])
    to = accounts.key_of(peer_id_of(other))
    async with open_ledger(tmp_path, seed, genesis) as ledger:
        first = await ledger.transfer(peer_id_of(other), 1)
        batches = ledger.committer.batches
        written = await ledger.write_many(
            [{"transfer": ledger_pb2.Transfer(to=to, amount=n)} for n in (2, 3, 4)])
        assert ledger.committer.batches == batches + 1  # one transaction, one fsync
        assert all(isinstance(w, entry.Verified) for w in written)
        assert [w.seq for w in written] == [2, 3, 4]  # type: ignore[union-attr]
        assert [w.body.prev for w in written] == [  # type: ignore[union-attr]
            first.hash, written[0].hash, written[1].hash]  # type: ignore[union-attr]
        # One that breaks a rule is refused, and so is every one after it; the
        # head stays on the last stored, where the next write goes.
        mixed = await ledger.write_many(
            [{"transfer": ledger_pb2.Transfer(to=to, amount=5)},
             {"transfer": ledger_pb2.Transfer(to=to, amount=10**30 % 2**63)},
             {"transfer": ledger_pb2.Transfer(to=to, amount=6)}])
        assert isinstance(mixed[0], entry.Verified)
        assert isinstance(mixed[1], errors.FailedPrecondition)
        assert "exceeds the author's available balance" in str(mixed[1])
        assert isinstance(mixed[2], errors.FailedPrecondition)
        after = await ledger.transfer(peer_id_of(other), 1)
        assert (after.seq, after.body.prev) == (6, mixed[0].hash)


async def test_a_reader_waits_for_an_entry_until_it_is_stored_or_its_time_is_up(
        tmp_path: Path) -> None:
    seed, other = os.urandom(32), os.urandom(32)
    genesis = make_genesis([seed], dt.datetime.now(dt.UTC).replace(microsecond=0), [other])
    async with open_ledger(tmp_path, seed, genesis) as ledger:
        first = await ledger.transfer(peer_id_of(other), 1)
        assert await ledger.stored_within(first.hash, 0) == first  # already there
        # One from another path (replication, here the committer directly) wakes
        # every reader waiting for it; a hash nobody stores is None when time is up.
        body = ledger_pb2.EntryBody(
            network_id=genesis.network_id, author=ledger.key, seq=2, prev=first.hash,
            epoch=ledger.entry_epoch(),
            transfer=ledger_pb2.Transfer(to=accounts.key_of(peer_id_of(other)), amount=1))
        later = entry.verify(entry.sign(seed, body), genesis.network_id)
        found: list[object] = []

        async def wait() -> None:
            found.append(await ledger.stored_within(later.hash, 30))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()  # both waiting
                await ledger.committer.append(later)
        assert found == [later, later]
        started = trio.current_time()
        assert await ledger.stored_within(bytes(32), 0.3) is None
        assert trio.current_time() - started >= 0.3
        assert ledger._awaited == {}  # nothing left behind
