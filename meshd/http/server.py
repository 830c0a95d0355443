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
import ssl
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from meshd.http.app import Asgi

log = logging.getLogger(__name__)
# The dashboard's static files (no build step: served as they are).
DASHBOARD = Path(__file__).with_name("dashboard")
GRACE = 1.0  # seconds for open requests when meshd stops
KEEP_ALIVE = 75.0  # seconds an idle keep-alive connection stays open


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


class _TlsCloseNoise(logging.Filter):
    """Drops the traceback of a TLS connection that closed untidily.

    Hypercorn 0.18 on asyncio (Python 3.11): when a client sends data after its
    close_notify (a client that closes a kept-alive connection while a request
    is in flight), ``TCPServer._close`` awaits ``writer.wait_closed()``, whose
    ``SSLObject.unwrap()`` raises ``ssl.SSLError: APPLICATION_DATA_AFTER_CLOSE_NOTIFY``.
    Hypercorn logs it as "Error in ASGI Framework" and asyncio as "Unhandled
    exception in client_connected_cb", both with a traceback, for a connection
    that is simply gone. Found by tests/e2e/test_http_fuzz.py.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ssl.SSLError)
                    and "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in str(error))


_TLS_CLOSE_NOISE = _TlsCloseNoise()



async def serve_http(app: Asgi, sock: socket.socket, tls: Tls | None,
                     stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set."""
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
        for logger in (log, logging.getLogger("asyncio")):
            if _TLS_CLOSE_NOISE not in logger.filters:
                logger.addFilter(_TLS_CLOSE_NOISE)
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    config.graceful_timeout = GRACE
    # Hypercorn closes an idle keep-alive connection after 5 s, the period the
    # dashboard polls at: a request sent as the server closes the connection is
    # lost ("Remote end closed connection without response", seen by the
    # gateway fuzz on a loaded machine). 75 s, as nginx: clients close first.
    config.keep_alive_timeout = KEEP_ALIVE
    await serve(app, config, shutdown_trigger=stop.wait, mode="asgi")  # type: ignore[arg-type]
