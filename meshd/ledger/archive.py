"""Old settlements on disk, so a node's memory does not grow with every epoch,
and a restart does not settle its whole history again.

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
``settle`` over the same cuts gives the same state; and a start resumes from
the newest decision instead of settling every epoch since genesis again.

Everything here is a function of the stored entries, so it can always be
rebuilt: the file is deleted when it was written by other code (``meta``
holds the version and a fingerprint of the pickled classes' fields, and the
network ID) or is not readable. Each decision is one transaction (WAL, synchronous=NORMAL: a
crash keeps it whole; a power cut may lose the last ones, which the start
settles again). A decision is recorded while its certificate is judged,
before the store commits it, so after a crash the archive may be ahead of
the store: :meth:`SettlementArchive.truncate_after` drops what the store does
not hold. Pickle is safe for the same reason the file may be deleted: only
this node's own code writes it, in its own data directory.

Not thread-safe: Settlements calls it under its lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

from meshcore import genesis as genesis_module
from meshcore import version
from meshcore.governance import tally
from meshcore.ledger import record, state
from meshcore.ledger.state import Settled

log = logging.getLogger(__name__)

ARCHIVE_FILE = "settlements.sqlite"
SCHEMA_VERSION = "2"  # in meta: another one rebuilds the file
CHECKPOINT_EVERY = 64  # epochs between states kept on disk: at most 63 settles to recompute one

def code_fingerprint() -> str:
    """What the pickled checkpoints depend on: the version, and the module,
    name and fields of every dataclass of the modules whose classes they hold.
    A change of any rebuilds the archive (old checkpoints would unpickle into
    wrong objects, or not at all once a module has moved)."""
    digest = hashlib.sha256(version.__version__.encode())
    for module in (state, record, tally, genesis_module):
        for name, value in sorted(vars(module).items()):
            if dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                fields = [(f.name, str(f.type)) for f in dataclasses.fields(value)]
                digest.update(repr((module.__name__, name, fields)).encode())
    return digest.hexdigest()


SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
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
    epoch INTEGER NOT NULL,
    dated INTEGER NOT NULL  -- the entry's own epoch (body.epoch)
) WITHOUT ROWID;
CREATE INDEX cut_epochs_by_epoch ON cut_epochs (epoch);
CREATE INDEX cut_epochs_by_dated ON cut_epochs (dated);
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

    def __init__(self, network_id: str, path: Path | None = None) -> None:
        meta = {"code": code_fingerprint(), "network_id": network_id,
                "schema": SCHEMA_VERSION}
        self._db = self._open(path, meta)

    @staticmethod
    def _open(path: Path | None, meta: dict[str, str]) -> sqlite3.Connection:
        if path is not None:
            try:
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                found = dict(db.execute("SELECT key, value FROM meta").fetchall())
                if found == meta:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                    return db
                db.close()
                log.info("settlement archive written by other code: rebuilding it",
                         extra={"path": str(path)})
            except sqlite3.Error as exc:
                log.info("settlement archive missing or unreadable: rebuilding it",
                         extra={"path": str(path), "error": str(exc)})
            for stale in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                stale.unlink(missing_ok=True)
        db = sqlite3.connect(":memory:" if path is None else path, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        return db

    @classmethod
    def in_dir(cls, data_dir: Path, network_id: str) -> SettlementArchive:
        return cls(network_id, data_dir / ARCHIVE_FILE)

    def close(self) -> None:
        self._db.close()

    # --- a decided epoch ------------------------------------------------------------

    def add(self, decision: DecisionRow, new: Mapping[bytes, int], ahead: Iterable[bytes],
            state: Settled) -> None:
        """Record the decision of epoch ``decision[0]``, its cut (``new``: entries no
        earlier cut held, with their own epochs; ``ahead``: entries of earlier cuts
        settled again) and, every CHECKPOINT_EVERY epochs, its state."""
        epoch = decision[0]
        self._db.execute("BEGIN")
        try:
            self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                             decision)
            self._db.executemany("INSERT OR IGNORE INTO cut_epochs VALUES (?, ?, ?)",
                                 ((h, epoch, dated) for h, dated in new.items()))
            self._db.executemany("INSERT OR IGNORE INTO ahead VALUES (?, ?)",
                                 ((epoch, h) for h in ahead))
            if epoch % CHECKPOINT_EVERY == 0:
                self._db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)",
                                 (epoch, pickle.dumps(state, pickle.HIGHEST_PROTOCOL)))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def truncate_after(self, epoch: int) -> None:
        """Forget every decision after ``epoch`` (-1: all), with its cut and checkpoint."""
        self._db.execute("BEGIN")
        try:
            for table in ("decisions", "cut_epochs", "ahead", "checkpoints"):
                self._db.execute(f"DELETE FROM {table} WHERE epoch > ?", (epoch,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- reads ----------------------------------------------------------------------

    def newest_epoch(self) -> int:
        """The newest decided epoch recorded (-1: none)."""
        row = self._db.execute("SELECT max(epoch) FROM decisions").fetchone()
        return -1 if row[0] is None else int(row[0])

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

    def cut_before_dated_from(self, epoch: int) -> list[bytes]:
        """Entries of cuts decided before ``epoch`` dated ``epoch`` or later."""
        return [r[0] for r in self._db.execute(
            "SELECT hash FROM cut_epochs WHERE dated >= ? AND epoch < ?", (epoch, epoch))]

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
        found = pickle.loads(row[0])
        assert isinstance(found, Settled)
        return found

    def checkpoint_epoch_at_or_before(self, epoch: int) -> int | None:
        row = self._db.execute("SELECT max(epoch) FROM checkpoints WHERE epoch <= ?",
                               (epoch,)).fetchone()
        return None if row[0] is None else int(row[0])
