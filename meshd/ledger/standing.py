"""Each account's track record, folded from the final settlements: a network-wide reputation.

docs/ledger.md §12.5. A node's own view of a peer (the task router's
ProviderRecord, the storage plugin's audits) is what that node has seen, and
a newcomer has seen nothing. The final settlements, though, are the same on
every node: each one's record (meshcore/ledger/record.py) says which task
receipts counted for whom, whose uptime earned a share, who was slashed and
for what, and who paid whom from which lock. Folding them epoch after epoch
gives every node the same figures for every account: receipts and units of
work, uptime epochs, offences (failed tasks among them) and what they cost,
and the market's earned, paid and refunded amounts.

This is derived data, not state: it is not in the state root and changes no
rule. It is kept in its own SQLite file (``standing.sqlite`` in the data
directory), written in one transaction per epoch together with the epoch it
has reached, so a crash never folds an epoch twice or skips one. The
indexer (:class:`StandingIndexer`) starts from epoch 0 on a ledger that has
none yet, recomputing old settlements one by one in a thread, then follows
each epoch as it becomes final.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import trio

from meshcore.ledger import accounts
from meshcore.ledger.record import Record
from meshd.plugin.api import LedgerStanding

if TYPE_CHECKING:
    from meshd.ledger.ledger import Ledger

log = logging.getLogger(__name__)

FILE_NAME = "standing.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS standing (account BLOB PRIMARY KEY, figures TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Figures:
    """One account's counters (amounts may exceed 64 bits: kept as JSON numbers)."""

    since_epoch: int = -1
    receipts: int = 0
    units: int = 0
    uptime_epochs: int = 0
    offences: int = 0
    failed_tasks: int = 0
    last_offence_epoch: int = -1
    slashed: int = 0
    earned: int = 0
    paid: int = 0
    refunded: int = 0


def fold(known_figures: Callable[[bytes], Figures | None], epoch: int,
         record: Record) -> dict[bytes, Figures]:
    """The figures of the accounts ``record`` (the settlement of ``epoch``) names, after
    it, from what ``known_figures`` gives for each before it: those accounts only."""
    out: dict[bytes, Figures] = {}

    def add(account: bytes, **more: int) -> None:
        known = out.get(account) or known_figures(account) or Figures()
        changed = {name: getattr(known, name) + value for name, value in more.items()}
        if known.since_epoch < 0:
            changed["since_epoch"] = epoch
        out[account] = replace(known, **changed)

    for line in record.lines:
        if line.pool == "tasks" and line.evidence:
            add(line.account, receipts=len(line.evidence),
                units=sum(e.value for e in line.evidence))
        elif line.pool == "uptime" and line.points > 0:
            add(line.account, uptime_epochs=1)
    for slash in record.slashes:
        add(slash.offender, offences=len(slash.offences), slashed=slash.slashed,
            failed_tasks=sum(1 for o in slash.offences if o.kind == "failed_task"))
        out[slash.offender] = replace(out[slash.offender], last_offence_epoch=epoch)
    for payment in record.payments:
        if payment.paid:
            add(payment.provider, earned=payment.paid - payment.burned)
            add(payment.requester, paid=payment.paid)
    for refund in record.refunds:
        add(refund.requester, refunded=refund.amount)
    return out


class Standings:
    """The folded figures, on disk. Its methods block: call them from a thread."""

    def __init__(self, path: Path, network_id: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Derived data: a commit lost to a power cut is folded again (the epoch
        # reached is in the same transaction), so one fsync per checkpoint will do.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        known = self._meta("network")
        if known is not None and known != network_id:  # a data directory reused: start over
            log.warning("standing index of another network dropped", extra={"network": known})
            with self._transaction():
                self._db.execute("DELETE FROM standing")
                self._db.execute("DELETE FROM meta")
        if known != network_id:
            with self._transaction():
                self._set_meta("network", network_id)
        through = self._meta("through")
        self.through = int(through) if through is not None else -1

    @classmethod
    def in_dir(cls, data_dir: Path, network_id: str) -> Standings:
        return cls(data_dir / FILE_NAME, network_id)

    def add_epoch(self, epoch: int, record: Record) -> None:
        """Fold the settlement of ``epoch``, the one after :attr:`through` (others are
        ignored: folded already, or not next)."""
        with self._lock:
            if epoch != self.through + 1:
                return
            after = fold(self._figures, epoch, record)
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO standing (account, figures) VALUES (?, ?) ON CONFLICT(account)"
                    " DO UPDATE SET figures = excluded.figures",
                    [(a, json.dumps(asdict(f))) for a, f in after.items()])
                self._set_meta("through", str(epoch))
            self.through = epoch

    def of(self, peer_id: str) -> LedgerStanding:
        key = accounts.key_of(peer_id)
        with self._lock:
            figures = self._figures(key) or Figures()
            return LedgerStanding(peer_id, self.through, **asdict(figures))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _figures(self, account: bytes) -> Figures | None:
        row = self._db.execute("SELECT figures FROM standing WHERE account = ?",
                               (account,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return Figures(**{f.name: int(data[f.name]) for f in fields(Figures) if f.name in data})

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


class WireStanding(TypedDict):
    """A standing's fields as the API's messages carry them."""

    through_epoch: int
    since_epoch: int
    receipts: int
    units: int
    uptime_epochs: int
    offences: int
    failed_tasks: int
    last_offence_epoch: int
    slashed: str
    earned: str
    paid: str
    refunded: str


def wire_fields(s: LedgerStanding) -> WireStanding:
    """``s`` as the API's messages carry it (``GetStandingResponse``, the plugin host's
    ``LedgerStanding``): amounts as decimal strings, which may pass 64 bits."""
    return WireStanding(
        through_epoch=s.through_epoch, since_epoch=s.since_epoch, receipts=s.receipts,
        units=s.units, uptime_epochs=s.uptime_epochs, offences=s.offences,
        failed_tasks=s.failed_tasks, last_offence_epoch=s.last_offence_epoch,
        slashed=str(s.slashed), earned=str(s.earned), paid=str(s.paid),
        refunded=str(s.refunded))


class StandingIndexer:
    """Folds each final settlement into the ledger's :class:`Standings`, from where it
    left off; on the trio loop."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._standings = ledger.standings

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        waited = self._standings.through
        while True:
            await self._ledger.next_final(waited)
            waited = self._ledger.final_epoch
            try:
                await self._catch_up()
            except Exception as exc:  # derived data: it must never stop the node
                log.error("the standing index could not fold an epoch; it tries again at the "
                          "next final one", exc_info=exc,
                          extra={"epoch": self._standings.through + 1})

    async def _catch_up(self) -> None:
        epoch = self._standings.through + 1
        while epoch <= self._ledger.final_epoch:
            # An old epoch is recomputed from the nearest state at hand: one
            # settlement each when they come in order, as here.
            settled = await trio.to_thread.run_sync(self._ledger.settled_at, epoch)
            if settled is None:
                raise LookupError(f"the settlement of epoch {epoch} is not at hand")
            await trio.to_thread.run_sync(self._standings.add_epoch, epoch, settled.record)
            epoch += 1
