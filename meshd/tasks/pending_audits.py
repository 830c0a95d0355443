"""Receipt audits still waiting for their provider, on disk across restarts.

A validator asks a provider that has not shown an audited execution again at
each final epoch, and judges it after DENIALS asks it answered a PING for
(receipt_audits.py). Held in memory only, a validator that restarted would
drop those audits, and a provider that hid its work would escape. So the
auditor keeps, per pending receipt, the asks denied and the final epoch of
the last ask in ``receipt-audits.json`` (JSON, written whole, atomically:
there are a handful at most), and takes them up again at start; the rest
(the claim, the draw) it reads again from the ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from meshd.datadir import write_atomically

FILE_NAME = "receipt-audits.json"


@dataclass(frozen=True)
class Kept:
    receipt: bytes  # the task_receipt entry's hash
    denials: int
    last_ask: int


class PendingAuditFile:
    """Reads and writes the pending audits. Its methods block: call them from a thread."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @classmethod
    def in_dir(cls, data_dir: Path) -> PendingAuditFile:
        return cls(data_dir / FILE_NAME)

    def load(self) -> list[Kept]:
        """The audits kept; none when the file is missing or unreadable (a damaged
        file costs those audits, not the start)."""
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            return [Kept(bytes.fromhex(e["receipt"]), int(e["denials"]), int(e["last_ask"]))
                    for e in data["pending"]]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def save(self, kept: list[Kept]) -> None:
        write_atomically(self._path, json.dumps({"format": 1, "pending": [
            {"receipt": k.receipt.hex(), "denials": k.denials, "last_ask": k.last_ask}
            for k in kept]}).encode("utf-8"))
