"""Perturbation campaign: the ledger under faults, checked like a bank (docs/reliability.md).

Starts ``--nodes`` meshd processes, each on a host of its own (a network
namespace with its own IP, meshd/testing/netns.py), ``--validators`` of them genesis
validators. Client threads write transfers, stakes, unstakes and governance
votes and submit storage tasks (``--rate`` per second in all) through random
nodes' gRPC APIs and remember every write that was acknowledged (for a task:
its requester's receipt). For ``--duration`` seconds a
fault thread applies random faults, each undone after a random while:
SIGKILL and restart; SIGSTOP and SIGCONT; a partition of the hosts into two
groups and its heal; a validator stopped for several epochs; a node killed
and restarted on an old copy of its ledger.
Then it undoes every fault still on (the heal), and checks on every node:

* every acknowledged entry is stored and has taken effect (GetEntry);
* ``ledger verify`` is clean;
* the state roots of the first epoch settled after the heal are equal, and
  how long after the heal that was;
* supply = allocations + minted - slashed, no account's balance is negative,
  nothing was slashed (every node is honest);
* every process is running and settlement goes on.

It is seeded: ``--seed`` replays the same choices (timing on a loaded machine
still varies). It ends with one line, ``chaos: N faults over M s, A
acknowledged, 0 lost, roots equal after S s``, or what failed (exit 1).

    sudo .venv/bin/python bench/chaos.py --duration 120 --seed 7
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cluster
import grpc

from mesh.governance.v1 import governance_pb2, governance_pb2_grpc
from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshd.testing import netns

PORT = 4001
ALLOCATION = 10**12
PROPOSAL_STAKE = 10**8  # also the least bonded stake of a validator candidate
CALL_TIMEOUT = 10.0
TASK_PAYLOAD = 1024  # bytes of a STORE_FILE task
TASK_TIMEOUT_MS = 10_000  # per attempt; two attempts
TASK_CALL_TIMEOUT = 30.0
READY_TIMEOUT = 60.0
SNAPSHOT_EVERY = 3.0  # s: a copy of some node's ledger, for "restored from an old copy"
HEAL_TIMEOUT = 120.0


class ChaosNode(cluster.Node):
    """A meshd process on its own host, listening on the host's IP."""

    def __init__(self, workdir: Path, index: int, genesis: Path, host: netns.Host,
                 peer_id: str) -> None:
        super().__init__(workdir, index, genesis)
        self.host = host
        self.peer_id = peer_id
        self.address = f"/ip4/{host.ip}/tcp/{PORT}/p2p/{self.peer_id}"
        self.state = "down"  # up, killed, paused, stopped
        self.snapshot: tuple[Path, float] | None = None  # an old copy of its ledger, taken when
        # Bumped when the disk is replaced by a copy: a snapshot taken of an
        # earlier disk is no old copy of this one (restoring it would bring back
        # a branch the network never saw: a second signer, not a restore).
        self.disk_generation = 0

    def launch(self, bootstrap: str | None) -> None:
        self.start(bootstrap, {}, self.log_level, listen=f"/ip4/{self.host.ip}/tcp/{PORT}",
                   wrap=self.host.command)
        self.wait_ready(time.monotonic() + READY_TIMEOUT)
        self.state = "up"

    def ledger(self) -> ledger_pb2_grpc.LedgerServiceStub:
        return self.stub(ledger_pb2_grpc.LedgerServiceStub)


def error_kind(state: str, error: str) -> str:
    """An attempt's outcome with what varies (numbers, peer ids, hashes) masked,
    so that errors of one kind count together."""
    masked = re.sub(r"12D3KooW\w+|\b[0-9a-f]{16,}\b|\d+(\.\d+)?", "#", error)
    return f"{state}: {masked[:120]}" if masked else state


class NoEntry(Exception):
    """A write that ended without a ledger entry to check (a task without a receipt)."""


