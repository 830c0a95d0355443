"""Receipts for answers: a holder that served a piece or passed an audit is countersigned.

The asker makes each request unique (a fetch nonce; an audit's segment and
epoch); the holder, having answered, reports it (``ctx.report_task``: kind
``RETRIEVE_FILE`` for deliveries, units the KiB served; kind ``KEEP`` for
audits passed, units the KiB of the file it holds). The asker countersigns
only a report of a request it made, whose answer checked, and only once: a
holder cannot invent deliveries or audits.

Deliveries to one asker are reported together (``batched``): the first
waits up to BATCH_WINDOW seconds for others, up to the size a report's
detail may have, and one report names them all (BATCH_MARK, then each
request's data after its length in 2 bytes), for their units' sum. A batch
the asker refuses is reported again in halves, down to single deliveries. A get of
a 100 MiB file was 400 receipts, each countersigned, gossiped and verified
by every node: most of the holders' CPU while they served it
(docs/performance.md). The asker countersigns a batch only if it made every
request in it and every answer checked; the ledger counts a receipt's units
whatever it covers (docs/ledger.md §6.3), so a batch earns what its parts
would.

Each report leaves a note with its receipt (``describe``): which pieces were
served, or which piece and segment an audit asked for. The ledger has only
the detail's hash; ``meshctl rewards explain`` on the holder's node prints
the note under the receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from meshd.plugin import MAX_REPORT_DETAIL, Context, Event, MeshError, TaskReport

RETRIEVE_FILE, KEEP = "RETRIEVE_FILE", "KEEP"  # the kinds reported
FETCHES_KEPT = 1024  # this node's recent fetches from peers, awaiting their reports
REPORT_WAIT = 10.0  # a report that overtakes its fetch's answer waits this long for it
BATCH_WINDOW = 2.0  # seconds the first delivery to an asker waits for others to report with
BATCH_MARK = b"\x00batch\n"  # a request's data never starts so: a CID or chunk name does


def units_of(size: int) -> int:
    """Task units of ``size`` bytes: KiB, rounded up."""
    return max(1, -(-size // 1024))


@dataclass
class _Batch:
    """Deliveries to one asker not reported yet."""

    asks: list[bytes] = field(default_factory=list)
    units: int = 0
    each: list[int] = field(default_factory=list)  # the units of each ask
    full: trio.Event = field(default_factory=trio.Event)

    def detail(self) -> bytes:
        if len(self.asks) == 1:  # as one delivery was always reported
            return self.asks[0]
        return BATCH_MARK + b"".join(len(a).to_bytes(2, "big") + a for a in self.asks)

    def fits(self, ask: bytes) -> bool:
        return len(BATCH_MARK) + sum(2 + len(a) for a in [*self.asks, ask]) \
            <= MAX_REPORT_DETAIL


def batch_asks(detail: bytes) -> list[bytes] | None:
    """The requests a report's detail names (one, or a batch); None if malformed."""
    if not detail.startswith(BATCH_MARK):
        return [detail]
    asks, at = [], len(BATCH_MARK)
    while at < len(detail):
        size = int.from_bytes(detail[at:at + 2], "big")
        ask = detail[at + 2:at + 2 + size]
        if not size or len(ask) != size:
            return None
        asks.append(ask)
        at += 2 + size
    return asks if len(asks) > 1 and len(set(asks)) == len(asks) else None


def describe(kind: str, asks: list[bytes]) -> str:
    """A receipt's note: what the requests it reports asked for, in words."""
    if kind == KEEP:  # an AUDIT: piece, segment, size, epoch, bytes held, file, root
        fields = asks[0].decode("ascii", "replace").split(" ")
        if len(fields) >= 6:
            cid, index, _, epoch, held, file = fields[:6]
            return (f"passed the audit of segment {index} of piece {cid} of file {file} in "
                    f"epoch {epoch}: paid for keeping {units_of(int(held))} KiB of the file")
        return "passed an audit"
    # A delivery: a piece CID or a chunk name, then a nonce.
    names = [ask.split(b" ", 1)[0][:64].decode("ascii", "replace") for ask in asks]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"served {len(names)} piece{'s' if len(names) > 1 else ''}: {shown}"


