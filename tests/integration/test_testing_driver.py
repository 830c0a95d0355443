"""meshd.testing, the driver plugin authors test with: both modes, used as the docs show."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trio

from mesh.plugins.v1 import plugins_pb2
from meshd.testing import open_network, plugin_under_test
from tests.plugin_fixtures import EchoPlugin, SquarePlugin


async def test_in_process_nodes_run_plugins_that_are_not_installed(tmp_path: Path) -> None:
    plugins = [plugin_under_test("echo", EchoPlugin), plugin_under_test("square", SquarePlugin)]
    with trio.fail_after(60):
        async with open_network(tmp_path, 3, plugins=plugins) as net:
            a, b, c = net.nodes
            assert len({a.peer_id, b.peer_id, c.peer_id}) == 3
            assert await a.call("echo", "ECHO", b"hi", peer=b) == b"hi"
            assert await c.call("echo", "WHOAMI", peer=a) == f"{a.peer_id} saw {c.peer_id}".encode()
            task = await a.submit_task("square", "square", b"12", redundancy=2)
            assert (task.state, task.result) == ("done", b"144")
            assert {x.provider for x in task.attempts} == {b.peer_id, c.peer_id}
            listed = await b.plugins()
            assert sorted(listed) == ["echo", "square"]
            assert all(p.required and p.state == "running" for p in listed.values())
            with pytest.raises(grpc.RpcError) as refused:
                await a.call("echo", "REFUSE", b"x", peer=b)
            # A peer's refusal is UNKNOWN (another node's error), with the plugin's message.
            assert refused.value.code() == grpc.StatusCode.UNKNOWN
            assert "refused: x" in str(refused.value.details())


async def test_process_nodes_run_the_installed_plugins(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with open_network(tmp_path, 2, required=["storage"], processes=True) as net:
            a, b = net.nodes
            name = await a.call("storage", "STORE_FILE", b"a chunk")
            assert await b.call("storage", "RETRIEVE_FILE", name, peer=a) == b"a chunk"
            assert (await a.plugins())["storage"].kind == plugins_pb2.PLUGIN_KIND_IN_PROCESS
        assert (tmp_path / "node0.log").read_text().count("meshd ready") == 1


async def test_processes_take_installed_plugins_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="installed plugins only"):
        async with open_network(tmp_path, 1, processes=True,
                                plugins=[plugin_under_test("echo", EchoPlugin)]):
            pass


async def test_the_default_network_mints(tmp_path: Path) -> None:
    from meshd.testing import eventually

    with trio.fail_after(90):
        async with open_network(tmp_path, 2, plugins=[], epoch_seconds=2) as net:
            info = await eventually(net[0].token_info,
                                    lambda i: int(i.minted_total) > 0, timeout=60,
                                    what="a reward minted")
            assert info.final_epoch >= 0
            rewards = await net[1].rewards()
            assert {r.account for r in rewards.accounts} == {n.peer_id for n in net.nodes}
