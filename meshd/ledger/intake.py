"""Gossiped ledger entries, checked and queued for the store (docs/ledger.md §9).

:class:`GossipIntake` takes the messages that gossip brings (each a
``LedgerEntries`` from one sender). Every message waiting is taken at once,
up to INTAKE_BATCH_ENTRIES entries: under load its batches grow by
themselves, as the group committer's do. Their signatures are checked on
worker threads, two parts at once (PyNaCl lets go of the GIL), overlapping
the store's commit of what came before; an entry stored lately is not
checked again.
Messages are queued in the order they came (``GroupCommitter.enqueue``): the
committer sees an entry after the entries of earlier messages it may need,
with no wait for its past and no sync. Up to ADMISSIONS_IN_FLIGHT messages
await their commit at once; what the store says of each goes to the
replicator, which owns waiting entries and senders' scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Container
from typing import Protocol

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2, sync_pb2
from meshcore.ledger import entry as entries
from meshcore.ledger.entry import EntryError, Verified
from meshd.ledger.committer import GroupCommitter, Pending

INTAKE_BATCH_ENTRIES = 512  # gossiped entries checked together, when that many wait
VERIFY_THREADS = 2  # worker threads checking one batch's signatures at once
MIN_VERIFY_PART = 32  # entries: fewer are not worth a second thread
ADMISSIONS_IN_FLIGHT = 512  # gossip messages whose entries await their commit at once

# (sender, why): a sender sent something invalid.
Penalise = Callable[[str, str], Awaitable[None]]
# (entries, the store's result for each, sender): what became of a message.
Admitted = Callable[[list[Verified], list[EntryError | None], str], Awaitable[None]]


class IntakeCounters(Protocol):
    received: int  # entries checked
    invalid: int  # entries whose check failed


class GossipIntake:
    """See the module docstring; lives on the trio loop, see :meth:`run`."""

    def __init__(self, committer: GroupCommitter, network_id: str, *,
                 stored_lately: Container[bytes], penalise: Penalise, admitted: Admitted,
                 counters: IntakeCounters) -> None:
        self._committer = committer
        self._network_id = network_id
        self._stored_lately = stored_lately
        self._penalise = penalise
        self._admitted = admitted
        self.counters = counters

    async def run(self, messages: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        """Take (sender, gossip message) from ``messages`` until it closes, and
        return once every admission is decided."""
        limiter = trio.CapacityLimiter(ADMISSIONS_IN_FLIGHT)
        async with trio.open_nursery() as admissions:
            async for first in messages:
                taken = [await self._fresh(*first)]
                size = len(taken[0][1])
                while size < INTAKE_BATCH_ENTRIES:
                    try:
                        more = await self._fresh(*messages.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    taken.append(more)
                    size += len(more[1])
                raws = [raw for _, fresh in taken for raw in fresh]
                if not raws:
                    continue
                self.counters.received += len(raws)
                checked = iter(await self._verified(raws))
                for sender, fresh in taken:
                    items = []
                    for result in itertools.islice(checked, len(fresh)):
                        if isinstance(result, EntryError):
                            self.counters.invalid += 1
                            await self._penalise(sender, f"sent an invalid entry: {result}")
                        else:
                            items.append(result)
                    if items:
                        borrower = object()  # one token per admission, whatever it carries
                        await limiter.acquire_on_behalf_of(borrower)
                        try:
                            pending = await self._committer.enqueue(items)
                        except BaseException:
                            limiter.release_on_behalf_of(borrower)
                            raise
                        admissions.start_soon(self._decided, items, pending, sender, limiter,
                                              borrower)

    async def _verified(self, raws: list[bytes]) -> list[Verified | EntryError]:
        """Each of ``raws`` verified, or why not: in up to VERIFY_THREADS parts at
        once, each on a worker thread (the signature checks run in parallel)."""
        parts = max(1, min(VERIFY_THREADS, len(raws) // MIN_VERIFY_PART))
        size = -(-len(raws) // parts)
        results: list[list[Verified | EntryError]] = [[] for _ in range(parts)]

        async def verify(index: int) -> None:
            results[index] = await trio.to_thread.run_sync(
                entries.verify_each, raws[index * size:(index + 1) * size], self._network_id)

        async with trio.open_nursery() as nursery:
            for index in range(parts):
                nursery.start_soon(verify, index)
        return [result for part in results for result in part]

    async def _fresh(self, sender: str, data: bytes) -> tuple[str, list[bytes]]:
        """A message's entries not stored lately; none if it is not a LedgerEntries
        (the sender pays)."""
        batch = sync_pb2.LedgerEntries()
        try:
            batch.ParseFromString(data)
        except DecodeError:
            await self._penalise(sender, "sent a gossip message that is not a LedgerEntries")
            return sender, []
        return sender, [raw for raw in batch.entries
                        if hash_of(raw) not in self._stored_lately]

    async def _decided(self, items: list[Verified], pending: Pending, sender: str,
                       limiter: trio.CapacityLimiter, borrower: object) -> None:
        try:
            await self._admitted(items, await pending.results(), sender)
        finally:
            limiter.release_on_behalf_of(borrower)


def hash_of(raw: bytes) -> bytes:
    """An encoded entry's hash, without checking it (b"" if it does not parse)."""
    try:
        return entries.entry_hash(ledger_pb2.Entry.FromString(raw).body)
    except DecodeError:
        return b""
