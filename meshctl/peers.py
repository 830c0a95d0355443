"""meshctl peers: the network's members this node is connected to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from mesh.peers.v1 import peers_pb2, peers_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, emit_stream, fields


def peer_to_dict(peer: peers_pb2.Peer) -> dict[str, Any]:
    """The stable JSON shape of a peer."""
    direction = peers_pb2.Direction.Name(peer.direction).removeprefix("DIRECTION_").lower()
    return {"peer_id": peer.peer_id, "addrs": list(peer.addrs), "direction": direction,
            "connected_at": peer.connected_at.ToJsonString(), "agent": peer.agent,
            "clock_offset_ms": peer.clock_offset_ms if peer.HasField("clock_offset_ms")
            else None}


def _table(peers: list[dict[str, Any]]) -> str:
    if not peers:
        return "no peers connected (meshctl peers connect ADDRESS)"
    rows = [("PEER ID", "DIRECTION", "ADDRESS", "AGENT")]
    rows += [(p["peer_id"], p["direction"], (p["addrs"] or ["-"])[0], p["agent"]) for p in peers]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}"
                     for a, b, c, d in rows)


def _stub(client: MeshClient) -> peers_pb2_grpc.PeersServiceStub:
    return peers_pb2_grpc.PeersServiceStub(client.channel())


@click.group()
def peers() -> None:
    """List, connect, disconnect, block and ping the network's peers."""


@peers.command("ls")
@json_option
@with_client
def list_peers(client: MeshClient, as_json: bool) -> None:
    """List connected peers that passed the network handshake."""
    response = client.unary(_stub(client).ListPeers, peers_pb2.ListPeersRequest())
    emit([peer_to_dict(p) for p in response.peers], as_json, _table)


@peers.command()
@click.argument("address")
@json_option
@with_client
def connect(client: MeshClient, address: str, as_json: bool) -> None:
    """Connect to the peer at ADDRESS (/ip4/HOST/tcp/PORT/p2p/PEER_ID, or a
    URL tcp://HOST:PORT or ws://HOST:PORT, whose peer ID is learnt on contact).

    Succeeds once the peer has shown it belongs to this network; a peer of
    another network is refused and disconnected.
    """
    response = client.unary(_stub(client).ConnectPeer,
                            peers_pb2.ConnectPeerRequest(address=address))
    emit(peer_to_dict(response.peer), as_json, lambda p: fields([
        ("Connected to", p["peer_id"]), ("Address", p["addrs"]), ("Agent", p["agent"])]))


@peers.command()
@click.argument("peer_id")
@json_option
@with_client
def disconnect(client: MeshClient, peer_id: str, as_json: bool) -> None:
    """Close every connection to PEER_ID."""
    client.unary(_stub(client).DisconnectPeer, peers_pb2.DisconnectPeerRequest(peer_id=peer_id))
    emit({"peer_id": peer_id, "disconnected": True}, as_json,
         lambda d: f"disconnected from {d['peer_id']}")


@peers.command()
@click.argument("peer_id")
@click.option("-c", "--count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Number of pings.")
@json_option
@with_client
def ping(client: MeshClient, peer_id: str, count: int, as_json: bool) -> None:
    """Measure round-trip times to PEER_ID (a direct request each, new stream each)."""
    response = client.unary(_stub(client).PingPeer,
                            peers_pb2.PingPeerRequest(peer_id=peer_id, count=count))
    rtts = [round(r.ToNanoseconds() / 1e6, 3) for r in response.rtts]
    emit({"peer_id": peer_id, "rtt_ms": rtts}, as_json, lambda d: "\n".join(
        [f"pong from {d['peer_id']}: {ms:.3f} ms" for ms in d["rtt_ms"]]
        + [f"min/avg/max = {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms"]))


@peers.command()
@click.argument("peer_id")
@json_option
@with_client
def block(client: MeshClient, peer_id: str, as_json: bool) -> None:
    """Disconnect PEER_ID and refuse it, both ways, until unblocked.

    The block lasts until `meshctl peers unblock` or a restart of meshd.
    """
    client.unary(_stub(client).BlockPeer, peers_pb2.BlockPeerRequest(peer_id=peer_id))
    emit({"peer_id": peer_id, "blocked": True}, as_json, lambda d: f"blocked {d['peer_id']}")


@peers.command()
@click.argument("peer_id")
@json_option
@with_client
def unblock(client: MeshClient, peer_id: str, as_json: bool) -> None:
    """Lift the block on PEER_ID (the connection manager may dial it again)."""
    client.unary(_stub(client).UnblockPeer, peers_pb2.UnblockPeerRequest(peer_id=peer_id))
    emit({"peer_id": peer_id, "blocked": False}, as_json,
         lambda d: f"unblocked {d['peer_id']}")


@peers.command("blocked")
@json_option
@with_client
def list_blocked(client: MeshClient, as_json: bool) -> None:
    """List the peers blocked by `meshctl peers block`."""
    response = client.unary(_stub(client).ListPeers, peers_pb2.ListPeersRequest())
    emit(list(response.blocked), as_json,
         lambda ids: "\n".join(ids) if ids else "no peers blocked")


@peers.command("watch")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Stop after N events.")
@json_option
@with_client
def watch(client: MeshClient, count: int | None, as_json: bool) -> None:
    """Print the peers connected now, then each peer joining or leaving.

    One line per event (--json: one object per line: kind (joined, left),
    peer_id, at, present (connected before the watch began), and for a join
    its addrs, direction and agent; missed: events lost because this reader
    was too slow).
    """
    emit_stream(peer_event_stream(client), count, as_json, peer_event_line)


def peer_event_stream(client: MeshClient) -> Iterator[dict[str, Any]]:
    """``WatchPeers`` as the JSON shape ``peers watch`` prints (also ``events``)."""
    stub = peers_pb2_grpc.PeersServiceStub(client.channel())
    return (peer_event_to_dict(e) for e in client.stream(stub.WatchPeers,
                                                         peers_pb2.WatchPeersRequest()))


def peer_event_to_dict(event: peers_pb2.WatchPeersResponse) -> dict[str, Any]:
    kind = peers_pb2.WatchPeersResponse.Kind.Name(event.kind).removeprefix("KIND_").lower()
    data: dict[str, Any] = {"kind": kind, "peer_id": event.peer_id,
                            "at": event.at.ToJsonString(), "missed": event.missed,
                            "present": event.present}
    if kind == "joined":  # present ones too
        data.update(addrs=list(event.addrs), agent=event.agent,
                    direction=peers_pb2.Direction.Name(event.direction)
                    .removeprefix("DIRECTION_").lower())
    return data


def peer_event_line(e: dict[str, Any]) -> str:
    lost = f" ({e['missed']} events missed before)" if e["missed"] else ""
    where = f" {e['direction']} {e['addrs'][0] if e['addrs'] else ''} {e['agent']}" \
        if e["kind"] == "joined" else ""
    kind = "present" if e["present"] else e["kind"]
    return f"{e['at']} {kind:<7} {e['peer_id']}{where}{lost}"
