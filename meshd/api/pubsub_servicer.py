"""mesh.pubsub.v1.PubsubService: forwards to the node's Broadcast."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.pubsub.v1 import pubsub_pb2, pubsub_pb2_grpc
from meshd.p2p.pubsub import Broadcast, Counters, Message
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class PubsubServicer(pubsub_pb2_grpc.PubsubServiceServicer):
    def __init__(self, bridge: TrioBridge, broadcast: Broadcast) -> None:
        self._bridge = bridge
        self._broadcast = broadcast

    async def Publish(self, request: pubsub_pb2.PublishRequest,
                      context: Context) -> pubsub_pb2.PublishResponse:
        await unary(context, self._bridge, self._broadcast.publish, request.topic, request.data)
        return pubsub_pb2.PublishResponse()

    async def Subscribe(self, request: pubsub_pb2.SubscribeRequest,
                        context: Context) -> AsyncIterator[pubsub_pb2.SubscribeResponse]:
        messages = functools.partial(self._broadcast.subscribe, request.topic)
        async for message in server_stream(context, self._bridge, messages):
            yield pubsub_pb2.SubscribeResponse(message=message_to_pb(message))

    async def ListTopics(self, request: pubsub_pb2.ListTopicsRequest,
                         context: Context) -> pubsub_pb2.ListTopicsResponse:
        topics, counters = await unary(context, self._bridge, _call, self._topics_and_counters)
        return pubsub_pb2.ListTopicsResponse(
            topics=[pubsub_pb2.Topic(name=name, local_subscribers=count)
                    for name, count in topics],
            gossip=pubsub_pb2.GossipCounters(
                published=counters.published, delivered=counters.delivered,
                dropped=counters.dropped_slow_subscriber + counters.dropped_outbound,
                publish_refused=counters.publish_refused, rejected=counters.rejected))

    def _topics_and_counters(self) -> tuple[list[tuple[str, int]], Counters]:
        """Both read at once, on trio (the counters copied: trio goes on counting)."""
        return self._broadcast.topics(), dataclasses.replace(self._broadcast.counters)

    async def ListTopicPeers(self, request: pubsub_pb2.ListTopicPeersRequest,
                             context: Context) -> pubsub_pb2.ListTopicPeersResponse:
        peers = await unary(context, self._bridge, _call, self._broadcast.topic_peers,
                            request.topic)
        return pubsub_pb2.ListTopicPeersResponse(peer_ids=peers)


async def _call(fn: Any, *args: Any) -> Any:
    """Run a synchronous reader of trio-owned state on the trio loop."""
    return fn(*args)


def message_to_pb(message: Message) -> pubsub_pb2.Message:
    received_at = Timestamp()
    received_at.FromDatetime(dt.datetime.fromtimestamp(message.received_at, dt.UTC))
    return pubsub_pb2.Message(topic=message.topic, data=message.data, sender=message.sender,
                              seqno=message.seqno, received_at=received_at)
