"""The trio ↔ grpc.aio bridge, through a real gRPC server and client.

The server runs grpc.aio on its own thread (serve_in_thread); handlers use the
same helpers as the real servicers (meshd.rpc.status.unary / server_stream).
The client is grpcio's sync client, run in worker threads so trio keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from meshcore.version import __version__
from meshd import errors
from meshd.rpc.bridge import StopAll, TrioBridge, open_trio_bridge, serve_in_thread
from meshd.rpc.status import VERSION_KEY, server_stream, unary

SERVICE = "test.Bridge"


@dataclass
class TrioSide:
    """What the trio side of the handlers saw."""

    cancelled: trio.Event = field(default_factory=trio.Event)
    started: trio.Event = field(default_factory=trio.Event)
    feed: tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]] = field(
        default_factory=lambda: trio.open_memory_channel[bytes](0))
    open_streams: int = 0
    streams_changed: trio.Event = field(default_factory=trio.Event)

    async def echo(self, data: bytes) -> bytes:
        return data

    async def hang(self) -> bytes:
        self.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.set()
        raise AssertionError("unreachable")

    async def not_found(self) -> bytes:
        raise errors.NotFound("no such thing: widget 7")

    async def crash(self) -> bytes:
        raise ValueError("bug")

    async def forever(self) -> AsyncIterator[bytes]:
        self._count(+1)
        try:
            yield b"first"
            await trio.sleep_forever()
        finally:
            self._count(-1)
            self.cancelled.set()

    def _count(self, delta: int) -> None:
        self.open_streams += delta
        self.streams_changed.set()
        self.streams_changed = trio.Event()

    async def wait_open_streams(self, n: int) -> None:
        while self.open_streams != n:
            await self.streams_changed.wait()


def handlers(bridge: TrioBridge, side: TrioSide) -> grpc.GenericRpcHandler:
    def unary_of(fn: Callable[..., Awaitable[bytes]], with_request: bool = False) -> Any:
        async def handler(request: bytes, context: Any) -> bytes:
            args = (request,) if with_request else ()
            return await unary(context, bridge, fn, *args)
        return grpc.unary_unary_rpc_method_handler(handler)

    def stream_of(open_iter: Callable[[], AsyncIterator[bytes]]) -> Any:
        async def handler(request: bytes, context: Any) -> AsyncIterator[bytes]:
            async for item in server_stream(context, bridge, open_iter):
                yield item
        return grpc.unary_stream_rpc_method_handler(handler)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": unary_of(side.echo, with_request=True),
        "Hang": unary_of(side.hang),
        "NotFound": unary_of(side.not_found),
        "Crash": unary_of(side.crash),
        "Feed": stream_of(lambda: side.feed[1]),
        "Forever": stream_of(side.forever),
    })


@dataclass
class Harness:
    side: TrioSide
    channel: grpc.Channel
    close_bridge: Callable[[], None]

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")

    def stream(self, method: str) -> Any:
        return self.channel.unary_stream(f"/{SERVICE}/{method}")


@contextlib.asynccontextmanager
async def open_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    side = TrioSide()
    socket_path = tmp_path / "bridge.sock"
    async with trio.open_nursery() as nursery:
        bridge_scope = trio.CancelScope()
        bridges: list[TrioBridge] = []
        ready = trio.Event()

        async def keep_bridge() -> None:
            with bridge_scope:
                async with open_trio_bridge() as bridge:
                    bridges.append(bridge)
                    ready.set()
                    await trio.sleep_forever()

        nursery.start_soon(keep_bridge)
        await ready.wait()

        async def start() -> tuple[Path, StopAll]:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((handlers(bridges[0], side),))
            server.add_insecure_port(f"unix:{socket_path}")
            await server.start()

            async def stop() -> None:
                await server.stop(0.5)
            return socket_path, stop

        await nursery.start(serve_in_thread, start)
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            yield Harness(side, channel, bridge_scope.cancel)
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def test_unary_result_and_version_metadata(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            response, call = await in_thread(
                lambda: h.unary("Echo").with_call(b"hello", timeout=5))
    assert response == b"hello"
    assert dict(call.trailing_metadata())[VERSION_KEY] == __version__


async def test_errors_become_statuses_with_readable_messages(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            with pytest.raises(grpc.RpcError) as not_found:
                await in_thread(lambda: h.unary("NotFound")(b"", timeout=5))
            with pytest.raises(grpc.RpcError) as crash:
                await in_thread(lambda: h.unary("Crash")(b"", timeout=5))
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    assert not_found.value.details() == "no such thing: widget 7"
    assert crash.value.code() == grpc.StatusCode.INTERNAL
    assert "see the daemon's log" in crash.value.details()


async def test_client_deadline_cancels_the_trio_work(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            begun = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                await in_thread(lambda: h.unary("Hang")(b"", timeout=0.3))
            await h.side.cancelled.wait()
            assert time.monotonic() - begun < 3
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_cancel_cancels_the_trio_work(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            future = h.unary("Hang").future(b"")
            await h.side.started.wait()
            assert not h.side.cancelled.is_set()
            future.cancel()
            await h.side.cancelled.wait()


async def test_stream_fed_from_a_trio_channel_ends_cleanly(tmp_path: Path) -> None:
    items = [f"item {i}".encode() for i in range(200)]
    with trio.fail_after(20):
        async with open_harness(tmp_path) as h:
            call = h.stream("Feed")(b"")
            send = h.side.feed[0]

            async def produce() -> None:
                async with send:
                    for item in items:
                        await send.send(item)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                received = await in_thread(lambda: list(call))
            assert call.code() == grpc.StatusCode.OK
    assert received == items


async def test_stream_client_leaving_cancels_the_trio_producer(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            call = h.stream("Forever")(b"")
            assert await in_thread(lambda: next(call)) == b"first"
            await h.side.wait_open_streams(1)
            call.cancel()
            await h.side.wait_open_streams(0)
            assert h.side.cancelled.is_set()


async def test_stream_ends_with_unavailable_when_the_daemon_side_goes(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_harness(tmp_path) as h:
            call = h.stream("Forever")(b"")
            assert await in_thread(lambda: next(call)) == b"first"
            h.close_bridge()
            with pytest.raises(grpc.RpcError) as caught:
                await in_thread(lambda: next(call))
            # New calls are refused the same way, not left hanging.
            with pytest.raises(grpc.RpcError) as refused:
                await in_thread(lambda: h.unary("Echo")(b"x", timeout=5))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in caught.value.details()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_many_open_streams_do_not_starve_unary_calls(tmp_path: Path) -> None:
    # The sync grpc server holds a worker thread per open stream (8 streams
    # starved it in PY-LIBP2P-NOTES); grpc.aio must not.
    streams = 64
    with trio.fail_after(30):
        async with open_harness(tmp_path) as h:
            calls = [h.stream("Forever")(b"") for _ in range(streams)]
            await h.side.wait_open_streams(streams)
            begun = time.monotonic()
            for i in range(50):
                payload = str(i).encode()
                assert await in_thread(lambda p=payload: h.unary("Echo")(p, timeout=2)) == payload
            elapsed = time.monotonic() - begun
            for call in calls:
                call.cancel()
            await h.side.wait_open_streams(0)
    assert elapsed < 5, f"50 unary calls took {elapsed:.1f} s with {streams} streams open"


async def test_serve_in_thread_reports_startup_failure() -> None:
    async def start() -> tuple[None, StopAll]:
        raise RuntimeError("cannot bind")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            # Raised bare, so that the daemon can report it as a startup error.
            with pytest.raises(RuntimeError, match="cannot bind"):
                await nursery.start(serve_in_thread, start)


async def test_stop_requested_during_startup_still_stops() -> None:
    stopped = []

    async def start() -> tuple[None, StopAll]:
        await asyncio.sleep(0.2)

        async def stop() -> None:
            stopped.append(True)
        return None, stop

    with trio.fail_after(10):
        with trio.move_on_after(0.05):
            await serve_in_thread(start)
    assert stopped == [True]
