"""Notes on this node's receipts: what a reported task was, in its plugin's words.

The ledger keeps a receipt's claim, whose ``result_digest`` is only the hash
of the report's detail: enough to count it, not to say which piece was
audited or which file served. A plugin that reports work
(``ctx.report_task(..., note=...)``) can leave a line of text with the
receipt it gets back; ``meshctl rewards explain`` prints it under the
receipt (docs/ledger.md §6.5, docs/tasks.md §5). Notes stay on this node,
are not evidence and are in no state root: the amounts come from the
ledger alone.

On disk: ``receipt-notes.jsonl`` in the data dir, one JSON object per line
(``receipt`` hex, ``plugin``, ``note``), appended as receipts come and
rewritten with the newest LIMIT notes when the file holds twice that.
A damaged line (a crash mid-write) is skipped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
from pathlib import Path

from meshd import errors
from meshd.datadir import write_atomically

log = logging.getLogger(__name__)

MAX_NOTE = 500  # characters
LIMIT = 100_000  # notes kept (~20 MiB at most); the oldest go first


def check_note(note: str) -> None:
    """InvalidArgument unless ``note`` is one line of at most MAX_NOTE printable characters."""
    if not isinstance(note, str) or len(note) > MAX_NOTE or not note.isprintable():
        raise errors.InvalidArgument(f"a receipt's note is one line of at most {MAX_NOTE} "
                                     "printable characters")


class ReceiptNotes:
    def __init__(self, path: Path, limit: int = LIMIT) -> None:
        self._path = path
        self._limit = limit
        self._lock = threading.Lock()  # the API reads from its own thread
        self._notes: collections.OrderedDict[bytes, tuple[str, str]] = \
            collections.OrderedDict()
        self._lines = 0
        with contextlib.suppress(FileNotFoundError), \
                path.open(encoding="utf-8", errors="replace") as kept:
            for line in kept:
                self._lines += 1
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    row = json.loads(line)
                    self._remember(bytes.fromhex(row["receipt"]), str(row["plugin"]),
                                   str(row["note"]))

    def add(self, receipt: str, plugin: str, note: str) -> None:
        """Keep ``note`` (a line of text) on receipt ``receipt`` (hex) of ``plugin``."""
        check_note(note)
        key = bytes.fromhex(receipt)
        row = json.dumps({"receipt": receipt, "plugin": plugin, "note": note}) + "\n"
        with self._lock:
            self._remember(key, plugin, note)
            try:  # a few hundred bytes: not worth a thread
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(row)
                self._lines += 1
                if self._lines > 2 * self._limit:
                    self._rewrite()
            except OSError as exc:  # a full disk loses a note, never the receipt
                log.warning("could not keep a receipt's note", extra={"error": str(exc)})

    def get(self, receipt: bytes) -> tuple[str, str] | None:
        """(plugin, note) left on ``receipt`` (its entry hash), if any."""
        with self._lock:
            return self._notes.get(receipt)

    def _remember(self, key: bytes, plugin: str, note: str) -> None:
        self._notes[key] = (plugin, note)
        self._notes.move_to_end(key)
        while len(self._notes) > self._limit:
            self._notes.popitem(last=False)

    def _rewrite(self) -> None:
        write_atomically(self._path, "".join(
            json.dumps({"receipt": key.hex(), "plugin": plugin, "note": note}) + "\n"
            for key, (plugin, note) in self._notes.items()).encode("utf-8"))
        self._lines = len(self._notes)
