"""Benchmark: 5 meshd validators split 2 | 3 while writing entries, then healed: time to agree.

The issue's target: "after a 60 s partition of 5 nodes with 10,000 new entries,
all state roots are equal within 10 s of healing".

* **Network.** 5 real ``meshd run`` processes (bench/cluster.py) on loopback,
  all genesis validators (weight 1) with an allocation, epochs of
  ``--epoch-seconds`` (5). Every pair is connected (``ConnectPeer`` where peer
  exchange has not), then the bench waits until epoch 1 is final everywhere.
* **Partition.** Nodes {0, 1} | {2, 3, 4}: each node blocks (``BlockPeer``)
  every node of the other side, for ``--partition-seconds`` (60). Neither side
  is a quorum of the 5 validators (3 · 3 < 2 · 5), so no epoch settles during
  the partition; the bench checks it does not.
* **Writes.** During the partition, ``--entries`` (10,000) transfers of 1 base
  unit in total, split evenly over the 5 nodes (both sides), each node written
  by ``--writers`` (2) threads through ``LedgerService.Transfer`` on its Unix
  socket, as fast as acknowledgements come (a node signs and stores its own
  entries one at a time, durably). Write rate = acknowledged transfers / time
  from the first request to the last acknowledgement. Each writer account's
  newest acknowledged seq L(A) is kept: a node stores an entry only with its
  whole past, so a node stores every bench entry of A iff it stores A's chain
  up to L(A).
* **Heal.** Every block is lifted (``UnblockPeer``) and each node of the small
  side dials each node of the other (``ConnectPeer``); healing time 0 is just
  before the first unblock. Then every ``--poll`` s, for each node and each
  writer account A, ``GetStateRoot(account=A)``: the newest final epoch, its
  root, A's canonical seq in that settlement, A's stored seq, and the node's
  heads digest. Reported, in seconds after healing:
  - *entries everywhere*: every node stores every bench entry (stored seq of
    each A >= L(A));
  - *heads equal*: in one poll round (about 25 calls, tens of ms), all 5 heads
    digests are equal: the stored sets are identical, bench entries and the
    consensus entries (closes, votes, certificates, attestations) the
    validators keep writing;
  - *roots equal*: every node has made final an epoch whose settlement
    includes every bench entry (canonical seq of each A >= L(A) in it). The
    first such epoch E* is found afterwards, and its root is read from every
    node: "state roots equal" means these 5 roots are one. That is the
    target's figure.
  Per node, the times it first met each condition are kept too (JSON).
* **Baseline** (same run, after the measurement): a 6th node, a fresh
  non-validator, is started with ``--bootstrap`` node 0 and catches up by
  anti-entropy sync: time from its ``READY=1`` until it stores every bench
  entry (and how long from spawn). That is what copying the same entries
  (plus the consensus entries of the run) into one node by sync alone costs
  on this machine, the floor for "entries everywhere". Ratios: heal times /
  this baseline.

All waits are bounded, and the whole run is bounded by ``--timeout``
(SIGALRM); the daemons are stopped with SIGTERM (killed after 10 s) in a
``finally``. About 2.5 minutes with the defaults.

Run from the repository root: ``.venv/bin/python bench/ledger_partition.py
[--entries 10000] [--partition-seconds 60] [--epoch-seconds 5] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import output
from cluster import CALL_TIMEOUT, Node, running_nodes, wait_until

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.peers.v1 import peers_pb2, peers_pb2_grpc

NODES = 5
SIDES = ((0, 1), (2, 3, 4))
ALLOCATION = 10**15
READY_TIMEOUT = 30.0
PEER_TIMEOUT = 30.0
WRITE_TIMEOUT = 30.0  # per Transfer call


class Timeout(Exception):
    """The whole run took longer than --timeout."""


# --- small helpers ---------------------------------------------------------------------------

def progress(message: str) -> None:
    """One line on stderr (the figures go to stdout), with the daemons' clock."""
    print(f"{time.strftime('%H:%M:%S')} ledger_partition: {message}", file=sys.stderr,
          flush=True)


def ledger(node: Node) -> ledger_pb2_grpc.LedgerServiceStub:
    return node.stub(ledger_pb2_grpc.LedgerServiceStub)


def peers(node: Node) -> peers_pb2_grpc.PeersServiceStub:
    return node.stub(peers_pb2_grpc.PeersServiceStub)


