"""The storage plugin: STORE_FILE, RETRIEVE_FILE and VERIFY_STORAGE between nodes.

Events (docs/plugins.md §7 gives the wire shapes):

* ``STORE_FILE``: the data is one chunk (at most MAX_CHUNK bytes); the node
  keeps it and answers its name, the SHA-256 in hex.
* ``RETRIEVE_FILE``: the data is a chunk name; the answer is the chunk.
* ``VERIFY_STORAGE``: the data is a chunk name (32 raw bytes) and a nonce;
  the answer is SHA-256("mesh/storage-proof/v1" 0x00 nonce chunk), which only
  a node holding the chunk can compute.

Task kind ``STORE_FILE`` (docs/tasks.md): the payload is one chunk; the
result is its name, the units are the KiB stored, and the rule a requester
applies checks both. A receipt pays for the store; VERIFY_STORAGE audits
that the chunk is still kept.

Configuration (``[plugins.settings.storage]`` in meshd's config):
``capacity_bytes`` (default 1 GiB).
"""

from __future__ import annotations

import trio

from mesh_storage.chunks import ChunkStore, StorageFull, check_hash, chunk_hash, storage_proof
from meshd.plugin import Context, Event, InvalidArgument, Plugin, TaskRequest, TaskResult

MAX_CHUNK = 512 * 1024
DEFAULT_CAPACITY = 1 << 30
MIN_NONCE, MAX_NONCE = 16, 64


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


def units_of(size: int) -> int:
    """Task units of storing ``size`` bytes: KiB, rounded up."""
    return max(1, -(-size // 1024))


def _name(data: bytes) -> str:
    try:
        return check_hash(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(str(exc)) from None
