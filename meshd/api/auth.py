"""Access control for the TCP listener: TLS plus a bearer token.

The Unix socket is protected by its file mode (0600, owner only). A TCP
listener can be reached by anyone who can route to it, so meshd serves it only
over TLS and only to requests with ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

TOKEN_BYTES = 32


class AuthSetupError(Exception):
    """The token or the TLS material cannot be loaded."""


def load_or_create_token(path: Path) -> str:
    """Read the API token; create a random one (mode 0600) if the file is missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthSetupError(f"cannot read API token file {path}: {exc}") from None
    if len(token) < 16:
        raise AuthSetupError(f"API token in {path} is shorter than 16 characters; "
                             "use a longer random token")
    return token


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    """TLS credentials from PEM files."""
    try:
        return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    except OSError as exc:
        raise AuthSetupError(f"cannot read TLS material: {exc}") from None


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call without the right ``authorization: Bearer`` header."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation: Continuation,
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        metadata = dict(details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return await continuation(details)
        return _refusal(details.method, given)


def _refusal(method: str, given: Any) -> grpc.RpcMethodHandler:
    reason = ("missing 'authorization: Bearer <token>' metadata" if not given
              else "wrong API token")
    message = (f"{reason}: the TCP API needs the token from meshd's api.token file "
               "(meshctl --token-file)")

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)
