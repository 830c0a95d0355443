"""Gossipsub's per-peer outbound queues, sized for bursts and bounded in bytes.

py-libp2p 0.8.1 (``libp2p.pubsub.pubsub.Pubsub._handle_new_peer``) gives each
peer an ``RpcQueue()`` of 32 RPCs and drops what does not fit
(docs/py-libp2p.md#trap-8, docs/py-libp2p.md#found-subscription-channel). A
publisher's own queues are protected by meshd's back-pressure, but a node that
forwards a burst has no such brake. Measured with bench/gossip.py, a
burst of 1,000 messages over 30 processes on 2 cores: with 32-RPC queues every
message still arrived, but the last one 62 s late (a forwarder dropped it, and
gossip's IHAVE/IWANT recovered it); with these queues, 18 s. Each queue holds up
to OUTBOUND_RPCS RPCs and OUTBOUND_BYTES bytes, whichever comes first, so a
burst is buffered, while sustained overload still ends in a drop that meshd
counts (``dropped_outbound``).

The queue is swapped per Pubsub instance, as each peer's queue is registered,
before its sending task first reads it: nothing is patched process-wide.
"""

from __future__ import annotations

from typing import Any

from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import PriorityQueue, RpcQueue

OUTBOUND_RPCS = 4096
OUTBOUND_BYTES = 8 << 20


class ByteBoundedQueue(PriorityQueue):
    """py-libp2p's two-tier queue, also bounded by the bytes it holds."""

    def __init__(self, max_size: int, max_bytes: int) -> None:
        super().__init__(max_size)
        self.max_bytes = max_bytes
        self.bytes = 0

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        size = rpc.ByteSize()
        if self.bytes + size > self.max_bytes and len(self):  # one RPC always fits
            return False
        if not super().push(rpc, priority):
            return False
        self.bytes += size
        return True

    def pop(self) -> rpc_pb2.RPC | None:
        rpc = super().pop()
        if rpc is not None:
            self.bytes -= rpc.ByteSize()
        return rpc


class RoomyQueues(dict[Any, RpcQueue]):
    """``Pubsub.peer_queues`` whose new queues get a ByteBoundedQueue inside."""

    def __setitem__(self, peer_id: Any, queue: RpcQueue) -> None:
        if not len(queue):  # a fresh queue: nothing to carry over
            queue._queue = ByteBoundedQueue(OUTBOUND_RPCS, OUTBOUND_BYTES)
        super().__setitem__(peer_id, queue)


def install(pubsub: Any) -> None:
    """Give every peer ``pubsub`` meets from now on a roomy outbound queue."""
    pubsub.peer_queues = RoomyQueues(pubsub.peer_queues)
