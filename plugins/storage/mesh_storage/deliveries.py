"""Receipts for answers: a holder that served a piece or passed an audit is countersigned.

The asker makes each request unique (a fetch nonce; an audit's segment and
epoch); the holder, having answered, reports it (``ctx.report_task``: kind
``RETRIEVE_FILE`` for deliveries, units the KiB served; kind ``KEEP`` for
audits passed, units the KiB of the file it holds). The asker countersigns
only a report of a request it made, whose answer checked, and only once: a
holder cannot invent deliveries or audits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from meshd.plugin import Context, Event, MeshError, TaskReport

RETRIEVE_FILE, KEEP = "RETRIEVE_FILE", "KEEP"  # the kinds reported
FETCHES_KEPT = 1024  # this node's recent fetches from peers, awaiting their reports
REPORT_WAIT = 10.0  # a report that overtakes its fetch's answer waits this long for it


def units_of(size: int) -> int:
    """Task units of ``size`` bytes: KiB, rounded up."""
    return max(1, -(-size // 1024))


@dataclass
class Fetch:
    """A fetch this node made: what a delivery report is checked against."""

    answered: trio.Event = field(default_factory=trio.Event)
    units: int = 0  # of the intact answer received; 0 until then (or if it was not)


class Deliveries:
    def __init__(self, ctx: Context, kind: str = RETRIEVE_FILE,
                 accepted: Callable[[TaskReport], None] | None = None) -> None:
        self.ctx = ctx
        self.kind = kind
        self._accepted = accepted  # told of each report countersigned (its claim is evidence)
        # (provider, the fetch's event data) -> the fetch, oldest first.
        self.fetches: dict[tuple[str, bytes], Fetch] = {}
        ctx.accept_reports(kind, self.check)

    def expect(self, peer: str, ask: bytes) -> Fetch:
        """Record a fetch about to be sent to ``peer``."""
        fetch = self.fetches[(peer, ask)] = Fetch()
        while len(self.fetches) > FETCHES_KEPT:
            del self.fetches[next(iter(self.fetches))]
        return fetch

    def answered(self, peer: str, ask: bytes, fetch: Fetch, intact_size: int) -> None:
        """The fetch got its answer: ``intact_size`` bytes that checked, or 0."""
        if intact_size:
            fetch.units = units_of(intact_size)
        else:  # nothing to countersign
            self.fetches.pop((peer, ask), None)
        fetch.answered.set()

    async def check(self, report: TaskReport) -> bool:
        """Countersign a delivery this node asked for and received intact, once."""
        fetch = self.fetches.get((report.provider, report.detail))
        if fetch is None:
            return False
        with trio.move_on_after(REPORT_WAIT):
            await fetch.answered.wait()
        if self.fetches.pop((report.provider, report.detail), None) is not fetch:
            return False  # another report of the same fetch got there first
        accept = fetch.units > 0 and report.units == fetch.units
        if accept and self._accepted is not None:
            self._accepted(report)
        return accept

    async def report(self, event: Event, size: int) -> None:
        """As the holder: report that ``event`` was answered, for ``size`` bytes."""
        try:
            receipt = await self.ctx.report_task(event.peer, self.kind, event.data,
                                                 units=units_of(size))
        except MeshError as exc:
            self.ctx.log.info("delivery not countersigned", extra={
                "peer_id": event.peer, "error": str(exc)})
            return
        self.ctx.log.debug("delivery countersigned", extra={
            "peer_id": event.peer, "receipt": receipt})
