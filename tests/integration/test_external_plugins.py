"""External plugins on real daemons in one trio process, with the JavaScript example.

Each node launches plugins/examples/js-hash (Node, @grpc/grpc-js) as a
process; tasks, events and its calls back into meshd cross the PluginHost
stream. Killing, stopping or misconfiguring the process never harms the node.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.pluginhost.v1 import pluginhost_pb2, pluginhost_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshd.plugin_host.loader import available
from meshd.testing import eventually
from tests.integration.test_plugins import list_plugins, open_node, write_genesis
from tests.plugin_fixtures import EchoPlugin

ROOT = Path(__file__).resolve().parents[2]
JS_HASH = ROOT / "plugins" / "examples" / "js-hash"
JS_COMMAND = ["node", str(JS_HASH / "index.js")]


def external(command: list[str] | None = None, **env: str) -> dict[str, Any]:
    return {"plugins.external": {"js-hash": {"command": command or JS_COMMAND, "env": env}}}


def rpc(socket: Path, service: Any, method: str, request: Any) -> Any:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        return getattr(service(channel), method)(request, timeout=30)


async def call_plugin(socket: Path, event: str, data: bytes = b"", peer_id: str = "") -> bytes:
    request = plugins_pb2.CallPluginRequest(plugin="js-hash", event=event, data=data,
                                            peer_id=peer_id)
    response = await trio.to_thread.run_sync(
        rpc, socket, plugins_pb2_grpc.PluginsServiceStub, "CallPlugin", request)
    return bytes(response.data)


async def reports(socket: Path) -> dict[str, list[str]]:
    """What became of the js-hash plugin's reports on that node."""
    answer: dict[str, list[str]] = json.loads(await call_plugin(socket, "REPORTED"))
    return answer


async def plugin(socket: Path) -> plugins_pb2.Plugin:
    return (await trio.to_thread.run_sync(list_plugins, socket))["js-hash"]


async def wait_for_plugin(socket: Path, condition: Callable[[plugins_pb2.Plugin], bool],
                          what: str = "the plugin's state") -> plugins_pb2.Plugin:
    # An API error fails the test at once (not_yet=()): these nodes are up.
    return await eventually(functools.partial(plugin, socket), condition, timeout=30,
                            interval=0.05, not_yet=(), what=what)


async def wait_running(socket: Path, restarts: int = 0) -> plugins_pb2.Plugin:
    return await wait_for_plugin(socket, lambda p: p.state == "running"
                                 and p.restarts >= restarts,
                                 f"js-hash to be running after {restarts} restarts")


