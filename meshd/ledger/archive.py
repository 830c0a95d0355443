"""Old settlements on disk, so a node's memory does not grow with every epoch.

docs/ledger.md §9 "Settled states". :class:`meshd.ledger.settlements.Settlements`
keeps the newest settled states in memory; what it needs of older epochs
lives here, in ``settlements.sqlite`` next to the ledger:

* ``decisions``: each final epoch's round, value, state root and certificate;
* ``cut_epochs``: for each entry of a decided cut, the first epoch whose cut
  held it (what keeps a later settlement from taking it again);
* ``ahead``: entries of earlier cuts dated at or after the epoch they were
  settled again in (the reduced cut's second part, settle.py);
* ``checkpoints``: every CHECKPOINT_EVERY-th settled state, pickled.

With these an old state is recomputed from the checkpoint below it: the same
``settle`` over the same cuts gives the same state. Everything here is a
function of the stored entries: the file is deleted and rebuilt at every start
(the settlements are replayed from the certificates anyway), so it needs no
durability (no journal, no fsync) and no migrations. Pickle is safe here for
that reason: the file is written by this process since it started.

Not thread-safe: Settlements calls it under its lock.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from meshcore.ledger.state import Settled

ARCHIVE_FILE = "settlements.sqlite"
CHECKPOINT_EVERY = 64  # epochs between states kept on disk: at most 63 settles to recompute one

SCHEMA = """
CREATE TABLE decisions (
    epoch  INTEGER PRIMARY KEY,
    round  INTEGER NOT NULL,
    value  BLOB NOT NULL,
    root   BLOB NOT NULL,
    certificate BLOB NOT NULL,
    certificate_author BLOB NOT NULL
);
CREATE TABLE cut_epochs (
    hash  BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX cut_epochs_by_epoch ON cut_epochs (epoch);
CREATE TABLE ahead (
    epoch INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (epoch, hash)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    epoch INTEGER PRIMARY KEY,
    state BLOB NOT NULL
);
"""

DecisionRow = tuple[int, int, bytes, bytes, bytes, bytes]


class SettlementArchive:
    """See the module docstring. ``path`` None: in memory (tests)."""

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            for stale in (path, path.with_name(path.name + "-journal")):
                stale.unlink(missing_ok=True)
        self._db = sqlite3.connect(":memory:" if path is None else path,
                                   isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path) -> SettlementArchive:
        return cls(data_dir / ARCHIVE_FILE)

    def close(self) -> None:
        self._db.close()

    # --- a decided epoch ------------------------------------------------------------

    def add(self, decision: DecisionRow, new: Iterable[bytes], ahead: Iterable[bytes],
            state: Settled) -> None:
        """Record the decision of epoch ``decision[0]``, its cut (``new``: entries no
        earlier cut held; ``ahead``: entries of earlier cuts settled again) and,
        every CHECKPOINT_EVERY epochs, its state."""
        epoch = decision[0]
        self._db.execute("BEGIN")
        try:
            self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                             decision)
            self._db.executemany("INSERT OR IGNORE INTO cut_epochs VALUES (?, ?)",
                                 ((h, epoch) for h in new))
            self._db.executemany("INSERT OR IGNORE INTO ahead VALUES (?, ?)",
                                 ((epoch, h) for h in ahead))
            if epoch % CHECKPOINT_EVERY == 0:
                self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                                 (epoch, pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- reads ----------------------------------------------------------------------

    def decision(self, epoch: int) -> DecisionRow | None:
        row = self._db.execute("SELECT * FROM decisions WHERE epoch = ?", (epoch,)).fetchone()
        if row is None:
            return None
        return int(row[0]), int(row[1]), row[2], row[3], row[4], row[5]

    def cut_epoch(self, entry_hash: bytes) -> int | None:
        """The first decided epoch whose cut held the entry (None: none yet)."""
        row = self._db.execute("SELECT epoch FROM cut_epochs WHERE hash = ?",
                               (entry_hash,)).fetchone()
        return int(row[0]) if row else None

    def cut_of(self, epoch: int) -> list[bytes]:
        """The reduced cut ``epoch`` was settled with: its new part and its ahead part."""
        new = self._db.execute("SELECT hash FROM cut_epochs WHERE epoch = ?", (epoch,))
        ahead = self._db.execute("SELECT hash FROM ahead WHERE epoch = ?", (epoch,))
        return [r[0] for r in new] + [r[0] for r in ahead]

    def checkpoint_at_or_before(self, epoch: int) -> Settled | None:
        row = self._db.execute("SELECT state FROM checkpoints WHERE epoch <= ? "
                               "ORDER BY epoch DESC LIMIT 1", (epoch,)).fetchone()
        if row is None:
            return None
        state = pickle.loads(row[0])
        assert isinstance(state, Settled)
        return state

    def checkpoint_epoch_at_or_before(self, epoch: int) -> int | None:
        row = self._db.execute("SELECT max(epoch) FROM checkpoints WHERE epoch <= ?",
                               (epoch,)).fetchone()
        return None if row[0] is None else int(row[0])
