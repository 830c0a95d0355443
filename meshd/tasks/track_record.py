"""What this node has seen of each provider's executions of its tasks: a track record.

The router notes every attempt that ended (docs/tasks.md §2): done, failed
(refused, broke, timed out, or a claim that did not match) or wrong (outvoted,
or rejected by the plugin's rule). A plugin reads it (``ctx.provider_record``)
to weigh whom it asks, as Golem weighs providers by their success rate and
age. It is this node's own view, kept in memory since meshd started; the
ledger holds the network-wide evidence (receipts, verdicts, payments).
"""

from __future__ import annotations

import collections
import time

from meshd.plugin.api import ProviderRecord

KEPT = 10_000  # providers remembered; the least recently seen go first


class TrackRecords:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._records: collections.OrderedDict[str, ProviderRecord] = collections.OrderedDict()

    def note(self, provider: str, state: str) -> None:
        """An attempt of ``provider`` ended in ``state`` (a router attempt state)."""
        old = self._records.pop(provider, None) or ProviderRecord(provider, time.time())
        self._records[provider] = ProviderRecord(
            provider, old.first_seen,
            done=old.done + (state == "done"), wrong=old.wrong + (state == "wrong"),
            failed=old.failed + (state not in ("done", "wrong", "running")))
        while len(self._records) > self._kept:
            self._records.popitem(last=False)

    def get(self, provider: str) -> ProviderRecord | None:
        return self._records.get(provider)