async def test_a_javascript_plugin_serves_tasks_events_and_calls_back_into_meshd(
        tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path, "js-hash")
    with trio.fail_after(90):
        async with open_node(tmp_path, "a", genesis,
                             [available("echo", EchoPlugin, "1.0.0")], enable=("echo",),
                             **external()) as a, \
                open_node(tmp_path, "b", genesis, [], bootstrap=(a.listen_addrs[0],),
                          **external()) as b:
            info = await wait_running(a.api.socket)
            await wait_running(b.api.socket)
            assert info.kind == plugins_pb2.PLUGIN_KIND_EXTERNAL
            assert (info.version, info.required) == ("1.0.0", True)
            assert info.summary == "SHA-256 tasks and an ECHO event, in JavaScript"
            assert list(info.events) == ["ASK_HASH", "CHECK", "DHT_GET", "DHT_PUT", "ECHO",
                                         "FAIL_HASH", "HASH", "LOCAL", "PEERS", "RECORD",
                                         "REPORTED", "SIGN"]
            assert list(info.task_kinds) == ["SHA256"]
            assert info.pid > 0
            # An event to b's plugin, and one to a's own that calls back into meshd.
            await eventually(functools.partial(call_plugin, a.api.socket, "PEERS"),
                             lambda peers: b.peer_id.encode() in peers, timeout=30,
                             interval=0.05, not_yet=(), what="a's plugin to see b")
            assert await call_plugin(a.api.socket, "ECHO", b"hello", b.peer_id) == b"hello"
            # The task goes to b's plugin; a's plugin verifies the digest.
            request = tasks_pb2.SubmitTaskRequest(plugin="js-hash", kind="SHA256",
                                                  payload=b"mesh", wait=True)
            task = (await trio.to_thread.run_sync(
                rpc, a.api.socket, tasks_pb2_grpc.TasksServiceStub, "SubmitTask",
                request)).task
            assert task.state == "done", task.error
            assert task.result == hashlib.sha256(b"mesh").hexdigest().encode()
            assert [x.provider for x in task.attempts] == [b.peer_id]
            # What a's node saw of b, read by a's plugin, with the base price; a
            # peer never asked is not known.
            # (uint64s reach JavaScript as strings: the loader's longs: String.)
            record = json.loads(await call_plugin(a.api.socket, "RECORD", b.peer_id.encode()))
            assert (record["known"], record["done"], record["failed"], record["wrong"],
                    record["base_price"]) == (True, "1", "0", "0", "0"), record
            assert record["first_seen"] > 1.7e9 and record["spot_check_bps"] == "1000"
            # Its standing in the ledger, through the plugin host's `standing` call.
            assert set(record["standing"]) >= {"through_epoch", "receipts", "failed_tasks",
                                               "earned"}, record
            assert record["standing"]["slashed"] == "0", record
            unknown = json.loads(await call_plugin(a.api.socket, "RECORD",
                                                   a.peer_id.encode()))
            assert (unknown["known"], unknown["done"]) == (False, "0"), unknown
            # Another plugin on a's node, called by a's plugin (ctx.call): only
            # events that plugin takes from plugins, which see who called.
            assert await call_plugin(a.api.socket, "LOCAL", b"echo\nCALLER\nhi there") \
                == f"js-hash on {a.peer_id}: hi there".encode()
            for asked, why in [(b"echo\nECHO\nhi", "does not take 'ECHO' from other plugins"),
                               (b"nope\nECHO\n", "NOT_FOUND"),
                               (b"js-hash\nECHO\n", "calls its own handlers directly")]:
                with pytest.raises(grpc.RpcError) as refused:
                    await call_plugin(a.api.socket, "LOCAL", asked)
                assert why in str(refused.value.details()), (asked, refused.value)
            # A peer cannot have a's plugin make such calls for it.
            with pytest.raises(grpc.RpcError) as foreign:
                await call_plugin(b.api.socket, "LOCAL", b"echo\nCALLER\nx", a.peer_id)
            assert "LOCAL is for this node's operator" in str(foreign.value.details())
            # A statement a's plugin signs (ctx.sign), checked by b's (ctx.verify)
            # without asking a; data that is not what a signed, or another
            # signer, does not check, and a bad peer ID is named.
            statement = bytes(range(256))  # not text: the bytes are what is signed
            signature = await call_plugin(a.api.socket, "SIGN", statement)
            assert len(bytes.fromhex(signature.decode())) == 64

            async def check(signer: str, sig: bytes, data: bytes) -> bytes:
                return await call_plugin(b.api.socket, "CHECK",
                                         signer.encode() + b"\n" + sig + b"\n" + data)

            assert await check(a.peer_id, signature, statement) == b"1"
            assert await check(a.peer_id, signature, statement[:-1]) == b"0"
            assert await check(b.peer_id, signature, statement) == b"0"
            assert await check(a.peer_id, b"00" * 64, statement) == b"0"
            with pytest.raises(grpc.RpcError) as bad_peer:
                await check("not-a-peer", signature, statement)
            assert bad_peer.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "is not base58" in str(bad_peer.value.details())
            # b hashes for a in an event and reports it; a's plugin accepts
            # (it asked b for that digest), and a records the receipt.
            digest = await call_plugin(a.api.socket, "ASK_HASH",
                                       f"{b.peer_id}\n".encode() + b"work")
            assert digest == hashlib.sha256(b"work").hexdigest().encode()
            reported = await eventually(functools.partial(reports, b.api.socket),
                                        lambda r: r["receipts"], timeout=30, interval=0.05,
                                        not_yet=(), what="a to countersign b's report")
            (receipt,) = reported["receipts"]
            history = (await trio.to_thread.run_sync(
                rpc, a.api.socket, ledger_pb2_grpc.LedgerServiceStub, "ListHistory",
                ledger_pb2.ListHistoryRequest(limit=100))).entries
            assert (receipt, "task_receipt") in {(e.hash, e.kind) for e in history}
            # The work proves false after all: a's plugin reports a failure
            # verdict on the claim it kept (Call.report_failure).
            verdict = (await call_plugin(a.api.socket, "FAIL_HASH")).decode()
            history = (await trio.to_thread.run_sync(
                rpc, a.api.socket, ledger_pb2_grpc.LedgerServiceStub, "ListHistory",
                ledger_pb2.ListHistoryRequest(limit=100))).entries
            assert (verdict, "task_verdict") in {(e.hash, e.kind) for e in history}
            # Work a did not ask its plugin for (HASH sent directly) is refused.
            await call_plugin(a.api.socket, "HASH", b"unasked", b.peer_id)
            done = await eventually(functools.partial(reports, b.api.socket),
                                    lambda r: r["refused"], timeout=30, interval=0.05,
                                    not_yet=(), what="a to refuse b's unasked report")
            assert "does not accept the report of HASH" in done["refused"][0], done
            assert len(done["receipts"]) == 1
            # The DHT, in the plugin's key space: a's plugin stores and announces,
            # b's reads the value and finds a as a provider.
            assert await call_plugin(a.api.socket, "DHT_PUT", b"hello-key\nhello value") \
                == b"stored"
            value, *providers = (await call_plugin(b.api.socket, "DHT_GET",
                                                   b"hello-key")).split(b"\n")
            assert value == b"hello value" and a.peer_id.encode() in providers
            with pytest.raises(grpc.RpcError) as missing:  # meshd's NOT_FOUND, via the plugin
                await call_plugin(b.api.socket, "DHT_GET", b"nobody-put-this")
            assert "NOT_FOUND" in str(missing.value.details())
            # A refusal by the plugin reaches the caller with its message.
            with pytest.raises(grpc.RpcError) as refused:
                await call_plugin(a.api.socket, "NOPE", b"", b.peer_id)
            assert "does not handle event 'NOPE'" in str(refused.value.details())
            # Strangers on the plugin's socket are refused; the plugin keeps serving.
            sock = tmp_path / "a" / "plugins" / "js-hash.sock"
            assert sock.stat().st_mode & 0o777 == 0o600
            for first, code, text in (
                    (pluginhost_pb2.PluginMessage(pong=pluginhost_pb2.Pong(nonce=1)),
                     grpc.StatusCode.INVALID_ARGUMENT, "must be Register"),
                    (pluginhost_pb2.PluginMessage(register=pluginhost_pb2.Register(
                        name="js-hash", version="1.0.0")),
                     grpc.StatusCode.FAILED_PRECONDITION, "already has a stream open")):
                error = await trio.to_thread.run_sync(connect_once, sock, first)
                assert (error.code(), text in error.details()) == (code, True), error
            assert await call_plugin(a.api.socket, "ECHO", b"still", b.peer_id) == b"still"


