"""Anti-entropy, the serving side: peers' heads, range and get requests (docs/ledger.md §8.2).

A peer syncing with this node asks for its heads (or only whether their
digest matches its own), then for ranges of chains and entries by hash. The
answers come from the store on a thread; each is bounded (HEADS_PAGE heads,
RANGE_ENTRIES entries or RANGE_BYTES, GET_HASHES hashes). The asking side is
meshd/ledger/replication.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import sync_pb2
from meshcore.ledger.entry import HASH_BYTES
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.ledger.store import heads_digest
from meshd.p2p.host import P2PHost

HEADS, RANGE, GET = "ledger-heads", "ledger-range", "ledger-get"
MAX_REQUEST = 64 << 10
HEADS_PAGE = 8192
RANGE_ENTRIES = 512
RANGE_BYTES = 1 << 20
GET_HASHES = 256

Handler = Callable[[str, bytes], Awaitable[bytes]]


class SyncServer:
    """Answers ledger syncs from ``ledger``'s store; lives on the trio loop, see :meth:`run`."""

    def __init__(self, ledger: Ledger, p2p: P2PHost) -> None:
        self._store = ledger.store
        self._p2p = p2p
        self._serving = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Serve the three sync protocols until cancelled."""
        direct = self._p2p.direct
        try:
            with direct.serving(HEADS, self._guarded(self.serve_heads), max_request=MAX_REQUEST), \
                    direct.serving(RANGE, self._guarded(self.serve_range),
                                   max_request=MAX_REQUEST), \
                    direct.serving(GET, self._guarded(self.serve_get), max_request=MAX_REQUEST):
                task_status.started()
                await trio.sleep_forever()
        finally:
            # The host outlives the ledger: answer "unavailable", not a failure
            # on a closed store, to requests already being served.
            self._serving = False

    def _guarded(self, handler: Handler) -> Handler:
        async def serve(peer_id: str, payload: bytes) -> bytes:
            if not self._serving:
                raise errors.Unavailable("this node's ledger is stopping")
            try:
                return await handler(peer_id, payload)
            except sqlite3.ProgrammingError:  # the store closed under a request
                if self._serving:
                    raise
                raise errors.Unavailable("this node's ledger is stopping") from None
        return serve

    async def serve_heads(self, peer_id: str, payload: bytes) -> bytes:
        request = _parse(sync_pb2.LedgerHeadsRequest, payload)
        limit = min(request.limit or HEADS_PAGE, HEADS_PAGE)
        if request.digest:
            heads = await trio.to_thread.run_sync(self._store.heads)
            if heads_digest(heads) == request.digest:
                return sync_pb2.LedgerHeads(same=True).SerializeToString()
        page = await trio.to_thread.run_sync(self._store.heads, request.after_author,
                                             limit + 1)
        answer = sync_pb2.LedgerHeads(
            heads=[sync_pb2.Head(author=h.author, seq=h.seq, hash=h.hash)
                   for h in page[:limit]], more=len(page) > limit)
        return answer.SerializeToString()

    async def serve_range(self, peer_id: str, payload: bytes) -> bytes:
        request = _parse(sync_pb2.LedgerRangeRequest, payload)
        if len(request.head) != HASH_BYTES:
            raise errors.InvalidArgument("head is not a 32-byte hash")
        found, more = await trio.to_thread.run_sync(
            self._store.chain, request.head, max(request.from_seq, 1), RANGE_ENTRIES,
            RANGE_BYTES)
        return sync_pb2.LedgerEntries(entries=found, more=more).SerializeToString()

    async def serve_get(self, peer_id: str, payload: bytes) -> bytes:
        request = _parse(sync_pb2.LedgerGetRequest, payload)
        if len(request.hashes) > GET_HASHES:
            raise errors.InvalidArgument(f"at most {GET_HASHES} hashes per request")
        found = await trio.to_thread.run_sync(self._store.get_raw, list(request.hashes))
        return sync_pb2.LedgerEntries(entries=found).SerializeToString()


Request = TypeVar("Request", sync_pb2.LedgerHeadsRequest, sync_pb2.LedgerRangeRequest,
                  sync_pb2.LedgerGetRequest)


def _parse(kind: type[Request], payload: bytes) -> Request:
    message = kind()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise errors.InvalidArgument(f"not a {kind.__name__}") from None
    return message