@dataclass
class Fetch:
    """A fetch this node made: what a delivery report is checked against."""

    answered: trio.Event = field(default_factory=trio.Event)
    units: int = 0  # of the intact answer received; 0 until then (or if it was not)


class Deliveries:
    def __init__(self, ctx: Context, kind: str = RETRIEVE_FILE,
                 accepted: Callable[[TaskReport], None] | None = None,
                 batched: bool = False) -> None:
        self.ctx = ctx
        self.kind = kind
        self._accepted = accepted  # told of each report countersigned (its claim is evidence)
        self.batched = batched
        # (provider, the fetch's event data) -> the fetch, oldest first.
        self.fetches: dict[tuple[str, bytes], Fetch] = {}
        self._open: dict[str, _Batch] = {}  # asker -> deliveries waiting to be reported
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
        """Countersign deliveries (one, or a batch) this node asked for and received intact,
        once each."""
        asks = batch_asks(report.detail)
        if asks is None or (len(asks) > 1 and not self.batched):
            return False
        fetches = [self.fetches.get((report.provider, ask)) for ask in asks]
        known = [f for f in fetches if f is not None]
        if len(known) < len(fetches):
            return False
        with trio.move_on_after(REPORT_WAIT):
            for fetch in known:
                await fetch.answered.wait()
        if any(self.fetches.get((report.provider, ask)) is not f
               for ask, f in zip(asks, known, strict=True)):
            return False  # another report of one of them got there first
        if not all(f.units > 0 for f in known) or report.units != sum(f.units for f in known):
            # A batch with a delivery that did not check (or that this node gave
            # up on): refused whole, and its intact deliveries are left for the
            # holder to report again, in halves.
            return False
        for ask in asks:
            del self.fetches[(report.provider, ask)]
        if self._accepted is not None:
            self._accepted(report)
        return True

    async def report(self, event: Event, size: int) -> None:
        """As the holder: report that ``event`` was answered, for ``size`` bytes (with
        others to the same asker, when batched)."""
        batch = self._open.get(event.peer)
        if batch is not None and not batch.fits(event.data):
            batch.full.set()  # sent as it is; this one opens the next
            del self._open[event.peer]
            batch = None
        first = batch is None
        if batch is None:
            batch = _Batch()
            if self.batched:
                self._open[event.peer] = batch
        batch.asks.append(event.data)
        batch.units += units_of(size)
        batch.each.append(units_of(size))
        if not first:
            return  # the batch's first report sends it
        if self.batched:
            with trio.move_on_after(BATCH_WINDOW):
                await batch.full.wait()
            if self._open.get(event.peer) is batch:
                del self._open[event.peer]
        await self._send_or_split(event.peer, batch)

    async def _send_or_split(self, peer: str, batch: _Batch) -> None:
        """Report ``batch``; if the asker refuses it (it gave up on one delivery, a
        fetch cancelled once it had enough pieces, say; or it is from before
        batches), report each half, and so on: the intact deliveries are paid,
        in about log2(n) receipts (and as many refusals) for one bad delivery in
        n, not n."""
        if await self._send(peer, batch) or len(batch.asks) == 1:
            return
        half = len(batch.asks) // 2
        for part in (slice(None, half), slice(half, None)):
            each = batch.each[part]
            await self._send_or_split(peer, _Batch(batch.asks[part], sum(each), each))

    async def _send(self, peer: str, batch: _Batch) -> bool:
        try:
            receipt = await self.ctx.report_task(peer, self.kind, batch.detail(),
                                                 units=batch.units,
                                                 note=describe(self.kind, batch.asks))
        except MeshError as exc:
            self.ctx.log.info("delivery not countersigned", extra={
                "peer_id": peer, "error": str(exc), "deliveries": len(batch.asks)})
            return False
        self.ctx.log.debug("delivery countersigned", extra={
            "peer_id": peer, "receipt": receipt, "deliveries": len(batch.asks)})
        return True
