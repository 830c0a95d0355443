"""Delivery receipts in batches: a holder reports its deliveries to one asker together,
and the asker countersigns a batch only if it asked for every delivery in it."""

from __future__ import annotations

import logging
import os
from typing import Any

import trio
import trio.testing
from mesh_storage.deliveries import (
    BATCH_MARK,
    BATCH_WINDOW,
    KEEP,
    RETRIEVE_FILE,
    Deliveries,
    batch_asks,
    describe,
)
from mesh_storage.pieces import piece_cid

from meshd.plugin import MAX_REPORT_DETAIL, Event, PeerError, TaskReport

PEER_A, PEER_B = "12D3KooW" + "A" * 44, "12D3KooW" + "B" * 44


class FakeContext:
    """What Deliveries uses of a plugin's Context."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, str, bytes, int]] = []
        self.log = logging.getLogger("test")

    def accept_reports(self, kind: str, rule: Any) -> None:
        self.rule = rule

    async def report_task(self, peer: str, kind: str, detail: bytes, *, units: int,
                          note: str = "") -> str:
        assert note.startswith("served ")  # what a receipt was for, in words
        self.reported.append((peer, kind, detail, units))
        return "receipt"


def ask() -> bytes:
    return piece_cid(os.urandom(8)).encode() + b" " + os.urandom(16)


def run(test: Any) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def test_deliveries_to_one_asker_are_reported_together() -> None:
    async def main() -> None:
        ctx = FakeContext()
        deliveries = Deliveries(ctx, batched=True)  # type: ignore[arg-type]
        asks = [ask() for _ in range(3)]
        alone = ask()
        async with trio.open_nursery() as nursery:
            for data in asks:
                nursery.start_soon(deliveries.report, Event(PEER_A, "FETCH_PIECE", data), 5000)
            nursery.start_soon(deliveries.report, Event(PEER_B, "FETCH_PIECE", alone), 100)
            await trio.sleep(BATCH_WINDOW / 2)
            assert ctx.reported == []  # still waiting for more
        by_peer = {peer: (detail, units) for peer, _, detail, units in ctx.reported}
        assert len(ctx.reported) == 2
        assert sorted(batch_asks(by_peer[PEER_A][0]) or []) == sorted(asks)
        assert by_peer[PEER_A][1] == 3 * 5
        assert by_peer[PEER_B] == (alone, 1)  # one delivery: reported as it always was
    run(main)


def test_a_batch_never_outgrows_a_reports_detail() -> None:
    async def main() -> None:
        ctx = FakeContext()
        deliveries = Deliveries(ctx, batched=True)  # type: ignore[arg-type]
        asks = [ask() for _ in range(100)]
        async with trio.open_nursery() as nursery:
            for data in asks:
                nursery.start_soon(deliveries.report, Event(PEER_A, "FETCH_PIECE", data), 1024)
        assert len(ctx.reported) >= 2  # ~52 fit in one
        assert all(len(detail) <= MAX_REPORT_DETAIL for _, _, detail, _ in ctx.reported)
        sent = [a for _, _, detail, _ in ctx.reported for a in batch_asks(detail) or []]
        assert sorted(sent) == sorted(asks)
        assert sum(units for *_, units in ctx.reported) == 100
    run(main)


def test_the_asker_countersigns_a_batch_only_of_its_own_intact_fetches_once() -> None:
    async def main() -> None:
        deliveries = Deliveries(FakeContext(), batched=True)  # type: ignore[arg-type]
        asks = [ask() for _ in range(4)]
        for data in asks:
            fetch = deliveries.expect(PEER_A, data)
            deliveries.answered(PEER_A, data, fetch, 2048)

        def batch(of: list[bytes], units: int) -> TaskReport:
            detail = BATCH_MARK + b"".join(len(a).to_bytes(2, "big") + a for a in of)
            return TaskReport(PEER_A, "RETRIEVE_FILE", detail, units)

        assert not await deliveries.check(batch([*asks[:2], ask()], 6))  # one never asked
        assert not await deliveries.check(batch(asks[2:], 5))  # units not the sum
        assert not await deliveries.check(batch([asks[0], asks[0]], 4))  # one twice
        assert not await deliveries.check(TaskReport(PEER_A, "RETRIEVE_FILE",
                                                     batch(asks, 8).detail[:-3], 8))
        fresh = [ask() for _ in range(3)]
        for data in fresh:
            fetch = deliveries.expect(PEER_A, data)
            deliveries.answered(PEER_A, data, fetch, 2048)
        assert await deliveries.check(batch(fresh, 6))
        assert not await deliveries.check(batch(fresh, 6))  # countersigned once
        assert not any(key[1] in fresh for key in deliveries.fetches)

        # A failed fetch in a batch: the batch is refused, and the intact
        # delivery is left for the holder to report on its own.
        failed = [ask() for _ in range(2)]
        for data, size in zip(failed, (2048, 0), strict=True):
            fetch = deliveries.expect(PEER_A, data)
            deliveries.answered(PEER_A, data, fetch, size)
        assert not await deliveries.check(batch(failed, 2))
        assert await deliveries.check(TaskReport(PEER_A, "RETRIEVE_FILE", failed[0], 2))
        assert not await deliveries.check(TaskReport(PEER_A, "RETRIEVE_FILE", failed[1], 2))

        # Audits (KEEP) are never batched: each is one holder's promise.
        keeps = Deliveries(FakeContext(), KEEP)  # type: ignore[arg-type]
        two = [ask() for _ in range(2)]
        for data in two:
            fetch = keeps.expect(PEER_A, data)
            keeps.answered(PEER_A, data, fetch, 1024)
        assert not await keeps.check(TaskReport(PEER_A, KEEP, batch(two, 2).detail, 2))
        assert await keeps.check(TaskReport(PEER_A, KEEP, two[0], 1))
    run(main)


def test_a_refused_batch_is_reported_again_in_halves_down_to_single_deliveries() -> None:
    async def main() -> None:
        ctx = FakeContext()
        refusing = ctx.report_task

        async def no_batches(peer: str, kind: str, detail: bytes, *, units: int,
                             note: str = "") -> str:
            await refusing(peer, kind, detail, units=units, note=note)
            if detail.startswith(BATCH_MARK):  # an asker from before batches, say
                raise PeerError("no such fetch")
            return "receipt"
        ctx.report_task = no_batches  # type: ignore[method-assign]
        deliveries = Deliveries(ctx, batched=True)  # type: ignore[arg-type]
        asks = [ask() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            for data in asks:
                nursery.start_soon(deliveries.report, Event(PEER_A, "FETCH_PIECE", data), 3000)
        details = [detail for _, _, detail, _ in ctx.reported]
        assert details[0].startswith(BATCH_MARK)  # 3, refused; then 1 and 2, refused
        singles = [d for d in details if not d.startswith(BATCH_MARK)]
        assert sorted(singles) == sorted(asks) and len(details) == 5
        assert sorted(units for *_, units in ctx.reported) == [3, 3, 3, 6, 9]
    run(main)


def test_one_delivery_the_asker_gave_up_on_costs_a_few_receipts_not_one_each() -> None:
    async def main() -> None:
        ctx = FakeContext()
        asks = [ask() for _ in range(16)]
        bad = asks[5]  # a fetch the asker cancelled once it had enough pieces
        accepted: list[list[bytes]] = []

        async def asker(peer: str, kind: str, detail: bytes, *, units: int,
                        note: str = "") -> str:
            named = batch_asks(detail) or []
            if bad in named:
                raise PeerError("refused")
            accepted.append(named)
            return "receipt"
        ctx.report_task = asker  # type: ignore[method-assign]
        deliveries = Deliveries(ctx, batched=True)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            for data in asks:
                nursery.start_soon(deliveries.report, Event(PEER_A, "FETCH_PIECE", data), 1024)
        paid = [a for named in accepted for a in named]
        assert sorted(paid) == sorted(a for a in asks if a != bad)  # each once
        assert len(accepted) <= 4  # log2(16) halves: 8, 4, 2, 1
    run(main)


def test_each_receipt_says_what_it_was_for() -> None:
    audit = b"bafkreiabc 3 16384 12 2097152 bafybeixyz"
    assert describe(KEEP, [audit]) == ("passed the audit of segment 3 of piece bafkreiabc of "
                                       "file bafybeixyz in epoch 12: paid for keeping 2048 "
                                       "KiB of the file")
    asks = [ask() for _ in range(5)]
    note = describe(RETRIEVE_FILE, asks)
    assert note.startswith("served 5 pieces: " + asks[0].split(b" ")[0].decode())
    assert note.endswith(" and 2 more") and len(note) < 500