def state(node: Node, account: str = "", epoch: int | None = None) -> Any:
    request = ledger_pb2.GetStateRootRequest(account=account)
    if epoch is not None:
        request.epoch = epoch
    return ledger(node).GetStateRoot(request, timeout=CALL_TIMEOUT)


def final_epoch(node: Node) -> int:
    return int(state(node).epoch)


def connected(node: Node) -> set[str]:
    response = peers(node).ListPeers(peers_pb2.ListPeersRequest(), timeout=CALL_TIMEOUT)
    return {p.peer_id for p in response.peers}


def connect_all(nodes: list[Node], ids: list[str], pairs: list[tuple[int, int]]) -> None:
    """Dial ``b`` from ``a`` for each pair not connected yet (already connected is fine)."""
    for a, b in pairs:
        if ids[b] in connected(nodes[a]):
            continue
        address = nodes[b].status().listen_addrs[0]
        try:
            peers(nodes[a]).ConnectPeer(peers_pb2.ConnectPeerRequest(address=address),
                                        timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:  # raced with peer exchange, or refused: checked after
            if exc.code() not in (grpc.StatusCode.ALREADY_EXISTS,
                                  grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.UNAVAILABLE):
                raise


def full_mesh(nodes: list[Node], ids: list[str]) -> bool:
    return all(set(ids) - {ids[n.index]} <= connected(n) for n in nodes)


# --- writes ----------------------------------------------------------------------------------

@dataclass
class Writes:
    acknowledged: int = 0
    errors: int = 0
    first_error: str | None = None
    started: float = 0.0
    last_ack: float = 0.0
    last_seq: dict[str, int] = field(default_factory=dict)  # author -> newest acked seq
    per_node: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        elapsed = self.last_ack - self.started
        return self.acknowledged / elapsed if elapsed > 0 else 0.0


def write_all(nodes: list[Node], ids: list[str], total: int, writers: int,
              deadline: float) -> Writes:
    """``total`` acknowledged transfers split over ``nodes``, ``writers`` threads each."""
    writes = Writes(per_node=[0] * len(nodes))
    quota = [total // len(nodes) + (i < total % len(nodes)) for i in range(len(nodes))]
    lock = threading.Lock()

    def take(i: int) -> bool:
        with lock:
            if quota[i] <= 0:
                return False
            quota[i] -= 1
            return True

    def writer(node: Node, seed: int) -> None:
        rng = random.Random(seed)
        stub = ledger(node)
        others = [x for x in ids if x != ids[node.index]]
        while time.monotonic() < deadline and take(node.index):
            request = ledger_pb2.TransferRequest(to=rng.choice(others), amount="1")
            try:
                entry = stub.Transfer(request, timeout=WRITE_TIMEOUT).entry
            except grpc.RpcError as exc:
                with lock:
                    quota[node.index] += 1  # try again: the total counts acknowledgements
                    writes.errors += 1
                    writes.first_error = writes.first_error or f"{exc.code()}: {exc.details()}"
                continue
            now = time.monotonic()
            with lock:
                writes.acknowledged += 1
                writes.per_node[node.index] += 1
                writes.last_ack = max(writes.last_ack, now)
                writes.last_seq[entry.author] = max(writes.last_seq.get(entry.author, 0),
                                                    entry.seq)

    threads = [threading.Thread(target=writer, args=(node, 100 * node.index + k), daemon=True)
               for node in nodes for k in range(writers)]
    writes.started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + WRITE_TIMEOUT + 5)
    return writes


# --- partition and heal ----------------------------------------------------------------------

def cross_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in SIDES[0] for b in SIDES[1]]


def partition(nodes: list[Node], ids: list[str]) -> None:
    for a, b in cross_pairs():
        peers(nodes[a]).BlockPeer(peers_pb2.BlockPeerRequest(peer_id=ids[b]),
                                  timeout=CALL_TIMEOUT)
        peers(nodes[b]).BlockPeer(peers_pb2.BlockPeerRequest(peer_id=ids[a]),
                                  timeout=CALL_TIMEOUT)

    def split() -> bool:
        return all(not (connected(nodes[a]) & {ids[b] for b in SIDES[1]}) for a in SIDES[0]) \
            and all(not (connected(nodes[b]) & {ids[a] for a in SIDES[0]}) for b in SIDES[1])

    if not wait_until(split, PEER_TIMEOUT):
        raise RuntimeError("the partition did not take: nodes of both sides still connected")


