"""The gateway's HTTP application (ASGI, Starlette): routes, bodies, SSE.

``POST /<package.Service>/<Method>`` with a JSON body calls the method (the
Connect protocol's unary JSON form); a read may also be ``GET`` with the request
as ``?message=<JSON>`` (or none: the empty request). A server-streaming method
answers ``text/event-stream``: one ``data:`` event per message, an ``error``
event if the stream fails, and a comment every ``KEEPALIVE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from meshd.http.access import Access
from meshd.http.calls import call_stream, call_unary, parse, to_json
from meshd.http.errors import GatewayError, invalid
from meshd.http.methods import Method

log = logging.getLogger(__name__)

KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
JSON_TYPES = ("application/json",)
GET_PARAMS = frozenset({"message", "encoding", "connect"})
CORS_HEADERS = ["content-type", "authorization", "connect-protocol-version",
                "connect-timeout-ms"]
NO_STORE = {"cache-control": "no-store", "x-content-type-options": "nosniff"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Gateway:
    methods: dict[str, Method]
    access: Access
    openapi: dict[str, Any]
    max_body: int
    static: Path | None = None  # the dashboard's files


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return Response(error.body(), status_code=error.status, media_type="application/json",
                    headers={**NO_STORE, **(headers or {})})


def build_app(gateway: Gateway) -> Asgi:
    routes: list[BaseRoute] = [
        Route("/openapi.json", lambda _: _json(gateway.openapi), methods=["GET"]),
        *(Route(path, _endpoint(gateway, method), methods=["GET", "POST"])
          for path, method in gateway.methods.items()),
        # Any other /package.Service/Method: no such method (before the static files).
        Route("/{service:service}/{method}", _no_such_method, methods=["GET", "POST"]),
    ]
    if gateway.static is not None:
        routes.append(Mount("/", StaticFiles(directory=gateway.static, html=True)))
    middleware = [Middleware(CORSMiddleware, allow_origins=list(gateway.access.cors_origins),
                             allow_methods=["GET", "POST"], allow_headers=CORS_HEADERS)
                  ] if gateway.access.cors_origins else []
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={HTTPException: _http_error})
    return _BrowserChecks(app, gateway.access)


class _ServiceName(Convertor[str]):
    regex = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("service", _ServiceName())


async def _no_such_method(request: Request) -> Response:
    return error_response(GatewayError(
        grpc.StatusCode.UNIMPLEMENTED, f"no method {request.url.path}: the API's methods are "
        "listed in /openapi.json", 404))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path or file, a method not allowed) as JSON."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = GatewayError(grpc.StatusCode.NOT_FOUND, f"nothing at {request.url.path}: the "
                             "API's methods are listed in /openapi.json", 404)
    else:
        error = GatewayError(grpc.StatusCode.INVALID_ARGUMENT, str(exc.detail), exc.status_code)
    return error_response(error, dict(exc.headers or {}))


class _BrowserChecks:
    """Host and Origin checks before any route (meshd/http/access.py)."""

    def __init__(self, app: Asgi, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                self.access.check_browser(headers)
            except GatewayError as error:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json", headers=NO_STORE)


def _endpoint(gateway: Gateway, method: Method) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            gateway.access.check_call(method.read, request.headers)
            message = await _request_message(gateway, method, request)
            if method.streaming:
                return StreamingResponse(_events(method, message),
                                         media_type="text/event-stream", headers=NO_STORE)
            response = await call_unary(method, message, _timeout(request))
            return _json(to_json(response))
        except GatewayError as error:
            allow = {"allow": "POST"} if error.status == 405 else None
            return error_response(error, allow)
    return endpoint


async def _request_message(gateway: Gateway, method: Method, request: Request) -> Message:
    if request.method == "GET":
        if not method.read:
            raise invalid(f"{method.path} changes the node's state: POST it", 405)
        unknown = set(request.query_params) - GET_PARAMS
        if unknown:
            raise invalid(f"unknown query parameters {sorted(unknown)}: a GET takes "
                          "?message=<the request as JSON>")
        if request.query_params.get("encoding", "json") != "json":
            raise invalid("only encoding=json is served", 415)
        return parse(method, request.query_params.get("message", ""))
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise invalid(f"send the request as application/json (got {media_type or 'none'!r})",
                      415)
    return parse(method, await _body(request, gateway.max_body))


async def _body(request: Request, limit: int) -> bytes:
    too_large = invalid(f"the body is larger than {limit} bytes (http.max_body)", 413)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _timeout(request: Request) -> float | None:
    """Connect's ``Connect-Timeout-Ms`` header, as the call's deadline."""
    value = request.headers.get("connect-timeout-ms")
    if value is None:
        return None
    if not value.isdigit() or not 0 < len(value) <= 10:
        raise invalid(f"Connect-Timeout-Ms {value!r} is not a positive integer")
    return int(value) / 1000


def _event(data: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(method: Method, message: Message) -> AsyncIterator[bytes]:
    """The stream's messages as SSE, with keep-alive comments on a quiet stream."""
    queue: asyncio.Queue[Message | GatewayError | None] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for item in call_stream(method, message):
                await queue.put(item)
            await queue.put(None)
        except GatewayError as error:
            await queue.put(error)
        except Exception:
            log.exception("%s failed over HTTP", method.path)
            await queue.put(GatewayError(grpc.StatusCode.INTERNAL,
                                         "internal error in meshd; see the daemon's log"))

    task = asyncio.create_task(pump())
    try:
        yield b": stream open\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is None:
                return
            if isinstance(item, GatewayError):
                yield _event({"code": item.code.name.lower(), "message": item.message}, "error")
                return
            yield _event(to_json(item))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
