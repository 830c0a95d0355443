"""The append-only entry store: SQLite in WAL mode, synchronous=FULL.

docs/ledger.md §9. An entry is stored only once its prev and deps are stored
and it is valid against them: the store judges each entry (``rules.Judge``)
with the derived values of its past and keeps the entry's own derived values
next to it, so the next entry is judged in O(1).

``synchronous=FULL`` because in WAL mode ``NORMAL`` does not sync the WAL at
commit: a committed transaction would survive SIGKILL but not a power cut, and
an acknowledged append must survive both. The store is blocking and
thread-safe; trio reaches it through meshd/ledger/committer.py, whose group
commit makes the fsync cheap per entry.

Append-only is enforced by the schema as well: triggers abort any UPDATE or
DELETE of an entry. Insertion order (rowid) is a topological order of the
causal graph, which ``verify`` relies on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcore.ledger import entry as entries
from meshcore.ledger import links
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.rules import Derived, Judge
from meshd.ledger.settlements import Batch, Settlements, _vote_key

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...), well under SQLite's variable limit
# Entries stored last whose author, seq and derived values are kept in memory:
# the prevs and deps of new entries are nearly always among them.
RECENT_LINKS = 16384

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
CREATE INDEX IF NOT EXISTS entries_by_epoch ON entries (epoch);
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries (kind) WHERE kind = 'certificate';
CREATE INDEX IF NOT EXISTS entries_by_subject ON entries (subject) WHERE subject IS NOT NULL;
-- Derived tables: functions of the entries, rebuilt from them when missing.
-- Keyed by the entry's rowid, not its hash: rows of a batch go to the end of
-- the table, so a commit writes a few pages of it rather than one per entry.
CREATE TABLE IF NOT EXISTS derived_rows (
    row   INTEGER PRIMARY KEY,  -- entries.rowid
    value TEXT NOT NULL  -- rules.Derived as JSON
);
-- Proposals, votes and closes by (author, kind, epoch, round): consensus rules
-- look up an author's own vote of a round (close: round 0).
CREATE TABLE IF NOT EXISTS votes (
    author BLOB NOT NULL,
    kind   TEXT NOT NULL,
    epoch  INTEGER NOT NULL,
    round  INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (author, kind, epoch, round, hash)
) WITHOUT ROWID;
-- Stored entries with no stored child of the same author (several after a fork).
CREATE TABLE IF NOT EXISTS heads (
    author BLOB NOT NULL,
    hash   BLOB NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (author, hash)
) WITHOUT ROWID;
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


@dataclass(frozen=True)
class Head:
    """An entry of ``author`` with no stored child of the same author."""

    author: bytes
    seq: int
    hash: bytes


HEADS_DOMAIN = b"mesh/heads/v1\x00"


def heads_digest(heads: list[Head]) -> bytes:
    """H("mesh/heads/v1", heads): equal digests mean equal stored sets (§8.2)."""
    digest = hashlib.sha256(HEADS_DOMAIN)
    for head in heads:
        digest.update(head.author + head.seq.to_bytes(8, "big") + head.hash)
    return digest.digest()


class LedgerStore:
    """The entries table. Thread-safe; blocking: call it through a thread from trio."""

    def __init__(self, path: Path, network_id: str, judge: Judge | Settlements) -> None:
        """``judge``: a fixed Judge (tests, benchmarks), or the node's Settlements,
        which judge every kind against the store and its batch."""
        self.path = path
        self.network_id = network_id
        self._judging = judge
        self._lock = threading.RLock()
        self._recent: OrderedDict[bytes, _Seen] = OrderedDict()  # RECENT_LINKS, newest last
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._migrate_derived_by_hash()
        if isinstance(judge, Settlements):
            judge.attach(self)
        self._rebuild_derived_if_needed()

    @classmethod
    def in_dir(cls, data_dir: Path, network_id: str, judge: Judge | Settlements,
               ) -> LedgerStore:
        return cls(data_dir / LEDGER_FILE, network_id, judge)

    def judge_for(self, batch: Batch) -> Judge:
        if isinstance(self._judging, Settlements):
            return self._judging.judge(batch)
        return self._judging

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ------------------------------------------------------------------

    def get(self, entry_hash: bytes) -> Verified | None:
        with self._lock:
            row = self._db.execute("SELECT raw FROM entries WHERE hash = ?",
                                   (entry_hash,)).fetchone()
        return entries.decode_stored(row[0]) if row else None

    def get_raw(self, hashes: list[bytes]) -> list[bytes]:
        """The stored encodings of those of ``hashes`` that are stored."""
        found: list[bytes] = []
        with self._lock:
            for start in range(0, len(hashes), LOOKUP_CHUNK):
                chunk = hashes[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.extend(r[0] for r in self._db.execute(
                    f"SELECT raw FROM entries WHERE hash IN ({marks})", chunk))
        return found

    def known(self, hashes: list[bytes]) -> set[bytes]:
        """Those of ``hashes`` that are stored."""
        found: set[bytes] = set()
        with self._lock:
            for start in range(0, len(hashes), LOOKUP_CHUNK):
                chunk = hashes[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._db.execute(
                    f"SELECT hash FROM entries WHERE hash IN ({marks})", chunk))
        return found

    def derived(self, entry_hash: bytes) -> Derived | None:
        with self._lock:
            row = self._db.execute("SELECT d.value FROM entries e JOIN derived_rows d ON "
                                   "d.row = e.rowid WHERE e.hash = ?", (entry_hash,)).fetchone()
        return _unpack(row[0]) if row else None

    def count_at(self, author: bytes, seq: int) -> int:
        """How many entries of ``author`` have ``seq`` (more than 1: a fork)."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM entries WHERE author = ? AND "
                                        "seq = ?", (author, seq)).fetchone()[0])

    def votes(self, author: bytes, kind: str, epoch: int, round_: int) -> list[bytes]:
        """Hashes of ``author``'s ``kind`` entries for (epoch, round) (close: round 0)."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT hash FROM votes WHERE author = ? AND kind = ? AND epoch = ? AND "
                "round = ?", (author, kind, epoch, round_))]

    def consensus_entries(self, epoch: int) -> list[Verified]:
        """Every stored proposal, vote and close of consensus epoch ``epoch``, in
        insertion order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT e.raw FROM votes v JOIN entries e ON e.hash = v.hash "
                "WHERE v.epoch = ? ORDER BY e.rowid", (epoch,)).fetchall()
        return [entries.decode_stored(r[0]) for r in rows]

    def certificates(self) -> list[Verified]:
        """Every stored certificate, in insertion (so causal) order."""
        with self._lock:
            rows = self._db.execute("SELECT raw FROM entries WHERE kind = 'certificate' "
                                    "ORDER BY rowid").fetchall()
        return [entries.decode_stored(r[0]) for r in rows]

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

    def heads(self, after_author: bytes = b"", limit: int = 1 << 30) -> list[Head]:
        """Heads ascending by (author, hash), of authors after ``after_author``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT author, seq, hash FROM heads WHERE author > ? ORDER BY author, hash "
                "LIMIT ?", (after_author, limit)).fetchall()
        return [Head(a, s, h) for a, s, h in rows]

    def chain(self, head: bytes, from_seq: int, limit: int, max_bytes: int,
              ) -> tuple[list[bytes], bool]:
        """Encoded entries of ``head``'s prev-chain with seq ``from_seq``.. up to the
        head, ascending; at most ``limit`` entries and ``max_bytes`` (but at least
        one). Returns (entries, more): empty if ``head`` is not stored."""
        with self._lock:
            row = self._db.execute("SELECT author, seq FROM entries WHERE hash = ?",
                                   (head,)).fetchone()
            if row is None or from_seq > row[1]:
                return [], False
            author, head_seq = row
            last = min(head_seq, from_seq + limit - 1)
            total, distinct = self._db.execute(
                "SELECT count(*), count(DISTINCT seq) FROM entries WHERE author = ? "
                "AND seq BETWEEN ? AND ?", (author, from_seq, head_seq)).fetchone()
            linear = total == distinct  # no fork in the range: one entry per seq
            rows = self._db.execute(
                "SELECT seq, hash, raw FROM entries WHERE author = ? AND seq BETWEEN ? AND ? "
                "ORDER BY seq", (author, from_seq, last if linear else head_seq)).fetchall()
        if linear:
            chain = [raw for _, _, raw in rows]
        else:
            chain = _walk_back(rows, head, head_seq, from_seq, last)
        size, cut = 0, len(chain)
        for index, raw in enumerate(chain):
            size += len(raw)
            if size > max_bytes and index > 0:
                cut = index
                break
        return chain[:cut], cut < len(chain) or last < head_seq

    # --- writes -----------------------------------------------------------------

    def insert(self, batch: list[Verified]) -> list[EntryError | None]:
        """Check each entry's links and judge it (against the store and the batch
        before it), and commit the good ones in one durable transaction.

        Returns, per entry, None (stored, or already stored) or why it was not.
        """
        return self.insert_batch(batch)[0]

    def insert_batch(self, batch: list[Verified]) -> tuple[list[EntryError | None],
                                                            list[Verified]]:
        """:meth:`insert`, also returning the entries it stored (not those stored before)."""
        results: list[EntryError | None] = []
        judged = Batch()
        pending, derived = judged.entries, judged.derived
        stored = self._stored_links(batch)
        past = _BatchPast(stored, pending)
        judge = self.judge_for(judged)
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
                prev = _derived_of(item.body.prev, stored, derived) if item.body.prev else None
                deps = [_derived_of(d, stored, derived) for d in item.body.deps]
                judged.add(item, judge(item, prev, deps))
            except EntryError as exc:
                results.append(exc)
                continue
            results.append(None)
        if pending:
            self._write(list(pending.values()), derived)
        return results, list(pending.values())

    def _write(self, items: list[Verified], derived: dict[bytes, Derived]) -> None:
        rows = [(v.hash, v.author, v.seq, v.body.epoch, v.kind, _subject(v), v.raw)
                for v in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO entries (hash, author, seq, epoch, kind, subject, raw) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(_INSERT_DERIVED,
                                     [(_pack(derived[v.hash]), v.hash) for v in items])
                self._update_heads(items)
                self._index_votes(items)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")  # synchronous=FULL: durable when this returns
            for item in items:
                self._recent[item.hash] = _Seen(item.author, item.seq, derived[item.hash])
            while len(self._recent) > RECENT_LINKS:
                self._recent.popitem(last=False)

    def _index_votes(self, items: list[Verified]) -> None:
        rows = []
        for item in items:
            key = _vote_key(item)
            if key is not None:
                rows.append((item.author, *key, item.hash))
        if rows:
            self._db.executemany("INSERT OR IGNORE INTO votes (author, kind, epoch, round, "
                                 "hash) VALUES (?, ?, ?, ?, ?)", rows)

    def _update_heads(self, items: list[Verified]) -> None:
        """Each new entry becomes a head unless a child is in the batch too; its
        prev stops being one (entries arrive in causal order)."""
        children = {v.body.prev for v in items if v.body.prev}
        if children:
            self._db.executemany("DELETE FROM heads WHERE author = ? AND hash = ?",
                                 [(v.author, v.body.prev) for v in items if v.body.prev])
        self._db.executemany("INSERT OR IGNORE INTO heads (author, hash, seq) VALUES (?, ?, ?)",
                             [(v.author, v.hash, v.seq) for v in items
                              if v.hash not in children])

    def _stored_links(self, batch: list[Verified]) -> dict[bytes, _Seen]:
        """Author, seq and derived values of the stored entries among the batch
        and its prevs and deps.

        Those stored lately come from memory (RECENT_LINKS); the others from one
        query per LOOKUP_CHUNK hashes, reading the columns written from the
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
        found: dict[bytes, _Seen] = {}
        with self._lock:
            for entry_hash in wanted:
                seen = self._recent.get(entry_hash)
                if seen is not None:
                    found[entry_hash] = seen
            hashes = [h for h in wanted if h not in found]
            for start in range(0, len(hashes), LOOKUP_CHUNK):
                chunk = hashes[start:start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                for entry_hash, author, seq, value in self._db.execute(
                        f"SELECT e.hash, e.author, e.seq, d.value FROM entries e "
                        f"JOIN derived_rows d ON d.row = e.rowid WHERE e.hash IN ({marks})",
                        chunk):
                    found[entry_hash] = _Seen(author, seq, _unpack(value))
        return found

    def _migrate_derived_by_hash(self) -> None:
        """A store written before 2026-12-07 keeps derived values by entry hash
        (table ``derived``): move them to ``derived_rows``, in one transaction."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'derived'").fetchone() is None:
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO derived_rows (row, value) SELECT "
                                 "e.rowid, d.value FROM entries e JOIN derived d ON "
                                 "d.hash = e.hash")
                self._db.execute("DROP TABLE derived")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rebuild_derived_if_needed(self) -> None:
        """Recompute derived values and heads when they lag the entries (a store
        written by an older version, or derived tables dropped by hand)."""
        with self._lock:
            entries_count = self._db.execute("SELECT count(*) FROM entries").fetchone()[0]
            derived_count = self._db.execute("SELECT count(*) FROM derived_rows"
                                             ).fetchone()[0]
        if entries_count == derived_count:
            return
        derived: dict[bytes, Derived] = {}
        rows = []
        judge = self.judge_for(Batch())  # every entry judged here is stored already
        for _, _, raw in self.rows():
            item = entries.decode_stored(raw)
            prev = derived[item.body.prev] if item.body.prev else None
            derived[item.hash] = judge(item, prev, [derived[d] for d in item.body.deps])
            rows.append(item)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM derived_rows")
            self._db.execute("DELETE FROM heads")
            self._db.execute("DELETE FROM votes")
            self._db.executemany(_INSERT_DERIVED,
                                 [(_pack(derived[v.hash]), v.hash) for v in rows])
            self._update_heads(rows)
            self._index_votes(rows)
            self._db.execute("COMMIT")

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
        """Re-check every entry in insertion order: (entries checked, first bad one).

        Encoding, hash, signature, links and every validity rule are checked
        again from the raw bytes alone; the derived tables are not trusted.
        """
        with self._lock:
            quick = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            return 0, BadEntry(0, b"", b"", 0, f"database corrupt: {quick}")
        seen: dict[bytes, _Seen] = {}  # earlier rows
        past = _SeenPast(seen)
        judge = self.judge_for(Batch())
        checked = 0
        for rowid, stored_hash, raw in self.rows():
            try:
                item = entries.verify(raw, self.network_id)
                if item.hash != stored_hash:
                    raise EntryError("stored under another hash", item.hash)
                if links.missing(item, past):
                    raise EntryError("its prev or a dep is not stored before it", item.hash)
                links.check(item, past)
                prev = seen[item.body.prev].derived if item.body.prev else None
                derived = judge(item, prev, [seen[d].derived for d in item.body.deps])
            except EntryError as exc:
                decoded = _best_effort(raw)
                return checked, BadEntry(rowid, stored_hash, decoded[0], decoded[1], str(exc))
            seen[item.hash] = _Seen(item.author, item.seq, derived)
            checked += 1
        return checked, None


def _walk_back(rows: list[tuple[int, bytes, bytes]], head: bytes, head_seq: int,
               from_seq: int, last: int) -> list[bytes]:
    """The head's branch among an author's forked entries: follow prev from the
    head down to ``from_seq``; return seqs ``from_seq``..``last``, ascending."""
    by_seq: dict[int, list[tuple[bytes, bytes]]] = {}
    for seq, entry_hash, raw in rows:
        by_seq.setdefault(seq, []).append((entry_hash, raw))
    wanted, chain = head, []
    for seq in range(head_seq, from_seq - 1, -1):
        match = next((raw for h, raw in by_seq.get(seq, ()) if h == wanted), None)
        if match is None:
            return []  # a gap: cannot happen in a store that checks links
        if seq <= last:
            chain.append(match)
        wanted = entries.decode_stored(match).body.prev
    chain.reverse()
    return chain


_DERIVED_FIELDS = tuple(f.name for f in dataclasses.fields(Derived))
# (value, entry hash): the entry is stored already, in the same transaction.
_INSERT_DERIVED = ("INSERT OR REPLACE INTO derived_rows (row, value) SELECT rowid, ? "
                   "FROM entries WHERE hash = ?")


def _pack(derived: Derived) -> str:
    # Not dataclasses.astuple: it deep-copies every field, which took half of
    # insert_batch's time (bench/ledger.py).
    return json.dumps([getattr(derived, name) for name in _DERIVED_FIELDS],
                      separators=(",", ":"))


def _unpack(value: str) -> Derived:
    fields: list[Any] = [tuple(f) if isinstance(f, list) else f for f in json.loads(value)]
    return Derived(*fields)


def _derived_of(entry_hash: bytes, stored: dict[bytes, _Seen],
                batch: dict[bytes, Derived]) -> Derived:
    found = batch.get(entry_hash)
    if found is not None:
        return found
    return stored[entry_hash].derived


def _best_effort(raw: bytes) -> tuple[bytes, int]:
    try:
        decoded = entries.decode_stored(raw)
    except Exception:
        return b"", 0
    return decoded.author, decoded.seq


def _subject(item: Verified) -> bytes | None:
    """The account an entry is about besides its author: a transfer's payee, a
    penalty's offender."""
    if item.kind == "transfer":
        return item.body.transfer.to
    if item.kind == "penalty":
        return entries.decode_stored(item.body.penalty.equivocation.entry_a).author
    return None


class _BatchPast:
    """The stored entries a batch refers to, and the batch's entries accepted so far."""

    def __init__(self, stored: dict[bytes, _Seen], pending: dict[bytes, Verified]) -> None:
        self._stored = stored
        self._pending = pending

    def get(self, entry_hash: bytes) -> Verified | _Seen | None:
        return self._pending.get(entry_hash) or self._stored.get(entry_hash)


class _SeenPast:
    """The rows ``verify`` has passed so far, as far as link checks need them."""

    def __init__(self, seen: dict[bytes, _Seen]) -> None:
        self._seen = seen

    def get(self, entry_hash: bytes) -> _Seen | None:
        return self._seen.get(entry_hash)


@dataclass(frozen=True)
class _Seen:
    author: bytes
    seq: int
    derived: Derived
