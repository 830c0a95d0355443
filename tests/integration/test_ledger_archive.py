"""Old settled states leave memory and come back alike (meshd/ledger/archive.py).

One validator settles on its own (a quorum of one) against a clock that runs
fast, with a small in-memory window and frequent checkpoints, so a test of a
few seconds goes through many windows and checkpoints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import Genesis
from meshcore.ledger import entry
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.stateroot import state_root
from meshd.ledger import archive, settlements
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.ledger.settlement_driver import SettlementDriver
from meshd.testing import eventually
from tests.integration.test_ledger_settlement import ALLOCATION, make_genesis

SPEED = 100.0  # the clock runs this much faster than the wall clock
RECENT = 3
CHECKPOINT_EVERY = 8


@pytest.fixture(autouse=True)
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settlements, "RECENT_STATES", RECENT)
    monkeypatch.setattr(archive, "CHECKPOINT_EVERY", CHECKPOINT_EVERY)


@contextlib.asynccontextmanager
async def lone_validator(data_dir: Path, seed: bytes, genesis: Genesis,
                         ) -> AsyncIterator[LoneValidator]:
    started, wall = genesis.genesis_time.timestamp(), time.monotonic()

    def clock() -> float:
        return started + (time.monotonic() - wall) * SPEED

    async with open_ledger(data_dir, seed, genesis, clock=clock) as ledger, \
            trio.open_nursery() as nursery:
        node = LoneValidator(ledger)

        async def settle() -> None:
            with node.settling:
                await SettlementDriver(ledger, clock=clock, close_wait=0.0).run()
            node.stopped.set()

        nursery.start_soon(settle)
        yield node
        nursery.cancel_scope.cancel()


@dataclass
class LoneValidator:
    ledger: Ledger
    settling: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)

    async def stop_settling(self, stored: entry.Verified) -> None:
        """Stop the driver, then wait until what it handed the committer is
        stored: re-appending an entry already stored queues behind it."""
        self.settling.cancel()
        await self.stopped.wait()
        await self.ledger.committer.append(stored)


async def test_old_states_leave_memory_and_are_recomputed_alike_also_after_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed, other = os.urandom(32), os.urandom(32)
    genesis = make_genesis([seed], dt.datetime.now(dt.UTC).replace(microsecond=0), [other])
    other_key = entry.public_key(other)
    async with lone_validator(tmp_path, seed, genesis) as node:
        ledger = node.ledger
        paid = 0
        while ledger.final_epoch < 40:
            await ledger.transfer(peer_id_of(other_key), 7)
            paid += 7
            await ledger.next_final(ledger.final_epoch)
        final = ledger.final_epoch
        held = ledger.settlements.epochs_in_memory()
        assert held == [-1, *range(final - RECENT, final + 1)], held
        roots = {}
        for epoch in range(final + 1):
            decision = ledger.settlements.decision(epoch)
            assert decision is not None, epoch
            roots[epoch] = decision.root  # computed when the epoch was decided
        # Every old state, recomputed from the checkpoint below it, is the one decided.
        for epoch in reversed(range(final + 1)):
            assert state_root(ledger.settled_at(epoch)) == roots[epoch], epoch  # type: ignore[arg-type]
        assert ledger.settlements.epochs_in_memory() == held  # recomputed ones are cached apart
        explained = await ledger.explain_rewards(2)
        assert explained.epoch == 2

        # An entry built on an old final epoch is judged against that epoch's state.
        old = ledger.settlements.decision(5)
        assert old is not None
        body = ledger_pb2.EntryBody(
            network_id=genesis.network_id, author=other_key, seq=1, prev=b"",
            deps=[old.certificate], epoch=6,
            transfer=ledger_pb2.Transfer(to=ledger.key, amount=ALLOCATION // 2))
        late = entry.verify(entry.sign(other, body), genesis.network_id)
        await ledger.committer.append(late)
        await eventually(lambda: ledger.settled.account(other_key).canon_seq == 1,
                         timeout=30, interval=0.05, what="the late transfer to settle")
        assert ledger.settled.account(other_key).liquid == ALLOCATION + paid - ALLOCATION // 2
        # No epoch may settle between reading the final one and the restart.
        await node.stop_settling(late)
        final = ledger.final_epoch
        for epoch in range(final + 1):
            decision = ledger.settlements.decision(epoch)
            assert decision is not None
            roots[epoch] = decision.root

    # A restart takes up the archive (no settling since genesis): the same states.
    caplog.set_level(logging.INFO, logger="meshd.ledger")
    async with open_ledger(tmp_path, seed, genesis) as again:
        assert again.final_epoch == final
        assert taken_up(caplog) == [final]
        for epoch in range(final + 1):
            assert state_root(again.settled_at(epoch)) == roots[epoch], epoch  # type: ignore[arg-type]
        assert len(again.settlements.epochs_in_memory()) == RECENT + 2

    # An archive ahead of the store (a decision recorded while its certificate
    # was judged, then a crash before the store committed it) is cut back.
    with sqlite3.connect(tmp_path / archive.ARCHIVE_FILE) as db:
        db.execute("INSERT INTO decisions VALUES (?, 1, ?, ?, ?, ?)",
                   (final + 1, os.urandom(32), os.urandom(32), os.urandom(32), other_key))
    caplog.clear()
    async with open_ledger(tmp_path, seed, genesis) as again:
        assert taken_up(caplog) == [final]
        assert again.final_epoch == final and again.settlements.decision(final + 1) is None

    # An archive written by other code (another version) is rebuilt by replay.
    with sqlite3.connect(tmp_path / archive.ARCHIVE_FILE) as db:
        db.execute("UPDATE meta SET value = 'older code' WHERE key = 'code'")
    caplog.clear()
    async with open_ledger(tmp_path, seed, genesis) as again:
        assert taken_up(caplog) == []
        assert any("written by other code" in r.getMessage() for r in caplog.records)
        assert again.final_epoch == final
        assert state_root(again.settled_at(final // 2)) == roots[final // 2]  # type: ignore[arg-type]


def taken_up(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.epoch for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "settlements taken up from the archive"]


async def test_an_entry_on_an_epoch_no_one_settled_is_still_refused(tmp_path: Path) -> None:
    """The archive answers for final epochs only: an entry claiming to build on
    a settlement this node never made is refused as before, not recomputed."""
    seed = os.urandom(32)
    genesis = make_genesis([seed], dt.datetime.now(dt.UTC).replace(microsecond=0), [])
    async with lone_validator(tmp_path, seed, genesis) as node:
        ledger = node.ledger
        await ledger.next_final(8)
        with pytest.raises(settlements.SettlementUnknown):
            ledger.settlements.settled(ledger.final_epoch + 5)
        assert ledger.settled_at(ledger.final_epoch + 5) is None
        assert ledger.settled_at(-2) is None
