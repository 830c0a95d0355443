"""The storage plugin: files erasure coded over many holders, and single chunks.

Wiring only; each part is its own module:

* holding.py: what this node keeps for others (HOLD_PIECE, FETCH_PIECE,
  HOLD_MANIFEST, FETCH_MANIFEST), announced in the DHT;
* files.py: what ``meshctl storage`` asks of its own node (PUT_STRIPE,
  GET_STRIPE, PUT_MANIFEST, GET_MANIFEST, STATUS, FILES, HOLDERS, LAYOUT);
* deliveries.py: receipts for pieces and chunks served;
* audit.py: proofs of storage, each epoch, paid for when they pass, by
  the validators the beacon draws (drawn.py, assignment.py);
* verdicts.py: failed audits of promised pieces, slashed in the ledger
  (promises.py keeps the holders' promises on disk); reputation.py: what
  this node saw of each holder's audits, which placement heeds;
* repair.py: pieces whose holders are gone, rebuilt and placed again;
* removal.py: an owner's file taken out of the network (REMOVE);
* owners.py: whom a holder keeps each piece for.

Chunk events, the seed's example handler (docs/plugins.md §7 gives the wire shapes):

* ``STORE_FILE``: the data is one chunk (at most MAX_CHUNK bytes); the node
  keeps it and answers its name, the SHA-256 in hex.
* ``RETRIEVE_FILE``: the data is a chunk name, optionally followed by a
  16-byte fetch nonce; the answer is the chunk. With a nonce, the serving
  node reports the delivery (deliveries.py).
* ``VERIFY_STORAGE``: the data is a chunk name (32 raw bytes) and a nonce;
  the answer is SHA-256("mesh/storage-proof/v1" 0x00 nonce chunk), which only
  a node holding the chunk can compute.

Task kind ``STORE_FILE`` (docs/tasks.md): the payload is one chunk; the
result is its name, the units are the KiB stored, and the rule a requester
applies checks both.

Configuration (``ctx.config``: the genesis's settings of the plugin, for the
whole network, overridden key by key by ``[plugins.settings.storage]`` in
meshd's config):
``capacity_bytes`` (default 1 GiB); ``k`` and ``n``, the coding of files
this node stores when ``meshctl storage put`` names none (default 4 of 8);
``repair_every`` and ``repair_grace``, seconds between repair checks
(default 600) and before a missing piece is rebuilt (default 3600);
``audit_every``, seconds between audit rounds (default 0: once per epoch);
``leftovers_every``, seconds between asks about files nobody audits here
(default 86400: leftovers.py).
"""

from __future__ import annotations

from typing import Any

import trio

from mesh_storage import leftovers
from mesh_storage.audit import Auditor
from mesh_storage.chunks import ChunkStore, StorageFull, check_hash, chunk_hash, storage_proof
from mesh_storage.deliveries import Deliveries, units_of
from mesh_storage.erasure import Coding, ErasureError
from mesh_storage.files import DEFAULT_K, DEFAULT_N, MAX_K, MAX_N, Files
from mesh_storage.holding import FETCH_NONCE, Holding
from mesh_storage.leftovers import Leftovers
from mesh_storage.manifest import MAX_CHUNK
from mesh_storage.removal import Removal
from mesh_storage.repair import DEFAULT_EVERY, DEFAULT_GRACE, Repairer
from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    Plugin,
    TaskRequest,
    TaskResult,
)

DEFAULT_CAPACITY = 1 << 30
MIN_NONCE, MAX_NONCE = 16, 64

__all__ = ["MAX_CHUNK", "StoragePlugin", "units_of"]


