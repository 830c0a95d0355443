"""meshctl dht: the network's Kademlia DHT."""

from __future__ import annotations

import sys
from typing import Any

import click

from mesh.dht.v1 import dht_pb2, dht_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, fields


def _stub(client: MeshClient) -> dht_pb2_grpc.DhtServiceStub:
    return dht_pb2_grpc.DhtServiceStub(client.channel())


def _peer(peer: dht_pb2.PeerAddresses) -> dict[str, Any]:
    return {"peer_id": peer.peer_id, "addrs": list(peer.addrs)}


@click.group()
def dht() -> None:
    """Find peers, announce and find providers, put and get values."""


@dht.command("find-peer")
@click.argument("peer_id")
@json_option
@with_client
def find_peer(client: MeshClient, peer_id: str, as_json: bool) -> None:
    """Look PEER_ID up in the DHT and print its addresses."""
    response = client.unary(_stub(client).FindPeer, dht_pb2.FindPeerRequest(peer_id=peer_id))
    emit(_peer(response.peer), as_json,
         lambda p: fields([("Peer ID", p["peer_id"]), ("Addresses", p["addrs"])]))


@dht.command()
@click.argument("key")
@json_option
@with_client
def provide(client: MeshClient, key: str, as_json: bool) -> None:
    """Announce that this node provides KEY."""
    client.unary(_stub(client).Provide, dht_pb2.ProvideRequest(key=key))
    emit({"key": key, "provided": True}, as_json, lambda d: f"providing {d['key']}")


@dht.command("find-providers")
@click.argument("key")
@click.option("-n", "--count", type=click.IntRange(1, 100), default=20, show_default=True,
              help="At most this many providers.")
@json_option
@with_client
def find_providers(client: MeshClient, key: str, count: int, as_json: bool) -> None:
    """List peers that provide KEY."""
    response = client.unary(_stub(client).FindProviders,
                            dht_pb2.FindProvidersRequest(key=key, count=count))
    found = [_peer(p) for p in response.providers]
    emit(found, as_json, lambda ps: "\n".join(
        f"{p['peer_id']}  {' '.join(p['addrs']) or '-'}" for p in ps) or f"no provider of {key}")


@dht.command()
@click.argument("key")
@click.argument("value", required=False)
@click.option("--file", "value_file", type=click.File("rb"),
              help="Read the value from a file ('-' for stdin) instead of VALUE.")
@json_option
@with_client
def put(client: MeshClient, key: str, value: str | None, value_file: Any,
        as_json: bool) -> None:
    """Store VALUE (text) or the content of --file under KEY (at most 64 KiB)."""
    if (value is None) == (value_file is None):
        fail("give the value either as VALUE or with --file", EXIT_INVALID)
    data = value.encode() if value is not None else value_file.read()
    client.unary(_stub(client).PutValue, dht_pb2.PutValueRequest(key=key, value=data))
    emit({"key": key, "bytes": len(data)}, as_json,
         lambda d: f"stored {d['bytes']} bytes under {d['key']}")


@dht.command()
@click.argument("key")
@json_option
@with_client
def get(client: MeshClient, key: str, as_json: bool) -> None:
    """Print the value stored under KEY (raw bytes; --json: text or hex).

    How far the lookup went goes to stderr, so that stdout is the value alone:
    hops (0: this node had it; 1: a peer it knew; 2: a peer one referral away...),
    the peers queried and how many of them had the value.
    """
    response = client.unary(_stub(client).GetValue, dht_pb2.GetValueRequest(key=key))
    value = response.value
    lookup = {"hops": response.hops, "queried_peers": response.queried_peers,
              "peers_with_value": response.peers_with_value}
    if not as_json:
        sys.stdout.buffer.write(value)
        if sys.stdout.isatty() and not value.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
        click.echo(_lookup_line(lookup), err=True)
        return
    try:
        emit({"key": key, "value": value.decode("utf-8"), "encoding": "utf-8", **lookup},
             True, str)
    except UnicodeDecodeError:
        emit({"key": key, "value": value.hex(), "encoding": "hex", **lookup}, True, str)


def _lookup_line(lookup: dict[str, int]) -> str:
    if lookup["hops"] == 0:
        return "(found locally: 0 hops)"
    hops = lookup["hops"]
    return (f"({hops} hop{'s' if hops != 1 else ''}; {lookup['queried_peers']} peers queried, "
            f"{lookup['peers_with_value']} had the value)")
