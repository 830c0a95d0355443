"""The storage plugin: STORE_FILE, RETRIEVE_FILE and VERIFY_STORAGE between nodes.

Events (docs/plugins.md §7 gives the wire shapes):

* ``STORE_FILE``: the data is one chunk (at most MAX_CHUNK bytes); the node
  keeps it and answers its name, the SHA-256 in hex.
* ``RETRIEVE_FILE``: the data is a chunk name, optionally followed by a
  16-byte fetch nonce; the answer is the chunk. With a nonce, the serving
  node reports the delivery to the asking node (``ctx.report_task``, kind
  ``RETRIEVE_FILE``, units the KiB served), which countersigns a receipt if
  it did ask for that chunk with that nonce and got it intact.
* ``VERIFY_STORAGE``: the data is a chunk name (32 raw bytes) and a nonce;
  the answer is SHA-256("mesh/storage-proof/v1" 0x00 nonce chunk), which only
  a node holding the chunk can compute.

Events for this node's operator only (``meshctl storage put|get``, through
``meshctl plugins call``; peers are refused):

* ``PUT_CHUNK``: one byte, the number of replicas (0 to MAX_REPLICAS), then
  one chunk. The node keeps the chunk and has ``replicas`` other nodes keep it
  too, as a STORE_FILE task (so they earn receipts); the answer is its name.
* ``GET_CHUNK``: the data is a chunk name; the answer is the chunk, from this
  node or from the first connected peer that holds it (checked by its hash;
  that peer earns a receipt for the delivery).

Task kind ``STORE_FILE`` (docs/tasks.md): the payload is one chunk; the
result is its name, the units are the KiB stored, and the rule a requester
applies checks both. A receipt pays for the store; VERIFY_STORAGE audits
that the chunk is still kept.

Configuration (``[plugins.settings.storage]`` in meshd's config):
``capacity_bytes`` (default 1 GiB).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import trio

from mesh_storage.chunks import ChunkStore, StorageFull, check_hash, chunk_hash, storage_proof
from mesh_storage.manifest import MAX_CHUNK, MAX_REPLICAS
from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    MeshError,
    Plugin,
    TaskOptions,
    TaskReport,
    TaskRequest,
    TaskResult,
)

DEFAULT_CAPACITY = 1 << 30
MIN_NONCE, MAX_NONCE = 16, 64
REPLICA_TIMEOUT = 20.0  # seconds per attempt of a replica's store
MAX_EVENT_TIMEOUT = 60.0  # meshd's ceiling for a handler
FETCH_NONCE = 16
FETCHES_KEPT = 1024  # this node's recent fetches from peers, awaiting their reports
REPORT_WAIT = 10.0  # a report that overtakes its fetch's answer waits this long for it


@dataclass
class Fetch:
    """A chunk this node asked a peer for: what a delivery report is checked against."""

    answered: trio.Event = field(default_factory=trio.Event)
    units: int = 0  # of the intact chunk received; 0 until then (or if it was not)


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
        ctx.accept_reports("RETRIEVE_FILE", self.check_delivery)
        # (provider, RETRIEVE_FILE data) -> the fetch, oldest first.
        self.fetches: dict[tuple[str, bytes], Fetch] = {}

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
            self.ctx.spawn(lambda: self._report_delivery(event, len(data)),
                           name="storage delivery report")
        return data

    async def _report_delivery(self, event: Event, size: int) -> None:
        try:
            receipt = await self.ctx.report_task(event.peer, "RETRIEVE_FILE", event.data,
                                                 units=units_of(size))
        except MeshError as exc:
            self.ctx.log.info("delivery not countersigned", extra={
                "peer_id": event.peer, "error": str(exc)})
            return
        self.ctx.log.debug("delivery countersigned", extra={
            "peer_id": event.peer, "receipt": receipt})

    async def check_delivery(self, report: TaskReport) -> bool:
        """Countersign a delivery this node asked for and received intact, once."""
        fetch = self.fetches.get((report.provider, report.detail))
        if fetch is None:
            return False
        with trio.move_on_after(REPORT_WAIT):
            await fetch.answered.wait()
        if self.fetches.pop((report.provider, report.detail), None) is not fetch:
            return False  # another report of the same fetch got there first
        return fetch.units > 0 and report.units == fetch.units

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
            ask = event.data + os.urandom(FETCH_NONCE)
            fetch = self._fetch(peer, ask)
            try:
                data = await self.ctx.request(peer, "RETRIEVE_FILE", ask, timeout=10)
            except MeshError:
                data = b""  # it does not hold the chunk, or cannot answer now
            if data and chunk_hash(data) == name:
                fetch.units = units_of(len(data))
            else:  # nothing to countersign
                self.fetches.pop((peer, ask), None)
            fetch.answered.set()
            if fetch.units:
                return data
            if not data:
                continue
            self.ctx.log.warning("peer answered a chunk that does not match its name",
                                 extra={"peer_id": peer, "chunk": name})
        raise InvalidArgument(f"neither this node nor any of its {len(peers)} connected peers "
                              f"holds chunk {name}")

    def _fetch(self, peer: str, ask: bytes) -> Fetch:
        fetch = self.fetches[(peer, ask)] = Fetch()
        while len(self.fetches) > FETCHES_KEPT:
            del self.fetches[next(iter(self.fetches))]
        return fetch

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
