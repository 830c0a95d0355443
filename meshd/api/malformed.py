"""Requests that are not the protobuf message their method takes.

grpcio decodes a request before the servicer runs; bytes that do not decode
raise ``DecodeError`` inside grpc's own dispatch, which answers UNKNOWN and
logs a full traceback at ERROR for each one (random bytes sent to every unary
RPC logged 6,500 tracebacks in a few minutes, issue 17). Registered through
:func:`add_refusing_malformed`, each method decodes its request itself: a
malformed one is answered INVALID_ARGUMENT naming the method, and logged as
one WARNING line at most every LOG_EVERY seconds, with how many were refused
since the last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two log lines about malformed requests

class _Malformed:
    """What the safe deserializer returns for bytes that do not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class RefusalLog:
    """One WARNING line per LOG_EVERY seconds, counting the refusals in between."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._unlogged = 0

    def refused(self, method: str, error: Exception) -> None:
        with self._lock:
            self._unlogged += 1
            now = self._clock()
            if now - self._last < LOG_EVERY:
                return
            count, self._unlogged, self._last = self._unlogged, 0, now
        log.warning("malformed API requests refused", extra={
            "method": method, "refused": count, "error": f"{type(error).__name__}: {error}"[:200],
            "hint": f"at most one such line per {LOG_EVERY:g} s; a client with the wrong "
                    "stubs, or something that is not a Mesh client, is calling the API"})


def add_refusing_malformed(add_to_server: Callable[[Any, Any], None], servicer: Any,
                           server: grpc.aio.Server, refusals: RefusalLog) -> None:
    """``add_to_server(servicer, server)`` (a generated ``add_*Servicer_to_server``),
    each unary-request method decoding its request itself (see the module
    docstring). Wrapped once, here: an interceptor would run on every call."""
    add_to_server(servicer, _Registrar(server, refusals))


class _Registrar:
    """What a generated ``add_*Servicer_to_server`` calls on the server: it passes
    its method handlers twice, the registered form (the one kept) and the generic."""

    def __init__(self, server: grpc.aio.Server, refusals: RefusalLog) -> None:
        self._server = server
        self._refusals = refusals

    def add_registered_method_handlers(self, service: str,
                                       handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: _refusing(handler, f"/{service}/{name}", self._refusals)
                   for name, handler in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        return None  # the same handlers as add_registered_method_handlers gets


def _refusing(handler: grpc.RpcMethodHandler, method: str,
              refusals: RefusalLog) -> grpc.RpcMethodHandler:
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    decode = handler.request_deserializer

    def safe_decode(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # any decoder failure is the client's bytes
            return _Malformed(exc)

    async def refuse(malformed: _Malformed, context: Any) -> None:
        refusals.refused(method, malformed.error)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"malformed request: the bytes sent to {method} are not its "
                            f"request message ({type(malformed.error).__name__})")

    if handler.response_streaming:
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> Any:
            if isinstance(request, _Malformed):
                await refuse(request, context)
                return
            async for response in stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=safe_decode,
            response_serializer=handler.response_serializer)

    unary = handler.unary_unary

    async def unary_unary(request: Any, context: Any) -> Any:
        if isinstance(request, _Malformed):
            await refuse(request, context)
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary_unary, request_deserializer=safe_decode,
        response_serializer=handler.response_serializer)