@dataclass
class Tally:
    # (node, entry hash, when acknowledged: time.monotonic())
    acknowledged: list[tuple[int, str, float]] = field(default_factory=list)
    # node -> (when its copy was taken, when it was restored), each restore
    restores: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # by status code
    faults: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)  # by outcome
    # why an attempt had no receipt: its error, digits and ids masked, by count
    task_errors: Counter[str] = field(default_factory=Counter)
    lost_with_disk: int = 0  # see check()
    slow_stops: list[int] = field(default_factory=list)  # not gone STOP_TIMEOUT after SIGTERM
    lock: threading.Lock = field(default_factory=threading.Lock)


class Campaign:
    def __init__(self, args: argparse.Namespace, nodes: list[ChaosNode], bed: netns.Testbed,
                 proposal: str) -> None:
        self.args = args
        self.nodes = nodes
        self.bed = bed
        self.proposal = proposal
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.stop = threading.Event()
        self.undo: list[tuple[float, int, Callable[[], None]]] = []  # heap by due time
        self.partitioned = False
        self.lock = threading.RLock()  # node states, the heap, the partition
        self.starting: list[threading.Thread] = []  # restarts under way

    # --- workload -------------------------------------------------------------------------

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        pause = self.args.clients / self.args.rate  # each client's share of --rate
        while not self.stop.wait(rng.uniform(0.5, 1.5) * pause):
            with self.lock:
                up = [n for n in self.nodes if n.state == "up"]
            if not up:
                time.sleep(0.1)
                continue
            node = rng.choice(up)
            try:
                entry = self.write(node, rng)
            except grpc.RpcError as exc:
                with self.tally.lock:
                    self.tally.refused[exc.code().name] += 1
                continue
            except NoEntry:
                continue
            with self.tally.lock:
                self.tally.acknowledged.append((node.index, entry, time.monotonic()))

    def write(self, node: ChaosNode, rng: random.Random) -> str:
        ledger = node.ledger()
        roll = rng.random()
        if roll < 0.10:
            return self.task(node, rng)
        if roll < 0.70:
            to = rng.choice([n for n in self.nodes if n is not node]).peer_id
            r = ledger.Transfer(ledger_pb2.TransferRequest(
                to=to, amount=str(rng.randint(1, 1000))), timeout=CALL_TIMEOUT)
            return str(r.entry.hash)
        if roll < 0.80:
            r = ledger.Stake(ledger_pb2.StakeRequest(amount=str(rng.randint(1, 1000))),
                             timeout=CALL_TIMEOUT)
            return str(r.entry.hash)
        if roll < 0.85:
            r = ledger.Unstake(ledger_pb2.UnstakeRequest(amount=str(rng.randint(1, 100))),
                               timeout=CALL_TIMEOUT)
            return str(r.entry.hash)
        gov = node.stub(governance_pb2_grpc.GovernanceServiceStub)
        v = gov.Vote(governance_pb2.VoteRequest(
            proposal_id=self.proposal, option=rng.choice(["yes", "no", "abstain"])),
            timeout=CALL_TIMEOUT)
        return str(v.entry)

    def task(self, node: ChaosNode, rng: random.Random) -> str:
        """Store a small chunk on one provider; the requester's receipt is the entry."""
        tasks = node.stub(tasks_pb2_grpc.TasksServiceStub)
        task = tasks.SubmitTask(tasks_pb2.SubmitTaskRequest(
            plugin="storage", kind="STORE_FILE", payload=rng.randbytes(TASK_PAYLOAD),
            redundancy=1, timeout_ms=TASK_TIMEOUT_MS, attempts=2, wait=True),
            timeout=TASK_CALL_TIMEOUT).task
        receipts = [a.receipt for a in task.attempts if a.receipt]
        with self.tally.lock:
            self.tally.tasks[task.state + (" with a receipt" if receipts else "")] += 1
            for attempt in task.attempts:
                if not attempt.receipt:
                    self.tally.task_errors[error_kind(attempt.state, attempt.error)] += 1
        if not receipts:  # failed, or done while its requester was behind (no receipt)
            raise NoEntry
        return str(receipts[0])

    # --- faults -----------------------------------------------------------------------------

    def later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.undo, (time.monotonic() + delay, id(action), action))

    def inject(self) -> None:
        rng = self.rng
        faults: Mapping[str, Callable[[], bool]] = {
            "kill": self.kill, "pause": self.pause, "partition": self.partition,
            "validator_down": self.validator_down, "restore_old_copy": self.restore}
        end = time.monotonic() + self.args.duration
        next_fault = time.monotonic()
        while time.monotonic() < end:
            self.run_due()
            if time.monotonic() >= next_fault:
                # The first of the faults, in random order, that can be applied now.
                for name in rng.sample(sorted(faults), len(faults)):
                    with self.lock:
                        applied = faults[name]()
                    if applied:
                        self.tally.faults[name] += 1
                        self.say(f"{name}: {self.states()}")
                        break
                next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * self.args.fault_every
            time.sleep(0.05)

    def run_due(self) -> None:
        while self.undo and self.undo[0][0] <= time.monotonic():
            _, _, action = heapq.heappop(self.undo)
            with self.lock:
                action()
            self.say(f"undone: {self.states()}")

    def states(self) -> str:
        marks = {"up": ".", "killed": "K", "paused": "P", "stopped": "S", "starting": "s"}
        line = "".join(marks.get(n.state, "?") for n in self.nodes)
        return line + (" partitioned" if self.partitioned else "")

    def say(self, message: str) -> None:
        if self.args.verbose:
            print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def calm(self, candidates: list[ChaosNode]) -> list[ChaosNode]:
        """Nodes a new fault may take: up, and at most a third of the nodes disturbed."""
        disturbed = sum(n.state != "up" for n in self.nodes)
        if 3 * (disturbed + 1) > len(self.nodes):
            return []
        return [n for n in candidates if n.state == "up"]

    def kill(self) -> bool:
        victims = self.calm(self.nodes)
        if not victims:
            return False
        node = self.rng.choice(victims)
        node.sigkill()
        node.state = "killed"
        self.later(self.rng.uniform(0.5, 3.0), lambda: self.restart(node))
        return True

    def restore(self) -> bool:
        victims = [n for n in self.calm(self.nodes) if n.snapshot is not None]
        if not victims:
            return False
        node = self.rng.choice(victims)
        assert node.snapshot is not None
        node.sigkill()
        node.state = "killed"
        ledger = node.data_dir / "ledger.sqlite"
        for suffix in ("-wal", "-shm"):
            Path(f"{ledger}{suffix}").unlink(missing_ok=True)
        copy, taken = node.snapshot
        shutil.copyfile(copy, ledger)
        node.snapshot = None
        node.disk_generation += 1
        with self.tally.lock:
            self.tally.restores.setdefault(node.index, []).append((taken, time.monotonic()))
        self.later(self.rng.uniform(0.5, 2.0), lambda: self.restart(node))
        return True

    def restart(self, node: ChaosNode) -> None:
        """Start ``node`` again in the background (meshd takes seconds to be ready)."""
        node.state = "starting"
        node.sigkilled = False
        starter = threading.Thread(target=node.launch,
                                   args=(self.nodes[0].address if node.index else None,),
                                   daemon=True)
        self.starting.append(starter)
        starter.start()

    def pause(self) -> bool:
        victims = self.calm(self.nodes)
        if not victims:
            return False
        node = self.rng.choice(victims)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)
        node.state = "paused"

        def resume() -> None:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGCONT)
            node.state = "up"
        self.later(self.rng.uniform(0.5, 4.0), resume)
        return True

    def partition(self) -> bool:
        if self.partitioned:
            return False
        hosts = [n.host for n in self.nodes]
        self.rng.shuffle(hosts)
        cut = self.rng.randint(1, len(hosts) - 1)
        self.bed.partition([hosts[:cut], hosts[cut:]])
        self.partitioned = True

        def heal() -> None:
            self.bed.heal()
            self.partitioned = False
        self.later(self.rng.uniform(2.0, 8.0), heal)
        return True

    def validator_down(self) -> bool:
        victims = self.calm(self.nodes[:self.args.validators])
        if not victims:
            return False
        node = self.rng.choice(victims)
        node.stop()
        assert node.proc is not None
        try:
            node.proc.wait(timeout=cluster.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with self.tally.lock:
                self.tally.slow_stops.append(node.index)
            node.sigkill()
        node.state = "stopped"
        epochs = self.rng.randint(2, 4)
        self.later(epochs * self.args.epoch_seconds, lambda: self.restart(node))
        return True

    def snapshots(self) -> None:
        """Copy a random running node's ledger now and then (SQLite's backup API)."""
        rng = random.Random(self.args.seed + 1)
        while not self.stop.wait(SNAPSHOT_EVERY):
            with self.lock:
                node = rng.choice([n for n in self.nodes if n.state == "up"] or [None])
                generation = node.disk_generation if node is not None else 0
            if node is None:
                continue
            target = node.data_dir.parent / f"snapshot-{node.index}.sqlite"
            partial = target.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            taken = time.monotonic()
            try:
                source = sqlite3.connect(f"file:{node.data_dir / 'ledger.sqlite'}?mode=ro",
                                         uri=True, timeout=5)
                with source, sqlite3.connect(partial) as copy:
                    source.backup(copy)
                source.close()
            except sqlite3.Error:
                continue  # the node was killed meanwhile: try another later
            with self.lock:
                # A restore may have replaced the disk during the backup; and a
                # restore may be copying the previous snapshot: replace it whole.
                if node.disk_generation == generation:
                    partial.replace(target)
                    node.snapshot = (target, taken)

    def heal_all(self) -> None:
        """Undo every fault still on, now, and wait for the restarts."""
        while self.undo:
            _, _, action = heapq.heappop(self.undo)
            with self.lock:
                action()
        for starter in self.starting:
            starter.join(READY_TIMEOUT)
        broken = [n.index for n in self.nodes if n.state != "up"]
        if broken:
            raise AssertionError(f"nodes {broken} did not start again: see their logs")


# --- checks --------------------------------------------------------------------------------

def final_epoch(node: ChaosNode) -> int:
    r = node.ledger().GetStateRoot(ledger_pb2.GetStateRootRequest(), timeout=CALL_TIMEOUT)
    return int(r.epoch)


def root_at(node: ChaosNode, epoch: int) -> str:
    r = node.ledger().GetStateRoot(ledger_pb2.GetStateRootRequest(epoch=epoch),
                                   timeout=CALL_TIMEOUT)
    return str(r.root)


def settle_after_heal(nodes: list[ChaosNode], healed: float) -> tuple[int, float]:
    """The first epoch every node settles after the heal, and how long after the
    heal every node showed the same root for it."""
    target = max(final_epoch(n) for n in nodes) + 1
    deadline = healed + HEAL_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if all(final_epoch(n) >= target for n in nodes):
                roots = {root_at(n, target) for n in nodes}
                if len(roots) == 1:
                    return target, time.monotonic() - healed
                raise AssertionError(f"nodes disagree on the root of epoch {target}: {roots}")
        except grpc.RpcError:
            pass  # a node still starting
        time.sleep(0.2)
    raise AssertionError(f"epoch {target} not final on every node within {HEAL_TIMEOUT:g} s "
                         "of the heal")


def _stores_not(node: ChaosNode, entry: str) -> bool:
    try:
        node.ledger().GetEntry(ledger_pb2.GetEntryRequest(hash=entry), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return bool(exc.code() == grpc.StatusCode.NOT_FOUND)
    return False


def check(nodes: list[ChaosNode], tally: Tally, allocations: int) -> list[str]:
    """What went wrong, per the module docstring's list (empty: nothing)."""
    problems: list[str] = []
    # Everything acknowledged must take effect: wait until the entries written
    # last have had an epoch to settle in. One node says which entries are
    # canonical by epoch F; equal state roots at F on every node then say
    # every node holds them canonical too (the root commits to each account's
    # canonical head hash, and each head to its chain).
    last = max(final_epoch(n) for n in nodes) + 2
    cluster.wait_until(lambda: all(final_epoch(n) >= last for n in nodes), HEAL_TIMEOUT)
    witness, lost, settled_by = nodes[0], {}, last
    for _, entry, _ in tally.acknowledged:
        try:
            r = witness.ledger().GetEntry(ledger_pb2.GetEntryRequest(hash=entry),
                                          timeout=CALL_TIMEOUT)
            settled_by = max(settled_by, int(r.final_epoch))
            if not r.canonical:
                lost[entry] = ["not canonical"]
        except grpc.RpcError as exc:
            lost[entry] = [str(exc.details())]
    cluster.wait_until(lambda: all(final_epoch(n) >= settled_by for n in nodes), HEAL_TIMEOUT)
    roots = {root_at(n, settled_by) for n in nodes}
    if len(roots) != 1:
        problems.append(f"nodes disagree on the state root of epoch {settled_by}: {roots}")
    # An entry acknowledged by a node whose ledger was then replaced by a copy
    # older than the entry is gone with that node's disk if it had not reached
    # another node yet (stored nowhere): the fault destroyed it, not the ledger.
    # It must not have left a fork behind either: that shows as a slash below.
    with_disk: set[str] = set()
    for index, entry, acked in tally.acknowledged:
        if entry not in lost or "stores no entry" not in lost[entry][0]:
            continue
        nowhere = all(_stores_not(n, entry) for n in nodes)
        if nowhere and any(taken < acked < at for taken, at in tally.restores.get(index, [])):
            with_disk.add(entry)
    for entry in with_disk:
        del lost[entry]
    tally.lost_with_disk = len(with_disk)
    if lost:
        sample = "; ".join(f"{h[:16]} ({w[0]})" for h, w in list(lost.items())[:5])
        problems.append(f"{len(lost)} acknowledged entries lost or not in effect: {sample}")
    for index in tally.slow_stops:
        problems.append(f"node {index} did not stop within {cluster.STOP_TIMEOUT:g} s of "
                        "SIGTERM (killed)")
    for node in nodes:
        verified = node.ledger().VerifyLedger(ledger_pb2.VerifyLedgerRequest(), timeout=300)
        if verified.first_bad:
            problems.append(f"node {node.index}: ledger verify: {verified.first_bad}")
        info = node.ledger().GetTokenInfo(ledger_pb2.GetTokenInfoRequest(),
                                          timeout=CALL_TIMEOUT)
        expected = allocations + int(info.minted_total) - int(info.slashed_total)
        if int(info.supply) != expected:
            problems.append(f"node {node.index}: supply {info.supply} != allocations "
                            f"{allocations} + minted {info.minted_total} - slashed "
                            f"{info.slashed_total}")
        if int(info.slashed_total):
            problems.append(f"node {node.index}: {info.slashed_total} slashed, yet every "
                            "node is honest")
        for other in nodes:
            b = node.ledger().GetBalance(ledger_pb2.GetBalanceRequest(account=other.peer_id),
                                         timeout=CALL_TIMEOUT)
            if int(b.settled) < 0 or int(b.available) < 0:
                problems.append(f"node {node.index}: account {other.index} settled "
                                f"{b.settled}, available {b.available}")
        if not node.alive:
            problems.append(f"node {node.index} is not running: {node.failure('exited')}")
    return problems


# --- the run ---------------------------------------------------------------------------------

def genesis(workdir: Path, nodes: list[str], validators: int, epoch_seconds: int) -> Path:
    args = [a for peer in nodes for a in ("--allocate", f"{peer}:{ALLOCATION}")]
    args += [a for peer in nodes[:validators] for a in ("--validator", peer)]
    args += ["--plugin", "storage"]  # the task workload stores chunks
    args += ["--epoch-seconds", str(epoch_seconds), "--emission", "1000000",
             "--proposal-stake", str(PROPOSAL_STAKE), "--voting-period", str(10**6)]
    return cluster.make_genesis(workdir / "net", READY_TIMEOUT, args)


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(f"chaos: seed {args.seed}, {args.nodes} nodes ({args.validators} validators), "
          f"{args.duration:g} s, a fault every ~{args.fault_every:g} s, in {workdir}",
          flush=True)
    with netns.open_testbed(args.nodes) as bed:
        # Identities first: the genesis names the validators and allocations.
        peer_ids = [cluster.make_identity(workdir / f"node-{i}", READY_TIMEOUT)
                    for i in range(args.nodes)]
        path = genesis(workdir, peer_ids, args.validators, args.epoch_seconds)
        nodes = [ChaosNode(workdir, i, path, host, peer_id)
                 for i, (host, peer_id) in enumerate(zip(bed.hosts, peer_ids, strict=True))]
        for node in nodes:
            node.log_level = args.log_level
        try:
            nodes[0].launch(None)
            for node in nodes[1:]:
                node.launch(nodes[0].address)
            cluster.wait_until(lambda: all(final_epoch(n) >= 0 for n in nodes), READY_TIMEOUT)
            gov = nodes[0].stub(governance_pb2_grpc.GovernanceServiceStub)
            proposal = gov.Propose(governance_pb2.ProposeRequest(
                title="chaos", params=governance_pb2.ParamsAction(settings=[
                    governance_pb2.ParamSetting(path="governance.quorum_percent", json="34")])),
                timeout=CALL_TIMEOUT).proposal.id
            campaign = Campaign(args, nodes, bed, proposal)
            threads = [threading.Thread(target=campaign.client, args=(args.seed * 1000 + i,),
                                        name=f"client {i}", daemon=True)
                       for i in range(args.clients)]
            threads.append(threading.Thread(target=campaign.snapshots, name="snapshots",
                                            daemon=True))
            for thread in threads:
                thread.start()
            started = time.monotonic()
            campaign.inject()
            # A thread that died (its traceback is above) left the campaign
            # without its workload or its restores: the run proves less.
            died = [thread.name for thread in threads if not thread.is_alive()]
            campaign.stop.set()
            for thread in threads:
                thread.join(CALL_TIMEOUT + 5)
            healed, epoch, after, problems = time.monotonic(), -1, -1.0, []
            try:
                campaign.heal_all()
                healed = time.monotonic()
                campaign.say(f"healed; final epochs {[final_epoch(n) for n in nodes]}")
                epoch, after = settle_after_heal(nodes, healed)
                problems = check(nodes, campaign.tally, ALLOCATION * args.nodes)
            except (AssertionError, grpc.RpcError) as exc:
                problems = [str(exc)]
                epochs = {}
                for node in nodes:
                    try:
                        epochs[node.index] = final_epoch(node)
                    except grpc.RpcError as error:
                        epochs[node.index] = error.code().name
                problems.append(f"final epochs per node: {epochs}")
            problems += [f"the campaign's {name} thread died" for name in died]
        finally:
            for node in nodes:
                if node.alive:
                    node.sigkill()
            for node in nodes:
                node.notify.close()
    tally = campaign.tally
    faults = sum(tally.faults.values())
    print(f"faults: {dict(sorted(tally.faults.items()))}; refused writes: "
          f"{dict(sorted(tally.refused.items()))}; tasks: {dict(sorted(tally.tasks.items()))}; "
          f"first epoch after the heal: {epoch}; "
          f"acknowledged but destroyed with a restored disk before leaving its node: "
          f"{tally.lost_with_disk}")
    if tally.task_errors:
        print("task attempts without a receipt, by outcome:")
        for kind, count in tally.task_errors.most_common(8):
            print(f"  {count:5d}  {kind}")
    elapsed = healed - started
    if problems:
        for problem in problems:
            print(f"  {problem}")
        print(f"chaos: {faults} faults over {elapsed:.0f} s, {len(tally.acknowledged)} "
              f"acknowledged: FAILED ({len(problems)} problems; seed {args.seed})")
        return 1
    print(f"chaos: {faults} faults over {elapsed:.0f} s, {len(tally.acknowledged)} "
          f"acknowledged, 0 lost, roots equal after {after:.1f} s")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--fault-every", type=float, default=2.0,
                        help="mean seconds between faults")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writers")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="writes per second, all clients together (10 daemons on 2 "
                             "cores saturate well below 20/s)")
    parser.add_argument("--epoch-seconds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--verbose", action="store_true",
                        help="print each fault and undo with the nodes' states")
    parser.add_argument("--log-level", default="warning", help="meshd's --log-level")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep data dirs and logs here (default: a temporary directory)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**6)
    if args.nodes < 4 or not 1 <= args.validators <= args.nodes:
        parser.error("--nodes must be at least 4 and --validators 1 to --nodes")
    try:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            sys.exit(run(args, args.workdir))
        with tempfile.TemporaryDirectory(prefix="mesh-chaos-") as tmp:
            sys.exit(run(args, Path(tmp)))
    except netns.TestbedUnavailable as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        sys.exit(2)
    except subprocess.SubprocessError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
