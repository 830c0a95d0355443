"""Benchmark: task round trips across N meshd processes vs a plain direct request.

Starts ``--nodes`` real ``meshd run`` processes (bench/cluster.py) whose
genesis requires the plugin ``bench`` (bench/task_plugin.py, installed as an
entry point into a site directory on the daemons' PYTHONPATH). The same
trivial work, an echo of ``--payload`` bytes, is asked for three ways, each
through one node's gRPC API as meshctl would:

* **direct** (the baseline): ``CallPlugin`` of event ``ECHO`` on another
  node: one libp2p direct request on a new stream, the peer's handler, the
  answer. This is what a plugin's ``ctx.request`` costs.
* **task k=1**: ``SubmitTask(wait=True)`` of kind ``echo``: the router picks
  a provider among the connected peers (capabilities cached for 10 s), sends
  TASK_REQUEST, the provider runs the handler and signs a claim, the
  requester checks the claim and the plugin's rule, and writes a task_receipt
  to its ledger (a durable append) before answering.
* **task k=3**: the same with redundancy 3: three providers, results compared
  by digest, three receipts.

With ``--compute``, three more kinds run a WebAssembly module (the compute
template's ``fnv1a.wat``, a hash of the payload) instead of an echo:

* **wasm in-process** (their baseline): ``Sandbox.run`` of the compiled
  module in this process, what the work costs without a network;
* **compute k=1** and **compute k=3**: ``SubmitTask`` of kind ``RUN`` of the
  ``compute`` plugin, as ``meshctl compute run`` submits it, unpaid; every
  result must be the module's output, with a receipt per execution. The
  requester re-runs the module itself for 10 % of the results (the
  plugin's spot checks, docs/compute.md §5).

**Latency**: ``--samples`` serial calls of each kind from node 0, interleaved
in ``--rounds`` rounds (direct calls go to nodes 1..N-1 in turn); p50 / p99.
**Throughput**: ``--clients`` threads, client i on node i mod N, each making
serial calls for ``--seconds`` per point (direct calls to a random other node),
the kinds interleaved over ``--rounds`` rounds; the median round's ops/s, and
the daemons' CPU per op (all N processes, /proc). Every task must end ``done``
with the payload as its result and a receipt per accepted execution; failures
are counted and printed. Ratios are task / direct.

Run from the repository root: ``.venv/bin/python bench/tasks.py [--json]``.
About 1 minute with the defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cluster
import grpc
import output
from mesh_compute.runs import RunRequest, parse_result
from mesh_compute.sandbox import Sandbox

from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshd.testing import install_plugins

BENCH_DIR = Path(__file__).resolve().parent
KINDS = ("direct", "task k=1", "task k=3")
COMPUTE_KINDS = ("wasm in-process", "compute k=1", "compute k=3")
MODULE = (BENCH_DIR.parent / "plugins" / "compute" / "examples" / "fnv1a.wat").read_text()
CALL_TIMEOUT = 30.0
READY_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0


@dataclass
class Point:
    latencies: list[float] = field(default_factory=list)  # seconds
    rates: list[float] = field(default_factory=list)  # ops/s, one per round
    cpu_per_op: list[float] = field(default_factory=list)  # daemon CPU seconds, per round
    failures: list[str] = field(default_factory=list)
    # Per serial task, seconds: (gRPC in and out, choosing providers, the
    # executions, the receipts), from the task's own timestamps.
    phases: list[tuple[float, float, float, float]] = field(default_factory=list)


def operation(kind: str, node: cluster.Node, target: str, payload: bytes,
              phases: list[tuple[float, float, float, float]] | None = None,
              ) -> Callable[[], str | None]:
    """One call of ``kind`` from ``node``: returns None when it did what it should."""
    if kind == "wasm in-process":
        sandbox = Sandbox()
        compiled = sandbox.compile(MODULE)
        expected = sandbox.run(compiled, payload).output

        def wasm() -> str | None:
            return None if sandbox.run(compiled, payload).output == expected else "wrong"
        return wasm
    if kind.startswith("compute"):
        return _compute(kind, node, payload, phases)
    if kind == "direct":
        plugins = node.stub(plugins_pb2_grpc.PluginsServiceStub)
        request = plugins_pb2.CallPluginRequest(plugin="bench", event="ECHO", data=payload,
                                                peer_id=target)

        def direct() -> str | None:
            answer = plugins.CallPlugin(request, timeout=CALL_TIMEOUT).data
            return None if answer == payload else "wrong answer"
        return direct
    redundancy = 3 if kind == "task k=3" else 1
    tasks = node.stub(tasks_pb2_grpc.TasksServiceStub)
    submit = tasks_pb2.SubmitTaskRequest(plugin="bench", kind="echo", payload=payload,
                                         redundancy=redundancy, wait=True, timeout_ms=10_000)

    return _submitting(tasks, submit, redundancy, lambda result: result == payload, phases)


def _compute(kind: str, node: cluster.Node, payload: bytes,
             phases: list[tuple[float, float, float, float]] | None,
             ) -> Callable[[], str | None]:
    redundancy = 3 if kind == "compute k=3" else 1
    expected = Sandbox().run(MODULE, payload).output
    tasks = node.stub(tasks_pb2_grpc.TasksServiceStub)
    submit = tasks_pb2.SubmitTaskRequest(
        plugin="compute", kind="RUN", payload=RunRequest(MODULE.encode(), payload).encode(),
        redundancy=redundancy, wait=True, timeout_ms=10_000)

    return _submitting(tasks, submit, redundancy,
                       lambda result: parse_result(result).output == expected, phases)


def _submitting(tasks: Any, submit: tasks_pb2.SubmitTaskRequest, redundancy: int,
                right: Callable[[bytes], bool],
                phases: list[tuple[float, float, float, float]] | None,
                ) -> Callable[[], str | None]:
    """A call of ``submit``: None when the task is done, its result ``right`` and a
    receipt written per execution; else what went wrong."""
    def task() -> str | None:
        sent = time.time()
        done = tasks.SubmitTask(submit, timeout=CALL_TIMEOUT).task
        answered = time.time()
        if done.state != "done" or not right(done.result):
            return f"{done.state}: {done.error}"
        receipts = sum(1 for a in done.attempts if a.state == "done" and a.receipt)
        if receipts != redundancy:
            return f"{receipts} of {redundancy} receipts"
        if phases is not None:
            _phases(done, sent, answered, phases)
        return None
    return task


def _phases(done: Any, sent: float, answered: float,
            phases: list[tuple[float, float, float, float]]) -> None:
    submitted, finished = seconds(done.submitted_at), seconds(done.finished_at)
    started = min(seconds(a.started_at) for a in done.attempts)
    executed = max(seconds(a.finished_at) for a in done.attempts)
    phases.append((answered - sent - (finished - submitted), started - submitted,
                   executed - started, finished - executed))


def seconds(timestamp: Any) -> float:
    return float(timestamp.seconds + timestamp.nanos / 1e9)


def timed(call: Callable[[], str | None], point: Point) -> None:
    started = time.perf_counter()
    try:
        problem = call()
    except grpc.RpcError as exc:  # counted, and the run goes on
        problem = f"{exc.code().name}: {exc.details()}"
    if problem is None:
        point.latencies.append(time.perf_counter() - started)
    else:
        point.failures.append(problem)


def latency_round(nodes: list[cluster.Node], peer_ids: list[str], kind: str, count: int,
                  payload: bytes, point: Point) -> None:
    others = peer_ids[1:]
    for i in range(count):
        timed(operation(kind, nodes[0], others[i % len(others)], payload, point.phases),
              point)


def throughput_round(nodes: list[cluster.Node], peer_ids: list[str], kind: str, clients: int,
                     seconds: float, payload: bytes, point: Point) -> None:
    done = [0] * clients
    failures: list[str] = []
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        node = nodes[index % len(nodes)]
        calls = [operation(kind, node, peer, payload)  # built before the clock runs
                 for i, peer in enumerate(peer_ids) if i != index % len(nodes)]
        rng = random.Random(index)
        sample = Point()
        while time.monotonic() < stop:
            timed(rng.choice(calls), sample)
        done[index] = len(sample.latencies)
        failures.extend(sample.failures)

    window = cluster.CpuWindow([n.proc.pid for n in nodes if n.proc is not None])
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + CALL_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    cpu_seconds = sum(window.percent()) / 100 * elapsed
    total = sum(done)
    point.rates.append(total / elapsed)
    point.cpu_per_op.append(cpu_seconds / max(total, 1))
    point.failures.extend(failures)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = install_plugins(workdir / "site", {"bench": "task_plugin:BenchPlugin"},
                          dist="mesh-bench-plugin", path=[BENCH_DIR])
    payload = os.urandom(args.payload)
    kinds = KINDS + (COMPUTE_KINDS if args.compute else ())
    points = {kind: Point() for kind in kinds}
    plugins = ["--plugin", "bench"] + (["--plugin", "compute"] if args.compute else [])
    with cluster.running_nodes(workdir, args.nodes, READY_TIMEOUT, env=env,
                               genesis_args=lambda ids: plugins) as nodes:
        peer_ids = [node.status().peer_id for node in nodes]
        if not cluster.wait_until(lambda: all(n.status().peer_count >= args.nodes - 1
                                              for n in nodes), CONNECT_TIMEOUT):
            raise RuntimeError(f"the {args.nodes} nodes did not all connect within "
                               f"{CONNECT_TIMEOUT:g} s")
        for kind in kinds:  # warmup: connections, capabilities, code paths
            latency_round(nodes, peer_ids, kind, 10, payload, Point())
        per_round = max(1, args.samples // args.rounds)
        for _ in range(args.rounds):
            for kind in kinds:
                latency_round(nodes, peer_ids, kind, per_round, payload, points[kind])
        for _ in range(args.rounds):
            for kind in kinds:
                throughput_round(nodes, peer_ids, kind, args.clients, args.seconds,
                                 payload, points[kind])
    return summarize(args, points)


def summarize(args: argparse.Namespace, points: dict[str, Point]) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "payload": args.payload,
                              "clients": args.clients, "seconds": args.seconds,
                              "rounds": args.rounds, "load_at_start": os.getloadavg()[0],
                              "kinds": {}}
    for kind, point in points.items():
        if not point.latencies or not point.rates:
            raise RuntimeError(f"{kind}: no call succeeded; failures: {point.failures[:5]}")
        result["kinds"][kind] = {
            "samples": len(point.latencies),
            "p50_ms": 1000 * statistics.median(point.latencies),
            "p99_ms": 1000 * cluster.quantile(sorted(point.latencies), 0.99),
            "ops_per_s": statistics.median(point.rates),
            "ops_min": min(point.rates), "ops_max": max(point.rates),
            "cpu_ms_per_op": 1000 * statistics.median(point.cpu_per_op),
            "failures": len(point.failures),
            "first_failures": sorted(set(point.failures))[:3],
        }
        if point.phases:
            names = ("api_ms", "choose_ms", "execute_ms", "receipt_ms")
            result["kinds"][kind]["phases_p50"] = {
                name: 1000 * statistics.median(p[i] for p in point.phases)
                for i, name in enumerate(names)}
    for baseline, kinds in (("direct", KINDS[1:]), ("wasm in-process", COMPUTE_KINDS[1:])):
        if baseline not in result["kinds"]:
            continue
        base = result["kinds"][baseline]
        for kind in kinds:
            figures = result["kinds"][kind]
            figures["baseline"] = baseline
            figures["p50_ratio"] = figures["p50_ms"] / base["p50_ms"]
            figures["ops_ratio"] = figures["ops_per_s"] / base["ops_per_s"]
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"echo work across {result['nodes']} meshd processes, {result['payload']}-byte "
          f"payload; latency: serial from node 0; throughput: {result['clients']} clients "
          f"over all nodes, {result['seconds']:g} s per point, median of {result['rounds']} "
          f"interleaved rounds (load at start {result['load_at_start']:.2f})")
    print(f"{'kind':<15} {'samples':>7} {'p50 ms':>7} {'p99 ms':>7} {'ops/s':>7} "
          f"{'(min-max)':>11} {'daemon CPU ms/op':>17} {'failed':>6}")
    for kind, f in result["kinds"].items():
        spread = f"({f['ops_min']:.0f}-{f['ops_max']:.0f})"
        print(f"{kind:<15} {f['samples']:>7} {f['p50_ms']:>7.2f} {f['p99_ms']:>7.2f} "
              f"{f['ops_per_s']:>7.0f} {spread:>11} {f['cpu_ms_per_op']:>17.2f} "
              f"{f['failures']:>6}")
    for kind, f in result["kinds"].items():
        if "baseline" not in f:
            continue
        if "phases_p50" in f:
            p = f["phases_p50"]
            print(f"{kind} p50 by phase: gRPC in+out {p['api_ms']:.2f} ms, choosing "
                  f"providers {p['choose_ms']:.2f}, executions {p['execute_ms']:.2f}, "
                  f"receipts {p['receipt_ms']:.2f}")
        print(f"ratio {kind} / {f['baseline']}: latency p50 {f['p50_ratio']:.2f}x, "
              f"throughput {f['ops_ratio']:.2f}")
    for kind, f in result["kinds"].items():
        for failure in f["first_failures"]:
            print(f"  {kind} failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--samples", type=int, default=300, help="serial calls per kind")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--payload", type=int, default=256)
    parser.add_argument("--workdir", type=Path, help="keep data dirs and daemon logs here")
    parser.add_argument("--compute", action="store_true",
                        help="also run a WebAssembly module through the compute plugin")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.nodes < 4:
        parser.error("--nodes must be at least 4 (task k=3 needs 3 providers)")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="mesh-bench-tasks-") as tmp:
            result = run(args, Path(tmp))
    output.emit(result, args.json, print_table)


if __name__ == "__main__":
    main()
