"""What this node has seen of each holder's audits: passes, proven failures, the last one.

A holder that fails an audit the way only a holder without the piece fails
(audit.py: "provable") is slashed once two nodes say so (verdicts.py); it
also loses standing with every node that saw it fail: for SHUN_FOR seconds
placement and repair give it new pieces only when no other node can take
them (placement.py). Passes count from this node's own audits and from the
promises drawn auditors hand back (drawn.py). Silence counts only once it
has lasted STRIKES epochs about a piece the holder claims (containment.py):
an offline holder is repaired around, not shunned.

On disk: ``reputation.json`` in the plugin's data directory, rewritten after
a failure and at most every SAVE_EVERY seconds after passes, so a restart
forgets at most a few passes.

A node's own view covers only what it saw. :class:`SlashedLately` adds the
network's: a holder the ledger shows slashed for a failed task (of any
plugin: two verdicts on one of its claims) within SLASHED_EPOCHS final
epochs is shunned by every node, including one that never audited it
(``ctx.ledger.standing``, docs/ledger.md §12.5).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from mesh_storage.chunks import write_atomically
from meshd.plugin import LedgerReader, MeshError

SHUN_FOR = 30 * 24 * 3600.0  # seconds a proven failure keeps a holder last in line
SAVE_EVERY = 60.0  # seconds between rewrites for passes alone
KEPT = 100_000  # holders remembered; the least recently heard of go first
SLASHED_EPOCHS = 720  # final epochs a slash for a failed task shuns a holder (30 days of hours)
STANDING_FRESH = 60.0  # seconds a holder's standing in the ledger is reused


@dataclass
class Standing:
    passed: int = 0
    failed: int = 0  # proven failures (not a moment's silence)
    failed_at: float = 0.0  # wall clock of the last one; 0: never
    heard_at: float = 0.0


class Reputation:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self.holders: dict[str, Standing] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            for holder, fields in json.loads(path.read_text(encoding="utf-8")).items():
                with contextlib.suppress(ValueError, TypeError, KeyError):  # skip a bad one
                    self.holders[str(holder)] = Standing(
                        int(fields["passed"]), int(fields["failed"]),
                        float(fields["failed_at"]), float(fields["heard_at"]))

    def record(self, holder: str, *, passed: bool, now: float | None = None) -> None:
        """A pass, or a proven failure, of ``holder``."""
        now = time.time() if now is None else now
        with self._lock:
            standing = self.holders.setdefault(holder, Standing())
            standing.heard_at = now
            if passed:
                standing.passed += 1
            else:
                standing.failed += 1
                standing.failed_at = now
            if len(self.holders) > KEPT:
                oldest = min(self.holders, key=lambda h: self.holders[h].heard_at)
                del self.holders[oldest]
            if not passed or now - self._saved_at > SAVE_EVERY:
                self._save(now)

    def shunned(self, holder: str, now: float | None = None) -> bool:
        """Whether ``holder`` failed provably within SHUN_FOR, as this node saw."""
        standing = self.holders.get(holder)
        now = time.time() if now is None else now
        return standing is not None and standing.failed_at > 0 \
            and now - standing.failed_at < SHUN_FOR

    def of(self, holder: str) -> dict[str, Any]:
        """``holder``'s standing as JSON data (``storage holders``)."""
        standing = self.holders.get(holder, Standing())
        return {"passed": standing.passed, "failed": standing.failed,
                "last_failed_at": standing.failed_at or None,
                "shunned": self.shunned(holder)}

    def _save(self, now: float) -> None:
        # On the event loop: a table of a few thousand holders takes milliseconds.
        data = json.dumps({h: asdict(s) for h, s in self.holders.items()}).encode()
        with contextlib.suppress(OSError):  # a full disk loses standing, not the audit
            write_atomically(self._path, data)
        self._saved_at = now


class SlashedLately:
    """Holders the ledger shows slashed for a failed task within SLASHED_EPOCHS."""

    def __init__(self, ledger: LedgerReader) -> None:
        self._ledger = ledger
        self._known: dict[str, tuple[float, bool]] = {}  # holder -> (trio clock, slashed)

    async def __call__(self, holder: str) -> bool:
        now = trio.current_time()
        known = self._known.get(holder)
        if known is not None and now - known[0] < STANDING_FRESH:
            return known[1]
        try:
            standing = await self._ledger.standing(holder)
        except MeshError:  # not a peer ID: nothing the ledger can say
            return False
        slashed = standing.failed_tasks > 0 and \
            standing.through_epoch - standing.last_offence_epoch < SLASHED_EPOCHS
        if len(self._known) >= KEPT:
            self._known.clear()
        self._known[holder] = (now, slashed)
        return slashed
