"""The provider's journal of its recent executions, shown to the validators that audit them.

A receipt in the ledger holds only digests: the claim names the execution
(task_id), the requester and the result's SHA-256. A validator drawn to
audit a receipt (receipt_audits.py, docs/tasks.md §5d) needs the payload, the
nonce and the result to check them against the claim and run the plugin's
rule again, and only the provider is bound to have them (a requester that
colluded would not hand them over). So the provider keeps, per execution it
signed a claim for, the ``TaskVerdictRequest`` it would hand a confirmer
(the task, its requester, the result, the proof, the claim, its signature),
and per report it made (reports.py) the ``TaskReport``, each as a
``TaskExecutionAnswer``, and serves them on ``task-execution/1.0.0`` to the
network's validators.

On disk (``executions.sqlite``, WAL, synchronous=FULL): an audit comes after
the receipt's epoch is final, and a provider that cannot show what it signed
is judged (receipt_audits.py), so an execution is durable before its claim
leaves, and a provider that restarted or lost power meanwhile still has it.
Kept for KEEP_EPOCHS epochs after the one it was journaled in (the node's
clock, not the requester's word: a task naming a far epoch cannot push the
others out), within MAX_BYTES (oldest first out) but never before
SHOWN_EPOCHS: every audit and its confirmations end within them, so the
bound can only make the journal grow past it, never cost an honest provider
an audit. Writes run in a worker thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trio

FILE_NAME = "executions.sqlite"
KEEP_EPOCHS = 24  # epochs after its own that an execution is kept for audits
SHOWN_EPOCHS = 16  # ... and kept whatever MAX_BYTES (receipt_audits.SHOW_EPOCHS + confirming)
MAX_BYTES = 256 << 20  # journaled bytes past SHOWN_EPOCHS (payloads up to 1 MiB, results 4 MiB)

SCHEMA = """
CREATE TABLE IF NOT EXISTS execution (
    task_id BLOB PRIMARY KEY,
    epoch INTEGER NOT NULL,
    size INTEGER NOT NULL,
    verdict_request BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_epoch ON execution (epoch);
"""


class ExecutionJournal:
    """Executions by task_id. Its methods block: call them from a thread."""

    def __init__(self, path: Path, *, keep_epochs: int = KEEP_EPOCHS,
                 shown_epochs: int = SHOWN_EPOCHS, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._keep_epochs = keep_epochs
        self._shown_epochs = shown_epochs
        self._max_bytes = max_bytes
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # An execution not shown when audited is judged: durable before the claim leaves.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM execution").fetchone()
        self._bytes = int(row[0])

    @classmethod
    def in_dir(cls, data_dir: Path) -> ExecutionJournal:
        return cls(data_dir / FILE_NAME)

    def add(self, task_id: bytes, epoch: int, verdict_request: bytes) -> None:
        """Journal an execution in ``epoch`` (the clock's); older ones go past the bounds."""
        with self._lock, self._transaction():
            expired = epoch - self._keep_epochs
            self._bytes -= int(self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM execution WHERE epoch < ?",
                (expired,)).fetchone()[0])
            self._db.execute("DELETE FROM execution WHERE epoch < ?", (expired,))
            known = self._db.execute("SELECT size FROM execution WHERE task_id = ?",
                                     (task_id,)).fetchone()
            self._bytes += len(verdict_request) - (int(known[0]) if known else 0)
            self._db.execute(
                "INSERT OR REPLACE INTO execution (task_id, epoch, size, verdict_request) "
                "VALUES (?, ?, ?, ?)", (task_id, epoch, len(verdict_request), verdict_request))
            while self._bytes > self._max_bytes:
                oldest = self._db.execute(
                    "SELECT task_id, size FROM execution WHERE epoch < ? "
                    "ORDER BY epoch, rowid LIMIT 1", (epoch - self._shown_epochs,)).fetchone()
                if oldest is None:
                    break  # all still auditable: over the bound until they are not
                self._db.execute("DELETE FROM execution WHERE task_id = ?", (oldest[0],))
                self._bytes -= int(oldest[1])

    def get(self, task_id: bytes) -> tuple[int, bytes] | None:
        """(epoch journaled, serialized TaskExecutionAnswer) of an execution, if kept."""
        with self._lock:
            row = self._db.execute("SELECT epoch, verdict_request FROM execution "
                                   "WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def keep(self, task_id: bytes, epoch: int, answer: bytes) -> None:
        """:meth:`add`, in a worker thread."""
        await trio.to_thread.run_sync(self.add, task_id, epoch, answer)

    async def find(self, task_id: bytes) -> tuple[int, bytes] | None:
        """:meth:`get`, in a worker thread."""
        return await trio.to_thread.run_sync(self.get, task_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


@contextlib.asynccontextmanager
async def open_execution_journal(data_dir: Path) -> AsyncIterator[ExecutionJournal]:
    """The journal in ``data_dir``, closed when the block ends (after the tasks using it)."""
    journal = await trio.to_thread.run_sync(ExecutionJournal.in_dir, data_dir)
    try:
        yield journal
    finally:
        journal.close()
