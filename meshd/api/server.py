"""Assembles the gRPC API: services, health, reflection, listeners.

Two listeners share the servicers: the Unix socket (mode 0600, no further
checks: the file mode is the access control) and, when configured, a TCP
listener that requires TLS and a bearer token (meshd/api/auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import trio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.dht.v1 import dht_pb2, dht_pb2_grpc
from mesh.governance.v1 import governance_pb2, governance_pb2_grpc
from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.network.v1 import network_pb2, network_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from mesh.peers.v1 import peers_pb2, peers_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from mesh.pubsub.v1 import pubsub_pb2, pubsub_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshcore.addresses import is_loopback_host
from meshd.api.auth import (
    AuthSetupError,
    BearerTokenInterceptor,
    load_or_create_token,
    server_credentials,
)
from meshd.api.dht_servicer import DhtServicer
from meshd.api.governance_servicer import GovernanceServicer
from meshd.api.ledger_servicer import LedgerServicer
from meshd.api.malformed import RefusalLog, add_refusing_malformed
from meshd.api.network_servicer import NetworkServicer
from meshd.api.node_servicer import NodeServicer
from meshd.api.peers_servicer import PeersServicer
from meshd.api.plugins_servicer import PluginsServicer
from meshd.api.pubsub_servicer import PubsubServicer
from meshd.api.tasks_servicer import TasksServicer
from meshd.config import Config
from meshd.genesis_view import GenesisView
from meshd.governance.service import Governance
from meshd.http import openapi
from meshd.http.access import Access
from meshd.http.app import Asgi, Gateway, build_app
from meshd.http.methods import method_table
from meshd.http.server import DASHBOARD, HttpSetupError, Tls, bind, serve_http
from meshd.ledger.ledger import Ledger
from meshd.node_status import StatusBoard
from meshd.p2p.host import P2PHost
from meshd.plugin_host.runtime import PluginRuntime
from meshd.rpc.bridge import StopAll, TrioBridge, serve_in_thread
from meshd.tasks.notes import ReceiptNotes
from meshd.tasks.receipt_audits import ReceiptAuditor
from meshd.tasks.router import TaskRouter

log = logging.getLogger(__name__)

# In-flight calls get this long to finish when meshd stops.
SHUTDOWN_GRACE = 1.0
_SERVER_OPTIONS = [
    # grpcio sets SO_REUSEPORT by default: two daemons could then share a TCP
    # port without an error. One port, one daemon.
    ("grpc.so_reuseport", 0),
]


class ApiSetupError(Exception):
    """A listener cannot be started."""


@dataclass(frozen=True)
class Services:
    """The domain objects the servicers forward to (built in meshd/daemon.py)."""

    board: StatusBoard
    network: GenesisView
    host: P2PHost
    ledger: Ledger
    governance: Governance
    plugins: PluginRuntime
    tasks: TaskRouter
    notes: ReceiptNotes  # what plugins said of their receipts (rewards explain)
    audits: ReceiptAuditor | None = None  # receipt audits this node makes as a validator


@dataclass(frozen=True)
class _Api:
    """One service of the API: its full name, how a servicer joins a server,
    and the servicer over the domain objects."""

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Callable[[TrioBridge, Services], object]


def _service(file: Any, name: str) -> ServiceDescriptor:
    service: ServiceDescriptor = file.DESCRIPTOR.services_by_name[name]
    return service


# Every service of proto/ on the API listeners, with what it serves.
API = (
    _Api(_service(node_pb2, "NodeService"), node_pb2_grpc.add_NodeServiceServicer_to_server,
         lambda bridge, s: NodeServicer(bridge, s.board)),
    _Api(_service(network_pb2, "NetworkService"),
         network_pb2_grpc.add_NetworkServiceServicer_to_server,
         lambda bridge, s: NetworkServicer(bridge, s.network)),
    _Api(_service(peers_pb2, "PeersService"), peers_pb2_grpc.add_PeersServiceServicer_to_server,
         lambda bridge, s: PeersServicer(bridge, s.host)),
    _Api(_service(dht_pb2, "DhtService"), dht_pb2_grpc.add_DhtServiceServicer_to_server,
         lambda bridge, s: DhtServicer(bridge, s.host.dht)),
    _Api(_service(pubsub_pb2, "PubsubService"), pubsub_pb2_grpc.add_PubsubServiceServicer_to_server,
         lambda bridge, s: PubsubServicer(bridge, s.host.broadcast)),
    _Api(_service(ledger_pb2, "LedgerService"), ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
         lambda bridge, s: LedgerServicer(bridge, s.ledger, s.notes.get)),
    _Api(_service(governance_pb2, "GovernanceService"),
         governance_pb2_grpc.add_GovernanceServiceServicer_to_server,
         lambda bridge, s: GovernanceServicer(bridge, s.governance)),
    _Api(_service(plugins_pb2, "PluginsService"),
         plugins_pb2_grpc.add_PluginsServiceServicer_to_server,
         lambda bridge, s: PluginsServicer(bridge, s.plugins)),
    _Api(_service(tasks_pb2, "TasksService"), tasks_pb2_grpc.add_TasksServiceServicer_to_server,
         lambda bridge, s: TasksServicer(bridge, s.tasks, s.audits)),
)
SERVICE_NAMES = tuple(api.descriptor.full_name for api in API)


@dataclass(frozen=True)
class ApiEndpoints:
    socket: Path
    tcp_port: int | None
    http_port: int | None = None  # the REST/JSON gateway and dashboard (meshd/http/)


async def serve_api(config: Config, bridge: TrioBridge, services: Services, *,
                    task_status: trio.TaskStatus[ApiEndpoints] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
    """Serve the API until cancelled; ``task_status`` gets the bound endpoints."""
    socket_path = config.socket_path.absolute()
    _remove_stale_socket(socket_path)
    credentials = interceptor = None
    if config.api.tcp_listen:
        assert config.api.tls_cert is not None and config.api.tls_key is not None
        credentials = server_credentials(config.api.tls_cert, config.api.tls_key)
        interceptor = BearerTokenInterceptor(load_or_create_token(config.token_path))

    async def start() -> tuple[ApiEndpoints, StopAll]:
        health_servicer = health.aio.HealthServicer()
        servers: list[grpc.aio.Server] = []

        servicers = [(api.add_to_server, api.servicer(bridge, services)) for api in API]
        http = _open_http(config, {api.descriptor: servicer
                                   for api, (_, servicer) in zip(API, servicers, strict=True)})
        refusals = RefusalLog()

        def new_server(interceptors: list[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
            server = grpc.aio.server(interceptors=interceptors, options=_SERVER_OPTIONS)
            for add_to_server, servicer in servicers:
                # Bytes that are not the method's request message: INVALID_ARGUMENT
                # and one rate-limited log line, not a traceback each.
                add_refusing_malformed(add_to_server, servicer, server, refusals)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
            servers.append(server)
            return server

        async def stop() -> None:
            await health_servicer.enter_graceful_shutdown()
            if http is not None:
                await http.stop()
            await asyncio.gather(*(s.stop(SHUTDOWN_GRACE) for s in servers))

        unix = new_server([])
        _bind(unix.add_insecure_port, f"unix:{socket_path}", "API socket")
        await unix.start()
        os.chmod(socket_path, 0o600)
        tcp_port = None
        if credentials is not None and interceptor is not None:
            tcp = new_server([interceptor])
            tcp_port = _bind(lambda a: tcp.add_secure_port(a, credentials),
                             config.api.tcp_listen, "API TCP listener")
            await tcp.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return ApiEndpoints(socket_path, tcp_port, http.port if http else None), stop

    await serve_in_thread(start, task_status=task_status)


def http_url(listen: str, port: int) -> str:
    """Where the gateway answers: the configured host and the bound port."""
    host = listen.rpartition(":")[0]
    scheme = "http" if is_loopback_host(host) else "https"
    return f"{scheme}://{host}:{port}/"


class _HttpListener:
    """The gateway (meshd/http/) served on this loop, beside the gRPC servers."""

    def __init__(self, app: Asgi, sock: socket.socket, tls: Tls | None) -> None:
        self.port = int(sock.getsockname()[1])
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(serve_http(app, sock, tls, self._stopped))

    async def stop(self) -> None:
        self._stopped.set()
        await self._task


def _open_http(config: Config, servicers: dict[ServiceDescriptor, object]) -> _HttpListener | None:
    if not config.http.listen:
        return None
    host = config.http.listen.rpartition(":")[0]
    loopback = is_loopback_host(host)
    tls = None if loopback else Tls(config.api.tls_cert, config.api.tls_key)  # type: ignore[arg-type]
    try:
        token = load_or_create_token(config.token_path)
        sock = bind(config.http.listen)
    except (HttpSetupError, AuthSetupError) as exc:
        raise ApiSetupError(str(exc)) from None
    methods = method_table(servicers)
    access = Access(token, loopback, "http" if tls is None else "https",
                    config.http.writes_without_token, config.http.cors_origins)
    app = build_app(Gateway(methods, access, openapi.document(methods), config.http.max_body,
                            static=DASHBOARD if DASHBOARD.is_dir() else None))
    return _HttpListener(app, sock, tls)


def _bind(add_port: Callable[[str], int], address: str, what: str) -> int:
    try:
        port = add_port(address)
    except RuntimeError as exc:
        raise ApiSetupError(f"cannot listen on {address} for the {what}: {exc}") from None
    if not isinstance(port, int) or (port == 0 and not address.startswith("unix:")):
        raise ApiSetupError(f"cannot listen on {address} for the {what}")
    return port


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a meshd that died; refuse one that is in use."""
    if not path.exists() and not path.is_symlink():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
    raise ApiSetupError(f"another process is already serving on {path}; "
                        "stop it or set another api.socket")


def check_api_answers(socket_path: Path, timeout: float = 5.0) -> None:
    """A health check over the socket, as a client would do it (blocking)."""
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise ApiSetupError(f"API health check on {socket_path} answered {response.status}")
