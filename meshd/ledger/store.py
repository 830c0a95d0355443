"""The append-only entry store: SQLite in WAL mode, synchronous=FULL, group commit.

docs/ledger.md §9. ``synchronous=FULL`` because in WAL mode ``NORMAL`` does not
sync the WAL at commit: a committed transaction would survive SIGKILL but not a
power cut, and an acknowledged append must survive both. Group commit makes the
fsync cheap per entry: :class:`GroupCommitter` takes every pending append, up
to BATCH_ENTRIES or BATCH_WAIT, checks them in order and commits them in one
transaction, and only then answers the callers.

Append-only is enforced by the schema as well: triggers abort any UPDATE or
DELETE of an entry. Insertion order (rowid) is a topological order of the
causal graph, which ``verify`` relies on.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from meshcore.ledger import entry as entries
from meshcore.ledger import links
from meshcore.ledger.entry import EntryError, Verified

LEDGER_FILE = "ledger.sqlite"
BATCH_ENTRIES = 512
# Seconds a batch waits for more appends once it has one. 0: a batch is what
# arrived while the previous commit ran, which adapts to the load by itself.
# A fixed 5 ms capped 64 appenders at 6,300/s (each waits for its own append,
# so no 65th entry could come); with 0, 14,700/s (bench/ledger.py).
BATCH_WAIT = 0.0
QUEUE_SIZE = 4096  # appends waiting for the writer; beyond it, append() waits
LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...), well under SQLite's variable limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    rowid  INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE,
    author BLOB NOT NULL,
    seq    INTEGER NOT NULL,
    epoch  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    subject BLOB,  -- the account an entry is about besides its author (a transfer's recipient)
    raw    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_author ON entries (author, seq);
CREATE INDEX IF NOT EXISTS entries_by_subject ON entries (subject) WHERE subject IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


class PastMissing(EntryError):
    """The entry's prev or deps are not stored (yet): not invalid, not stored."""

    def __init__(self, entry: Verified, hashes: list[bytes]) -> None:
        super().__init__(f"{len(hashes)} of its prev/deps are not stored", entry.hash)
        self.hashes = hashes


@dataclass(frozen=True)
class BadEntry:
    """The first entry ``verify`` found wrong."""

    rowid: int
    hash: bytes
    author: bytes
    seq: int
    reason: str


class LedgerStore:
    """The entries table. Thread-safe; blocking: call it through a thread from trio."""

    def __init__(self, path: Path, network_id: str) -> None:
        self.path = path
        self.network_id = network_id
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path, network_id: str) -> LedgerStore:
        return cls(data_dir / LEDGER_FILE, network_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ------------------------------------------------------------------

    def get(self, entry_hash: bytes) -> Verified | None:
        with self._lock:
            row = self._db.execute("SELECT raw FROM entries WHERE hash = ?",
                                   (entry_hash,)).fetchone()
        return entries.decode_stored(row[0]) if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def by_author(self, author: bytes, after_seq: int = 0, limit: int = 1000) -> list[Verified]:
        """The author's entries from ``after_seq`` + 1 on, by seq (forks: both branches)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT raw FROM entries WHERE author = ? AND seq > ? ORDER BY seq, hash "
                "LIMIT ?", (author, after_seq, limit)).fetchall()
        return [entries.decode_stored(r[0]) for r in rows]

    def latest_by_author(self, author: bytes, limit: int) -> list[Verified]:
        """The author's ``limit`` newest entries, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT raw FROM entries WHERE author = ? ORDER BY seq DESC, hash LIMIT ?",
                (author, limit)).fetchall()
        return [entries.decode_stored(r[0]) for r in rows]

    def about(self, subject: bytes, limit: int = 1000) -> list[Verified]:
        """Entries of other authors about ``subject`` (transfers to it), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT raw FROM entries WHERE subject = ? ORDER BY rowid DESC LIMIT ?",
                (subject, limit)).fetchall()
        return [entries.decode_stored(r[0]) for r in rows]

    def last_seq(self, author: bytes) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(seq) FROM entries WHERE author = ?",
                                   (author,)).fetchone()
        return int(row[0] or 0)

    # --- writes -----------------------------------------------------------------

    def insert(self, batch: list[Verified]) -> list[EntryError | None]:
        """Check each entry's links (against the store and the batch before it)
        and commit the good ones in one durable transaction.

        Returns, per entry, None (stored, or already stored) or why it was not.
        """
        results: list[EntryError | None] = []
        pending: dict[bytes, Verified] = {}
        past = _BatchPast(self._stored_links(batch), pending)
        for item in batch:
            if past.get(item.hash) is not None:
                results.append(None)  # already stored: appending is idempotent
                continue
            absent = links.missing(item, past)
            if absent:
                results.append(PastMissing(item, absent))
                continue
            try:
                links.check(item, past)
            except EntryError as exc:
                results.append(exc)
                continue
            pending[item.hash] = item
            results.append(None)
        if pending:
            rows = [(v.hash, v.author, v.seq, v.body.epoch, v.kind, _subject(v), v.raw)
                    for v in pending.values()]
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO entries (hash, author, seq, epoch, kind, subject, raw) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")  # synchronous=FULL: durable when this returns
        return results

    def _stored_links(self, batch: list[Verified]) -> dict[bytes, _Seen]:
        """(author, seq) of the stored entries among the batch and its prevs and deps.

        One query per LOOKUP_CHUNK hashes, reading the columns written from the
        same entry as ``raw``: looking each hash up with ``get`` (a query and a
        protobuf decode each, twice per link) took half the time a 64-entry batch
        spent in ``insert``, fsync included (bench/ledger.py).
        """
        wanted: set[bytes] = set()
        for item in batch:
            wanted.add(item.hash)
            if item.body.prev:
                wanted.add(item.body.prev)
            wanted.update(item.body.deps)
        hashes = list(wanted)
        found: dict[bytes, _Seen] = {}
        with self._lock:
            for start in range(0, len(hashes), LOOKUP_CHUNK):
                chunk = hashes[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                for entry_hash, author, seq in self._db.execute(
                        f"SELECT hash, author, seq FROM entries WHERE hash IN ({marks})", chunk):
                    found[entry_hash] = _Seen(author, seq)
        return found

    # --- verification -----------------------------------------------------------

    def rows(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(rowid, hash, raw) in insertion order, read in pages."""
        last = 0
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT rowid, hash, raw FROM entries WHERE rowid > ? ORDER BY rowid "
                    "LIMIT 1000", (last,)).fetchall()
            if not page:
                return
            yield from page
            last = page[-1][0]

    def verify(self) -> tuple[int, BadEntry | None]:
        """Re-check every entry in insertion order: (entries checked, first bad one)."""
        with self._lock:
            quick = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            return 0, BadEntry(0, b"", b"", 0, f"database corrupt: {quick}")
        seen: dict[bytes, tuple[bytes, int]] = {}  # hash -> (author, seq), earlier rows
        past = _SeenPast(seen)
        checked = 0
        for rowid, stored_hash, raw in self.rows():
            try:
                item = entries.verify(raw, self.network_id)
                if item.hash != stored_hash:
                    raise EntryError("stored under another hash", item.hash)
                if links.missing(item, past):
                    raise EntryError("its prev or a dep is not stored before it", item.hash)
                links.check(item, past)
            except EntryError as exc:
                decoded = _best_effort(raw)
                return checked, BadEntry(rowid, stored_hash, decoded[0], decoded[1], str(exc))
            seen[item.hash] = (item.author, item.seq)
            checked += 1
        return checked, None


