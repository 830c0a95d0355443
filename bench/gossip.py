"""Benchmark: gossip delivery ratio and latency over N meshd processes, vs direct TCP fan-out.

Starts ``--nodes`` real ``meshd run`` processes (default 8) on loopback, each
with a fresh data dir, ``NOTIFY_SOCKET`` bound here (started = ``READY=1``) and
the genesis made by ``meshctl network init``: node 0 first, then the others with
``--bootstrap`` node 0's first listen address, so that they find each other by
peer exchange (meshd's connection manager: degree low 4 / target 8). Once every
node has a peer, a 5 s window without traffic measures each daemon's RSS
(VmRSS) and CPU (utime + stime, /proc) and lets the connection manager settle.
That window comes right after the start, while discovery still runs: it is
not the steady idle cost (about 0.2 % of a core per daemon a minute later,
docs/performance.md "Idle cost").

* **Gossip.** Every node but the publisher (node 1) subscribes to ``bench``
  through its gRPC API (``PubsubService.Subscribe``, one thread per stream in
  this process). Once each subscription is registered and every node knows a
  subscriber of the topic (``ListTopicPeers``, bounded wait) plus two gossipsub
  heartbeats, node 1 publishes ``--messages`` (300) messages at ``--rate`` (20)
  per second through ``Publish``, each ``--size`` (256) bytes: an 8-byte
  sequence number, the 8-byte send time (``time.time_ns()``, same clock on the
  whole machine), padding. After a ``--drain`` wait (at most 5 s, less if all
  arrived), per receiver: delivery ratio (distinct messages / sent); over every
  delivery: latency = arrival in the subscriber's thread - send time, p50 / p99 /
  max. The daemon's own ``received_at`` (its arrival time, before the gRPC
  stream) is reported too.
* **Baseline** (same run, before the gossip, with the daemons idle): direct
  fan-out over plain TCP on loopback from this process to N-1 receiver threads
  (TCP_NODELAY, one connection each), same count, rate and size, the send time
  embedded the same way. Ratios are gossip / baseline latency.

Also reported: peers per node, and each daemon's CPU during the gossip phase.
All waits are bounded; daemons are stopped with SIGTERM (killed after 10 s) in a
``finally``. About 45 s with the defaults.

With ``--netns`` (root), each node runs in its own network namespace on the
default wildcard listener, and ``--behind-nat K`` puts K of them behind NAT
routers (endpoint-independent and symmetric in turn): they are reached through
relays or hole punching (meshd/testing/netns.py). The baseline stays on loopback.

Run from the repository root: ``.venv/bin/python bench/gossip.py [--nodes N] [--json]``,
``sudo .venv/bin/python bench/gossip.py --nodes 50 --netns --behind-nat 10``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import output
from cluster import (
    CALL_TIMEOUT,
    CpuWindow,
    Node,
    rss_mib,
    running_nodes,
    spread,
    wait_until,
)

from mesh.pubsub.v1 import pubsub_pb2, pubsub_pb2_grpc
from meshd.testing import netns

TOPIC = "bench"
PUBLISHER = 1
HEADER = struct.Struct(">QQ")  # sequence number, send time in ns
READY_TIMEOUT = 30.0  # for READY=1 of all (1.5 s a node beyond 20: 50 take ~30 s on 2 cores)
PEER_TIMEOUT = 20.0  # for every node to have a peer
SUBSCRIBE_TIMEOUT = 20.0  # for subscriptions to be registered and known
HEARTBEATS = 2.0  # after that: two gossipsub heartbeats (1 s) to fill the meshes
IDLE_WINDOW = 5.0


# --- receivers, publishing and results -------------------------------------------------------

class Receiver(threading.Thread):
    """Reads messages from ``messages()`` (yields (data, daemon arrival ns or None))."""

    def __init__(self, name: str, messages: Callable[[], Iterator[tuple[bytes, int | None]]],
                 expected: int) -> None:
        super().__init__(name=name, daemon=True)
        self._messages = messages
        self.expected = expected
        self.latency: dict[int, float] = {}  # sequence number -> seconds, first arrival
        self.daemon_latency: dict[int, float] = {}
        self.duplicates = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for data, arrived_ns in self._messages():
                now = time.time_ns()
                seq, sent = HEADER.unpack_from(data)
                if seq in self.latency:
                    self.duplicates += 1
                    continue
                self.latency[seq] = (now - sent) / 1e9
                if arrived_ns is not None:
                    self.daemon_latency[seq] = (arrived_ns - sent) / 1e9
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # CANCELLED: we stopped it
                self.error = exc
        except Exception as exc:  # reported with the results
            self.error = exc

    def complete(self) -> bool:
        return len(self.latency) >= self.expected


def payload(seq: int, size: int) -> bytes:
    head = HEADER.pack(seq, time.time_ns())
    return head + bytes(size - len(head))


def publish_paced(count: int, rate: float, size: int,
                  send: Callable[[bytes], None]) -> dict[str, Any]:
    """Call ``send`` ``count`` times at ``rate`` per second; errors are counted, not raised."""
    errors: list[str] = []
    started = time.monotonic()
    for seq in range(count):
        delay = started + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            send(payload(seq, size))
        except Exception as exc:
            errors.append(repr(exc))
    elapsed = time.monotonic() - started
    # count - 1 intervals: the first message goes at once
    achieved = (count - 1) / elapsed if count > 1 and elapsed > 0 else rate
    return {"errors": len(errors), "first_error": errors[0] if errors else None,
            "achieved_rate": achieved}


def drain(receivers: list[Receiver], timeout: float) -> float:
    """Wait until every receiver has everything, at most ``timeout``; seconds waited."""
    started = time.monotonic()
    wait_until(lambda: all(r.complete() for r in receivers), timeout, interval=0.02)
    return time.monotonic() - started


def summarize(receivers: list[Receiver], count: int) -> dict[str, Any]:
    def latency_ms(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        ordered = sorted(1000 * v for v in values)
        return {"p50": statistics.median(ordered),
                "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                "max": ordered[-1], "count": len(ordered)}

    ratios = [len(r.latency) / count for r in receivers]
    errors = [f"{r.name}: {r.error!r}" for r in receivers if r.error is not None]
    return {"delivered": sum(len(r.latency) for r in receivers),
            "expected": count * len(receivers),
            "delivery_ratio": spread(ratios), "per_receiver": ratios,
            "duplicates": sum(r.duplicates for r in receivers),
            "latency_ms": latency_ms([v for r in receivers for v in r.latency.values()]),
            "daemon_latency_ms": latency_ms([v for r in receivers
                                             for v in r.daemon_latency.values()]),
            "receiver_errors": errors,
            "slow": slow_deliveries(receivers, count)}


SLOW_MS = 500.0  # the 30-node p99 target (issue 16)


def slow_deliveries(receivers: list[Receiver], count: int) -> dict[str, Any]:
    """Where the deliveries slower than SLOW_MS are: per quarter of the run
    (by message number; a mesh still forming shows in the first) and the
    receivers with the most (one slow node shows as one name)."""
    quarters = [0, 0, 0, 0]
    per_receiver: dict[str, int] = {}
    for r in receivers:
        for seq, latency in r.latency.items():
            if 1000 * latency > SLOW_MS:
                quarters[min(3, 4 * seq // max(1, count))] += 1
                per_receiver[r.name] = per_receiver.get(r.name, 0) + 1
    worst = sorted(per_receiver.items(), key=lambda item: -item[1])[:5]
    return {"threshold_ms": SLOW_MS, "by_quarter": quarters, "worst_receivers": worst}


# --- baseline: direct TCP fan-out ------------------------------------------------------------

def tcp_fanout(receivers: int, count: int, rate: float, size: int,
               drain_timeout: float) -> dict[str, Any]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def messages_from(conn: socket.socket) -> Callable[[], Iterator[tuple[bytes, None]]]:
            def read() -> Iterator[tuple[bytes, None]]:
                buffer = b""
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                    while len(buffer) >= size:
                        yield buffer[:size], None
                        buffer = buffer[size:]
            return read

        clients, accepted = [], []
        server.settimeout(CALL_TIMEOUT)
        for _ in range(receivers):
            client = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
            client.settimeout(count / rate + drain_timeout + 30)  # bounded reads
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            clients.append(client)
            accepted.append(conn)
        threads = [Receiver(f"tcp-{i}", messages_from(c), count) for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()

        def send(data: bytes) -> None:
            for conn in accepted:
                conn.sendall(data)

        try:
            published = publish_paced(count, rate, size, send)
            drain(threads, drain_timeout)
        finally:
            for conn in accepted:
                conn.close()
            for thread in threads:
                thread.join(timeout=CALL_TIMEOUT)
            for client in clients:
                client.close()
    return {**summarize(threads, count), "publish": published}


# --- gossip ----------------------------------------------------------------------------------

def pubsub(node: Node) -> pubsub_pb2_grpc.PubsubServiceStub:
    return node.stub(pubsub_pb2_grpc.PubsubServiceStub)


def subscribe_all(nodes: list[Node], count: int) -> tuple[list[Receiver], list[Any]]:
    """One Subscribe stream per subscriber node, each read by its own thread."""
    receivers, streams = [], []
    for node in nodes:
        if node.index == PUBLISHER:
            continue
        stream = pubsub(node).Subscribe(pubsub_pb2.SubscribeRequest(topic=TOPIC),
                                        timeout=600)  # cancelled at the end; bounded anyway

        def messages(stream: Any = stream) -> Iterator[tuple[bytes, int | None]]:
            for response in stream:
                yield response.message.data, response.message.received_at.ToNanoseconds()

        receivers.append(Receiver(f"node-{node.index}", messages, count))
        streams.append(stream)
    for receiver in receivers:
        receiver.start()
    return receivers, streams


def subscriptions_known(nodes: list[Node]) -> bool:
    """Each subscriber registered locally, and every node knows a subscriber of the topic."""
    for node in nodes:
        stub = pubsub(node)
        if node.index != PUBLISHER:
            topics = stub.ListTopics(pubsub_pb2.ListTopicsRequest(), timeout=CALL_TIMEOUT).topics
            if not any(t.name == TOPIC and t.local_subscribers for t in topics):
                return False
        request = pubsub_pb2.ListTopicPeersRequest(topic=TOPIC)
        if not stub.ListTopicPeers(request, timeout=CALL_TIMEOUT).peer_ids:
            return False
    return True


def gossip(nodes: list[Node], count: int, rate: float, size: int,
           drain_timeout: float) -> dict[str, Any]:
    receivers, streams = subscribe_all(nodes, count)
    try:
        known = wait_until(lambda: subscriptions_known(nodes), SUBSCRIBE_TIMEOUT)
        time.sleep(HEARTBEATS)
        publisher = nodes[PUBLISHER]
        topic_peers = len(pubsub(publisher).ListTopicPeers(
            pubsub_pb2.ListTopicPeersRequest(topic=TOPIC), timeout=CALL_TIMEOUT).peer_ids)
        stub = pubsub(publisher)
        cpu = CpuWindow([n.proc.pid for n in nodes if n.proc is not None])

        def send(data: bytes) -> None:
            stub.Publish(pubsub_pb2.PublishRequest(topic=TOPIC, data=data),
                         timeout=CALL_TIMEOUT)

        published = publish_paced(count, rate, size, send)
        drained = drain(receivers, drain_timeout)
        cpu_during = cpu.percent()
    finally:
        for stream in streams:
            stream.cancel()
        for receiver in receivers:
            receiver.join(timeout=CALL_TIMEOUT)
    return {**summarize(receivers, count), "publish": published, "drain_seconds": drained,
            "subscriptions_known_in_time": known, "publisher_topic_peers": topic_peers,
            "cpu_percent_during": spread(cpu_during), "cpu_percent_during_by_node": cpu_during}


# --- orchestration ---------------------------------------------------------------------------

@contextlib.contextmanager
def placement(node_count: int, behind_nat: int) -> Iterator[list[netns.Host] | None]:
    """None (every node on loopback), or one test-bed host per node: the first
    ``node_count - behind_nat`` on the switch, then one per NAT router,
    endpoint-independent and symmetric in turn."""
    if behind_nat < 0:
        yield None
        return
    kinds = [netns.Nat.ENDPOINT_INDEPENDENT, netns.Nat.SYMMETRIC]
    with netns.open_testbed(node_count - behind_nat,
                            nat=[kinds[i % 2] for i in range(behind_nat)]) as bed:
        yield [*bed.hosts, *(site.hosts[0] for site in bed.sites)]


def run_all(node_count: int, count: int, rate: float, size: int,
            drain_timeout: float, behind_nat: int = -1) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mesh-gossip-") as tmp, \
            placement(node_count, behind_nat) as hosts, \
            running_nodes(Path(tmp), node_count, max(READY_TIMEOUT, 1.5 * node_count),
                          hosts=hosts) as nodes:
        stopped = nodes
        start_seconds = time.monotonic() - started
        connected = wait_until(lambda: all(n.status().peer_count >= 1 for n in nodes),
                               PEER_TIMEOUT)
        if not connected:
            counts = [n.status().peer_count for n in nodes]
            raise RuntimeError(f"not every node found a peer in {PEER_TIMEOUT:g} s: {counts}")
        pids = [n.proc.pid for n in nodes if n.proc is not None]
        idle = CpuWindow(pids)
        time.sleep(IDLE_WINDOW)  # also lets the connection manager settle
        idle_cpu = idle.percent()
        idle_rss = [rss_mib(pid) for pid in pids]
        peers = [n.status().peer_count for n in nodes]
        baseline = tcp_fanout(node_count - 1, count, rate, size, drain_timeout)
        subject = gossip(nodes, count, rate, size, drain_timeout)
    total_seconds = time.monotonic() - started
    stop = {"exit_codes": [n.proc.returncode if n.proc else None for n in stopped],
            "killed": sum(n.killed_at_stop for n in stopped),
            "seconds_max": max((n.stop_seconds or 0.0) for n in stopped)}
    ratios = {}
    if subject["latency_ms"] and baseline["latency_ms"]:
        ratios = {q: subject["latency_ms"][q] / baseline["latency_ms"][q] for q in ("p50", "p99")}
    return {"nodes": node_count, "behind_nat": max(behind_nat, 0),
            "namespaces": behind_nat >= 0, "messages": count, "rate": rate, "size": size,
            "drain_timeout": drain_timeout, "topic": TOPIC, "publisher": PUBLISHER,
            "start_seconds": start_seconds, "peers_per_node": spread([float(p) for p in peers]),
            "peers_by_node": peers,
            "idle": {"window_seconds": IDLE_WINDOW, "rss_mib": spread(idle_rss),
                     "cpu_percent": spread(idle_cpu), "rss_mib_by_node": idle_rss,
                     "cpu_percent_by_node": idle_cpu},
            "gossip": subject, "baseline_tcp_fanout": baseline,
            "latency_ratio_gossip_over_baseline": ratios, "stop": stop,
            "total_seconds": total_seconds, "loadavg_before": loadavg}


def print_table(results: dict[str, Any]) -> None:
    g, b = results["gossip"], results["baseline_tcp_fanout"]
    receivers = results["nodes"] - 1
    where = "on loopback" if not results.get("namespaces") else (
        f"in network namespaces, {results['behind_nat']} behind NAT")
    print(f"gossip over {results['nodes']} meshd processes {where}: {results['messages']} "
          f"messages of {results['size']} B at {results['rate']:g}/s from node "
          f"{results['publisher']} to {receivers} subscribers "
          f"(load average before: {results['loadavg_before']:.2f})")
    p = results["peers_per_node"]
    print(f"started in {results['start_seconds']:.1f} s; peers per node: min {p['min']:.0f}, "
          f"median {p['median']:.0f}, max {p['max']:.0f}; subscribers known to the publisher: "
          f"{g['publisher_topic_peers']}"
          + ("" if g["subscriptions_known_in_time"] else " (subscriptions NOT all known in time)"))
    print(f"{'':34} {'delivered':>9} {'per receiver min-max':>21} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7}")

    def row(label: str, r: dict[str, Any], latency: dict[str, float] | None,
            delivery: bool = True) -> None:
        d = r["delivery_ratio"]
        per_receiver = f"{100 * d['min']:.1f}-{100 * d['max']:.1f} %"
        shown = (f"{100 * r['delivered'] / r['expected']:>8.1f}% {per_receiver:>21}"
                 if delivery else f"{'':>9} {'':>21}")
        lat = (f"{latency['p50']:>7.2f} {latency['p99']:>7.2f} {latency['max']:>7.2f}"
               if latency else f"{'-':>7} {'-':>7} {'-':>7}")
        print(f"{label:34} {shown} {lat}")

    row("gossip, at the subscriber", g, g["latency_ms"])
    row("gossip, at meshd (its received_at)", g, g["daemon_latency_ms"], delivery=False)
    row("direct TCP fan-out (baseline)", b, b["latency_ms"])
    slow = g["slow"]
    print(f"gossip deliveries over {slow['threshold_ms']:.0f} ms by quarter of the run: "
          + " / ".join(str(n) for n in slow["by_quarter"]) + "; most at: "
          + (", ".join(f"{name} {n}" for name, n in slow["worst_receivers"]) or "none"))
    r = results["latency_ratio_gossip_over_baseline"]
    if r:
        print(f"ratio gossip/baseline latency: p50 {r['p50']:.1f}, p99 {r['p99']:.1f}")
    for name, run in (("gossip", g), ("baseline", b)):
        pub = run["publish"]
        problems = [f"{pub['errors']} publish errors (first: {pub['first_error']})"
                    if pub["errors"] else "",
                    f"{run['duplicates']} duplicates" if run["duplicates"] else "",
                    "; ".join(run["receiver_errors"])]
        extra = "; ".join(x for x in problems if x)
        print(f"{name}: published at {pub['achieved_rate']:.1f}/s"
              + (f"; {extra}" if extra else ""))
    idle = results["idle"]
    rss, cpu, busy = idle["rss_mib"], idle["cpu_percent"], g["cpu_percent_during"]
    print(f"per daemon, just started ({idle['window_seconds']:g} s window, before traffic): "
          f"RSS MiB min {rss['min']:.1f} / median {rss['median']:.1f} / max {rss['max']:.1f}; "
          f"CPU % min {cpu['min']:.1f} / median {cpu['median']:.1f} / max {cpu['max']:.1f}")
    print(f"per daemon, during gossip: CPU % min {busy['min']:.1f} / median "
          f"{busy['median']:.1f} / max {busy['max']:.1f}")
    stop = results["stop"]
    codes = sorted(set(stop["exit_codes"]), key=str)
    print(f"SIGTERM to all exited in {stop['seconds_max']:.2f} s, exit codes {codes}, "
          f"{stop['killed']} killed; total run {results['total_seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8, help="meshd processes (at least 3)")
    parser.add_argument("--messages", type=int, default=300, help="messages published")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--size", type=int, default=256, help="message size in bytes (>= 16)")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="seconds to wait for late messages after the last publish")
    parser.add_argument("--netns", action="store_true",
                        help="each node in its own network namespace (root)")
    parser.add_argument("--behind-nat", type=int, default=0,
                        help="with --netns: this many nodes behind NAT routers (endpoint-"
                             "independent and symmetric in turn); the publisher stays public")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.behind_nat and (not args.netns or args.behind_nat > args.nodes - 2):
        parser.error("--behind-nat needs --netns and leaves nodes 0 and 1 public")
    if args.nodes < 3 or args.messages < 1 or args.rate <= 0 or args.size < HEADER.size \
            or args.drain < 0:
        parser.error("need --nodes >= 3, --messages >= 1, --rate > 0, "
                     f"--size >= {HEADER.size}, --drain >= 0")
    results = run_all(args.nodes, args.messages, args.rate, args.size, args.drain,
                      args.behind_nat if args.netns else -1)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
