"""meshctl status: the node's identity, network, addresses and state."""

from __future__ import annotations

from typing import Any

import click

from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import duration, emit, emit_line, fields


def status_to_dict(status: node_pb2.NodeStatus) -> dict[str, Any]:
    """The stable JSON shape of a node status."""
    state = node_pb2.NodeState.Name(status.state).removeprefix("NODE_STATE_").lower()
    return {
        "peer_id": status.peer_id,
        "network_id": status.network_id,
        "network_name": status.network_name,
        "state": state,
        "role": status.role,
        "peer_count": status.peer_count,
        "listen_addrs": list(status.listen_addrs),
        "reachability": status.reachability or "unknown",
        "started_at": status.started_at.ToJsonString(),
        "uptime_seconds": round(status.uptime.ToNanoseconds() / 1e9, 3),
        "version": status.version,
        "warnings": list(status.warnings),
        "low_watermark": status.low_watermark,
        "target_peers": status.target_peers,
        "high_watermark": status.high_watermark,
        "http_url": status.http_url,
    }


def _human(data: dict[str, Any]) -> str:
    warnings = [f"WARNING: {w}" for w in data["warnings"]]
    return "\n".join([*warnings, fields([
        ("Peer ID", data["peer_id"]),
        ("Network", f"{data['network_name']} ({data['network_id']})"),
        ("State", data["state"]),
        ("Role", data["role"]),
        ("Peers", data["peer_count"]),
        ("Reachable", data["reachability"]),
        ("Addresses", data["listen_addrs"]),
        ("Uptime", duration(data["uptime_seconds"])),
        ("Version", data["version"]),
        *([("Dashboard", data["http_url"])] if data["http_url"] else []),
    ])])


@click.command()
@click.option("--watch", is_flag=True, help="Print the status again each time it changes, "
                                            "until interrupted.")
@json_option
@with_client
def status(client: MeshClient, watch: bool, as_json: bool) -> None:
    """Show the node's peer ID, network, state, addresses and uptime."""
    stub = node_pb2_grpc.NodeServiceStub(client.channel())
    if not watch:
        response = client.unary(stub.GetStatus, node_pb2.GetStatusRequest())
        emit(status_to_dict(response.status), as_json, _human)
        return
    try:
        for update in client.stream(stub.WatchStatus, node_pb2.WatchStatusRequest()):
            emit_line(status_to_dict(update.status), as_json, _human)
    except KeyboardInterrupt:
        pass