def heal(nodes: list[Node], ids: list[str]) -> None:
    for a, b in cross_pairs():
        peers(nodes[a]).UnblockPeer(peers_pb2.UnblockPeerRequest(peer_id=ids[b]),
                                    timeout=CALL_TIMEOUT)
        peers(nodes[b]).UnblockPeer(peers_pb2.UnblockPeerRequest(peer_id=ids[a]),
                                    timeout=CALL_TIMEOUT)
    connect_all(nodes, ids, cross_pairs())


# --- convergence -----------------------------------------------------------------------------

@dataclass
class Convergence:
    stored_all: list[float | None]  # per node: first poll with every bench entry stored
    settled_all: list[float | None]  # per node: first poll with them all in a final epoch
    entries_everywhere: float | None = None
    heads_equal: float | None = None
    roots_equal: float | None = None
    polls: int = 0
    poll_seconds: list[float] = field(default_factory=list)
    final_epochs_at_roots_equal: list[int] = field(default_factory=list)


def converge(nodes: list[Node], last_seq: dict[str, int], healed: float, interval: float,
             timeout: float) -> Convergence:
    """Poll every node until the three conditions held once each (or ``timeout``)."""
    result = Convergence([None] * len(nodes), [None] * len(nodes))
    deadline = healed + timeout
    while time.monotonic() < deadline:
        began = time.monotonic()
        digests, epochs = [], []
        for node in nodes:
            stored_ok = settled_ok = True
            epoch = -1
            digest = ""
            for account, seq in last_seq.items():
                answer = state(node, account)
                stored_ok &= answer.stored_seq >= seq
                settled_ok &= answer.canonical_seq >= seq
                epoch, digest = max(epoch, answer.epoch), answer.heads_digest
            at = time.monotonic() - healed
            if stored_ok and result.stored_all[node.index] is None:
                result.stored_all[node.index] = at
            if settled_ok and result.settled_all[node.index] is None:
                result.settled_all[node.index] = at
            digests.append(digest)
            epochs.append(epoch)
        result.polls += 1
        result.poll_seconds.append(time.monotonic() - began)
        at = time.monotonic() - healed
        if result.entries_everywhere is None and all(t is not None for t in result.stored_all):
            result.entries_everywhere = at
        if result.heads_equal is None and result.entries_everywhere is not None \
                and len(set(digests)) == 1:
            result.heads_equal = at
        if result.roots_equal is None and all(t is not None for t in result.settled_all):
            result.roots_equal = at
            result.final_epochs_at_roots_equal = epochs
        if result.heads_equal is not None and result.roots_equal is not None:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return result


def first_epoch_with_all(node: Node, last_seq: dict[str, int], after: int) -> int | None:
    """The first final epoch > ``after`` whose settlement includes every bench entry."""
    newest = final_epoch(node)
    for epoch in range(after + 1, newest + 1):
        if all(state(node, account, epoch).canonical_seq >= seq
               for account, seq in last_seq.items()):
            return epoch
    return None


# --- baseline: a late joiner catches up by sync ----------------------------------------------

def late_joiner(workdir: Path, nodes: list[Node], last_seq: dict[str, int],
                timeout: float, interval: float, py_spy: float = 0.0) -> dict[str, Any]:
    node = Node(workdir, len(nodes), nodes[0].genesis)
    spawned = time.monotonic()
    try:
        node.start(nodes[0].status().listen_addrs[0], {}, nodes[0].log_level)
        profiler = node.profile(py_spy) if py_spy else None
        node.wait_ready(spawned + READY_TIMEOUT)
        ready = time.monotonic()

        def caught_up() -> bool:
            return all(state(node, a).stored_seq >= s for a, s in last_seq.items())

        done = wait_until(caught_up, timeout, interval=interval)
        finished = time.monotonic()
        if profiler is not None:
            profiler.wait(timeout=py_spy + 30)
        return {"caught_up": done, "seconds_from_ready": finished - ready if done else None,
                "seconds_from_spawn": finished - spawned if done else None,
                "ready_seconds": ready - spawned}
    finally:
        node.stop()
        if node.proc is not None:
            try:
                node.proc.wait(timeout=10)
            except Exception:
                node.proc.kill()
                node.proc.wait()
        node.notify.close()


# --- orchestration ---------------------------------------------------------------------------

