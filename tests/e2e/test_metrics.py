"""The Prometheus endpoint of a real meshd: off by default, named metrics, bad input."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import Meshd, free_port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def value(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in the scrape")


def test_metrics_endpoint(node: Callable[..., Meshd]) -> None:
    port = free_port()
    a = node("a", "--metrics-addr", f"127.0.0.1:{port}")
    text = scrape(port)
    assert value(text, 'mesh_node_state{state="connecting"}') == 1.0
    assert value(text, "mesh_peers_admitted") == 0.0
    assert value(text, 'mesh_reachability{reachability="unknown"}') == 1.0
    b = node("b", "--bootstrap", a.status()["listen_addrs"][0])
    b.ctl("pubsub", "pub", "news", "hello")  # no subscriber: published all the same
    a.watch_until(lambda s: s.peer_count == 1)
    deadline = time.monotonic() + 10  # the endpoint samples every second
    while value(scrape(port), "mesh_peers_admitted") != 1.0:
        assert time.monotonic() < deadline
    text = scrape(port)
    assert value(text, 'libp2p_swarm_connections_opened_total{dir="inbound"}') >= 1
    assert value(text, "mesh_peers_admitted_total") >= 1
    assert value(text, 'mesh_gossip_dropped_total{reason="slow_subscriber"}') == 0
    assert value(text, "mesh_streams_opened_total") >= 2  # at least the two hellos
    assert "mesh_dht_routing_table_peers" in text
    assert "mesh_gossip_outbound_queue_depth_max" in text
    # b dialled a back (AutoNAT): a is reachable, and says so.
    a.watch_until(lambda s: s.reachability == "public")
    while value(scrape(port), 'mesh_reachability{reachability="public"}') != 1.0:
        assert time.monotonic() < deadline + 10
    text = scrape(port)
    assert value(text, "mesh_relay_reservations") == 0  # nobody behind NAT here
    assert value(text, 'mesh_relay_circuits_total{result="opened"}') == 0
    assert value(text, "mesh_relays_held") == 0
    assert value(text, 'mesh_relayed_connection_upgrades_total{how="punched"}') == 0


def test_metrics_are_off_by_default_and_a_busy_port_is_refused(
        node: Callable[..., Meshd]) -> None:
    plain = node("plain")
    assert "metrics endpoint" not in plain.log()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused = node("busy", "--metrics-addr", f"127.0.0.1:{port}", start=False)
        refused.start(wait=False)
        assert refused.wait_exit() == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in refused.log()
    assert "Traceback" not in refused.log()


def test_the_node_beyond_p2p_ledger_settlement_tasks_plugins(tmp_path: Path) -> None:
    from meshd.testing import eventually_blocking
    from tests.e2e.harness import start_network, validator_genesis

    genesis, _ = validator_genesis(tmp_path, ["v1", "v2"], allocation=10**9, epoch_seconds=2,
                                   options=["--name", "M", "--token-name", "M",
                                            "--token-symbol", "MM", "--plugin", "storage"])
    port = free_port()
    with start_network(tmp_path, genesis, ["v1", "v2"],
                       env=lambda i: {"MESHD_METRICS_LISTEN": f"127.0.0.1:{port}"} if i == 0
                       else None) as (v1, _v2):
        # Settled twice while sampled: the latency of the second is measured.
        text = eventually_blocking(
            lambda: scrape(port),
            lambda t: "mesh_ledger_settlement_latency_seconds " in t
            and value(t, "mesh_ledger_final_epoch") >= 1, timeout=60,
            what="two settlements seen by the metrics")
        assert 0 <= value(text, "mesh_ledger_settlement_latency_seconds") < 30
        assert value(text, "mesh_ledger_settlement_lag_epochs") <= 2
        assert value(text, "mesh_ledger_clock_epoch") >= value(text, "mesh_ledger_final_epoch")
        assert value(text, "mesh_ledger_entries_stored_total") >= 1
        assert value(text, 'mesh_ledger_entries_refused_total{reason="invalid"}') == 0
        assert value(text, 'mesh_plugin_up{kind="in-process",plugin="storage"}') == 1.0
        assert value(text, 'mesh_plugin_restarts_total{plugin="storage"}') == 0
        # v1 is a validator: its receipt audits are counted (none failed: nobody lies).
        assert value(text, 'mesh_receipt_audits_total{outcome="failed"}') == 0
        v1.ctl("tasks", "submit", "storage", "STORE_FILE", "metrics")  # a task to v2
        text = eventually_blocking(
            lambda: scrape(port), lambda t: 'mesh_tasks{kind="STORE_FILE"' in t, timeout=30,
            what="the storage task in the metrics")
        assert value(text, 'mesh_tasks{kind="STORE_FILE",plugin="storage",state="done"}') >= 1
