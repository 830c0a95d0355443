"""The one place where errors become gRPC status codes, and the RPC helpers.

Servicers call :func:`unary` and :func:`server_stream`, which run the domain
call on trio through the bridge, attach the daemon version to the response
metadata, and turn exceptions into statuses with a message a person can act on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from meshcore.version import __version__
from meshd import errors
from meshd.rpc.bridge import BridgeClosed, CallTimedOut, TrioBridge

T = TypeVar("T")
log = logging.getLogger(__name__)

# Every response carries the daemon version, so clients can warn on a mismatch.
VERSION_KEY = "mesh-version"

_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # gRPC's code for an error from "another address space": here, a peer.
    (errors.PeerError, grpc.StatusCode.UNKNOWN),
    (BridgeClosed, grpc.StatusCode.UNAVAILABLE),
    (CallTimedOut, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc``."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error in meshd ({type(exc).__name__}); " \
                                     "see the daemon's log"


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("RPC failed", exc_info=exc)
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _mark_version(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    context.set_trailing_metadata(((VERSION_KEY, __version__),))


async def unary(context: grpc.aio.ServicerContext[Any, Any], bridge: TrioBridge,
                fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` on trio within the call's deadline."""
    _mark_version(context)
    try:
        return await bridge.call(fn, *args, timeout=context.time_remaining())
    except Exception as exc:
        await _abort(context, exc)


async def server_stream(context: grpc.aio.ServicerContext[Any, Any], bridge: TrioBridge,
                        open_iter: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    """Yield the items of a trio async iterator until it ends or the client leaves."""
    _mark_version(context)
    try:
        async for item in bridge.stream(open_iter):
            yield item
    except Exception as exc:
        await _abort(context, exc)
