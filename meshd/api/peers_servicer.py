"""mesh.peers.v1.PeersService: forwards to the node's P2PHost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.peers.v1 import peers_pb2, peers_pb2_grpc
from meshd.p2p.host import P2PHost
from meshd.p2p.membership import PeerEvent, PeerRecord
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_DIRECTIONS = {"outbound": peers_pb2.DIRECTION_OUTBOUND, "inbound": peers_pb2.DIRECTION_INBOUND}


class PeersServicer(peers_pb2_grpc.PeersServiceServicer):
    def __init__(self, bridge: TrioBridge, host: P2PHost) -> None:
        self._bridge = bridge
        self._host = host

    async def WatchPeers(self, request: peers_pb2.WatchPeersRequest,
                         context: Context) -> AsyncIterator[peers_pb2.WatchPeersResponse]:
        async for event, missed in server_stream(context, self._bridge,
                                                 self._host.membership.watch_events):
            yield peer_event_to_pb(event, missed)

    async def ListPeers(self, request: peers_pb2.ListPeersRequest,
                        context: Context) -> peers_pb2.ListPeersResponse:
        peers = await unary(context, self._bridge, self._host.peers)
        blocked = await unary(context, self._bridge, self._host.blocked)
        return peers_pb2.ListPeersResponse(peers=[peer_to_pb(p) for p in peers], blocked=blocked)

    async def ConnectPeer(self, request: peers_pb2.ConnectPeerRequest,
                          context: Context) -> peers_pb2.ConnectPeerResponse:
        peer = await unary(context, self._bridge, self._host.connect, request.address)
        return peers_pb2.ConnectPeerResponse(peer=peer_to_pb(peer))

    async def DisconnectPeer(self, request: peers_pb2.DisconnectPeerRequest,
                             context: Context) -> peers_pb2.DisconnectPeerResponse:
        await unary(context, self._bridge, self._host.disconnect, request.peer_id)
        return peers_pb2.DisconnectPeerResponse()

    async def BlockPeer(self, request: peers_pb2.BlockPeerRequest,
                        context: Context) -> peers_pb2.BlockPeerResponse:
        await unary(context, self._bridge, self._host.block, request.peer_id)
        return peers_pb2.BlockPeerResponse()

    async def UnblockPeer(self, request: peers_pb2.UnblockPeerRequest,
                          context: Context) -> peers_pb2.UnblockPeerResponse:
        await unary(context, self._bridge, self._host.unblock, request.peer_id)
        return peers_pb2.UnblockPeerResponse()

    async def PingPeer(self, request: peers_pb2.PingPeerRequest,
                       context: Context) -> peers_pb2.PingPeerResponse:
        rtts = await unary(context, self._bridge, self._host.ping, request.peer_id,
                           request.count or 1)
        return peers_pb2.PingPeerResponse(rtts=[_duration(r) for r in rtts])


def peer_to_pb(peer: PeerRecord) -> peers_pb2.Peer:
    connected_at = Timestamp()
    connected_at.FromDatetime(peer.connected_at)
    message = peers_pb2.Peer(peer_id=peer.peer_id, addrs=peer.addrs,
                             direction=_DIRECTIONS.get(peer.direction,
                                                       peers_pb2.DIRECTION_UNSPECIFIED),
                             connected_at=connected_at, agent=peer.agent)
    if peer.clock_offset_ms is not None:
        message.clock_offset_ms = peer.clock_offset_ms
    return message


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def peer_event_to_pb(event: PeerEvent, missed: int) -> peers_pb2.WatchPeersResponse:
    at = Timestamp()
    at.FromDatetime(event.at)
    response = peers_pb2.WatchPeersResponse(
        kind=peers_pb2.WatchPeersResponse.KIND_JOINED if event.kind == "joined"
        else peers_pb2.WatchPeersResponse.KIND_LEFT,
        peer_id=event.peer_id, at=at, missed=missed, present=event.present)
    if event.record is not None:
        response.addrs.extend(event.record.addrs)
        response.direction = _DIRECTIONS.get(event.record.direction,
                                             peers_pb2.DIRECTION_UNSPECIFIED)
        response.agent = event.record.agent
    return response
