"""The HTTP listener: Hypercorn on the API thread's asyncio loop.

The gateway calls the grpc.aio servicers directly, so it must run on their
loop (meshd/api/server.py starts it there). The socket is bound here, before
Hypercorn takes it, so a bad address fails meshd's start with a clear error
and port 0 tells which port it got.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from meshd.http.app import Asgi

log = logging.getLogger(__name__)
# The dashboard's static files (no build step: served as they are).
DASHBOARD = Path(__file__).with_name("dashboard")
GRACE = 1.0  # seconds for open requests when meshd stops


class HttpSetupError(Exception):
    """The HTTP listener cannot start."""


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path


def bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpSetupError(f"cannot listen on {address} for the HTTP gateway: "
                             f"{exc.strerror}") from None
    return sock


async def serve_http(app: Asgi, sock: socket.socket, tls: Tls | None,
                     stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    config.graceful_timeout = GRACE
    await serve(app, config, shutdown_trigger=stop.wait, mode="asgi")  # type: ignore[arg-type]
