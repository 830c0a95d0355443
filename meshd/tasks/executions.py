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

On disk (``executions.sqlite``, WAL): an audit comes after the receipt's
epoch is final, and a provider that restarted meanwhile still has what it
signed. Kept for KEEP_EPOCHS epochs after the claim's, within MAX_BYTES
(oldest first out). Writes run in a worker thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trio

FILE_NAME = "executions.sqlite"
KEEP_EPOCHS = 24  # epochs after a claim's that its execution is kept for audits
MAX_BYTES = 256 << 20  # journaled bytes at most (payloads up to 1 MiB, results 4 MiB)

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
                 max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._keep_epochs = keep_epochs
        self._max_bytes = max_bytes
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Losing the last executions to a power cut loses their audits, not money.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM execution").fetchone()
        self._bytes = int(row[0])

    @classmethod
    def in_dir(cls, data_dir: Path) -> ExecutionJournal:
        return cls(data_dir / FILE_NAME)

    def add(self, task_id: bytes, epoch: int, verdict_request: bytes) -> None:
        """Journal an execution of ``epoch``; older ones go past the bounds."""
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
                    "SELECT task_id, size FROM execution ORDER BY epoch, rowid LIMIT 1"
                ).fetchone()
                if oldest is None or oldest[0] == task_id:
                    break  # the newest alone is over the bound: it stays until the next
                self._db.execute("DELETE FROM execution WHERE task_id = ?", (oldest[0],))
                self._bytes -= int(oldest[1])

    def get(self, task_id: bytes) -> tuple[int, bytes] | None:
        """(claim epoch, serialized TaskVerdictRequest) of an execution, if journaled."""
        with self._lock:
            row = self._db.execute("SELECT epoch, verdict_request FROM execution "
                                   "WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

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
