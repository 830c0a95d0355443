"""Broadcast: gossipsub on namespaced topics, with no silent drops.

Topics are namespaced: a user topic ``news`` is ``/mesh/<network id>/news`` on
the wire. Gossipsub's own protocol ID stays ``/meshsub/1.1.0``: py-libp2p
derives a peer's features from it by value, so it cannot be renamed. Isolation
holds anyway: pubsub sees the host through a view that serves and dials
admitted members only, so a peer of another network never enters its peer
table or a mesh (docs/protocol.md).

Works around these py-libp2p 0.8.1 behaviours (docs/py-libp2p.md, tested in
tests/integration/test_pubsub.py):

* docs/py-libp2p.md#trap-5: ``heartbeat_interval`` defaults to 120 s and the
  degrees have no defaults: D=6, D_lo=4, D_hi=12, heartbeat 1 s;
* docs/py-libp2p.md#trap-6: spam protection counts the node's own publishes
  (10/s per topic) and drops silently: off (rate limiting and scoring are
  meshd's own business);
* docs/py-libp2p.md#trap-7: meshsub v1.2 sends IDONTWANT for every message,
  doubling CPU: v1.1;
* docs/py-libp2p.md#trap-8: ``publish()`` never blocks, and per-peer outbound
  queues (32 RPCs) and subscription channels (32) drop when full. meshd makes
  the outbound queues roomy (meshd/p2p/upstream/gossip_queues.py) so that
  forwarders absorb bursts, publishes only while its own queues have room
  (back-pressure, then an explicit error), replaces the subscription channel by
  a synchronous hand-off into bounded per-subscriber buffers, ends a subscriber
  that falls behind with an explicit error, and counts every drop, including
  py-libp2p's own (``drop_rpc`` only logs);
* docs/py-libp2p.md#eclipse-protection: eclipse protection (on by default)
  wants 3 distinct IPs in a mesh: off, meshd's connection manager owns peer
  diversity.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from meshd import errors
from meshd.p2p.gossip_router import FloodPublishGossipSub
from meshd.p2p.membership import Membership
from meshd.p2p.store_forward import StoreForwardTopics
from meshd.p2p.upstream import gossip_queues, peer_records
from meshd.p2p.upstream.hostview import MembersOnlyHost

log = logging.getLogger(__name__)

DEGREE, DEGREE_LOW, DEGREE_HIGH = 6, 4, 12
HEARTBEAT_SECONDS = 1
MAX_MESSAGE_BYTES = 1 << 20  # gossipsub's default RPC limit is 1 MiB
MAX_TOPIC_CHARS = 200
SUBSCRIBER_BUFFER = 1024  # messages a local subscriber may fall behind
# Publish waits while a peer's outbound queue holds this many RPCs (the queues are
# roomy, meshd/p2p/upstream/gossip_queues.py, but the publisher keeps its own short) ...
QUEUE_HIGH_WATER = 24
# ... for at most this long, then refuses with an explicit error.
PUBLISH_BACKPRESSURE_TIMEOUT = 5.0
_BACKPRESSURE_POLL = 0.002


# (sender peer ID, message data) -> accept?
Validator = Callable[[str, bytes], bool]


def wire_topic(network_id: str, topic: str) -> str:
    """The gossipsub topic of a user topic: ``/mesh/<network id>/<topic>``."""
    return f"/mesh/{network_id}/{topic}"


@dataclass(frozen=True)
class Message:
    topic: str
    data: bytes
    sender: str  # peer ID of the author (signed)
    seqno: int
    received_at: float  # time.time() on arrival


@dataclass
class Counters:
    """Gossip counters (exported as metrics with the metrics step)."""

    published: int = 0
    delivered: int = 0  # to local subscribers
    dropped_slow_subscriber: int = 0
    dropped_outbound: int = 0  # py-libp2p's drop_rpc: a peer's outbound queue was full
    publish_refused: int = 0  # back-pressure timed out
    rejected: int = 0  # refused by a topic validator (not delivered, not forwarded)


class SubscriberTooSlow(errors.ResourceExhausted):
    def __init__(self, topic: str, dropped: int) -> None:
        super().__init__(f"subscriber to {topic!r} fell {SUBSCRIBER_BUFFER} messages behind "
                         f"and was ended ({dropped} dropped); resubscribe and read faster")


@dataclass(eq=False)
class _Subscriber:
    send: trio.MemorySendChannel[Message]
    dropped: int = 0  # set when it fell behind and was ended


@dataclass
class _Topic:
    subscribers: list[_Subscriber] = field(default_factory=list)


class _TopicSink:
    """Stands in for py-libp2p's subscription channel of one topic (see open_subscription)."""

    def __init__(self, broadcast: Broadcast, topic: str, entry: _Topic) -> None:
        self._broadcast = broadcast
        self._topic = topic
        self._entry = entry

    def send_nowait(self, raw: Any) -> None:
        self._broadcast._deliver(self._topic, self._entry, raw)

    async def aclose(self) -> None:  # py-libp2p's unsubscribe closes the channel
        pass


