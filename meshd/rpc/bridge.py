"""The bridge between grpc.aio handlers and the daemon's trio loop.

grpcio does not run on trio, and its sync server holds a worker thread per open
stream, so that a few subscriptions starve unary calls (PY-LIBP2P-NOTES). The
API therefore runs grpc.aio on a thread of its own with its own asyncio loop
(:func:`serve_in_thread`), and its handlers hand work to trio through a
:class:`TrioBridge`:

* ``await bridge.call(fn, *args, timeout=...)`` runs ``await fn(*args)`` as a
  trio task and returns its result to the asyncio handler;
* ``bridge.stream(open_iter)`` runs ``open_iter()`` (any trio async iterator:
  an async generator, a ``MemoryReceiveChannel``) as a trio task and yields its
  items to the handler, with at most ``window`` items in flight.

Neither blocks a thread: trio work is started with ``TrioToken.run_sync_soon``
and results come back with ``loop.call_soon_threadsafe``. Cancellation crosses
in both directions:

* the client cancels or its deadline passes → grpc.aio cancels the handler →
  the bridge cancels the trio task's cancel scope; the deadline is also set on
  that scope, so trio work stops on time by itself;
* the trio side goes away (daemon shutting down, bridge closed) → the handler
  gets :class:`BridgeClosed`, which the API reports as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

T = TypeVar("T")

# How many stream items the trio side may send ahead of the gRPC writer.
DEFAULT_WINDOW = 16


class BridgeClosed(Exception):
    """The trio side is gone: the daemon is shutting down."""

    def __init__(self) -> None:
        super().__init__("meshd is shutting down")


class CallTimedOut(Exception):
    """The trio work did not finish before the call's deadline."""

    def __init__(self) -> None:
        super().__init__("the call's deadline passed before meshd finished")


class TrioBridge:
    """Runs trio work on behalf of coroutines of another thread's asyncio loop.

    Create it with :func:`open_trio_bridge`; its methods are called from the
    asyncio thread only.
    """

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._token = token
        self._nursery = nursery

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any,
                   timeout: float | None = None) -> T:
        """``await fn(*args)`` on the trio loop and return (or raise) its outcome.

        Raises:
            BridgeClosed: the trio side is gone.
            CallTimedOut: ``timeout`` seconds passed first.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        scope = trio.CancelScope()

        def settle(result: outcome.Outcome[T]) -> None:
            _call_in_loop(loop, _resolve, future, result)

        async def run() -> None:
            result: outcome.Outcome[T] = outcome.Error(BridgeClosed())
            try:
                with scope:
                    if timeout is not None:
                        scope.deadline = trio.current_time() + max(timeout, 0.0)
                    result = outcome.Value(await fn(*args))
                if scope.cancelled_caught:
                    result = outcome.Error(CallTimedOut())
            except Exception as exc:  # delivered to the handler, mapped to a status there
                result = outcome.Error(exc)
            finally:  # also on trio cancellation: the default says BridgeClosed
                settle(result)

        self._spawn(run, lambda: settle(outcome.Error(BridgeClosed())))
        try:
            result = await future
        except asyncio.CancelledError:
            self._run_soon(scope.cancel)
            raise
        return result.unwrap()

    async def stream(self, open_iter: Callable[[], AsyncIterator[T]], *,
                     window: int = DEFAULT_WINDOW) -> AsyncIterator[T]:
        """Yield the items of the trio async iterator ``open_iter()``.

        Ends when the iterator ends; raises what it raises, or
        :class:`BridgeClosed` when the trio side goes away. Closing this
        generator (the client went away) cancels the trio side.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_StreamEvent[T]] = asyncio.Queue()
        scope = trio.CancelScope()
        credits = trio.Semaphore(window)

        def push(event: _StreamEvent[T]) -> None:
            _call_in_loop(loop, queue.put_nowait, event)

        async def pump() -> None:
            last: _StreamEvent[T] = _StreamEvent(error=BridgeClosed())
            try:
                with scope:
                    iterator = open_iter()
                    try:
                        async for item in iterator:
                            await credits.acquire()
                            push(_StreamEvent(item=item))
                    finally:
                        aclose = getattr(iterator, "aclose", None)
                        if aclose is not None:
                            await aclose()
                    last = _StreamEvent(end=True)
            except Exception as exc:  # delivered to the handler
                last = _StreamEvent(error=exc)
            finally:
                push(last)

        self._spawn(pump, lambda: push(_StreamEvent(error=BridgeClosed())))
        try:
            while True:
                event = await queue.get()
                if event.error is not None:
                    raise event.error
                if event.end:
                    return
                self._run_soon(credits.release)
                yield event.item  # type: ignore[misc]  # set when neither end nor error
        finally:
            self._run_soon(scope.cancel)

    def _spawn(self, task: Callable[[], Awaitable[None]], on_closed: Callable[[], None]) -> None:
        def start() -> None:  # on the trio thread
            try:
                self._nursery.start_soon(task)
            except RuntimeError:  # nursery closed: the bridge is shutting down
                on_closed()

        try:
            self._token.run_sync_soon(start)
        except trio.RunFinishedError:
            on_closed()

    def _run_soon(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn)


