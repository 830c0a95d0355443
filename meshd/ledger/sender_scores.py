"""Ledger scores of peers (docs/ledger.md §8.4).

An honest node never forwards an invalid entry (it stores, then forwards), so
an invalid entry costs the peer that sent it, whoever wrote it. A score starts
at 0, recovers towards 0 with time, and at FLOOR the peer is blocked for
BLOCK_SECONDS. Entries that merely wait for their past cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

INVALID_ENTRY_COST = 100
PROTOCOL_BREACH_COST = 50  # a sync answer of the wrong shape, order or size
FLOOR = -100
RECOVERY_PER_SECOND = 10 / 60
BLOCK_SECONDS = 600.0


@dataclass
class _Score:
    value: float
    at: float


class SenderScores:
    """Per-peer scores; time comes from the caller. Not thread-safe."""

    def __init__(self) -> None:
        self._scores: dict[str, _Score] = {}

    def score(self, peer_id: str, now: float) -> float:
        found = self._scores.get(peer_id)
        if found is None:
            return 0.0
        return min(0.0, found.value + (now - found.at) * RECOVERY_PER_SECOND)

    def penalise(self, peer_id: str, cost: int, now: float) -> bool:
        """Lower ``peer_id``'s score by ``cost``; True when it reaches FLOOR (then
        its score starts again from 0: the caller blocks it)."""
        value = self.score(peer_id, now) - cost
        if value <= FLOOR:
            self._scores.pop(peer_id, None)
            return True
        self._scores[peer_id] = _Score(value, now)
        return False

    def forget_recovered(self, now: float) -> None:
        """Drop the peers whose score is back at 0 (keeps the table small)."""
        for peer_id in [p for p in self._scores if self.score(p, now) >= 0]:
            del self._scores[peer_id]