class StoragePlugin(Plugin):
    async def init(self, ctx: Context) -> None:
        capacity = _whole(ctx.config, "capacity_bytes", DEFAULT_CAPACITY)
        k, n = _whole(ctx.config, "k", DEFAULT_K), _whole(ctx.config, "n", DEFAULT_N)
        try:
            Coding(k, n)
        except ErasureError as exc:
            raise ValueError(f"plugins.settings.storage k and n: {exc}") from None
        if k > MAX_K or n > MAX_N:
            raise ValueError(f"plugins.settings.storage: k is at most {MAX_K} and n at most "
                             f"{MAX_N}")
        self.ctx = ctx
        self.chunks = await trio.to_thread.run_sync(ChunkStore, ctx.data_dir / "chunks",
                                                    capacity)
        self.deliveries = Deliveries(ctx, batched=True)
        self.holding = Holding(ctx, self.chunks, self.deliveries.report)
        self.files = Files(ctx, self.chunks, self.holding, self.deliveries, k, n)
        self.auditor = Auditor(ctx, self.files, self.holding,
                               every=_whole(ctx.config, "audit_every", 0))
        every = _whole(ctx.config, "repair_every", DEFAULT_EVERY, 1)
        self.removal = Removal(ctx, self.files, self.holding, every=every)
        self.repairer = Repairer(ctx, self.files, self.holding, every=every,
                                 grace=_whole(ctx.config, "repair_grace", DEFAULT_GRACE))
        self.leftovers = Leftovers(ctx, self.holding, every=_whole(
            ctx.config, "leftovers_every", leftovers.DEFAULT_EVERY, 1))
        ctx.on("STORE_FILE", self.store_file)
        ctx.on("RETRIEVE_FILE", self.retrieve_file)
        ctx.on("VERIFY_STORAGE", self.verify_storage)
        ctx.handle_task("STORE_FILE", self.store_task, verify=self.check_stored)

    async def run(self, ctx: Context) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.holding.announce_forever)
            nursery.start_soon(self.repairer.run_forever)
            nursery.start_soon(self.auditor.run_forever)
            nursery.start_soon(self.removal.sweep_forever)
            nursery.start_soon(self.leftovers.sweep_forever)

    async def store_task(self, task: TaskRequest) -> TaskResult:
        name = await self.store_file(Event(task.requester, "STORE_FILE", task.payload))
        return TaskResult(name, units=units_of(len(task.payload)))

    async def check_stored(self, task: TaskRequest, result: TaskResult) -> bool:
        return result.result == chunk_hash(task.payload).encode("ascii") \
            and result.units == units_of(len(task.payload))

    async def store_file(self, event: Event) -> bytes:
        if not event.data or len(event.data) > MAX_CHUNK:
            raise InvalidArgument(f"a chunk is 1 to {MAX_CHUNK} bytes, not {len(event.data)}")
        try:
            name = await trio.to_thread.run_sync(self.chunks.put, event.data)
        except StorageFull as exc:
            raise InvalidArgument(str(exc)) from None
        self.ctx.log.debug("stored chunk", extra={"chunk": name, "peer_id": event.peer,
                                                  "bytes": len(event.data)})
        return name.encode("ascii")

    async def retrieve_file(self, event: Event) -> bytes:
        name, nonce = _name(event.data[:64]), event.data[64:]
        if len(nonce) not in (0, FETCH_NONCE):
            raise InvalidArgument(f"RETRIEVE_FILE takes a chunk name and an optional "
                                  f"{FETCH_NONCE}-byte nonce")
        data = await trio.to_thread.run_sync(self.chunks.get, name)
        if data is None:
            raise InvalidArgument(f"this node holds no chunk {name}")
        if nonce and event.peer != self.ctx.peer_id:
            self.ctx.spawn(lambda: self.deliveries.report(event, len(data)),
                           name="storage delivery report")
        return data

    async def verify_storage(self, event: Event) -> bytes:
        name, nonce = event.data[:32].hex(), event.data[32:]
        if len(event.data) < 32 or not MIN_NONCE <= len(nonce) <= MAX_NONCE:
            raise InvalidArgument(f"VERIFY_STORAGE takes a 32-byte chunk hash and a "
                                  f"{MIN_NONCE}-{MAX_NONCE} byte nonce")
        data = await trio.to_thread.run_sync(self.chunks.get, name)
        if data is None:
            raise InvalidArgument(f"this node holds no chunk {name}")
        return storage_proof(nonce, data)


def _whole(config: Any, key: str, default: int, least: int = 0) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"plugins.settings.storage.{key} must be a whole number of at least "
                         f"{least}, not {value!r}")
    return value


def _name(data: bytes) -> str:
    try:
        return check_hash(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None
