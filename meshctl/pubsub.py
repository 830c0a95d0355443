"""meshctl pubsub: publish and subscribe on the network's gossip topics."""

from __future__ import annotations

import base64
import sys
from typing import Any

import click

from mesh.pubsub.v1 import pubsub_pb2, pubsub_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, emit_line


def _stub(client: MeshClient) -> pubsub_pb2_grpc.PubsubServiceStub:
    return pubsub_pb2_grpc.PubsubServiceStub(client.channel())


def message_to_dict(message: pubsub_pb2.Message) -> dict[str, Any]:
    """The stable JSON shape of a message (data as text when it is UTF-8; the
    seqno as a decimal string, which JSON numbers cannot carry exactly)."""
    try:
        data, encoding = message.data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        data, encoding = base64.b64encode(message.data).decode(), "base64"
    return {"topic": message.topic, "data": data, "encoding": encoding,
            # a decimal string: seqnos start at the clock in nanoseconds (> 2^53)
            "sender": message.sender, "seqno": str(message.seqno),
            "received_at": message.received_at.ToJsonString()}


@click.group()
def pubsub() -> None:
    """Publish and subscribe on the network's topics (gossipsub)."""


@pubsub.command("pub")
@click.argument("topic")
@click.argument("data", required=False)
@click.option("--file", "data_file", type=click.File("rb"),
              help="Publish the content of a file ('-' for stdin) instead of DATA.")
@json_option
@with_client
def publish(client: MeshClient, topic: str, data: str | None, data_file: Any,
            as_json: bool) -> None:
    """Publish DATA (text) or the content of --file on TOPIC."""
    if (data is None) == (data_file is None):
        fail("give the message either as DATA or with --file", EXIT_INVALID)
    payload = data.encode() if data is not None else data_file.read()
    client.unary(_stub(client).Publish, pubsub_pb2.PublishRequest(topic=topic, data=payload))
    emit({"topic": topic, "bytes": len(payload)}, as_json,
         lambda d: f"published {d['bytes']} bytes on {d['topic']}")


@pubsub.command("sub")
@click.argument("topic")
@click.option("-n", "--count", type=click.IntRange(min=1),
              help="Stop after this many messages (default: until interrupted).")
@json_option
@with_client
def subscribe(client: MeshClient, topic: str, count: int | None, as_json: bool) -> None:
    """Print TOPIC's messages as they arrive (--json: one object per line)."""
    received = 0
    try:
        for response in client.stream(_stub(client).Subscribe,
                                      pubsub_pb2.SubscribeRequest(topic=topic)):
            if as_json:
                emit_line(message_to_dict(response.message), True, str)
            else:
                sys.stdout.buffer.write(response.message.data + b"\n")
                sys.stdout.flush()
            received += 1
            if count is not None and received >= count:
                return
    except KeyboardInterrupt:
        pass


@pubsub.command()
@json_option
@with_client
def topics(client: MeshClient, as_json: bool) -> None:
    """List the topics this node subscribes to."""
    response = client.unary(_stub(client).ListTopics, pubsub_pb2.ListTopicsRequest())
    found = [{"topic": t.name, "local_subscribers": t.local_subscribers}
             for t in response.topics]
    emit(found, as_json, lambda ts: "\n".join(
        f"{t['topic']}  ({t['local_subscribers']} local subscribers)" for t in ts)
        or "no subscriptions")


@pubsub.command()
@click.argument("topic")
@json_option
@with_client
def peers(client: MeshClient, topic: str, as_json: bool) -> None:
    """List the members known to subscribe to TOPIC."""
    response = client.unary(_stub(client).ListTopicPeers,
                            pubsub_pb2.ListTopicPeersRequest(topic=topic))
    emit(list(response.peer_ids), as_json,
         lambda ids: "\n".join(ids) or f"no known subscriber of {topic}")
