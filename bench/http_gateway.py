"""Benchmark: the REST/JSON gateway next to gRPC, on the same meshd, in the same run.

Two ``meshd run`` processes on loopback (bench/cluster.py), node 0 with the
gateway on (``MESHD_HTTP_LISTEN=127.0.0.1:0``). Measured on node 0:

* **latency**: serial calls of GetStatus and GetBalance, over gRPC (sync grpcio,
  one channel on the Unix socket: meshctl's way) and over HTTP (one kept-alive
  ``http.client`` connection, JSON), interleaved in rounds so that drift hits
  both alike; p50 and p99 of each. Goal: REST p99 <= 2x gRPC p99.
* **gRPC throughput with dashboard traffic**: GetStatus QPS from ``--threads``
  client threads, alone and while another process plays a dashboard (the SSE
  streams the dashboard keeps open, and ``--dashboard-rate`` REST reads per
  second); the same number of rounds each, interleaved. Goal: >= 0.9x.

Run from the repository root: ``.venv/bin/python bench/http_gateway.py [--json]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cluster
import output

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc

P99_GOAL = 2.0
QPS_GOAL = 0.9
# What the dashboard keeps open, and what it reads on a timer (meshd/http/dashboard/).
DASHBOARD_STREAMS = ("/mesh.node.v1.NodeService/WatchStatus",
                     "/mesh.peers.v1.PeersService/WatchPeers",
                     "/mesh.ledger.v1.LedgerService/WatchSettlements",
                     "/mesh.governance.v1.GovernanceService/WatchProposals",
                     "/mesh.tasks.v1.TasksService/WatchTasks")
DASHBOARD_READS = ("/mesh.peers.v1.PeersService/ListPeers",
                   "/mesh.ledger.v1.LedgerService/GetTokenInfo",
                   "/mesh.ledger.v1.LedgerService/ListHistory",
                   "/mesh.plugins.v1.PluginsService/ListPlugins",
                   "/mesh.node.v1.NodeService/GetStatus")


class Rest:
    """One kept-alive HTTP/1.1 connection, JSON in and out."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.connection.request("POST", path, json.dumps(body),
                                {"content-type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer


def timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def latency(node: cluster.Node, url: str, calls: int, rounds: int) -> dict[str, Any]:
    node_stub = node.stub(node_pb2_grpc.NodeServiceStub)
    ledger_stub = node.stub(ledger_pb2_grpc.LedgerServiceStub)
    rest = Rest(url)
    methods: dict[str, dict[str, Callable[[], object]]] = {
        "GetStatus": {
            "grpc": lambda: node_stub.GetStatus(node_pb2.GetStatusRequest(), timeout=5),
            "rest": lambda: rest.call("/mesh.node.v1.NodeService/GetStatus", {})},
        "GetBalance": {
            "grpc": lambda: ledger_stub.GetBalance(ledger_pb2.GetBalanceRequest(), timeout=5),
            "rest": lambda: rest.call("/mesh.ledger.v1.LedgerService/GetBalance", {})},
    }
    results: dict[str, Any] = {}
    for name, ways in methods.items():
        samples: dict[str, list[float]] = {"grpc": [], "rest": []}
        for call in ways.values():
            timed(call, 200)  # warm-up: connections, first-call costs
        for _ in range(rounds):
            for way, call in ways.items():
                samples[way] += timed(call, calls // rounds)
        results[name] = {way: {"p50_ms": round(statistics.median(s), 3),
                               "p99_ms": round(cluster.quantile(sorted(s), 0.99), 3),
                               "calls": len(s)} for way, s in samples.items()}
        results[name]["p99_ratio"] = round(results[name]["rest"]["p99_ms"]
                                           / results[name]["grpc"]["p99_ms"], 2)
    return results


def grpc_qps(node: cluster.Node, threads: int, seconds: float) -> float:
    stub = node.stub(node_pb2_grpc.NodeServiceStub)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        while time.monotonic() < stop:
            stub.GetStatus(node_pb2.GetStatusRequest(), timeout=5)
            counts[index] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def dashboard_traffic(url: str, rate: float) -> None:
    """Until stdin closes: the dashboard's streams open, and ``rate`` reads per second."""
    parts = urlsplit(url)
    streams = []
    for path in DASHBOARD_STREAMS:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3600)
        connection.request("GET", path)
        streams.append(connection.getresponse())
    done = threading.Event()

    def drain(response: http.client.HTTPResponse) -> None:
        while not done.is_set() and response.readline():
            pass

    for response in streams:
        threading.Thread(target=drain, args=(response,), daemon=True).start()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    rest = Rest(url)
    print("ready", flush=True)
    index = 0
    while not done.is_set():
        rest.call(DASHBOARD_READS[index % len(DASHBOARD_READS)], {})
        index += 1
        done.wait(1 / rate)


def with_and_without_dashboard(node: cluster.Node, url: str, threads: int, seconds: float,
                               rounds: int, rate: float) -> dict[str, Any]:
    alone: list[float] = []
    loaded: list[float] = []
    for _ in range(rounds):
        alone.append(grpc_qps(node, threads, seconds))
        traffic = subprocess.Popen([sys.executable, __file__, "--dashboard-traffic", url,
                                    "--dashboard-rate", str(rate)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert traffic.stdout is not None and traffic.stdout.readline().strip() == "ready"
            loaded.append(grpc_qps(node, threads, seconds))
        finally:
            assert traffic.stdin is not None
            traffic.stdin.close()
            traffic.wait(timeout=30)
    return {"threads": threads, "seconds": seconds, "rounds": rounds,
            "dashboard_reads_per_s": rate, "dashboard_streams": len(DASHBOARD_STREAMS),
            "alone_qps": round(statistics.median(alone)),
            "with_dashboard_qps": round(statistics.median(loaded)),
            "ratio": round(statistics.median(loaded) / statistics.median(alone), 2)}


def table(results: dict[str, Any]) -> None:
    print(f"REST/JSON gateway vs gRPC on one meshd ({results['calls']} serial calls each, "
          f"{results['rounds']} interleaved rounds)")
    print(f"{'method':<11} {'way':<5} {'p50 ms':>7} {'p99 ms':>7}")
    for name in ("GetStatus", "GetBalance"):
        for way in ("grpc", "rest"):
            figures = results["latency"][name][way]
            print(f"{name:<11} {way:<5} {figures['p50_ms']:>7.3f} {figures['p99_ms']:>7.3f}")
        print(f"{'':<11} ratio REST/gRPC p99: {results['latency'][name]['p99_ratio']} "
              f"(goal <= {P99_GOAL})")
    qps = results["throughput"]
    print(f"gRPC GetStatus QPS, {qps['threads']} threads, median of {qps['rounds']} rounds of "
          f"{qps['seconds']} s: alone {qps['alone_qps']}, with dashboard traffic "
          f"({qps['dashboard_streams']} SSE streams, {qps['dashboard_reads_per_s']} reads/s) "
          f"{qps['with_dashboard_qps']}: ratio {qps['ratio']} (goal >= {QPS_GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="serial calls per method and way")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dashboard-rate", type=float, default=5.0)
    parser.add_argument("--dashboard-traffic", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.dashboard_traffic:
        dashboard_traffic(args.dashboard_traffic, args.dashboard_rate)
        return
    with tempfile.TemporaryDirectory(prefix="mesh-bench-http-") as tmp, \
            cluster.running_nodes(Path(tmp), 2, 60,
                                  env={"MESHD_HTTP_LISTEN": "127.0.0.1:0"}) as nodes:
        node = nodes[0]
        url = node.status().http_url
        results = {"calls": args.calls, "rounds": args.rounds,
                   "latency": latency(node, url, args.calls, args.rounds),
                   "throughput": with_and_without_dashboard(
                       node, url, args.threads, args.seconds, args.rounds,
                       args.dashboard_rate)}
    output.emit(results, args.json, table)


if __name__ == "__main__":
    main()
