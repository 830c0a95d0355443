"""The storage plugin: STORE_FILE, RETRIEVE_FILE and VERIFY_STORAGE between nodes.

Events (docs/plugins.md §7 gives the wire shapes):

* ``STORE_FILE``: the data is one chunk (at most MAX_CHUNK bytes); the node
  keeps it and answers its name, the SHA-256 in hex.
* ``RETRIEVE_FILE``: the data is a chunk name; the answer is the chunk.
* ``VERIFY_STORAGE``: the data is a chunk name (32 raw bytes) and a nonce;
  the answer is SHA-256("mesh/storage-proof/v1" 0x00 nonce chunk), which only
  a node holding the chunk can compute.

Events for this node's operator only (``meshctl storage put|get``, through
``meshctl plugins call``; peers are refused):

* ``PUT_CHUNK``: one byte, the number of replicas (0 to MAX_REPLICAS), then
  one chunk. The node keeps the chunk and has ``replicas`` other nodes keep it
  too, as a STORE_FILE task (so they earn receipts); the answer is its name.
* ``GET_CHUNK``: the data is a chunk name; the answer is the chunk, from this
  node or from the first connected peer that holds it (checked by its hash).

Task kind ``STORE_FILE`` (docs/tasks.md): the payload is one chunk; the
result is its name, the units are the KiB stored, and the rule a requester
applies checks both. A receipt pays for the store; VERIFY_STORAGE audits
that the chunk is still kept.

Configuration (``[plugins.settings.storage]`` in meshd's config):
``capacity_bytes`` (default 1 GiB).
"""

from __future__ import annotations

import random

import trio

from mesh_storage.chunks import ChunkStore, StorageFull, check_hash, chunk_hash, storage_proof
from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    MeshError,
    Plugin,
    TaskOptions,
    TaskRequest,
    TaskResult,
)

MAX_CHUNK = 512 * 1024
DEFAULT_CAPACITY = 1 << 30
MIN_NONCE, MAX_NONCE = 16, 64
MAX_REPLICAS = 8
REPLICA_TIMEOUT = 20.0  # seconds per attempt of a replica's store
MAX_EVENT_TIMEOUT = 60.0  # meshd's ceiling for a handler


class StoragePlugin(Plugin):
    async def init(self, ctx: Context) -> None:
        capacity = ctx.config.get("capacity_bytes", DEFAULT_CAPACITY)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"plugins.settings.storage.capacity_bytes must be a whole number "
                             f"of bytes, not {capacity!r}")
        self.ctx = ctx
        self.chunks = await trio.to_thread.run_sync(ChunkStore, ctx.data_dir / "chunks",
                                                    capacity)
        ctx.on("STORE_FILE", self.store_file)
        ctx.on("RETRIEVE_FILE", self.retrieve_file)
        ctx.on("VERIFY_STORAGE", self.verify_storage)
        ctx.on("PUT_CHUNK", self.put_chunk, timeout=MAX_EVENT_TIMEOUT)
        ctx.on("GET_CHUNK", self.get_chunk, timeout=MAX_EVENT_TIMEOUT)
        ctx.handle_task("STORE_FILE", self.store_task, verify=self.check_stored)

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
        name = _name(event.data)
        data = await trio.to_thread.run_sync(self.chunks.get, name)
        if data is None:
            raise InvalidArgument(f"this node holds no chunk {name}")
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


    async def put_chunk(self, event: Event) -> bytes:
        self._from_operator(event)
        if len(event.data) < 2 or event.data[0] > MAX_REPLICAS:
            raise InvalidArgument(f"PUT_CHUNK takes one byte of replicas (0 to {MAX_REPLICAS}) "
                                  "and a chunk")
        replicas, chunk = event.data[0], event.data[1:]
        name = await self.store_file(Event(event.peer, "STORE_FILE", chunk))
        if replicas:
            outcome = await self.ctx.submit_task("STORE_FILE", chunk, TaskOptions(
                redundancy=replicas, timeout=REPLICA_TIMEOUT, attempts=2))
            if outcome.state != "done":
                raise InvalidArgument(f"chunk {name.decode()} is stored on this node, but "
                                      f"{replicas} replica(s) could not be made: {outcome.error}")
        return name

    async def get_chunk(self, event: Event) -> bytes:
        self._from_operator(event)
        name = _name(event.data)
        data = await trio.to_thread.run_sync(self.chunks.get, name)
        if data is not None:
            return data
        peers = self.ctx.peers()
        random.shuffle(peers)  # spread the reads over the holders
        for peer in peers:
            try:
                data = await self.ctx.request(peer, "RETRIEVE_FILE", event.data, timeout=10)
            except MeshError:
                continue  # it does not hold the chunk, or cannot answer now
            if chunk_hash(data) == name:
                return data
            self.ctx.log.warning("peer answered a chunk that does not match its name",
                                 extra={"peer_id": peer, "chunk": name})
        raise InvalidArgument(f"neither this node nor any of its {len(peers)} connected peers "
                              f"holds chunk {name}")

    def _from_operator(self, event: Event) -> None:
        if event.peer != self.ctx.peer_id:
            raise InvalidArgument(f"{event.name} is for this node's operator "
                                  "(meshctl storage), not for peers")


def units_of(size: int) -> int:
    """Task units of storing ``size`` bytes: KiB, rounded up."""
    return max(1, -(-size // 1024))


def _name(data: bytes) -> str:
    try:
        return check_hash(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None