async def test_a_killed_or_stopped_plugin_process_is_restarted(tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path, "js-hash")
    with trio.fail_after(120):
        async with open_node(tmp_path, "a", genesis, [], **external(),
                             **{"plugins.health_timeout": 2}) as a:
            first = (await wait_running(a.api.socket)).pid
            os.kill(first, signal.SIGKILL)
            killed = await wait_running(a.api.socket, restarts=1)
            assert "killed by SIGKILL" in killed.last_error
            assert killed.pid != first
            assert await call_plugin(a.api.socket, "ECHO", b"back") == b"back"
            # A process that stops answering health checks is killed and replaced.
            os.kill(killed.pid, signal.SIGSTOP)
            stopped = await wait_running(a.api.socket, restarts=2)
            assert "no health check" in stopped.last_error
            assert not _alive(killed.pid)
            assert await call_plugin(a.api.socket, "ECHO", b"again") == b"again"


async def test_a_plugin_the_network_cannot_accept_is_refused_and_retried(
        tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.toml"
    write_genesis(tmp_path, "js-hash")
    genesis.write_text(genesis.read_text().replace(
        'name = "js-hash"\n', 'name = "js-hash"\nversion = ">=2"\n'))
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis, [], **external()) as a:
            info = await wait_for_plugin(a.api.socket, lambda p: p.restarts >= 1,
                                         "a restart of the refused plugin")
            assert info.state != "running"
            assert "registered version 1.0.0, but the genesis requires js-hash>=2" \
                in info.last_error
        async with open_node(tmp_path, "b", write_genesis(tmp_path, "js-hash"), [],
                             **external(["/nonexistent/plugin"])) as b:
            await wait_for_plugin(b.api.socket, lambda p: "cannot start '/nonexistent/plugin'"
                                  ": not found" in p.last_error, "the start error to be shown")


def connect_once(socket: Path, first: pluginhost_pb2.PluginMessage) -> grpc.RpcError:
    """Open a PluginHost stream, send ``first``, and return the error that ends it."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stream = pluginhost_pb2_grpc.PluginHostStub(channel).Connect(iter([first]), timeout=10)
        try:
            for _ in stream:
                pass
        except grpc.RpcError as exc:
            return exc
    raise AssertionError("the stream ended without an error")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
