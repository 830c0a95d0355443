"""Several meshd daemons in one trio process, driven over their gRPC API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import trio

from mesh.network.v1 import network_pb2, network_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshcore import genesis as genesis_doc
from meshd.config import Config
from meshd.daemon import DaemonInfo, run_daemon
from tests.unit.test_genesis import DOC


@contextlib.asynccontextmanager
async def open_daemon(tmp_path: Path, name: str, genesis: Path,
                      bootstrap: tuple[str, ...] = ()) -> AsyncIterator[DaemonInfo]:
    config = Config.load(overrides={
        "node.data_dir": tmp_path / name, "node.genesis": genesis,
        "p2p.listen": ("/ip4/127.0.0.1/tcp/0",), "p2p.bootstrap": bootstrap})
    async with trio.open_nursery() as nursery:
        yield await nursery.start(run_daemon, config)
        nursery.cancel_scope.cancel()


def get_status(socket: Path) -> node_pb2.NodeStatus:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        return node_pb2_grpc.NodeServiceStub(channel).GetStatus(
            node_pb2.GetStatusRequest(), timeout=5).status


def wait_for_state(socket: Path, *states: int) -> node_pb2.NodeStatus:
    """Follow WatchStatus until the node is in one of ``states``."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stream = node_pb2_grpc.NodeServiceStub(channel).WatchStatus(
            node_pb2.WatchStatusRequest(), timeout=10)
        for update in stream:
            if update.status.state in states:
                stream.cancel()
                return update.status
    raise AssertionError("stream ended")


async def test_two_nodes_connect_through_bootstrap_and_report_it(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(DOC)
    network_id = genesis_doc.loads(DOC).network_id
    with trio.fail_after(30):
        async with open_daemon(tmp_path, "a", genesis) as a:
            first = await trio.to_thread.run_sync(get_status, a.api.socket)
            assert first.peer_id == a.peer_id
            assert first.network_id == network_id
            assert first.state == node_pb2.NODE_STATE_CONNECTING
            async with open_daemon(tmp_path, "b", genesis, (a.listen_addrs[0],)) as b:
                # Connected, then Active as soon as the DHT routes to the peer.
                seen_by_b = await trio.to_thread.run_sync(
                    wait_for_state, b.api.socket, node_pb2.NODE_STATE_ACTIVE)
                seen_by_a = await trio.to_thread.run_sync(
                    wait_for_state, a.api.socket, node_pb2.NODE_STATE_ACTIVE)
                assert seen_by_a.peer_count == seen_by_b.peer_count == 1
            # b stopped: a notices and says so.
            alone = await trio.to_thread.run_sync(
                wait_for_state, a.api.socket, node_pb2.NODE_STATE_DISCONNECTED)
            assert alone.peer_count == 0


async def test_network_service_returns_the_genesis(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.toml"
    genesis.write_text(DOC)

    def get_network(socket: Path) -> network_pb2.GetNetworkResponse:
        with grpc.insecure_channel(f"unix:{socket}") as channel:
            return network_pb2_grpc.NetworkServiceStub(channel).GetNetwork(
                network_pb2.GetNetworkRequest(), timeout=5)

    with trio.fail_after(30):
        async with open_daemon(tmp_path, "a", genesis) as a:
            response = await trio.to_thread.run_sync(get_network, a.api.socket)
    expected = genesis_doc.loads(DOC)
    assert response.network_id == expected.network_id
    assert genesis_doc.loads(response.genesis_toml) == expected
    assert response.genesis.token.symbol == "STR"
    assert response.genesis.rewards.uptime_percent == 40
    assert [p.name for p in response.genesis.plugins] == ["storage"]
    assert response.genesis.token.allocations[0].amount == "500"
    assert response.genesis.penalties.failed_task_bps == 1000  # the default
