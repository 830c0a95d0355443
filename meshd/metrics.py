"""Prometheus metrics (off by default; ``--metrics-addr HOST:PORT`` turns them on).

Names follow go-libp2p where it has the metric (``libp2p_swarm_*``), and are
``mesh_*`` otherwise; docs/operations.md lists them. The HTTP endpoint is
prometheus-client's, on its own thread: so that a scrape never reads
trio-owned state, a trio task samples it into an immutable snapshot every
SAMPLE_INTERVAL and the collector only reads the latest snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import trio
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meshd.ledger.ledger import Ledger
from meshd.ledger.replication import ReplicationCounters
from meshd.node_status import NodeState, StatusBoard
from meshd.p2p.autonat import Reachability
from meshd.p2p.host import P2PHost
from meshd.plugin_host.runtime import PluginRuntime
from meshd.tasks.receipt_audits import AuditCounts
from meshd.tasks.router import TaskRouter

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0


class MetricsSetupError(Exception):
    """The metrics endpoint cannot be served."""


@dataclass(frozen=True)
class Snapshot:
    state: str = NodeState.INITIALIZING.value
    admitted_peers: int = 0
    open_connections: int = 0
    opened: Mapping[str, int] = field(default_factory=dict)
    closed: Mapping[str, int] = field(default_factory=dict)
    admitted_total: int = 0
    refused_total: int = 0
    streams_opened: int = 0
    streams_closed: int = 0
    protocol_errors: int = 0
    gossip: Mapping[str, int] = field(default_factory=dict)
    queue_depth_max: int = 0
    routing_table_peers: int = 0
    dht_queries: Mapping[tuple[str, str], int] = field(default_factory=dict)
    upgrade_required: bool = False
    reachability: str = Reachability.UNKNOWN.value
    relay: Mapping[str, int] = field(default_factory=dict)
    relays_held: int = 0
    upgrades: Mapping[str, int] = field(default_factory=dict)
    node: NodeSnapshot | None = None


@dataclass(frozen=True)
class NodeSnapshot:
    """The node beyond p2p: ledger, settlement, tasks, plugins."""

    final_epoch: int = -1
    clock_epoch: int = 0
    entries_stored: int = 0
    settlement_latency: float | None = None  # seconds from the end of the newest final epoch
    tasks: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    plugins: tuple[tuple[str, str, int, bool], ...] = ()
    refused: Mapping[str, int] = field(default_factory=dict)  # entries not stored, by reason
    receipt_audits: Mapping[str, int] = field(default_factory=dict)  # by outcome


@dataclass
class NodeParts:
    """What the metrics read beyond the p2p host (None in p2p-only uses)."""

    ledger: Ledger
    router: TaskRouter
    runtime: PluginRuntime
    replication: ReplicationCounters | None = None
    audits: AuditCounts | None = None  # the receipt audits this node made as a validator
    # The newest final epoch the sampler saw (-2: none yet), and how long after
    # its end it saw it final (None until one became final while sampled).
    seen_final: int = -2
    latency: float | None = None


def sample_node(parts: NodeParts, now: float) -> NodeSnapshot:
    """The node part of a snapshot. The settlement latency is measured when the
    sampler first sees an epoch final: at most SAMPLE_INTERVAL late."""
    ledger = parts.ledger
    final = ledger.final_epoch
    if final != parts.seen_final:
        if parts.seen_final != -2 and final >= 0:  # became final while sampled
            rewards = ledger.genesis.rewards
            ended = ledger.genesis.genesis_time.timestamp() + (final + 1) * rewards.epoch_seconds
            parts.latency = max(0.0, now - ended)
        parts.seen_final = final
    return NodeSnapshot(final_epoch=final, clock_epoch=ledger.clock_epoch(),
                        entries_stored=ledger.entries_stored,
                        settlement_latency=parts.latency,
                        tasks=parts.router.counts(), plugins=tuple(parts.runtime.health()),
                        refused=_refused(parts.replication),
                        receipt_audits=asdict(parts.audits) if parts.audits else {})


def _refused(counters: ReplicationCounters | None) -> dict[str, int]:
    """Entries from peers that were not stored, by reason (docs/operations.md)."""
    if counters is None:
        return {}
    return {"invalid": counters.invalid, "unsupported": counters.unsupported,
            "intake_full": counters.intake_dropped, "waiting_for_past": counters.waiting}


def sample(board: StatusBoard, host: P2PHost, parts: NodeParts | None = None) -> Snapshot:
    """Read everything on the trio loop, into plain immutable data."""
    counters = host.membership.counters
    gossip = host.broadcast.counters
    status = board.snapshot()
    return Snapshot(
        node=sample_node(parts, time.time()) if parts is not None else None,
        state=status.state.value,
        upgrade_required=status.upgrade_required,
        reachability=host.reachability.value,
        relay={"reservations": host.relay_server.reservations() if host.relay_server.active
               else 0,
               **vars(host.relay_server.counters)},
        relays_held=len(host.relay_client.relays),
        upgrades=dict(vars(host.hole_punch.counters)),
        admitted_peers=host.peer_count(),
        open_connections=host.connection_count(),
        opened=dict(counters.opened),
        closed=dict(counters.closed),
        admitted_total=counters.admitted,
        refused_total=counters.refused,
        streams_opened=counters.streams_opened,
        streams_closed=counters.streams_closed,
        protocol_errors=counters.protocol_errors,
        gossip={"published": gossip.published, "delivered": gossip.delivered,
                "dropped_slow_subscriber": gossip.dropped_slow_subscriber,
                "dropped_outbound_queue_full": gossip.dropped_outbound,
                "publish_refused": gossip.publish_refused,
                "rejected": gossip.rejected},
        queue_depth_max=host.broadcast.max_queue_depth(),
        routing_table_peers=host.dht.routing_table_size(),
        dht_queries=dict(host.dht.queries),
    )


class SnapshotCollector(Collector):
    """Turns the latest snapshot into metric families (runs on the HTTP thread)."""

    def __init__(self, latest: Callable[[], Snapshot]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        s = self._latest()
        yield _by_label(CounterMetricFamily, "libp2p_swarm_connections_opened",
                        "Connections opened, by direction.", "dir", s.opened)
        yield _by_label(CounterMetricFamily, "libp2p_swarm_connections_closed",
                        "Connections closed, by direction.", "dir", s.closed)
        yield GaugeMetricFamily("mesh_connections_open", "Open connections, admitted or not.",
                                value=s.open_connections)
        yield CounterMetricFamily("mesh_streams_opened", "Streams opened, both directions.",
                                  value=s.streams_opened)
        yield GaugeMetricFamily("mesh_streams_open", "Streams open now.",
                                value=max(s.streams_opened - s.streams_closed, 0))
        yield CounterMetricFamily("mesh_peer_protocol_errors",
                                  "Peer streams a service failed on (the peer is disconnected).",
                                  value=s.protocol_errors)
        yield GaugeMetricFamily("mesh_peers_admitted",
                                "Connected peers that passed the network handshake.",
                                value=s.admitted_peers)
        yield CounterMetricFamily("mesh_peers_admitted", "Admissions since start.",
                                  value=s.admitted_total)
        yield CounterMetricFamily("mesh_peers_refused",
                                  "Peers refused by the handshake since start.",
                                  value=s.refused_total)
        state = GaugeMetricFamily("mesh_node_state", "1 for the node's current state.",
                                  labels=["state"])
        for known in NodeState:
            state.add_metric([known.value], 1.0 if known.value == s.state else 0.0)
        yield state
        reachable = GaugeMetricFamily("mesh_reachability", "1 for AutoNAT's current verdict "
                                      "on whether members can dial this node.",
                                      labels=["reachability"])
        for known_reachability in Reachability:
            reachable.add_metric([known_reachability.value],
                                 1.0 if known_reachability.value == s.reachability else 0.0)
        yield reachable
        yield GaugeMetricFamily("mesh_relay_reservations", "Reservations this node holds "
                                "for NAT'd members, as a relay.",
                                value=s.relay.get("reservations", 0))
        yield _by_label(CounterMetricFamily, "mesh_relay_reservation_requests",
                        "Reservation requests this relay answered, by outcome.", "result",
                        {"accepted": s.relay.get("reservations_accepted", 0),
                         "refused": s.relay.get("reservations_refused", 0)})
        yield _by_label(CounterMetricFamily, "mesh_relay_circuits",
                        "Circuits this relay was asked for, by outcome.", "result",
                        {"opened": s.relay.get("circuits_opened", 0),
                         "refused": s.relay.get("circuits_refused", 0)})
        yield CounterMetricFamily("mesh_relay_bytes", "Bytes this relay carried, both ways.",
                                  value=s.relay.get("bytes_relayed", 0))
        yield GaugeMetricFamily("mesh_relays_held", "Relays this node holds a reservation "
                                "with (while private).", value=s.relays_held)
        yield _by_label(CounterMetricFamily, "mesh_relayed_connection_upgrades",
                        "Relayed connections this node tried to make direct, by outcome.",
                        "how", s.upgrades)
        yield GaugeMetricFamily("mesh_upgrade_required",
                                "1 once a passed upgrade to a newer version is active.",
                                value=int(s.upgrade_required))
        yield CounterMetricFamily("mesh_gossip_published", "Messages this node published.",
                                  value=s.gossip.get("published", 0))
        yield CounterMetricFamily("mesh_gossip_delivered",
                                  "Messages delivered to local subscribers.",
                                  value=s.gossip.get("delivered", 0))
        dropped = CounterMetricFamily("mesh_gossip_dropped", "Messages dropped, by reason.",
                                      labels=["reason"])
        for reason in ("dropped_slow_subscriber", "dropped_outbound_queue_full"):
            dropped.add_metric([reason.removeprefix("dropped_")], s.gossip.get(reason, 0))
        yield dropped
        yield CounterMetricFamily("mesh_gossip_publish_refused",
                                  "Publishes refused because peers' queues stayed full.",
                                  value=s.gossip.get("publish_refused", 0))
        yield CounterMetricFamily("mesh_gossip_rejected",
                                  "Messages refused by a topic validator.",
                                  value=s.gossip.get("rejected", 0))
        yield GaugeMetricFamily("mesh_gossip_outbound_queue_depth_max",
                                "Fullest per-peer gossip outbound queue (of 32 RPCs).",
                                value=s.queue_depth_max)
        yield GaugeMetricFamily("mesh_dht_routing_table_peers",
                                "Peers in the DHT routing table.", value=s.routing_table_peers)
        queries = CounterMetricFamily("mesh_dht_queries", "DHT queries, by operation and "
                                      "result.", labels=["op", "result"])
        for (op, result), count in sorted(s.dht_queries.items()):
            queries.add_metric([op, result], count)
        yield queries
        if s.node is not None:
            yield from _node_families(s.node)


def _node_families(n: NodeSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily("mesh_ledger_final_epoch", "The newest epoch this node knows "
                            "as final (-1: none yet).", value=n.final_epoch)
    yield GaugeMetricFamily("mesh_ledger_clock_epoch", "The epoch the clock is in.",
                            value=n.clock_epoch)
    yield GaugeMetricFamily("mesh_ledger_settlement_lag_epochs", "Epochs ended but not final "
                            "here (0 or 1 when settling keeps up).",
                            value=max(0, n.clock_epoch - 1 - n.final_epoch))
    yield CounterMetricFamily("mesh_ledger_entries_stored", "Ledger entries newly stored "
                              "since start (own and peers').", value=n.entries_stored)
    if n.settlement_latency is not None:
        yield GaugeMetricFamily("mesh_ledger_settlement_latency_seconds", "From the end of "
                                "the newest final epoch to when this node saw it final.",
                                value=n.settlement_latency)
    yield _by_label(CounterMetricFamily, "mesh_ledger_entries_refused", "Entries from peers "
                    "not stored, by reason (invalid: the sender is penalised; unsupported: a "
                    "newer kind or an unknown settlement; intake_full: gossip dropped; "
                    "waiting_for_past: held until their past arrives).", "reason", n.refused)
    yield _by_label(CounterMetricFamily, "mesh_receipt_audits", "Receipts the beacon drew "
                    "for this validator to audit, and what came of them (passed; failed: "
                    "verdict written on a wrong result, or on an execution not shown while "
                    "the provider answered; unshown: the provider was not reachable; "
                    "reported: reported work, nothing to run again; unchecked: no rule "
                    "here could judge it).", "outcome", n.receipt_audits)
    tasks = GaugeMetricFamily("mesh_tasks", "Tasks this node submitted since start, by "
                              "plugin, kind and state.", labels=["plugin", "kind", "state"])
    for (plugin, kind, state), count in sorted(n.tasks.items()):
        tasks.add_metric([plugin, kind, state], count)
    yield tasks
    states = GaugeMetricFamily("mesh_plugin_up", "1 while the plugin runs (0: starting or in "
                               "backoff after a failure), by plugin and kind.",
                               labels=["plugin", "kind"])
    restarts = CounterMetricFamily("mesh_plugin_restarts", "Plugin restarts after a failure.",
                                   labels=["plugin"])
    for name, state, count, external in n.plugins:
        states.add_metric([name, "external" if external else "in-process"],
                          1.0 if state == "running" else 0.0)
        restarts.add_metric([name], count)
    yield states
    yield restarts


def _by_label(kind: Any, name: str, help_text: str, label: str,
              values: Mapping[str, int]) -> Metric:
    family = kind(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family  # type: ignore[no-any-return]


def parse_listen(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@contextlib.asynccontextmanager
async def open_metrics_endpoint(address: str, board: StatusBoard, host: P2PHost,
                                parts: NodeParts | None = None) -> AsyncIterator[int]:
    """Serve /metrics on ``address`` (HOST:PORT) while the block runs; yields the port."""
    snapshot = [sample(board, host, parts)]
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(lambda: snapshot[-1]))
    bind_host, port = parse_listen(address)
    try:
        server, thread = start_http_server(port, addr=bind_host, registry=registry)
    except OSError as exc:
        raise MetricsSetupError(f"cannot serve metrics on {address}: "
                                f"{exc.strerror or exc}") from None
    bound = server.server_address[1]
    log.info("metrics endpoint listening", extra={"addr": f"{bind_host}:{bound}"})
    try:
        async with trio.open_nursery() as nursery:

            async def keep_sampling() -> None:
                while True:
                    await trio.sleep(SAMPLE_INTERVAL)
                    snapshot.append(sample(board, host, parts))
                    del snapshot[:-1]

            nursery.start_soon(keep_sampling)
            yield bound
            nursery.cancel_scope.cancel()
    finally:
        # shutdown() waits for serve_forever's loop (0.5 s poll): not on the trio thread.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.shutdown)
        server.server_close()
        thread.join(timeout=2)
