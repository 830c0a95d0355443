"""Equivocation evidence: a second body for one (author, seq) becomes a penalty.

docs/ledger.md §7.1. Both branches of a fork are stored (each is valid
against its own past, and storing only the first would depend on arrival
order); at most one ever becomes canonical. Whoever first sees the second
body writes a Penalty entry carrying both signed bodies, so the next
settlement slashes and jails the author. One penalty per offender is
enough: the offence key is applied once, so this node writes none when one
is stored already.
"""

from __future__ import annotations

import contextlib
import logging

import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger.entry import Verified
from meshd import errors
from meshd.ledger.ledger import Ledger

log = logging.getLogger(__name__)


class EquivocationReporter:
    """Watches what is stored; on the trio loop."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        # What each commit stored, as one batch: one thread hop per batch, not
        # per entry (per entry, starting worker threads cost the trio loop
        # 4 % of its time during a partition heal).
        self._send, self._receive = trio.open_memory_channel[list[Verified]](1024)
        self.reported: list[bytes] = []  # offenders this node wrote a penalty for

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        with self._ledger.committer.listening(self._on_stored):
            task_status.started()
            async for batch in self._receive:
                while True:  # whatever else is waiting: under load, one hop for many commits
                    try:
                        batch = batch + self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                forked = await trio.to_thread.run_sync(self._forked, batch)
                for item in forked:
                    try:
                        await self._check(item)
                    except errors.MeshError as exc:
                        log.warning("equivocation evidence not written",
                                    extra={"error": str(exc)})

    def _on_stored(self, stored: list[Verified]) -> None:
        batch = [item for item in stored if item.kind != "penalty"]
        if batch:
            # When full, a fork shows again once either branch grows or syncs.
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(batch)

    def _forked(self, batch: list[Verified]) -> list[Verified]:
        """Entries of ``batch`` that share their (author, seq) with another; in a thread."""
        store, me = self._ledger.store, self._ledger.key
        return [item for item in batch if item.author != me
                and store.count_at(item.author, item.seq) > 1]

    async def _check(self, item: Verified) -> None:
        store = self._ledger.store
        if item.author in self.reported:
            return
        if any(e.kind == "penalty" for e in
               await trio.to_thread.run_sync(store.about, item.author, 1000)):
            self.reported.append(item.author)
            return
        same_seq = [e for e in await trio.to_thread.run_sync(
            store.by_author, item.author, item.seq - 1, 2) if e.seq == item.seq]
        first, second = sorted(same_seq[:2], key=lambda e: e.hash)
        self.reported.append(item.author)
        log.warning("an author signed two entries with one seq: writing the evidence",
                    extra={"seq": item.seq, "entries": [first.hash.hex()[:16],
                                                        second.hash.hex()[:16]]})
        await self._ledger.write(penalty=ledger_pb2.Penalty(
            equivocation=ledger_pb2.Equivocation(entry_a=first.raw, entry_b=second.raw)))