def genesis_args(epoch_seconds: int) -> Callable[[list[str]], list[str]]:
    def args(ids: list[str]) -> list[str]:
        extra = ["--epoch-seconds", str(epoch_seconds)]
        for peer_id in ids:
            extra += ["--validator", peer_id, "--allocate", f"{peer_id}:{ALLOCATION}"]
        return extra
    return args


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mesh-ledger-partition-"))
        else:
            args.workdir.mkdir(parents=True)
            tmp = str(args.workdir)
        nodes = stack.enter_context(running_nodes(Path(tmp), NODES, READY_TIMEOUT,
                                                  genesis_args=genesis_args(args.epoch_seconds),
                                                  log_level=args.log_level))
        ids = [n.status().peer_id for n in nodes]
        connect_all(nodes, ids, [(a, b) for a in range(NODES) for b in range(a + 1, NODES)])
        if not wait_until(lambda: full_mesh(nodes, ids), PEER_TIMEOUT):
            raise RuntimeError("the 5 nodes did not all connect to each other")
        settle_timeout = 8 * args.epoch_seconds + 30
        if not wait_until(lambda: all(final_epoch(n) >= 1 for n in nodes), settle_timeout,
                          interval=0.5):
            raise RuntimeError(f"epoch 1 not final everywhere within {settle_timeout} s: "
                               f"{[final_epoch(n) for n in nodes]}")
        start_seconds = time.monotonic() - started

        partition(nodes, ids)
        split_at = time.monotonic()
        progress(f"partitioned; writing {args.entries} entries")
        final_at_split = [final_epoch(n) for n in nodes]
        writes = write_all(nodes, ids, args.entries, args.writers,
                           split_at + args.partition_seconds + args.write_grace)
        write_seconds = time.monotonic() - split_at
        time.sleep(max(0.0, split_at + args.partition_seconds - time.monotonic()))
        final_at_heal = [final_epoch(n) for n in nodes]
        partition_seconds = time.monotonic() - split_at

        healed = time.monotonic()
        progress("healing")
        profilers = [n.profile(args.py_spy) for n in nodes] if args.py_spy else []
        heal(nodes, ids)
        heal_call_seconds = time.monotonic() - healed
        result = converge(nodes, writes.last_seq, healed, args.poll, args.heal_timeout)

        before = min(final_at_heal)
        first = first_epoch_with_all(nodes[0], writes.last_seq, before)
        roots: dict[str, str] = {}
        if first is not None and wait_until(lambda: all(final_epoch(n) >= first for n in nodes),
                                            30, interval=0.5):
            roots = {ids[n.index]: state(n, epoch=first).root for n in nodes}
        progress("converged; baseline")
        for profiler in profilers:
            profiler.wait(timeout=args.py_spy + 30)
        baseline = late_joiner(Path(tmp), nodes, writes.last_seq, args.heal_timeout, args.poll,
                               args.py_spy)
    total_seconds = time.monotonic() - started
    base = baseline["seconds_from_ready"]
    ratios = {name: (value / base if value is not None and base else None)
              for name, value in (("entries_everywhere", result.entries_everywhere),
                                  ("heads_equal", result.heads_equal),
                                  ("roots_equal", result.roots_equal))}
    return {
        "nodes": NODES, "sides": [list(s) for s in SIDES], "entries": args.entries,
        "epoch_seconds": args.epoch_seconds, "writers_per_node": args.writers,
        "partition_seconds": partition_seconds, "start_seconds": start_seconds,
        "final_epoch_at_split": final_at_split, "final_epoch_at_heal": final_at_heal,
        "writes": {"acknowledged": writes.acknowledged, "errors": writes.errors,
                   "first_error": writes.first_error, "rate": writes.rate,
                   "seconds": writes.last_ack - writes.started, "per_node": writes.per_node,
                   "all_in_partition": writes.last_ack <= split_at + args.partition_seconds,
                   "wall_seconds": write_seconds, "last_seq": writes.last_seq},
        "heal": {"unblock_and_connect_seconds": heal_call_seconds,
                 "entries_everywhere": result.entries_everywhere,
                 "heads_equal": result.heads_equal, "roots_equal": result.roots_equal,
                 "stored_all_by_node": result.stored_all,
                 "settled_all_by_node": result.settled_all,
                 "final_epochs_at_roots_equal": result.final_epochs_at_roots_equal,
                 "polls": result.polls,
                 "poll_round_ms_median": 1000 * sorted(result.poll_seconds)[
                     len(result.poll_seconds) // 2] if result.poll_seconds else None,
                 "first_epoch_with_all": first,
                 "roots_at_first_epoch": roots,
                 "roots_equal_at_first_epoch": len(set(roots.values())) == 1 if roots
                 else None},
        "baseline_late_joiner_sync": baseline,
        "ratios_to_baseline": ratios, "target_seconds": 10.0,
        "total_seconds": total_seconds, "loadavg_before": loadavg,
    }


def print_table(r: dict[str, Any]) -> None:
    w, h, b = r["writes"], r["heal"], r["baseline_late_joiner_sync"]

    def sec(value: float | None) -> str:
        return f"{value:8.2f}" if value is not None else "     n/a"

    print(f"ledger partition over {r['nodes']} meshd validators on loopback: nodes "
          f"{r['sides'][0]} | {r['sides'][1]} for {r['partition_seconds']:.1f} s, "
          f"{r['entries']} transfers written during it, epochs of {r['epoch_seconds']} s "
          f"(load average before: {r['loadavg_before']:.2f})")
    print(f"started, connected and epoch 1 final in {r['start_seconds']:.1f} s; final epoch "
          f"per node at the split {r['final_epoch_at_split']}, at healing "
          f"{r['final_epoch_at_heal']}")
    within = "all within the partition" if w["all_in_partition"] else \
        "NOT all within the partition"
    print(f"writes: {w['acknowledged']} acknowledged in {w['seconds']:.1f} s = {w['rate']:.0f} "
          f"transfers/s ({r['writers_per_node']} clients per node; per node {w['per_node']}; "
          f"{w['errors']} errors{'; first: ' + w['first_error'] if w['first_error'] else ''}; "
          f"{within})")
    print(f"healing (unblock + connect took {h['unblock_and_connect_seconds']:.2f} s), seconds "
          f"after the first unblock, polled every {h['poll_round_ms_median']:.0f} ms "
          "(median round):")
    base = b["seconds_from_ready"]
    ratio = r["ratios_to_baseline"]

    def row(label: str, key: str) -> None:
        q = ratio[key]
        print(f"  {label:48} {sec(h[key])}   {f'{q:6.2f}' if q is not None else '   n/a'}")

    print(f"  {'':48} {'seconds':>8}   {'/base':>6}")
    row("entries everywhere (all bench entries stored)", "entries_everywhere")
    row("heads equal (one digest on all 5 nodes)", "heads_equal")
    row("state roots equal (a final epoch has them all)", "roots_equal")
    print(f"  {'baseline: a new node syncs them from READY':48} {sec(base)}   "
          f"(from spawn {sec(b['seconds_from_spawn']).strip()} s)")
    first = h["first_epoch_with_all"]
    roots = h["roots_at_first_epoch"]
    agree = "one root on all nodes" if h["roots_equal_at_first_epoch"] else \
        f"{len(set(roots.values()))} different roots" if roots else "roots not read"
    print(f"first epoch whose settlement includes every bench entry: {first} ({agree}); "
          f"final epochs when roots were equal: {h['final_epochs_at_roots_equal']}")
    met = h["roots_equal"] is not None and h["roots_equal"] <= r["target_seconds"] \
        and h["roots_equal_at_first_epoch"]
    print(f"target: state roots equal <= {r['target_seconds']:g} s after healing: "
          f"{'met' if met else 'NOT met'}; total run {r['total_seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000, help="transfers in total")
    parser.add_argument("--partition-seconds", type=float, default=60.0)
    parser.add_argument("--epoch-seconds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=2, help="client threads per node")
    parser.add_argument("--write-grace", type=float, default=60.0,
                        help="seconds writes may run past the partition before giving up")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between poll rounds")
    parser.add_argument("--heal-timeout", type=float, default=120.0,
                        help="seconds to wait for convergence (and for the baseline)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="hard bound on the whole run, seconds")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="a new directory for the data dirs and daemon logs, kept after "
                        "the run (default: a temporary one, removed)")
    parser.add_argument("--log-level", default="warning", help="the daemons' --log-level")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS",
                        help="sample every node with py-spy for SECONDS from the heal (and the "
                             "late joiner from its spawn), into WORKDIR/node-N.pyspy.txt; "
                             "skews the figures")
    args = parser.parse_args()
    if args.entries < NODES or args.partition_seconds <= 0 or args.epoch_seconds < 1 \
            or args.writers < 1 or args.poll <= 0:
        parser.error(f"need --entries >= {NODES}, --partition-seconds > 0, "
                     "--epoch-seconds >= 1, --writers >= 1, --poll > 0")

    def expired(signum: int, frame: FrameType | None) -> None:
        raise Timeout(f"the run took more than --timeout {args.timeout:g} s")

    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        results = run_all(args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
