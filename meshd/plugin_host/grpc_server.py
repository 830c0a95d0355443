"""mesh.pluginhost.v1.PluginHost: one external plugin's stream, bridged to its trio session.

Each start of an external plugin gets a server of its own on a Unix socket
(:func:`serve_plugin_host`), so a stream is the plugin's by where it arrives;
the socket's file mode (0600) keeps other users out, as for the API socket.
The servicer only moves messages: the first one must be a Register, which the
trio side (:class:`meshd.plugin_host.external.Hub`) accepts or refuses; after that
every message goes to the session, and the session's outbox comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import grpc
import trio

from mesh.pluginhost.v1 import pluginhost_pb2, pluginhost_pb2_grpc
from meshcore.paths import MAX_SOCKET_PATH
from meshd.rpc.bridge import TrioBridge, open_trio_bridge, serve_in_thread
from meshd.rpc.status import status_for

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

REGISTER_TIMEOUT = 10.0  # a connected plugin must register within this


class Session(Protocol):
    """The trio side of one accepted stream (meshd.plugin_host.external.Session)."""

    async def deliver(self, message: pluginhost_pb2.PluginMessage) -> None: ...

    async def close(self, reason: str) -> None: ...

    def outgoing(self) -> AsyncIterator[pluginhost_pb2.HostMessage]: ...


class Hub(Protocol):
    """The trio side of one start's socket (meshd.plugin_host.external.Hub)."""

    async def open_session(self, register: pluginhost_pb2.Register) -> Session: ...


class PluginHostServicer(pluginhost_pb2_grpc.PluginHostServicer):
    def __init__(self, bridge: TrioBridge, hub: Hub) -> None:
        self._bridge = bridge
        self._hub = hub

    async def Connect(self, request_iterator: AsyncIterator[pluginhost_pb2.PluginMessage],
                      context: Context) -> AsyncIterator[pluginhost_pb2.HostMessage]:
        try:
            first = await asyncio.wait_for(anext(request_iterator), REGISTER_TIMEOUT)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"send Register within {REGISTER_TIMEOUT:g} s of connecting")
            return
        if first.WhichOneof("kind") != "register":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the first message on the stream must be Register")
            return
        try:
            session = await self._bridge.call(self._hub.open_session, first.register)
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
            return
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            async for outgoing in self._bridge.stream(session.outgoing):
                yield outgoing
        except Exception as exc:  # the trio side went away: meshd is stopping this start
            code, message = status_for(exc)
            await context.abort(code, message)
        finally:
            reader.cancel()

    async def _read(self, messages: AsyncIterator[pluginhost_pb2.PluginMessage],
                    session: Session) -> None:
        reason = "the plugin closed its stream"
        try:
            async for message in messages:
                await self._bridge.call(session.deliver, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a protocol error of the plugin, or the stream broke
            reason = str(exc) or type(exc).__name__
        with contextlib.suppress(Exception):
            await self._bridge.call(session.close, reason)


async def serve_plugin_host(socket_path: Path, hub: Hub, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
    """Serve PluginHost for one plugin start on ``socket_path`` until cancelled."""
    if len(str(socket_path)) > MAX_SOCKET_PATH:
        raise OSError(f"the plugin socket path {socket_path} is longer than "
                      f"{MAX_SOCKET_PATH} bytes; choose a shorter node.data_dir")
    # A start that died left it; this start owns the name.
    await trio.to_thread.run_sync(functools.partial(socket_path.unlink, missing_ok=True))
    async with open_trio_bridge() as bridge:

        async def start() -> tuple[None, Any]:
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            pluginhost_pb2_grpc.add_PluginHostServicer_to_server(PluginHostServicer(bridge, hub),
                                                           server)
            try:
                server.add_insecure_port(f"unix:{socket_path}")
            except RuntimeError as exc:
                raise OSError(f"cannot listen on {socket_path} for the plugin: {exc}") from None
            await server.start()
            os.chmod(socket_path, 0o600)

            async def stop() -> None:
                await server.stop(0.5)

            return None, stop

        try:
            await serve_in_thread(start, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(
                    functools.partial(socket_path.unlink, missing_ok=True))
