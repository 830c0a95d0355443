"""Assembles one meshd: data dir, identity, genesis, p2p host, API.

``run_daemon`` runs until cancelled and reports readiness with
``task_status.started(...)``; the entry point (meshd/cli.py) adds signal
handling and systemd notification around it, and tests run it in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from meshcore.addresses import parse_peer_address
from meshcore.genesis import Genesis
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.entry import public_key
from meshcore.version import __version__
from meshd import datadir
from meshd.api.auth import AuthSetupError
from meshd.api.server import (
    ApiEndpoints,
    ApiSetupError,
    Services,
    check_api_answers,
    http_url,
    serve_api,
)
from meshd.config import Config, ConfigError
from meshd.datadir import DataDirError
from meshd.genesis_view import GenesisView
from meshd.governance.service import Governance
from meshd.governance.status_watch import GovernanceWatch
from meshd.identity import IdentityError, load_or_create_identity
from meshd.ledger.equivocation import EquivocationReporter
from meshd.ledger.ledger import open_ledger
from meshd.ledger.replication import OWN_CHAIN_GRACE, Replicator
from meshd.ledger.settlement_driver import SettlementDriver
from meshd.ledger.standing import StandingIndexer
from meshd.ledger.sync_server import SyncServer
from meshd.ledger.uptime import UptimeAttester
from meshd.metrics import MetricsSetupError, NodeParts, open_metrics_endpoint
from meshd.node_status import StatusBoard
from meshd.p2p import peerbook
from meshd.p2p.addresses import AddressPolicy
from meshd.p2p.autonat import Reachability
from meshd.p2p.connmgr import ConnectionManager, Degree
from meshd.p2p.genesis_exchange import GenesisServer, fetch_genesis
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.mdns import LanDiscovery
from meshd.p2p.relay_server import RelayLimits
from meshd.plugin_host import loader
from meshd.plugin_host.context import TaskServices
from meshd.plugin_host.external import select_external
from meshd.plugin_host.loader import PluginSetupError
from meshd.plugin_host.runtime import PluginRuntime, plugin_settings
from meshd.plugin_host.signing import PluginSigner
from meshd.plugin_host.supervisor import Backoff
from meshd.rpc.bridge import open_trio_bridge
from meshd.tasks.executions import open_execution_journal
from meshd.tasks.notes import ReceiptNotes
from meshd.tasks.participation import ParticipationWatch
from meshd.tasks.pending_audits import PendingAuditFile
from meshd.tasks.provider import TaskProvider
from meshd.tasks.receipt_audits import ReceiptAuditor
from meshd.tasks.reports import TaskReports
from meshd.tasks.router import TaskRouter

log = logging.getLogger(__name__)

# Reasons not to start that the operator can fix; reported in one line, no traceback.
STARTUP_ERRORS = (DataDirError, IdentityError, ApiSetupError, AuthSetupError,
                  MetricsSetupError, PluginSetupError, OSError)


@dataclass(frozen=True)
class DaemonInfo:
    """What a started daemon tells its starter."""

    peer_id: str
    network_id: str
    listen_addrs: tuple[str, ...]
    api: ApiEndpoints


async def run_daemon(config: Config, *, plugins: Sequence[loader.Available] | None = None,
                     task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED,
                     ) -> None:
    """Run a node until cancelled. Started means: listening, plugins started, API answering.

    ``plugins`` stands in for the installed entry points (tests, meshd.testing).
    """
    data_dir = datadir.prepare(config.node.data_dir)
    with datadir.lock(data_dir):
        seed = load_or_create_identity(data_dir)
        _refuse_own_bootstrap(config, peer_id_of(public_key(seed)))
        genesis, genesis_toml = await _network_genesis(config, data_dir, seed)
        # Before joining: a node that cannot run the network's plugins must not join.
        external = config.plugins.external_commands()
        selected = loader.select(loader.installed() if plugins is None else plugins,
                                 genesis.plugins, config.plugins.enable,
                                 external=[c.name for c in external])
        selected += select_external(external, genesis.plugins, data_dir,
                                    config.plugins.health_timeout)
        board = StatusBoard(genesis.network_id, genesis.name, config.node.role,
                            watermarks=(config.p2p.low_watermark, config.p2p.target_peers,
                                        config.p2p.high_watermark))
        log.info("starting meshd", extra={"version": __version__, "data_dir": str(data_dir),
                                           "network_id": genesis.network_id})

        def peers_changed(peer_count: int) -> None:
            board.update(peer_count=peer_count)

        def routing_changed(size: int) -> None:
            board.update(routing_table_size=size)

        def addresses_changed(reachability: Reachability, addrs: tuple[str, ...]) -> None:
            board.update(reachability=reachability.value, listen_addrs=addrs)

        addresses = AddressPolicy(config.p2p.announce, config.p2p.no_announce)
        async with open_p2p_host(seed, config.p2p.listen, genesis.network_id,
                                 peers_changed, routing_changed, addresses_changed,
                                 advertise=addresses, relay=_relay_limits(config),
                                 reachability=None if config.p2p.reachability == "auto"
                                 else Reachability(config.p2p.reachability)) as host:
            board.update(peer_id=host.peer_id, listen_addrs=host.listen_addrs(),
                         listening=True, peer_count=host.peer_count())
            network = GenesisView(genesis, genesis_toml, host.peer_count,
                              host.dht.routing_table_size)
            known_peers = peerbook.load(data_dir)
            bootstrap = [*genesis.bootstrap, *config.p2p.bootstrap]
            # A lone founder's node has no one to check its own chain against.
            nobody_to_ask = not known_peers.peers and all(host.peer_id in address
                                                          for address in bootstrap)
            async with open_ledger(data_dir, seed, genesis, check_own_chain=True) as ledger, \
                    open_execution_journal(data_dir) as journal, \
                    open_trio_bridge() as bridge, trio.open_nursery() as nursery:
                runtime = PluginRuntime(
                    selected, host, ledger, genesis.network_id, data_dir,
                    plugin_settings(genesis.plugins, config.plugins.settings),
                    Backoff(maximum=config.plugins.restart_backoff_max),
                    init_timeout=config.plugins.init_timeout,
                    signer=PluginSigner(seed, genesis.network_id))
                provider = TaskProvider(host, ledger, runtime, config.tasks.capabilities,
                                        config.tasks.max_concurrent, journal)
                router = TaskRouter(host, ledger, runtime, (p.name for p in genesis.plugins))
                notes = ReceiptNotes(data_dir / "receipt-notes.jsonl")
                reports = TaskReports(host, ledger, runtime, (p.name for p in genesis.plugins),
                                      notes, journal)
                await nursery.start(provider.run)
                auditor = ReceiptAuditor(host, ledger, runtime,
                                         PendingAuditFile.in_dir(data_dir))
                await nursery.start(reports.run)
                endpoints = await nursery.start(
                    serve_api, config, bridge,
                    Services(board, network, host, ledger, Governance(ledger), runtime, router,
                             notes, auditor))
                await trio.to_thread.run_sync(check_api_answers, endpoints.socket)
                if endpoints.http_port is not None:
                    board.update(http_url=http_url(config.http.listen, endpoints.http_port))
                replicator = Replicator(
                    ledger, host, own_chain_grace=0 if nobody_to_ask else OWN_CHAIN_GRACE)
                await nursery.start(replicator.run)
                await nursery.start(SyncServer(ledger, host).run)
                await nursery.start(GenesisServer(host, genesis_toml).run)
                await nursery.start(SettlementDriver(ledger).run)
                await nursery.start(auditor.run)
                await nursery.start(StandingIndexer(ledger).run)
                await nursery.start(UptimeAttester(ledger, host).run)
                await nursery.start(EquivocationReporter(ledger).run)
                await nursery.start(GovernanceWatch(ledger, board).run)
                connections = ConnectionManager(
                    host, known_peers, data_dir,
                    Degree(config.p2p.low_watermark, config.p2p.target_peers,
                           config.p2p.high_watermark),
                    bootstrap=bootstrap)
                await nursery.start(connections.run)
                if config.p2p.mdns:
                    await nursery.start(LanDiscovery(
                        host.peer_id, genesis.network_id, lambda: list(host.listen_addrs()),
                        connections.discovered).run)
                await nursery.start(router.run)
                await nursery.start(ParticipationWatch(provider, router, board).run)
                await nursery.start(runtime.run, TaskServices(submit=router.submit_for_plugin,
                                                              report=reports.report,
                                                              fail=reports.fail,
                                                              check=reports.check,
                                                              record=router.records.get))
                if config.metrics.listen:
                    await nursery.start(_serve_metrics, config.metrics.listen, board, host,
                                        NodeParts(ledger, router, runtime,
                                                  replicator.counters, auditor.counts))
                log.info("meshd ready", extra={
                    "peer_id": host.peer_id, "api_socket": str(endpoints.socket),
                    "api_tcp_port": endpoints.tcp_port, "http_port": endpoints.http_port,
                    "hint": f"meshctl --socket {endpoints.socket} status"})
                task_status.started(DaemonInfo(host.peer_id, genesis.network_id,
                                               host.listen_addrs(), endpoints))
                await trio.sleep_forever()


async def _network_genesis(config: Config, data_dir: Path, seed: bytes) -> tuple[Genesis, str]:
    """The genesis this node runs: given, stored, or (joining by Network ID)
    fetched from a bootstrap peer and checked against the ID."""
    wanted = config.node.network_id
    if wanted and config.node.genesis is None and not datadir.has_genesis(data_dir):
        if not config.p2p.bootstrap:
            raise ConfigError("p2p.bootstrap", "joining by Network ID needs a bootstrap "
                              "peer to fetch the genesis from (--bootstrap)")
        _, fetched = await fetch_genesis(seed, wanted, config.p2p.bootstrap)
        datadir.store_genesis(data_dir, fetched)
    genesis, genesis_toml = datadir.bind_genesis(data_dir, config.node.genesis)
    if wanted and genesis.network_id != wanted:
        raise DataDirError(f"this node's genesis is network {genesis.network_id} "
                           f"({genesis.name}), not {wanted}; use another --data-dir "
                           "for another network")
    return genesis, genesis_toml


def _relay_limits(config: Config) -> RelayLimits | None:
    """What this node relays with while it is public (None: it never relays)."""
    relay = config.relay
    if not relay.serve:
        return None
    return RelayLimits(max_reservations=relay.max_reservations,
                       max_circuits=relay.max_circuits,
                       circuit_duration=float(relay.circuit_seconds),
                       circuit_bytes=relay.circuit_mib << 20)


def _refuse_own_bootstrap(config: Config, peer_id: str) -> None:
    """A node told to bootstrap from itself was given the wrong address (the
    genesis may list it: the founder's node is a bootstrap node of its network)."""
    for i, address in enumerate(config.p2p.bootstrap):
        if parse_peer_address(address).peer_id == peer_id:
            raise ConfigError(f"p2p.bootstrap[{i}]", f"{address!r} is this node's own "
                              "address; give another node's")


async def _serve_metrics(address: str, board: StatusBoard, host: P2PHost, parts: NodeParts,
                         *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                         ) -> None:
    async with open_metrics_endpoint(address, board, host, parts):
        task_status.started()
        await trio.sleep_forever()
