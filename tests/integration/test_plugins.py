"""In-process plugins on real daemons in one trio process: events, gossip, containment."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import trio

from mesh.node.v1 import node_pb2, node_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshd import errors
from meshd.config import Config
from meshd.daemon import DaemonInfo, run_daemon
from meshd.plugin import Plugin
from meshd.plugin_host.loader import Available, PluginSetupError, available
from meshd.testing import eventually
from tests.plugin_fixtures import (
    CrashingPlugin,
    EchoPlugin,
    FloodingPlugin,
    HangingPlugin,
    RunCrashPlugin,
)
from tests.unit.test_genesis import DOC

P = TypeVar("P", bound=Plugin)


def write_genesis(tmp_path: Path, *required: str) -> Path:
    """DOC requiring ``required``, starting now: a task receipt is dated by the
    clock, and one of a network whose epoch 2 has passed unsettled would count
    nothing, so none would be written (meshd/ledger/ledger.py)."""
    plugins = "".join(f'[[plugins]]\nname = "{name}"\n\n' for name in required)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "genesis.toml"
    path.write_text(DOC.replace('[[plugins]]\nname = "storage"\n\n', plugins)
                    .replace("genesis_time = 2026-01-01T00:00:00Z", f"genesis_time = {now}"))
    return path


class Instances:
    """A plugin factory that remembers every instance it made (one per start)."""

    def __init__(self, cls: type[P]) -> None:
        self.cls = cls
        self.made: list[Any] = []

    def __call__(self) -> Plugin:
        plugin = self.cls()
        self.made.append(plugin)
        return plugin

    @property
    def last(self) -> Any:
        return self.made[-1]


@contextlib.asynccontextmanager
async def open_node(tmp_path: Path, name: str, genesis: Path, plugins: Sequence[Available],
                    *, enable: tuple[str, ...] = (), bootstrap: tuple[str, ...] = (),
                    **settings: Any) -> AsyncIterator[DaemonInfo]:
    config = Config.load(overrides={
        "node.data_dir": tmp_path / name, "node.genesis": genesis,
        "p2p.listen": ("/ip4/127.0.0.1/tcp/0",), "p2p.bootstrap": bootstrap,
        "plugins.enable": enable, "plugins.init_timeout": 1,
        "plugins.restart_backoff_max": 2, **settings})
    async with trio.open_nursery() as nursery:
        yield await nursery.start(functools.partial(run_daemon, config, plugins=plugins))
        nursery.cancel_scope.cancel()


def list_plugins(socket: Path) -> dict[str, plugins_pb2.Plugin]:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        response = plugins_pb2_grpc.PluginsServiceStub(channel).ListPlugins(
            plugins_pb2.ListPluginsRequest(), timeout=5)
    return {p.name: p for p in response.plugins}


def status_latency(socket: Path) -> float:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        started = time.perf_counter()
        node_pb2_grpc.NodeServiceStub(channel).GetStatus(node_pb2.GetStatusRequest(), timeout=5)
        return time.perf_counter() - started


async def test_plugins_exchange_events_and_gossip_and_errors_reach_the_caller(
        tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path, "echo")
    echo_a, echo_b = Instances(EchoPlugin), Instances(EchoPlugin)
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis, [available("echo", echo_a, "1.2.0")]) as a, \
                open_node(tmp_path, "b", genesis, [available("echo", echo_b, "1.2.0")],
                          bootstrap=(a.listen_addrs[0],)) as b:
            ctx_a = echo_a.last.ctx
            await eventually(lambda: b.peer_id in ctx_a.peers(), timeout=10, interval=0.02,
                             what="a's plugin to see b")
            assert await ctx_a.request(b.peer_id, "ECHO", b"hello") == b"hello"
            # The handler sees who asked: the connection authenticates the sender.
            assert await ctx_a.request(b.peer_id, "WHOAMI") == \
                f"{b.peer_id} saw {a.peer_id}".encode()
            with pytest.raises(errors.PeerError, match="does not handle event 'NOPE'"):
                await ctx_a.request(b.peer_id, "NOPE")
            with pytest.raises(errors.PeerError, match="refused: because"):
                await ctx_a.request(b.peer_id, "REFUSE", b"because")
            with pytest.raises(errors.PeerError, match="failed on 'FAIL'"):
                await ctx_a.request(b.peer_id, "FAIL")
            with pytest.raises(errors.PeerError, match=r"did not answer 'SLOW' within 0\.5 s"):
                await ctx_a.request(b.peer_id, "SLOW")
            with pytest.raises(errors.PeerError, match="something other than bytes"):
                await ctx_a.request(b.peer_id, "NOT_BYTES")
            with pytest.raises(errors.InvalidArgument, match="is not a name"):
                await ctx_a.request(b.peer_id, "bad name!")
            # b's plugin kept serving through all of that.
            assert await ctx_a.request(b.peer_id, "ECHO", b"still here") == b"still here"

            # Gossip on the plugin's namespaced topic reaches the other node's plugin.
            await eventually(lambda: bool(
                echo_b.last.ctx._host.broadcast.topic_peers("plugin/echo/chat")),
                timeout=10, interval=0.02, what="b to see a subscribed to the plugin's topic")
            await ctx_a.publish("chat", b"hi from a")
            await eventually(lambda: [m.data for m in echo_b.last.heard] == [b"hi from a"],
                             timeout=10, interval=0.02, what="b's plugin to hear a's message")
            assert echo_b.last.heard[0].sender == a.peer_id
            assert echo_b.last.heard[0].topic == "chat"

            listed = await trio.to_thread.run_sync(list_plugins, b.api.socket)
            echo = listed["echo"]
            assert (echo.version, echo.state, echo.required) == ("1.2.0", "running", True)
            assert echo.kind == plugins_pb2.PLUGIN_KIND_IN_PROCESS
            assert set(echo.events) == {"ECHO", "WHOAMI", "FAIL", "REFUSE", "SLOW",
                                        "NOT_BYTES", "HEARD", "CALLER"}
            assert list(echo.topics) == ["chat"]
            assert echo.restarts == 0
            assert echo.counters.events_served == 3
            assert echo.counters.event_errors == 4  # REFUSE, FAIL, SLOW, NOT_BYTES
            # The plugin has its own private data directory.
            data_dir = tmp_path / "b" / "plugins" / "echo"
            assert echo_b.last.ctx.data_dir == data_dir
            assert data_dir.is_dir() and (data_dir.stat().st_mode & 0o777) == 0o700


async def test_a_node_without_the_plugin_answers_unavailable(tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path)
    echo = Instances(EchoPlugin)
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis, [available("echo", echo)],
                             enable=("echo",)) as a, \
                open_node(tmp_path, "b", genesis, [], bootstrap=(a.listen_addrs[0],)) as b:
            await eventually(lambda: b.peer_id in echo.last.ctx.peers(), timeout=10,
                             interval=0.02, what="a's plugin to see b")
            with pytest.raises(errors.PeerError, match="does not run plugin 'echo'"):
                await echo.last.ctx.request(b.peer_id, "ECHO", b"x")
            listed = await trio.to_thread.run_sync(list_plugins, a.api.socket)
            assert listed["echo"].required is False


async def test_a_plugin_that_raises_is_restarted_with_backoff(tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path)
    CrashingPlugin.starts = 0
    crashing, run_crash = Instances(CrashingPlugin), Instances(RunCrashPlugin)
    echo = Instances(EchoPlugin)
    plugins = [available("crashing", crashing), available("runcrash", run_crash),
               available("echo", echo)]
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis, plugins,
                             enable=("crashing", "runcrash", "echo")) as a:
            first = await trio.to_thread.run_sync(list_plugins, a.api.socket)
            assert first["crashing"].state == "backoff"
            assert "RuntimeError: crash number 1" in first["crashing"].last_error
            assert first["crashing"].HasField("next_start_at")
            # Backoff 1 s, then 2 s: the third start runs.
            started = trio.current_time()
            await eventually(lambda: crashing.made and crashing.last.__class__.starts >= 3
                             and len(crashing.made) == 3, timeout=10, interval=0.02,
                             what="the third start of the crashing plugin")
            listed = await eventually(
                functools.partial(trio.to_thread.run_sync, list_plugins, a.api.socket),
                lambda plugins: plugins["crashing"].state == "running", timeout=10,
                not_yet=(), what="the crashing plugin to be shown running")
            assert trio.current_time() - started >= 2.5  # 1 s + 2 s of backoff
            assert listed["crashing"].restarts == 2
            assert list(listed["crashing"].events) == ["ALIVE"]

            # A plugin whose background work raises is restarted as well; a
            # fresh instance registers its handlers again.
            ctx = echo.last.ctx
            assert len(run_crash.made) == 1
            await run_crash.last.order_crash(None)
            await eventually(lambda: len(run_crash.made) == 2, timeout=10, interval=0.02,
                             what="a second instance of runcrash")
            await eventually(lambda: run_crash.last.__dict__.get("crash") is not None,
                             timeout=10, interval=0.02, what="runcrash to run again")
            after = await trio.to_thread.run_sync(list_plugins, a.api.socket)
            assert after["runcrash"].restarts == 1
            assert "run crashed on order" in after["runcrash"].last_error
            # The neighbours never noticed.
            assert after["echo"].restarts == 0 and echo.last.ctx is ctx


async def test_a_plugin_whose_init_hangs_is_cut_off_and_retried(tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path)
    hanging = Instances(HangingPlugin)
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis, [available("hanging", hanging)],
                             enable=("hanging",)) as a:
            listed = await trio.to_thread.run_sync(list_plugins, a.api.socket)
            assert listed["hanging"].state == "backoff"
            assert "init did not return within 1 s" in listed["hanging"].last_error
            await eventually(lambda: len(hanging.made) >= 2, timeout=10, interval=0.02,
                             what="a second start of the hanging plugin")
            assert await trio.to_thread.run_sync(status_latency, a.api.socket) < 1.0


async def test_a_flooding_plugin_is_throttled_and_the_daemon_stays_responsive(
        tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path)
    flooder, echo_a, echo_b = Instances(FloodingPlugin), Instances(EchoPlugin), \
        Instances(EchoPlugin)
    with trio.fail_after(90):
        async with open_node(tmp_path, "a", genesis,
                             [available("flood", flooder), available("echo", echo_a)],
                             enable=("flood", "echo")) as a, \
                open_node(tmp_path, "b", genesis,
                          [available("flood", Instances(FloodingPlugin)),
                           available("echo", echo_b)],
                          enable=("flood", "echo"), bootstrap=(a.listen_addrs[0],)) as b:
            await eventually(lambda: b.peer_id in echo_a.last.ctx.peers(), timeout=10,
                             interval=0.02, what="a's echo plugin to see b")
            await trio.sleep(3)  # let both flood for a while (a load test, bounded)
            latencies = [await trio.to_thread.run_sync(status_latency, a.api.socket)
                         for _ in range(5)]
            assert max(latencies) < 1.0, latencies
            # Another plugin still gets through to the flooded peer.
            with trio.fail_after(5):
                assert await echo_a.last.ctx.request(b.peer_id, "ECHO", b"ok") == b"ok"
            listed = await trio.to_thread.run_sync(list_plugins, a.api.socket)
            counters = listed["flood"].counters
            # The publish rate is capped: at most the burst plus 200/s went out.
            elapsed = time.time() - listed["flood"].started_at.ToSeconds()
            assert counters.published <= 400 + 200 * elapsed + 50, (counters, elapsed)
            assert counters.published >= 400  # it did flood: the whole burst went out
            assert counters.requests_sent > 0
            assert listed["flood"].state == "running"


async def test_a_missing_required_plugin_stops_the_node_before_it_joins(
        tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path, "echo", "storage")
    with trio.fail_after(20), pytest.raises(BaseException) as refused:
        async with open_node(tmp_path, "a", genesis, [available("echo", EchoPlugin)]):
            raise AssertionError("the node started")
    error = refused.value
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, PluginSetupError), repr(refused.value)
    assert "requires plugin 'storage', which is not installed (installed plugins: echo)" \
        in str(error)
    assert not (tmp_path / "a" / "meshd.sock").exists()
