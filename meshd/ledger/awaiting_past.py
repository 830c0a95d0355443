"""Entries waiting for their past (docs/ledger.md §8.3).

An entry whose prev or deps are not stored is not invalid: it waits here
while the node fetches what it lacks, and is retried when one of the missing
entries is stored. The buffer is bounded in entries, bytes, entries per
sending peer and time; the oldest entry goes first. Eviction loses nothing for
good: anti-entropy brings an evicted entry back once its past is there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from meshcore.ledger.entry import Verified

MAX_ENTRIES = 10_000
MAX_BYTES = 64 << 20
MAX_PER_SENDER = 1_000
MAX_SECONDS = 120.0


@dataclass
class _Waiter:
    item: Verified
    sender: str
    missing: frozenset[bytes]
    since: float


class WaitingRoom:
    """Not thread-safe: one owner on the trio loop. Time comes from the caller."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 max_per_sender: int = MAX_PER_SENDER, max_seconds: float = MAX_SECONDS,
                 ) -> None:
        self._limits = (max_entries, max_bytes, max_per_sender)
        self._max_seconds = max_seconds
        self._waiting: OrderedDict[bytes, _Waiter] = OrderedDict()  # oldest first
        self._by_missing: dict[bytes, set[bytes]] = {}
        self._per_sender: dict[str, int] = {}
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, entry_hash: bytes) -> bool:
        return entry_hash in self._waiting

    def add(self, item: Verified, sender: str, missing: list[bytes], now: float) -> None:
        """Keep ``item`` until one of ``missing`` is stored (or it ages out)."""
        if item.hash in self._waiting or not missing:
            return
        max_entries, max_bytes, max_per_sender = self._limits
        if self._per_sender.get(sender, 0) >= max_per_sender:
            self._evict(next(h for h, w in self._waiting.items() if w.sender == sender))
        while self._waiting and (len(self._waiting) >= max_entries
                                 or self.bytes + len(item.raw) > max_bytes):
            self._evict(next(iter(self._waiting)))
        self._waiting[item.hash] = _Waiter(item, sender, frozenset(missing), now)
        for entry_hash in missing:
            self._by_missing.setdefault(entry_hash, set()).add(item.hash)
        self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        self.bytes += len(item.raw)

    def ready(self, stored: bytes) -> list[tuple[Verified, str]]:
        """Take the entries that waited for ``stored``, in hash order, to retry
        (one still missing something else comes back through :meth:`add`)."""
        hashes = sorted(self._by_missing.pop(stored, ()))
        taken = []
        for entry_hash in hashes:
            waiter = self._waiting.get(entry_hash)
            if waiter is not None:
                self._remove(entry_hash)
                taken.append((waiter.item, waiter.sender))
        return taken

    def missing(self) -> list[bytes]:
        """Every hash some waiting entry lacks."""
        return list(self._by_missing)

    def expire(self, now: float) -> int:
        """Drop the entries that waited longer than allowed; return how many."""
        old = [h for h, w in self._waiting.items() if now - w.since > self._max_seconds]
        for entry_hash in old:
            self._evict(entry_hash)
        return len(old)

    def _evict(self, entry_hash: bytes) -> None:
        self._remove(entry_hash)
        self.evicted += 1

    def _remove(self, entry_hash: bytes) -> None:
        waiter = self._waiting.pop(entry_hash)
        for missing in waiter.missing:
            dependents = self._by_missing.get(missing)
            if dependents is not None:
                dependents.discard(entry_hash)
                if not dependents:
                    del self._by_missing[missing]
        self._per_sender[waiter.sender] -= 1
        if not self._per_sender[waiter.sender]:
            del self._per_sender[waiter.sender]
        self.bytes -= len(waiter.item.raw)
