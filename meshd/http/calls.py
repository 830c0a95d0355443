"""Calls into the servicers, as gRPC would make them, without a wire in between.

The servicers (meshd/api/) are grpc.aio servicers: ``handler(request, context)``
on the API thread's loop. The gateway gives them a context with what they use
of grpc's (a deadline, ``abort``, trailing metadata), so an HTTP call runs the
same code with the same errors as a gRPC call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from meshd.http.errors import GatewayError, invalid
from meshd.http.methods import Method

log = logging.getLogger(__name__)


class GatewayContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use."""

    def __init__(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        self._loop = loop

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._loop.time())

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        pass  # the version trailer: HTTP clients read GetStatus

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise GatewayError(code, details)


def parse(method: Method, body: bytes | str) -> Message:
    """The request message from canonical JSON; unknown fields are refused."""
    request = method.request()
    if not body or (isinstance(body, bytes) and not body.strip()):
        return request
    try:
        json_format.Parse(body, request, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise invalid(f"the body is not a {method.request.DESCRIPTOR.full_name} in JSON: "
                      f"{exc}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise invalid(f"the body is not JSON: {exc}") from None
    return request


def to_json(message: Message) -> dict[str, Any]:
    """Canonical JSON, with every field (zeros and empty lists too)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


async def call_unary(method: Method, request: Message, timeout: float | None) -> Message:
    try:
        response: Message = await method.handler(request, GatewayContext(timeout))
    except GatewayError:
        raise
    except Exception:
        log.exception("%s failed over HTTP", method.path)
        raise GatewayError(grpc.StatusCode.INTERNAL,
                           "internal error in meshd; see the daemon's log") from None
    return response


async def call_stream(method: Method, request: Message) -> AsyncIterator[Message]:
    stream = method.handler(request, GatewayContext(None))
    try:
        async for item in stream:
            yield item
    finally:
        await stream.aclose()