def _best_effort(raw: bytes) -> tuple[bytes, int]:
    try:
        decoded = entries.decode_stored(raw)
    except Exception:
        return b"", 0
    return decoded.author, decoded.seq


def _subject(item: Verified) -> bytes | None:
    return item.body.transfer.to if item.kind == "transfer" else None


class _BatchPast:
    """The stored entries a batch refers to, and the batch's entries accepted so far."""

    def __init__(self, stored: dict[bytes, _Seen], pending: dict[bytes, Verified]) -> None:
        self._stored = stored
        self._pending = pending

    def get(self, entry_hash: bytes) -> Verified | _Seen | None:
        return self._pending.get(entry_hash) or self._stored.get(entry_hash)


class _SeenPast:
    """The rows ``verify`` has passed so far, as far as link checks need them."""

    def __init__(self, seen: dict[bytes, tuple[bytes, int]]) -> None:
        self._seen = seen

    def get(self, entry_hash: bytes) -> _Seen | None:
        found = self._seen.get(entry_hash)
        return _Seen(*found) if found is not None else None


@dataclass(frozen=True)
class _Seen:
    author: bytes
    seq: int


@dataclass
class _Append:
    entry: Verified
    done: trio.Event
    error: EntryError | None = None


class GroupCommitter:
    """Batches appends from trio into durable transactions; see the module docstring."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._send, self._receive = trio.open_memory_channel[_Append](QUEUE_SIZE)
        self._limiter = trio.CapacityLimiter(1)
        self.batches = 0
        self.appended = 0

    async def append(self, item: Verified) -> None:
        """Return once ``item`` is durably stored (or was already).

        Raises:
            PastMissing: its prev or deps are not stored.
            EntryError: its links are wrong.
        """
        request = _Append(item, trio.Event())
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        async with self._receive:
            while True:
                batch = [await self._receive.receive()]
                with trio.move_on_after(BATCH_WAIT):
                    while len(batch) < BATCH_ENTRIES:
                        batch.append(await self._receive.receive())
                while len(batch) < BATCH_ENTRIES:  # whatever else is already waiting
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    results = await trio.to_thread.run_sync(
                        self.store.insert, [a.entry for a in batch], limiter=self._limiter)
                except BaseException:
                    for request in batch:  # nobody may take the batch for durable
                        request.error = EntryError("the store failed; not appended",
                                                   request.entry.hash)
                        request.done.set()
                    raise
                self.batches += 1
                for request, error in zip(batch, results, strict=True):
                    request.error = error
                    self.appended += error is None
                    request.done.set()
