"""Group commit: appends from trio become durable transactions of the store.

docs/ledger.md §9. :class:`GroupCommitter` takes every pending append, up to
BATCH_ENTRIES or BATCH_WAIT, has the store (meshd/ledger/store.py, on a
thread) judge them in order and commit them in one transaction, and only then
answers the callers; then it tells its listeners what was newly stored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from meshcore.ledger.entry import EntryError, Verified
from meshd.ledger.store import LedgerStore

log = logging.getLogger(__name__)

BATCH_ENTRIES = 512
# Seconds a batch waits for more appends once it has one. 0: a batch is what
# arrived while the previous commit ran, which adapts to the load by itself.
# A fixed 5 ms capped 64 appenders at 6,300/s (each waits for its own append,
# so no 65th entry could come); with 0, 14,700/s (bench/ledger.py).
BATCH_WAIT = 0.0
QUEUE_SIZE = 4096  # appends waiting for the writer; beyond it, append() waits


@dataclass
class _Append:
    entry: Verified
    done: trio.Event
    error: EntryError | None = None


@dataclass(frozen=True)
class Pending:
    """Entries queued by :meth:`GroupCommitter.enqueue`."""

    _requests: list[_Append]

    async def results(self) -> list[EntryError | None]:
        """Once all are decided: per entry None (stored) or why not."""
        for request in self._requests:
            await request.done.wait()
        return [r.error for r in self._requests]


# Called on the trio loop with the entries each commit newly stored, in order.
StoredListener = Callable[[list[Verified]], None]


class GroupCommitter:
    """Batches appends from trio into durable transactions; see the module docstring."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._send, self._receive = trio.open_memory_channel[_Append](QUEUE_SIZE)
        self._limiter = trio.CapacityLimiter(1)
        self._listeners: list[StoredListener] = []
        self.batches = 0
        self.appended = 0

    @contextlib.contextmanager
    def listening(self, listener: StoredListener) -> Iterator[None]:
        """Call ``listener`` with what each commit newly stored, once durable,
        while the block runs.

        A listener must not block; one that raises is logged and kept.
        """
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    async def append(self, item: Verified) -> None:
        """Return once ``item`` is durably stored (or was already).

        Raises:
            PastMissing: its prev or deps are not stored.
            EntryError: its links are wrong or it breaks a rule.
        """
        error = (await self.append_many([item]))[0]
        if error is not None:
            raise error

    async def append_many(self, items: list[Verified]) -> list[EntryError | None]:
        """Append ``items`` in this order (an entry may depend on one before it);
        return once all are decided: per entry None (stored) or why not."""
        return await (await self.enqueue(items)).results()

    async def enqueue(self, items: list[Verified]) -> Pending:
        """Queue ``items`` in this order, after everything queued before, and return
        without waiting for the commit (only for room in the queue): a caller that
        enqueues batch after batch keeps their causal order and has several in
        flight (replication's gossip intake)."""
        requests = [_Append(item, trio.Event()) for item in items]
        for request in requests:  # one task sends them all: the channel keeps the order
            await self._send.send(request)
        return Pending(requests)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        async with self._receive:
            while True:
                batch = [await self._receive.receive()]
                with trio.move_on_after(BATCH_WAIT):
                    while len(batch) < BATCH_ENTRIES:
                        batch.append(await self._receive.receive())
                while len(batch) < BATCH_ENTRIES:  # whatever else is already waiting
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    results, stored = await trio.to_thread.run_sync(
                        self.store.insert_batch, [a.entry for a in batch],
                        limiter=self._limiter)
                except BaseException:
                    for request in batch:  # nobody may take the batch for durable
                        request.error = EntryError("the store failed; not appended",
                                                   request.entry.hash)
                        request.done.set()
                    raise
                self.batches += 1
                for request, error in zip(batch, results, strict=True):
                    request.error = error
                    self.appended += error is None
                    request.done.set()
                if stored:
                    self._tell(stored)

    def _tell(self, stored: list[Verified]) -> None:
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:
                log.exception("a ledger listener failed")