class Subscription:
    """One local subscriber's messages; see Broadcast.open_subscription."""

    def __init__(self, topic: str, receive: trio.MemoryReceiveChannel[Message],
                 subscriber: _Subscriber) -> None:
        self.topic = topic
        self._receive = receive
        self._subscriber = subscriber

    async def __aiter__(self) -> AsyncIterator[Message]:
        async for message in self._receive:
            yield message
        if self._subscriber.dropped:
            raise SubscriberTooSlow(self.topic, self._subscriber.dropped)


class _DropCounter(logging.Handler):
    """Counts py-libp2p's ``drop_rpc`` calls, which it only logs at DEBUG."""

    def __init__(self, counters: Counters) -> None:
        super().__init__(logging.DEBUG)
        self._counters = counters

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Dropping outbound RPC"):
            self._counters.dropped_outbound += 1


class Broadcast:
    """Publish and subscribe on the network's topics; lives on the trio loop."""

    def __init__(self, pubsub: Pubsub, network_id: str, nursery: trio.Nursery,
                 counters: Counters) -> None:
        self._pubsub = pubsub
        self._network_id = network_id
        self._nursery = nursery
        self._topics: dict[str, _Topic] = {}
        self._relays = StoreForwardTopics(pubsub)  # topics whose messages an owner relays
        self.counters = counters

    def _wire(self, topic: str) -> str:
        if not topic or len(topic) > MAX_TOPIC_CHARS or not topic.isprintable():
            raise errors.InvalidArgument(f"a topic is 1 to {MAX_TOPIC_CHARS} printable "
                                         "characters")
        return wire_topic(self._network_id, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data``; waits while peers' outbound queues are full.

        Raises:
            errors.InvalidArgument: ``topic`` is a relayed topic (:meth:`set_relay`),
                which only its owner publishes to (:meth:`publish_relayed`).
            errors.Unavailable: the queues did not drain in time (overload).
        """
        if self._wire(topic) in self._relays:
            raise errors.InvalidArgument(f"topic {topic!r} is reserved: meshd checks and "
                                         "sends its messages itself")
        await self.publish_relayed(topic, data)

    async def publish_relayed(self, topic: str, data: bytes) -> None:
        """:meth:`publish`, also on relayed topics: for their owner only."""
        wire = self._wire(topic)
        if len(data) > MAX_MESSAGE_BYTES - 1024:
            raise errors.InvalidArgument(f"message is {len(data)} bytes; the limit is "
                                         f"{MAX_MESSAGE_BYTES - 1024}")
        await self._wait_for_queue_room(topic)
        await self._pubsub.publish(wire, data)
        self.counters.published += 1

    async def _wait_for_queue_room(self, topic: str) -> None:
        # py-libp2p's queues expose no event; poll briefly, bounded
        # (docs/py-libp2p.md#trap-8).
        for _ in range(math.ceil(PUBLISH_BACKPRESSURE_TIMEOUT / _BACKPRESSURE_POLL)):
            if self.max_queue_depth() < QUEUE_HIGH_WATER:
                return
            await trio.sleep(_BACKPRESSURE_POLL)
        self.counters.publish_refused += 1
        raise errors.Unavailable(f"cannot publish to {topic!r}: peers' outbound queues stayed "
                                 f"full for {PUBLISH_BACKPRESSURE_TIMEOUT:g} s (overloaded)")

    def max_queue_depth(self) -> int:
        return max((len(q) for q in self._pubsub.peer_queues.values()), default=0)

    @contextlib.asynccontextmanager
    async def open_subscription(self, topic: str) -> AsyncIterator[Subscription]:
        """Receive ``topic``'s messages from the moment this is entered.

        Iterating the subscription raises SubscriberTooSlow if the reader fell
        SUBSCRIBER_BUFFER messages behind.
        """
        wire = self._wire(topic)
        send, receive = trio.open_memory_channel[Message](SUBSCRIBER_BUFFER)
        entry = self._topics.get(wire)
        if entry is None:
            entry = self._topics[wire] = _Topic()
            await self._pubsub.subscribe(wire)
            # py-libp2p hands messages to a 32-message channel and drops them
            # when it is full (docs/py-libp2p.md#trap-8), which a burst did even
            # with a task draining it at once: the reading task runs ahead of
            # that task. The sink delivers synchronously into the subscribers'
            # buffers (docs/py-libp2p.md#found-subscription-channel).
            upstream = self._pubsub.subscribed_topics_send[wire]
            sink: Any = _TopicSink(self, topic, entry)  # duck-types the channel
            self._pubsub.subscribed_topics_send[wire] = sink
            upstream.close()
        subscriber = _Subscriber(send)
        entry.subscribers.append(subscriber)
        try:
            async with receive:
                yield Subscription(topic, receive, subscriber)
        finally:
            with contextlib.suppress(ValueError):
                entry.subscribers.remove(subscriber)
            if not entry.subscribers and self._topics.get(wire) is entry:
                del self._topics[wire]
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(wire)

    async def subscribe(self, topic: str) -> AsyncIterator[Message]:
        """``open_subscription`` as one generator (registers on first iteration)."""
        async with self.open_subscription(topic) as subscription:
            async for message in subscription:
                yield message

    def _deliver(self, topic: str, entry: _Topic, raw: Any) -> None:
        message = Message(topic, bytes(raw.data), str(ID(raw.from_id)),
                          int.from_bytes(raw.seqno, "big"), time.time())
        for subscriber in list(entry.subscribers):
            try:
                subscriber.send.send_nowait(message)
                self.counters.delivered += 1
            except trio.WouldBlock:
                # Never block py-libp2p's reader: end this subscriber, which
                # subscribe() turns into an error.
                self.counters.dropped_slow_subscriber += 1
                subscriber.dropped += 1
                entry.subscribers.remove(subscriber)
                subscriber.send.close()
            except trio.BrokenResourceError:
                # The subscriber is leaving: open_subscription closed its
                # receiving end and removes it after that close's checkpoint, in
                # which a publish (the ledger's, on another task) can arrive.
                # Raised here, it ended the publisher's task and the node's
                # ledger with it (reliability.md §4, make test runs 30 and 34).
                with contextlib.suppress(ValueError):
                    entry.subscribers.remove(subscriber)

    def set_validator(self, topic: str, validator: Validator) -> None:
        """Check every message on ``topic`` before it is delivered or forwarded.

        ``validator(sender_peer_id, data)`` returns whether to accept; a
        validator that raises rejects the message (and is logged), it never
        takes the node down.
        """
        def check(sender: ID, raw: Any) -> bool:
            try:
                accepted = bool(validator(str(sender), bytes(raw.data)))
            except Exception:
                log.exception("topic validator failed; message rejected",
                              extra={"topic": topic})
                accepted = False
            if not accepted:
                self.counters.rejected += 1
            return accepted

        self._pubsub.set_topic_validator(self._wire(topic), check, False)

    def set_relay(self, topic: str, take: Callable[[str, bytes], None]) -> None:
        """Hand every message others send on ``topic`` to ``take(sender, data)``
        instead of delivering and forwarding it; this node's own publishes are
        forwarded as usual.

        For store-then-forward topics (the ledger, docs/ledger.md §8.1): the
        owner checks and stores a message, then publishes it itself, so this
        node never forwards what it has not judged. ``take`` must not block;
        one that raises is logged. How, and why not with a topic validator:
        meshd/p2p/store_forward.py.
        """
        self._relays.add(self._wire(topic), take)

    def topics(self) -> list[tuple[str, int]]:
        """Topics this node subscribes to, with their count of local subscribers."""
        prefix = wire_topic(self._network_id, "")
        return sorted((wire[len(prefix):], len(entry.subscribers))
                      for wire, entry in self._topics.items())

    def topic_peers(self, topic: str) -> list[str]:
        """Members known to subscribe to ``topic``."""
        return sorted(str(p) for p in self._pubsub.peer_topics.get(self._wire(topic), ()))


@contextlib.asynccontextmanager
async def open_broadcast_services(host: IHost, membership: Membership,
                                  network_id: str) -> AsyncIterator[Pubsub]:
    """Start gossipsub (enter this before ``host.run()``: docs/py-libp2p.md#trap-17)."""
    router = FloodPublishGossipSub(
        protocols=[PROTOCOL_ID_V11], degree=DEGREE, degree_low=DEGREE_LOW,
        degree_high=DEGREE_HIGH, heartbeat_interval=HEARTBEAT_SECONDS,
        spam_protection_enabled=False, eclipse_protection_enabled=False)
    view = MembersOnlyHost(host, membership, dial_members_only=True)
    pubsub = Pubsub(view, router,  # type: ignore[arg-type]
                    strict_signing=True, max_inbound_rpc_size=MAX_MESSAGE_BYTES)
    # py-libp2p 0.8.1 starts the seqno counter at int(time.time()) and adds 1 per
    # publish; a message's ID is (from, seqno) and peers drop IDs seen in the last
    # 120 s. A node that published more messages than seconds passed before its
    # restart re-used seqnos, and its peers silently dropped everything it
    # published for up to two minutes (its votes and closes arrived by sync,
    # too late to count). Nanoseconds, as go-libp2p starts it, cannot repeat
    # (docs/py-libp2p.md#found-seqno-restart).
    pubsub.counter = time.time_ns()
    gossip_queues.install(pubsub)
    peer_records.install()
    async with background_trio_service(pubsub), background_trio_service(router):
        yield pubsub


@contextlib.asynccontextmanager
async def open_broadcast(pubsub: Pubsub, network_id: str) -> AsyncIterator[Broadcast]:
    """The Broadcast API over running gossipsub services."""
    counters = Counters()
    drops = _DropCounter(counters)
    rpc_queue_log = logging.getLogger("libp2p.pubsub.rpc_queue")
    rpc_queue_log.addHandler(drops)
    rpc_queue_log.setLevel(logging.DEBUG)
    # Its DEBUG records are counted, not shown; it logs nothing else worth showing.
    rpc_queue_log.propagate = False
    try:
        async with trio.open_nursery() as nursery:
            yield Broadcast(pubsub, network_id, nursery, counters)
            nursery.cancel_scope.cancel()
    finally:
        rpc_queue_log.removeHandler(drops)