class _StreamEvent(Generic[T]):
    __slots__ = ("end", "error", "item")

    def __init__(self, item: T | None = None, end: bool = False,
                 error: BaseException | None = None) -> None:
        self.item = item
        self.end = end
        self.error = error


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # the handler may have been cancelled meanwhile
        future.set_result(value)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object],
                  *args: Any) -> None:
    # The asyncio loop is closed once the API thread has stopped: then nobody
    # is waiting for the result any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


@contextlib.asynccontextmanager
async def open_trio_bridge() -> AsyncIterator[TrioBridge]:
    """A bridge whose work runs in a nursery of the caller; closing it cancels the work."""
    async with trio.open_nursery() as nursery:
        yield TrioBridge(trio.lowlevel.current_trio_token(), nursery)
        nursery.cancel_scope.cancel()


class _StopSignal:
    """Asks the asyncio thread to stop, whether or not its loop has started yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._wake: Callable[[], None] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._wake = lambda: _call_in_loop(loop, event.set)
            if self._requested:
                self._wake()

    def request(self) -> None:
        with self._lock:
            self._requested = True
            if self._wake is not None:
                self._wake()


StopAll = Callable[[], Awaitable[None]]


async def serve_in_thread(
    start: Callable[[], Awaitable[tuple[T, StopAll]]],
    *,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run asyncio servers on a dedicated thread until this task is cancelled.

    ``start()`` runs on that thread's asyncio loop; it starts the servers and
    returns ``(info, stop)``. ``info`` is passed to ``task_status.started``;
    on cancellation ``stop()`` is awaited on the asyncio loop, and this task
    returns once the thread has finished. An exception of the thread (say,
    ``start()`` cannot bind) is raised here as it is, not in an ExceptionGroup.
    """
    token = trio.lowlevel.current_trio_token()
    started = trio.Event()
    info: list[T] = []
    stop_signal = _StopSignal()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        stop_signal.attach(loop, stop_requested)
        value, stop = await start()
        info.append(value)
        token.run_sync_soon(started.set)
        try:
            await stop_requested.wait()
        finally:
            await stop()

    failure: list[Exception] = []
    async with trio.open_nursery() as nursery:

        async def run_thread() -> None:
            try:
                # Not abandoned on cancel: trio waits for the thread, so nothing
                # outlives the daemon.
                await trio.to_thread.run_sync(lambda: asyncio.run(main()))
            except Exception as exc:  # re-raised below, bare, so callers can catch it
                failure.append(exc)
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(run_thread)
        try:
            await started.wait()
            task_status.started(info[0])
            await trio.sleep_forever()
        finally:
            stop_signal.request()
    if failure:
        raise failure[0]
