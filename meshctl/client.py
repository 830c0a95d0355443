"""A small client over meshd's gRPC API, with errors a person can act on.

Where meshd is: ``--addr HOST:PORT`` (TCP, TLS + token) if given, else the
Unix socket from ``--socket`` / ``MESH_SOCKET`` / the default data dir.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshcore.version import __version__

VERSION_KEY = "mesh-version"
DEFAULT_TIMEOUT = 10.0


class ClientError(Exception):
    """A call failed; the message says what happened and what to try."""


@dataclass(frozen=True)
class Target:
    socket: Path
    addr: str | None = None
    tls_ca: Path | None = None
    token_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    def describe(self) -> str:
        return self.addr if self.addr else str(self.socket)


class MeshClient:
    """Opens the channel lazily and turns RPC failures into ClientError."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._channel: grpc.Channel | None = None
        self._warned = False

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = self._open()
        return self._channel

    def _open(self) -> grpc.Channel:
        target = self.target
        if target.addr:
            return grpc.secure_channel(target.addr, self._tcp_credentials())
        _check_socket(target.socket)
        return grpc.insecure_channel(f"unix:{target.socket}")

    def _tcp_credentials(self) -> grpc.ChannelCredentials:
        token_file = self.target.token_file
        token = os.environ.get("MESH_TOKEN", "")
        if token_file is not None:
            try:
                token = token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ClientError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if not token:
            raise ClientError("the TCP API needs a token: pass --token-file (meshd's api.token) "
                              "or set MESH_TOKEN")
        roots = None
        if self.target.tls_ca is not None:
            try:
                roots = self.target.tls_ca.read_bytes()
            except OSError as exc:
                raise ClientError(f"cannot read --tls-ca {self.target.tls_ca}: "
                                  f"{exc.strerror}") from None
        return grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=roots),
            grpc.access_token_call_credentials(token))

    def unary(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """Call a unary stub method; returns the response. ``timeout`` overrides
        --timeout for calls that wait on purpose (e.g. a task's outcome)."""
        try:
            response, call = method.with_call(request, timeout=timeout or self.target.timeout)
        except grpc.RpcError as exc:
            raise self._explain(exc) from None
        self._check_version(call.trailing_metadata())
        return response

    def stream(self, method: Callable[..., Any], request: Any) -> Iterator[Any]:
        """Iterate a server-streaming stub method (no deadline: until cancelled)."""
        call = method(request)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise self._explain(exc) from None
        finally:
            call.cancel()
        self._check_version(call.trailing_metadata())

    def _explain(self, exc: grpc.RpcError) -> ClientError:
        code: grpc.StatusCode = exc.code()
        details = exc.details() or code.name
        where = self.target.describe()
        # meshd marks each of its answers, errors too: an UNAVAILABLE it sent says
        # what is unavailable (a plugin, a peer); one without came from the channel.
        answered = VERSION_KEY in dict(_trailers(exc))
        if code == grpc.StatusCode.UNAVAILABLE and not answered \
                and "shutting down" not in details:
            return ClientError(f"cannot reach meshd at {where} (is it running? try "
                               f"'systemctl status meshd', or start one with 'meshd run')")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ClientError(f"meshd at {where} refused the call: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(f"meshd at {where} did not answer within "
                               f"{self.target.timeout:g} s (--timeout)")
        return ClientError(details)

    def _check_version(self, metadata: Any) -> None:
        daemon = dict(metadata or ()).get(VERSION_KEY)
        if daemon and daemon != __version__ and not self._warned:
            self._warned = True
            print(f"meshctl: warning: meshctl {__version__} is talking to meshd {daemon}; "
                  "upgrade the older one", file=sys.stderr)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _check_socket(path: Path) -> None:
    """Fail early, with a hint, when the socket is missing or not ours to use."""
    denied = ClientError(f"permission denied on {path}: the API socket belongs to the user "
                         "meshd runs as; run meshctl as that user (or with sudo)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ClientError(f"cannot reach meshd at {path}: no such socket (is it running? try "
                          "'systemctl status meshd', or pass --socket / set MESH_SOCKET)"
                          ) from None
    except PermissionError:  # a directory on the way is closed to us
        raise denied from None
    if not stat.S_ISSOCK(mode):
        raise ClientError(f"{path} is not a socket: pass meshd's API socket with --socket "
                          "(default <data dir>/meshd.sock)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise denied


def _trailers(exc: grpc.RpcError) -> Any:
    """The trailing metadata of a failed call (none if the call never reached a server)."""
    trailing = getattr(exc, "trailing_metadata", None)
    return (trailing() if callable(trailing) else None) or ()
