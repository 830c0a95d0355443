"""What the API shows of the ledger as it settles: final epochs as events, in order
(Ledger.watch_settlements), and one entry by its hash, with whether it took effect
(Ledger.entry)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from meshcore.ledger import entry
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.stateroot import state_root
from meshd import errors
from meshd.ledger.queries import FinalSettlement
from tests.integration.test_ledger_settlement import open_validators


async def take(stream: AsyncIterator[FinalSettlement], count: int) -> list[FinalSettlement]:
    taken: list[FinalSettlement] = []
    async for final in stream:
        taken.append(final)
        if len(taken) == count:
            break
    return taken


async def test_final_epochs_arrive_in_order_as_they_settle_and_again_from_any_epoch(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_validators(tmp_path, 1) as (node,):
            ledger = node.ledger
            # Before anything is final the stream starts at epoch 0, and waits for it.
            live = await take(ledger.watch_settlements(), 3)
            assert [f.epoch for f in live] == [0, 1, 2]
            for final in live:
                settled = ledger.settled_at(final.epoch)
                assert settled is not None
                assert final.root == state_root(settled) and final.supply == settled.supply
                assert (final.round, final.value) == (settled.decided_round,
                                                      settled.decided_value)
                assert final.minted == settled.record.minted
            # Later readers get the history from where they ask, then the news.
            assert await take(ledger.watch_settlements(from_epoch=0), 3) == live
            newest = ledger.final_epoch
            assert (await take(ledger.watch_settlements(), 1))[0].epoch == newest
            with pytest.raises(errors.InvalidArgument, match="from_epoch must be 0 or more"):
                await take(ledger.watch_settlements(from_epoch=-1), 1)


async def test_an_entry_is_found_by_its_hash_and_shows_when_it_took_effect(
        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_validators(tmp_path, 1, others=[bytes(32)]) as (node,):
            ledger = node.ledger
            paid = await ledger.transfer(peer_id_of(entry.public_key(bytes(32))), 5)
            item, canonical, epoch = await ledger.entry(paid.hash.hex().upper())
            assert item == paid and (canonical, epoch) == (False, ledger.final_epoch)
            # The lone validator closes its epoch with everything it stores: the
            # transfer is canonical in its own epoch's settlement (the next one
            # at the latest, were it written as the epoch closed).
            await take(ledger.watch_settlements(from_epoch=paid.body.epoch + 1), 1)
            _, canonical, epoch = await ledger.entry(paid.hash.hex())
            assert canonical and epoch >= paid.body.epoch + 1
            with pytest.raises(errors.NotFound, match="stores no entry 00"):
                await ledger.entry("00" * 32)
            for bad in ("", "zz" * 32, "ab" * 31):
                with pytest.raises(errors.InvalidArgument, match="64 hex digits"):
                    await ledger.entry(bad)
