"""Standing: each account's track record folded from the final settlements' records."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from meshcore.ledger import accounts
from meshcore.ledger.record import (
    Evidence,
    Offence,
    Payment,
    Record,
    Refund,
    RewardLine,
    Slash,
)
from meshd.ledger.standing import Figures, StandingIndexer, Standings, fold
from meshd.testing import eventually

PROVIDER, REQUESTER = bytes([1]) * 32, bytes([2]) * 32


def record(epoch: int, *, receipts: int = 0, slashed: bool = False,
           paid: int = 0) -> Record:
    lines = [RewardLine("uptime", PROVIDER, 950, 10, "uptime.lower_median")]
    if receipts:
        lines.append(RewardLine("tasks", PROVIDER, 30, 5, "tasks.units", tuple(
            Evidence(bytes([i]) * 32, REQUESTER, 10, "units 10") for i in range(receipts))))
    slashes = [Slash(PROVIDER, 1000, 100, False, (
        Offence(b"\x02" + bytes(32), "failed_task", (), 100, "two verdicts"),))] if slashed else []
    payments = [Payment(bytes(32), REQUESTER, bytes(32), PROVIDER, paid, paid, burned=2,
                        units=10)] if paid else []
    refunds = [Refund(REQUESTER, bytes(32), 7)] if paid else []
    return Record(epoch, 100, lines=tuple(lines), slashes=tuple(slashes),
                  payments=tuple(payments), refunds=tuple(refunds))


def test_a_record_folds_into_each_account_it_names() -> None:
    after = fold({}.get, 3, record(3, receipts=3, paid=20))
    assert after[PROVIDER] == Figures(since_epoch=3, receipts=3, units=30, uptime_epochs=1,
                                      earned=18)
    assert after[REQUESTER] == Figures(since_epoch=3, paid=20, refunded=7)
    again = fold(after.get, 4, record(4, slashed=True))
    assert again[PROVIDER] == Figures(since_epoch=3, receipts=3, units=30, uptime_epochs=2,
                                      offences=1, failed_tasks=1, last_offence_epoch=4,
                                      slashed=100, earned=18)
    assert REQUESTER not in again  # only the accounts the record names
    # A line without points (an attestation that counted for nothing) is no uptime.
    idle = Record(5, 100, lines=(RewardLine("uptime", PROVIDER, 0, 0, "uptime.too_few"),))
    assert fold(again.get, 5, idle) == {}


def test_standings_fold_each_epoch_once_in_order_and_keep_them(tmp_path: Path) -> None:
    path = tmp_path / "standing.sqlite"
    peer = accounts.peer_id_of(PROVIDER)
    standings = Standings(path, "net-a")
    assert standings.of(peer).through_epoch == -1 and standings.of(peer).receipts == 0
    standings.add_epoch(1, record(1, receipts=1))  # not the next one: ignored
    standings.add_epoch(0, record(0, receipts=1))
    standings.add_epoch(0, record(0, receipts=1))  # folded already: ignored
    standings.add_epoch(1, record(1, receipts=2, slashed=True))
    shown = standings.of(peer)
    assert (shown.through_epoch, shown.since_epoch, shown.receipts, shown.failed_tasks,
            shown.last_offence_epoch, shown.slashed) == (1, 0, 3, 1, 1, 100)
    standings.close()
    reopened = Standings(path, "net-a")
    assert reopened.of(peer) == shown
    reopened.close()
    # A data directory reused for another network starts over.
    other = Standings(path, "net-b")
    assert other.through == -1 and other.of(peer).receipts == 0
    other.close()


def test_amounts_past_64_bits_are_kept_exactly(tmp_path: Path) -> None:
    standings = Standings(tmp_path / "standing.sqlite", "net")
    huge = 10**30
    standings.add_epoch(0, record(0, paid=huge))
    assert standings.of(accounts.peer_id_of(PROVIDER)).earned == huge - 2
    assert standings.of(accounts.peer_id_of(REQUESTER)).paid == huge


def test_a_failed_write_folds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "standing.sqlite"
    standings = Standings(path, "net")
    broken = record(0, receipts=1)
    monkeypatch.setattr(standings, "_set_meta", _fail)
    with pytest.raises(sqlite3.OperationalError):
        standings.add_epoch(0, broken)
    assert standings.through == -1
    assert standings.of(accounts.peer_id_of(PROVIDER)).receipts == 0  # rolled back


def _fail(key: str, value: str) -> None:
    raise sqlite3.OperationalError("disk I/O error")


class _Ledger:
    """What StandingIndexer reads of a Ledger: epochs made final by hand, one of them
    (epoch 1, once) not at hand, as after a data directory was restored."""

    def __init__(self, standings: Standings) -> None:
        self.standings = standings
        self.final_epoch = -1
        self._finality = trio.Event()
        self.missing = {1}

    async def next_final(self, after: int) -> int:
        while self.final_epoch <= after:
            await self._finality.wait()
        return self.final_epoch

    def finalize(self, epoch: int) -> None:
        self.final_epoch = epoch
        self._finality.set()
        self._finality = trio.Event()

    def settled_at(self, epoch: int) -> SimpleNamespace:
        if epoch in self.missing:
            self.missing.discard(epoch)
            raise RuntimeError("the archive was cut back")
        return SimpleNamespace(record=record(epoch, receipts=1))


async def test_the_indexer_follows_final_epochs_and_outlives_a_failure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    standings = Standings(tmp_path / "standing.sqlite", "net")
    ledger = _Ledger(standings)
    async with trio.open_nursery() as nursery:
        await nursery.start(StandingIndexer(ledger).run)  # type: ignore[arg-type]
        ledger.finalize(0)
        await eventually(lambda: standings.through == 0, timeout=10, what="epoch 0 folded")
        ledger.finalize(1)  # not at hand: logged, and tried again at the next one
        await eventually(lambda: "could not fold an epoch" in caplog.text, timeout=10,
                         what="the failure logged")
        assert standings.through == 0
        ledger.finalize(2)
        await eventually(lambda: standings.through == 2, timeout=10, what="epochs 1, 2")
        nursery.cancel_scope.cancel()
    assert standings.of(accounts.peer_id_of(PROVIDER)).receipts == 3
