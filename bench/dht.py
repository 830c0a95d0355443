"""Benchmark: DHT put/get over N meshd processes, before and after SIGKILL of a fifth of them.

Starts ``--nodes`` real ``meshd run`` processes (default 30) on loopback, each
with a fresh data dir, ``NOTIFY_SOCKET`` bound here (started = ``READY=1``) and
the genesis made by ``meshctl network init``: node 0 first, then the others with
``--bootstrap`` node 0, so that they find each other by peer exchange (meshd's
connection manager: degree low 4 / target 8). meshd adds every admitted peer to
its DHT routing table; lookups add the peers they learn of. The benchmark waits
(bounded) until every node has a peer and ``min(8, N - 1)`` peers in its routing
table, and talks to the daemons only through their gRPC API (Unix sockets).

* **Baseline** (same run, daemons idle, before the DHT phases), ``--baseline``
  samples each, serial, from random nodes:
  ``NodeService.GetStatus`` (a gRPC unary call into meshd's trio loop: the floor
  of every figure here), and ``PeersService.PingPeer`` (count 1) from a node to
  one of its connected peers: the same gRPC call plus **one libp2p request /
  response on a new stream** (meshd's PING), which is the shape of each DHT
  RPC (py-libp2p opens a stream per FIND_NODE / GET_VALUE / PUT_VALUE). Latency
  ratios are to the PingPeer p50: "how many sequential DHT RPCs' worth".
* **Before the kill**: ``--pairs`` (1000) put/get pairs. Each pair: a random
  node ``PutValue``s a fresh key (``--size`` random bytes); then a random other
  node ``GetValue``s it and the value is compared. ``--clients`` (4) threads
  run pairs concurrently (each pair is sequential: the get starts after the put
  returned). A pair succeeds if the put returned OK and the get returned the
  same bytes.
* **The kill**: ``--kill`` (20 %) of the nodes, chosen at random, get SIGKILL
  (no goodbye to their peers); the survivors start the next phase at once, with
  the dead nodes still in their routing tables.
* **After the kill**, on survivors only, shuffled together on the same clients:
  ``--pairs`` new put/get pairs as above; and one get of every key put before
  the kill (whose put succeeded), from a random survivor that is neither its
  putter nor its first getter (both hold it: a put stores the value locally, a
  get keeps what it found).

Per operation: success ratio, latency (wall time of the gRPC call here) p50 /
p99 / max, ratio of p50 to the PingPeer p50. Per get phase: hops as meshd
reports them in ``GetValueResponse.hops``: 0 if the getter had the value (a put
also stores the value at the up to 20 closest peers the putter finds, so on a
small network many getters already have it), else the length of the shortest
chain of referrals to a peer that returned it (1 = a peer the getter already
knew); median / p90 / max over all successful gets, the share answered locally,
and median / p90 / max over the others ("remote"); peers queried per get
(median / max). Also: routing table sizes, peers per node, daemon CPU per pair,
pairs per second, exit codes after SIGTERM.

A phase starts no new operation after ``--phase-timeout`` (90) s: on 2 cores
a pair costs the daemons 0.2-0.7 s of CPU at 30 nodes (py-libp2p stores each
value on 20 peers, one new stream per RPC), so 1000 pairs may not fit; the
pairs not started are reported, and success ratios are over the pairs run.
``--high-watermark N`` sets meshd's ``p2p.high_watermark`` (default 16): above
it meshd's connection manager prunes down to 8 peers every 2 s, closing the
connections DHT lookups opened, which the next lookups dial again.

All waits are bounded (every gRPC call has a deadline longer than meshd's own
30 s DHT query bound; a phase ends at most 2 x 40 s after its timeout); the
daemons are stopped with SIGTERM (killed after 10 s) in a ``finally``; only
processes started here are signalled. About 4 minutes at most with the defaults.

Run from the repository root:
``.venv/bin/python bench/dht.py [--nodes 30] [--pairs 1000] [--clients 4] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import output
from cluster import (
    CALL_TIMEOUT,
    Node,
    cpu_seconds,
    quantile,
    running_nodes,
    spread,
    wait_until,
)

from mesh.dht.v1 import dht_pb2, dht_pb2_grpc
from mesh.network.v1 import network_pb2, network_pb2_grpc
from mesh.peers.v1 import peers_pb2, peers_pb2_grpc

READY_TIMEOUT = 60.0  # for all nodes to send READY=1 (30 processes importing libp2p on 2 cores)
SETTLE_TIMEOUT = 30.0  # for every node to have a peer and a routing table
ROUTING_TARGET = 8  # routing table size to wait for (or N - 1): the connection manager's target
DHT_TIMEOUT = 40.0  # per DHT call: meshd bounds its DHT queries at 30 s


# --- daemons -------------------------------------------------------------------------------

def routing_table_size(node: Node) -> int:
    stub = node.stub(network_pb2_grpc.NetworkServiceStub)
    response = stub.GetNetwork(network_pb2.GetNetworkRequest(), timeout=CALL_TIMEOUT)
    return int(response.routing_table_size)


def connected_peers(node: Node) -> list[str]:
    stub = node.stub(peers_pb2_grpc.PeersServiceStub)
    response = stub.ListPeers(peers_pb2.ListPeersRequest(), timeout=CALL_TIMEOUT)
    return [p.peer_id for p in response.peers]


def dht(node: Node) -> dht_pb2_grpc.DhtServiceStub:
    return node.stub(dht_pb2_grpc.DhtServiceStub)


def daemons_cpu(nodes: Sequence[Node]) -> float:
    return sum(cpu_seconds(n.proc.pid) for n in nodes if n.proc is not None and n.alive)


# --- statistics ------------------------------------------------------------------------------

def latency_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ordered = sorted(1000 * s for s in seconds)
    return {"p50": statistics.median(ordered), "p99": quantile(ordered, 0.99),
            "max": ordered[-1], "count": len(ordered)}


def hops_summary(hops: Sequence[int]) -> dict[str, Any] | None:
    if not hops:
        return None
    ordered = sorted(hops)
    remote = [h for h in ordered if h > 0]
    return {"median": statistics.median(ordered), "p90": quantile(ordered, 0.9),
            "max": ordered[-1], "local_share": (len(ordered) - len(remote)) / len(ordered),
            "remote": ({"median": statistics.median(remote), "p90": quantile(remote, 0.9),
                        "max": remote[-1], "count": len(remote)} if remote else None),
            "histogram": {str(h): ordered.count(h) for h in sorted(set(ordered))}}


# --- operations ------------------------------------------------------------------------------

@dataclass
class Outcome:
    """Results of one kind of operation (put, or get of some keys) in one phase."""

    tried: int = 0
    ok: int = 0
    seconds: list[float] = field(default_factory=list)  # successful calls only
    hops: list[int] = field(default_factory=list)
    queried: list[int] = field(default_factory=list)
    with_value: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def failed(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1

    def summary(self, ping_p50_ms: float | None) -> dict[str, Any]:
        lat = latency_ms(self.seconds)
        out: dict[str, Any] = {
            "tried": self.tried, "ok": self.ok,
            "success_ratio": self.ok / self.tried if self.tried else None,
            "latency_ms": lat,
            "p50_over_ping_p50": (lat["p50"] / ping_p50_ms
                                  if lat and ping_p50_ms else None),
            "errors": self.errors}
        if self.hops:
            out["latency_remote_ms"] = latency_ms(
                [t for t, h in zip(self.seconds, self.hops, strict=True) if h > 0])
            out["hops"] = hops_summary(self.hops)
            out["queried_peers"] = {"median": statistics.median(self.queried),
                                    "max": max(self.queried)}
            out["peers_with_value"] = {"median": statistics.median(self.with_value),
                                       "max": max(self.with_value)}
        return out


def describe(exc: grpc.RpcError) -> str:
    code = exc.code()
    return f"{code.name if code else '?'}: {(exc.details() or '')[:120]}"


def put(node: Node, key: str, value: bytes, outcome: Outcome, lock: threading.Lock) -> bool:
    started = time.perf_counter()
    try:
        dht(node).PutValue(dht_pb2.PutValueRequest(key=key, value=value), timeout=DHT_TIMEOUT)
    except grpc.RpcError as exc:
        with lock:
            outcome.tried += 1
            outcome.failed(describe(exc))
        return False
    elapsed = time.perf_counter() - started
    with lock:
        outcome.tried += 1
        outcome.ok += 1
        outcome.seconds.append(elapsed)
    return True


def get(node: Node, key: str, expected: bytes, outcome: Outcome, lock: threading.Lock) -> bool:
    started = time.perf_counter()
    try:
        response = dht(node).GetValue(dht_pb2.GetValueRequest(key=key), timeout=DHT_TIMEOUT)
    except grpc.RpcError as exc:
        with lock:
            outcome.tried += 1
            outcome.failed(describe(exc))
        return False
    elapsed = time.perf_counter() - started
    with lock:
        outcome.tried += 1
        if response.value != expected:
            outcome.failed("wrong value")
            return False
        outcome.ok += 1
        outcome.seconds.append(elapsed)
        outcome.hops.append(response.hops)
        outcome.queried.append(response.queried_peers)
        outcome.with_value.append(response.peers_with_value)
    return True


@dataclass
class Stored:
    """A key whose put succeeded, who put it and who got it."""

    key: str
    value: bytes
    putter: int
    getter: int | None


class Phase:
    """Runs work items on ``clients`` threads and collects the outcomes."""

    def __init__(self, name: str, nodes: Sequence[Node]) -> None:
        self.name = name
        self.alive = [n for n in nodes if n.alive]
        self.lock = threading.Lock()
        self.puts = Outcome()
        self.gets = Outcome()
        self.old_gets = Outcome()  # keys put in an earlier phase
        self.pairs_ok = 0
        self.stored: list[Stored] = []
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.unexpected: list[str] = []
        self.not_run = 0

    def pair(self, rng: random.Random, key: str, size: int) -> None:
        putter, getter = rng.sample(self.alive, 2)
        value = rng.randbytes(size)
        if not put(putter, key, value, self.puts, self.lock):
            return
        got = get(getter, key, value, self.gets, self.lock)
        with self.lock:
            self.stored.append(Stored(key, value, putter.index, getter.index))
            self.pairs_ok += got

    def get_again(self, rng: random.Random, item: Stored) -> None:
        candidates = [n for n in self.alive if n.index not in (item.putter, item.getter)]
        get(rng.choice(candidates), item.key, item.value, self.old_gets, self.lock)

    def run(self, work: list[Callable[[random.Random], None]], clients: int, seed: int,
            timeout: float) -> None:
        """Run ``work``; no new item starts after ``timeout`` s (the rest are counted)."""
        todo: queue.SimpleQueue[Callable[[random.Random], None]] = queue.SimpleQueue()
        for item in work:
            todo.put(item)
        deadline = time.monotonic() + timeout

        def client(number: int) -> None:
            rng = random.Random(seed * 1000 + number)
            while time.monotonic() < deadline:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    item(rng)
                except Exception as exc:  # a bug here, not a DHT failure: report it
                    with self.lock:
                        self.unexpected.append(repr(exc))

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(clients)]
        cpu_before = daemons_cpu(self.alive)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        # Bounded: every call has a deadline, so an item ends within 2 * DHT_TIMEOUT.
        for thread in threads:
            thread.join(timeout=max(0.0, deadline + 2 * DHT_TIMEOUT - time.monotonic()))
        self.seconds = time.monotonic() - started
        self.cpu_seconds = daemons_cpu(self.alive) - cpu_before
        self.not_run = todo.qsize()
        if self.not_run:
            self.unexpected.append(f"{self.not_run} of {len(work)} items not started within "
                                   f"the phase timeout ({timeout:g} s)")
        if any(t.is_alive() for t in threads):
            self.unexpected.append("client threads still running at the deadline")

    def summary(self, ping_p50_ms: float | None, pairs: int) -> dict[str, Any]:
        run = self.puts.tried  # every pair run starts with its put
        out = {"nodes_alive": len(self.alive), "pairs": pairs, "pairs_run": run,
               "pairs_ok": self.pairs_ok, "items_not_run": self.not_run,
               "pair_success_ratio": self.pairs_ok / run if run else None,
               "put": self.puts.summary(ping_p50_ms), "get": self.gets.summary(ping_p50_ms),
               "seconds": self.seconds, "pairs_per_second": run / self.seconds,
               "daemon_cpu_seconds": self.cpu_seconds, "unexpected": self.unexpected}
        if self.old_gets.tried:
            out["get_keys_put_before_kill"] = self.old_gets.summary(ping_p50_ms)
        return out


# --- baseline --------------------------------------------------------------------------------

def baseline(nodes: Sequence[Node], samples: int, rng: random.Random) -> dict[str, Any]:
    """GetStatus and PingPeer round trips, serial, from random nodes, interleaved."""
    status, ping, ping_daemon = [], [], []
    errors = 0
    for _ in range(samples):
        node = rng.choice(nodes)
        started = time.perf_counter()
        node.status()
        status.append(time.perf_counter() - started)
        # A peer connected now: the connection manager prunes (above 16 peers) meanwhile.
        peers = connected_peers(node)
        if not peers:
            errors += 1
            continue
        peer = rng.choice(peers)
        stub = node.stub(peers_pb2_grpc.PeersServiceStub)
        started = time.perf_counter()
        try:
            response = stub.PingPeer(peers_pb2.PingPeerRequest(peer_id=peer, count=1),
                                     timeout=CALL_TIMEOUT)
        except grpc.RpcError:
            errors += 1  # a peer that left meanwhile: not a round trip
            continue
        ping.append(time.perf_counter() - started)
        ping_daemon.append(response.rtts[0].ToNanoseconds() / 1e9)
    return {"samples": samples, "get_status_ms": latency_ms(status),
            "ping_peer_ms": latency_ms(ping), "ping_rtt_at_daemon_ms": latency_ms(ping_daemon),
            "ping_errors": errors}


# --- orchestration ---------------------------------------------------------------------------

def settle(nodes: Sequence[Node]) -> bool:
    want = min(ROUTING_TARGET, len(nodes) - 1)
    return wait_until(lambda: all(n.status().peer_count >= 1 and routing_table_size(n) >= want
                                  for n in nodes), SETTLE_TIMEOUT, interval=0.5)


def topology(nodes: Sequence[Node]) -> dict[str, Any]:
    alive = [n for n in nodes if n.alive]
    return {"peers": spread([float(n.status().peer_count) for n in alive]),
            "routing_table": spread([float(routing_table_size(n)) for n in alive])}


def run_all(node_count: int, pairs: int, kill_fraction: float, clients: int, size: int,
            samples: int, seed: int, phase_timeout: float, high_watermark: int | None,
            workdir: Path | None) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    rng = random.Random(seed)
    started = time.monotonic()
    env = {} if high_watermark is None else {"MESHD_P2P_HIGH_WATERMARK": str(high_watermark)}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mesh-dht-")))
        workdir.mkdir(parents=True, exist_ok=True)
        nodes = stack.enter_context(running_nodes(workdir, node_count, READY_TIMEOUT, env))
        all_nodes = nodes
        start_seconds = time.monotonic() - started
        settled = settle(nodes)
        settle_seconds = time.monotonic() - started - start_seconds
        before = topology(nodes)
        base = baseline(nodes, samples, rng)
        ping_p50 = base["ping_peer_ms"]["p50"] if base["ping_peer_ms"] else None

        first = Phase("before kill", nodes)
        first.run([lambda r, i=i: first.pair(r, f"dht-bench-a-{i}", size)
                   for i in range(pairs)], clients, seed, phase_timeout)
        after_first = topology(nodes)

        victims = rng.sample(nodes, round(kill_fraction * node_count))
        for node in victims:
            node.sigkill()

        second = Phase("after kill", nodes)
        work: list[Callable[[random.Random], None]] = [
            lambda r, i=i: second.pair(r, f"dht-bench-b-{i}", size) for i in range(pairs)]
        work += [lambda r, s=s: second.get_again(r, s) for s in first.stored]
        random.Random(seed + 1).shuffle(work)
        second.run(work, clients, seed + 1, phase_timeout)
        after_second = topology(nodes)
    total_seconds = time.monotonic() - started
    survivors = [n for n in all_nodes if not n.sigkilled]
    stop = {"exit_codes": sorted({n.proc.returncode for n in survivors if n.proc}, key=str),
            "killed_at_stop": sum(n.killed_at_stop for n in survivors),
            "seconds_max": max((n.stop_seconds or 0.0) for n in survivors)}
    return {"nodes": node_count, "pairs": pairs, "clients": clients, "size": size,
            "high_watermark": high_watermark,
            "seed": seed, "killed": [n.index for n in victims],
            "start_seconds": start_seconds, "settled": settled,
            "settle_seconds": settle_seconds,
            "topology": {"before": before, "after_first_phase": after_first,
                         "after_second_phase": after_second},
            "baseline": base, "before_kill": first.summary(ping_p50, pairs),
            "after_kill": second.summary(ping_p50, pairs), "stop": stop,
            "total_seconds": total_seconds, "loadavg_before": loadavg}


# --- output ----------------------------------------------------------------------------------

def print_table(r: dict[str, Any]) -> None:
    print(f"DHT over {r['nodes']} meshd processes on loopback: {r['pairs']} put/get pairs "
          f"({r['size']} B values, {r['clients']} concurrent clients), SIGKILL of "
          f"{len(r['killed'])} nodes, {r['pairs']} more pairs (seed {r['seed']}; "
          + (f"high watermark {r['high_watermark']}; " if r["high_watermark"] else "")
          + f"load average before: {r['loadavg_before']:.2f})")
    print(f"started in {r['start_seconds']:.1f} s, settled in {r['settle_seconds']:.1f} s"
          + ("" if r["settled"] else " (NOT every routing table reached its target)"))
    for label, key in (("before", "before"), ("after phase 1", "after_first_phase"),
                       ("after phase 2", "after_second_phase")):
        t = r["topology"][key]
        print(f"  {label:14} peers per node min/median/max {t['peers']['min']:.0f}/"
              f"{t['peers']['median']:.0f}/{t['peers']['max']:.0f}; routing table "
              f"{t['routing_table']['min']:.0f}/{t['routing_table']['median']:.0f}/"
              f"{t['routing_table']['max']:.0f}")
    b = r["baseline"]
    print(f"baseline, daemons idle ({b['samples']} each, serial)       p50 ms  p99 ms  max ms")

    def lat(x: dict[str, float] | None) -> str:
        return (f"{x['p50']:>7.2f} {x['p99']:>7.2f} {x['max']:>7.2f}" if x
                else f"{'-':>7} {'-':>7} {'-':>7}")

    print(f"  {'GetStatus (gRPC into meshd)':47} {lat(b['get_status_ms'])}")
    print(f"  {'PingPeer (gRPC + 1 libp2p request, new stream)':47} {lat(b['ping_peer_ms'])}")
    print(f"  {'  the same, timed inside meshd':47} {lat(b['ping_rtt_at_daemon_ms'])}"
          + (f"  ({b['ping_errors']} errors)" if b["ping_errors"] else ""))
    print(f"{'':32} {'ok / tried':>11} {'success':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'p50/ping':>8}")

    def row(label: str, o: dict[str, Any]) -> None:
        ratio = f"{o['p50_over_ping_p50']:>8.1f}" if o["p50_over_ping_p50"] else f"{'-':>8}"
        success = f"{100 * o['success_ratio']:>7.1f}%" if o["tried"] else f"{'-':>8}"
        print(f"  {label:30} {o['ok']:>5}/{o['tried']:<5} {success} {lat(o['latency_ms'])} "
              f"{ratio}")

    def remote_row(label: str, o: dict[str, Any]) -> None:
        remote = o.get("latency_remote_ms")
        if remote:
            ratio = remote["p50"] / ping if (ping := b["ping_peer_ms"]["p50"]) else 0
            print(f"  {label:30} {remote['count']:>11} {'':8} {lat(remote)} {ratio:>8.1f}")

    phases = (("before kill", r["before_kill"]), ("after kill", r["after_kill"]))
    for name, p in phases:
        cut = (f" (only {p['pairs_run']} of {p['pairs']} started within the phase timeout)"
               if p["pairs_run"] < p["pairs"] else "")
        print(f"{name}: {p['nodes_alive']} nodes, pairs ok {p['pairs_ok']}/{p['pairs_run']}"
              f"{cut} ({100 * (p['pair_success_ratio'] or 0):.1f} %), "
              f"{p['pairs_per_second']:.1f} pairs/s, daemon CPU "
              f"{1000 * p['daemon_cpu_seconds'] / max(1, p['pairs_run']):.0f} ms per pair"
              + (" (incl. the gets of old keys)" if "get_keys_put_before_kill" in p else ""))
        row("put", p["put"])
        row("get", p["get"])
        remote_row("  of which remote (hops >= 1)", p["get"])
        if "get_keys_put_before_kill" in p:
            row("get, keys put before the kill", p["get_keys_put_before_kill"])
            remote_row("  of which remote (hops >= 1)", p["get_keys_put_before_kill"])
    print("hops (successful gets)          median  p90  max  local   remote: median  p90  max"
          "   queried median/max")
    for name, p in phases:
        for label, o in (("get", p["get"]), ("get, old keys", p.get("get_keys_put_before_kill"))):
            if not o or "hops" not in o:
                continue
            h, q = o["hops"], o["queried_peers"]
            rem = h["remote"]
            remote = (f"{rem['median']:>6g} {rem['p90']:>4} {rem['max']:>4}" if rem
                      else f"{'-':>6} {'-':>4} {'-':>4}")
            print(f"  {name + ', ' + label:30} {h['median']:>5g} {h['p90']:>4} {h['max']:>4} "
                  f"{100 * h['local_share']:>5.1f}%          {remote}   {q['median']:>6g}/"
                  f"{q['max']}   hops: count {h['histogram']}")
    for name, p in phases:
        problems = [f"{op}: {n} x {why}" for op in ("put", "get", "get_keys_put_before_kill")
                    if op in p for why, n in p[op]["errors"].items()]
        problems += [f"unexpected: {u}" for u in p["unexpected"]]
        for line in problems:
            print(f"{name} errors: {line}")
    s = r["stop"]
    print(f"killed nodes {r['killed']}; SIGTERM to the survivors: exited in "
          f"{s['seconds_max']:.2f} s, exit codes {s['exit_codes']}, {s['killed_at_stop']} killed; "
          f"total run {r['total_seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30, help="meshd processes (at least 5)")
    parser.add_argument("--pairs", type=int, default=1000, help="put/get pairs per phase")
    parser.add_argument("--kill", type=float, default=0.2,
                        help="share of the nodes to SIGKILL between the phases")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--size", type=int, default=100, help="value size in bytes")
    parser.add_argument("--baseline", type=int, default=200,
                        help="samples of each baseline round trip")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--phase-timeout", type=float, default=90.0,
                        help="seconds after which a phase starts no new operation")
    parser.add_argument("--high-watermark", type=int,
                        help="meshd's p2p.high_watermark (default: meshd's, 16): above it, "
                             "the connection manager prunes connections the DHT opened")
    parser.add_argument("--workdir", type=Path,
                        help="an empty directory for the data dirs and logs, kept afterwards "
                             "(default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    survivors = args.nodes - round(args.kill * args.nodes)
    if args.nodes < 5 or args.pairs < 1 or not 0 <= args.kill < 1 or survivors < 4 \
            or args.clients < 1 or not 1 <= args.size <= 64 * 1024 or args.baseline < 1 \
            or args.phase_timeout <= 0:
        parser.error("need --nodes >= 5, --pairs >= 1, 0 <= --kill < 1 leaving >= 4 nodes, "
                     "--clients >= 1, 1 <= --size <= 65536, --baseline >= 1, "
                     "--phase-timeout > 0")
    results = run_all(args.nodes, args.pairs, args.kill, args.clients, args.size,
                      args.baseline, args.seed, args.phase_timeout, args.high_watermark,
                      args.workdir)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
