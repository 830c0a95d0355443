"""mesh.dht.v1.DhtService: forwards to the node's Dht."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from mesh.dht.v1 import dht_pb2, dht_pb2_grpc
from meshd.p2p.dht import DEFAULT_PROVIDERS, Dht, PeerAddrs
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class DhtServicer(dht_pb2_grpc.DhtServiceServicer):
    def __init__(self, bridge: TrioBridge, dht: Dht) -> None:
        self._bridge = bridge
        self._dht = dht

    async def FindPeer(self, request: dht_pb2.FindPeerRequest,
                       context: Context) -> dht_pb2.FindPeerResponse:
        found = await unary(context, self._bridge, self._dht.find_peer, request.peer_id)
        return dht_pb2.FindPeerResponse(peer=_addrs(found))

    async def Provide(self, request: dht_pb2.ProvideRequest,
                      context: Context) -> dht_pb2.ProvideResponse:
        await unary(context, self._bridge, self._dht.provide, request.key)
        return dht_pb2.ProvideResponse()

    async def FindProviders(self, request: dht_pb2.FindProvidersRequest,
                            context: Context) -> dht_pb2.FindProvidersResponse:
        found = await unary(context, self._bridge, self._dht.find_providers, request.key,
                            request.count or DEFAULT_PROVIDERS)
        return dht_pb2.FindProvidersResponse(providers=[_addrs(p) for p in found])

    async def PutValue(self, request: dht_pb2.PutValueRequest,
                       context: Context) -> dht_pb2.PutValueResponse:
        await unary(context, self._bridge, self._dht.put, request.key, request.value)
        return dht_pb2.PutValueResponse()

    async def GetValue(self, request: dht_pb2.GetValueRequest,
                       context: Context) -> dht_pb2.GetValueResponse:
        found = await unary(context, self._bridge, self._dht.get, request.key)
        return dht_pb2.GetValueResponse(value=found.value, hops=found.hops,
                                        queried_peers=found.queried_peers,
                                        peers_with_value=found.peers_with_value)


def _addrs(peer: PeerAddrs) -> dht_pb2.PeerAddresses:
    return dht_pb2.PeerAddresses(peer_id=peer.peer_id, addrs=peer.addrs)
