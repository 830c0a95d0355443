"""mesh.node.v1.NodeService: forwards to the node's StatusBoard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshd.node_status import NodeStatus, StatusBoard
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, bridge: TrioBridge, board: StatusBoard) -> None:
        self._bridge = bridge
        self._board = board

    async def GetStatus(self, request: node_pb2.GetStatusRequest,
                        context: Context) -> node_pb2.GetStatusResponse:
        status = await unary(context, self._bridge, self._board.status)
        return node_pb2.GetStatusResponse(status=status_to_pb(status))

    async def WatchStatus(self, request: node_pb2.WatchStatusRequest,
                          context: Context) -> AsyncIterator[node_pb2.WatchStatusResponse]:
        async for status in server_stream(context, self._bridge, self._board.watch):
            yield node_pb2.WatchStatusResponse(status=status_to_pb(status))


def status_to_pb(status: NodeStatus) -> node_pb2.NodeStatus:
    started_at = Timestamp()
    started_at.FromDatetime(status.started_at)
    uptime = Duration()
    uptime.FromNanoseconds(int(status.uptime_seconds * 1e9))
    return node_pb2.NodeStatus(
        peer_id=status.peer_id,
        network_id=status.network_id,
        network_name=status.network_name,
        listen_addrs=status.listen_addrs,
        state=node_pb2.NodeState.Value(f"NODE_STATE_{status.state.name}"),
        started_at=started_at,
        uptime=uptime,
        version=status.version,
        peer_count=status.peer_count,
        role=status.role,
        warnings=status.warnings,
        reachability=status.reachability,
        low_watermark=status.watermarks[0],
        target_peers=status.watermarks[1],
        high_watermark=status.watermarks[2],
        http_url=status.http_url,
    )
