"""Benchmark: durable ledger appends (one per commit, group commit) and replay verify.

Entries are made first, untimed: ``--authors`` authors write chains of transfers
(a random author each time, with 0-3 deps on other authors' heads, as gossip
brings them), signed before any timing, since signing is the author's cost.
Every timed append then starts from the encoded entry as a node receives it and
does what docs/ledger.md §8.1 asks of a received entry before it is
acknowledged: ``entry.verify`` (encoding, hash, structure, Ed25519 signature),
then the store (links against the stored past, one durable transaction). The
share of the time spent in ``entry.verify`` is reported too.

* **one per commit**: ``LedgerStore.insert([e])`` for each entry, in order;
* **group commit**: ``--appenders`` trio tasks (64) each take the next entry,
  verify it and ``await GroupCommitter.append``; batches are counted, and the
  time the committer's thread spends in ``LedgerStore.insert``. Then the same
  with entries verified beforehand (the store alone), against a baseline of
  the INSERTs alone;
* **replay verify**: ``LedgerStore.verify()`` over the group-commit store
  (``PRAGMA quick_check``, then every entry re-checked in rowid order).

Baseline, "raw Ed25519 verify + SQLite insert", measured in the same run right
before each subject, on its own database with the store's PRAGMAs (WAL,
synchronous=FULL): a minimal loop doing ``nacl VerifyKey.verify`` of the same
signatures (author key, message and signature split beforehand) and an INSERT
of them as blobs into a plain table, (a) one transaction per row, (b) one
transaction per 512 rows (the group committer's BATCH_ENTRIES); and (c) a paged
SELECT of those rows plus the verify: replay has to read what it checks, so
the floor is read + verify, not verify alone (the SELECT adds about 2 %).
Ratios are subject / baseline. Targets (the ledger issue): one per commit
>= 1,000/s, group commit >= 8,000/s, replay >= 15,000/s.

Data goes to a temporary directory on the repository's filesystem by default
(fsync cost depends on it: a tmpfs such as /dev/shm makes it nearly free);
``--dir`` chooses where the temporary directory is made.

Run from the repository root: ``.venv/bin/python bench/ledger.py [--entries N] [--json]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import output
import trio

from mesh.ledger.v1 import ledger_pb2, sync_pb2
from meshcore.ledger import entry, rules
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.state import Account, Settled
from meshd.ledger import committer as committer_module
from meshd.ledger.committer import BATCH_ENTRIES, GroupCommitter
from meshd.ledger.intake import GossipIntake
from meshd.ledger.replication import GOSSIP_BATCH_ENTRIES
from meshd.ledger.store import LedgerStore

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
REPO = Path(__file__).resolve().parent.parent
TARGETS = {"one per commit": 1000.0, "group commit": 8000.0, "replay verify": 15000.0}
MAX_DEPS = 3
PAGE = 1000  # rows per SELECT in the replay baseline, as LedgerStore.rows reads them
DEFAULT_BATCH_WAIT = committer_module.BATCH_WAIT

BASE_SCHEMA = "CREATE TABLE raw (id INTEGER PRIMARY KEY, key BLOB, msg BLOB, sig BLOB)"
BASE_INSERT = "INSERT INTO raw (key, msg, sig) VALUES (?, ?, ?)"


@dataclass(frozen=True)
class Workload:
    raws: list[bytes]  # encoded entries, in a topological order
    signed: list[tuple[bytes, bytes, bytes]]  # (author key, signed message, signature)
    deps: int  # deps in total
    keys: list[bytes]  # the authors


def judge_for(workload: Workload) -> rules.Judge:
    """Judges entries against a genesis that gives every author enough to pay."""
    rich = Settled(epoch=-1, accounts={k: Account(liquid=10**15) for k in workload.keys})
    return rules.judge_with(lambda fin: rich)


def make_workload(count: int, authors: int, seed: int) -> Workload:
    """``count`` signed transfers by ``authors`` authors, each entry's past before it."""
    rng = random.Random(seed)
    seeds = [rng.randbytes(32) for _ in range(authors)]
    keys = [entry.public_key(s) for s in seeds]
    signers = [nacl.signing.SigningKey(s) for s in seeds]
    heads: list[tuple[bytes, int] | None] = [None] * authors  # (hash, seq)
    raws: list[bytes] = []
    signed: list[tuple[bytes, bytes, bytes]] = []
    total_deps = 0
    for _ in range(count):
        index = rng.randrange(authors)
        head = heads[index]
        others = [h[0] for i, h in enumerate(heads) if h is not None and i != index]
        deps = sorted(rng.sample(others, min(len(others), rng.randint(0, MAX_DEPS))))
        total_deps += len(deps)
        seq = head[1] + 1 if head else 1
        body = ledger_pb2.EntryBody(
            network_id=NET, author=keys[index], seq=seq, prev=head[0] if head else b"",
            deps=deps, epoch=0,
            transfer=ledger_pb2.Transfer(to=keys[(index + rng.randrange(1, authors)) % authors],
                                         amount=rng.randint(1, 10_000)))
        encoded = body.SerializeToString(deterministic=True)
        message = entry.SIGNATURE_DOMAIN + encoded
        signature = signers[index].sign(message).signature
        raws.append(ledger_pb2.Entry(body=encoded, signature=signature)
                    .SerializeToString(deterministic=True))
        signed.append((keys[index], message, signature))
        heads[index] = (entry.entry_hash(encoded), seq)
    return Workload(raws, signed, total_deps, keys)


# --- baselines: raw Ed25519 verify + SQLite ----------------------------------------------

def _raw_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(BASE_SCHEMA)
    return db


def raw_insert(path: Path, signed: list[tuple[bytes, bytes, bytes]], per_commit: int,
               verify: bool = True) -> float:
    """Seconds to verify (if asked) and insert every row, ``per_commit`` rows per
    transaction."""
    db = _raw_db(path)
    started = time.perf_counter()
    for start in range(0, len(signed), per_commit):
        db.execute("BEGIN IMMEDIATE")
        for key, message, signature in signed[start:start + per_commit]:
            if verify:
                nacl.signing.VerifyKey(key).verify(message, signature)
            db.execute(BASE_INSERT, (key, message, signature))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    assert db.execute("SELECT count(*) FROM raw").fetchone()[0] == len(signed)
    db.close()
    return elapsed


def raw_replay(path: Path, count: int) -> float:
    """Seconds to read every row back in pages and verify its signature."""
    db = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    last, seen = 0, 0
    while page := db.execute("SELECT id, key, msg, sig FROM raw WHERE id > ? ORDER BY id "
                             "LIMIT ?", (last, PAGE)).fetchall():
        for _, key, message, signature in page:
            nacl.signing.VerifyKey(key).verify(message, signature)
        seen += len(page)
        last = page[-1][0]
    elapsed = time.perf_counter() - started
    db.close()
    assert seen == count
    return elapsed


# --- subjects: the ledger store ----------------------------------------------------------

class _BatchRecordingStore(LedgerStore):
    """The store, noting the size of each batch the group committer hands it."""

    def __init__(self, path: Path, network_id: str, judge: rules.Judge) -> None:
        super().__init__(path, network_id, judge)
        self.batch_sizes: list[int] = []
        self.insert_seconds = 0.0

    def insert_batch(self, batch: list[Verified]) -> tuple[list[EntryError | None],
                                                            list[Verified]]:
        self.batch_sizes.append(len(batch))
        started = time.perf_counter()
        try:
            return super().insert_batch(batch)
        finally:
            self.insert_seconds += time.perf_counter() - started


def one_per_commit(directory: Path, raws: list[bytes], judge: rules.Judge,
                   ) -> tuple[float, float]:
    """Seconds to verify and durably insert each entry alone, and of that in verify."""
    directory.mkdir()
    store = LedgerStore.in_dir(directory, NET, judge)
    in_verify = 0.0
    started = time.perf_counter()
    for raw in raws:
        before = time.perf_counter()
        item = entry.verify(raw, NET)
        in_verify += time.perf_counter() - before
        result = store.insert([item])
        if result != [None]:
            raise RuntimeError(f"entry not appended: {result[0]}")
    elapsed = time.perf_counter() - started
    assert store.count() == len(raws)
    store.close()
    return elapsed, in_verify


@dataclass(frozen=True)
class GroupRun:
    seconds: float
    in_verify: float  # seconds the appenders spent in entry.verify
    in_insert: float  # seconds the committer's thread spent in LedgerStore.insert
    batch_sizes: list[int]


def group_commit(directory: Path, items: list[bytes] | list[Verified], appenders: int,
                 judge: rules.Judge) -> GroupRun:
    """``appenders`` trio tasks append every entry through the group committer,
    verifying each first unless ``items`` are verified already."""
    directory.mkdir()
    store = _BatchRecordingStore(directory / "ledger.sqlite", NET, judge)
    in_verify = 0.0

    async def appender(committer: GroupCommitter, pending: Iterator[bytes | Verified]) -> None:
        nonlocal in_verify
        # Taking, verifying and queueing an entry do not yield to other tasks, so
        # entries reach the committer in the workload's (topological) order.
        for raw in pending:
            if isinstance(raw, bytes):
                before = time.perf_counter()
                item = entry.verify(raw, NET)
                in_verify += time.perf_counter() - before
            else:
                item = raw
            await committer.append(item)

    async def run() -> float:
        committer = GroupCommitter(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            pending: Iterator[bytes | Verified] = iter(items)
            started = time.perf_counter()
            async with trio.open_nursery() as tasks:
                for _ in range(appenders):
                    tasks.start_soon(appender, committer, pending)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        if committer.appended != len(items):
            raise RuntimeError(f"only {committer.appended} of {len(items)} entries appended")
        return elapsed

    elapsed = trio.run(run)
    assert store.count() == len(items)
    store.close()
    return GroupRun(elapsed, in_verify, store.insert_seconds, store.batch_sizes)


def gossip_intake(directory: Path, raws: list[bytes], per_message: int,
                  judge: rules.Judge) -> GroupRun:
    """The daemon's own gossip intake (meshd/ledger/intake.py) taking every entry
    as gossip messages of ``per_message`` entries, all waiting at the start (a
    node under load): checked on a worker thread in batches of what waits,
    queued in order, committed by the group committer."""
    directory.mkdir()
    store = _BatchRecordingStore(directory / "ledger.sqlite", NET, judge)
    messages = [sync_pb2.LedgerEntries(entries=raws[i:i + per_message]).SerializeToString()
                for i in range(0, len(raws), per_message)]
    refused: list[str] = []

    async def penalise(sender: str, why: str) -> None:
        refused.append(why)

    async def admitted(items: list[Verified], results: list[EntryError | None],
                       sender: str) -> None:
        refused.extend(str(e) for e in results if e is not None)

    async def run() -> float:
        committer = GroupCommitter(store)
        intake = GossipIntake(committer, NET, stored_lately=set(), penalise=penalise,
                              admitted=admitted, counters=_Counters())
        send, receive = trio.open_memory_channel[tuple[str, bytes]](len(messages))
        for message in messages:
            send.send_nowait(("a peer", message))
        send.close()
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            started = time.perf_counter()
            await intake.run(receive)
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        if refused:
            raise RuntimeError(f"{len(refused)} entries refused, e.g. {refused[0]}")
        return elapsed

    elapsed = trio.run(run)
    assert store.count() == len(raws)
    store.close()
    return GroupRun(elapsed, 0.0, store.insert_seconds, store.batch_sizes)


@dataclass
class _Counters:
    received: int = 0
    invalid: int = 0


def replay_verify(directory: Path, count: int, judge: rules.Judge) -> float:
    store = LedgerStore.in_dir(directory, NET, judge)
    started = time.perf_counter()
    checked, bad = store.verify()
    elapsed = time.perf_counter() - started
    store.close()
    if bad is not None or checked != count:
        raise RuntimeError(f"verify checked {checked} of {count} entries; first bad: {bad}")
    return elapsed


# --- the run ----------------------------------------------------------------------------

def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point in /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def run_all(count: int, authors: int, appenders: int, parent: Path, seed: int,
            per_message: int) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    started = time.perf_counter()
    workload = make_workload(count, authors, seed)
    judge = judge_for(workload)
    made = time.perf_counter() - started
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".bench-ledger-", dir=parent) as tmp:
        work = Path(tmp)
        base_one = raw_insert(work / "raw-one.sqlite", workload.signed, 1)
        sub_one, verify_one = one_per_commit(work / "one", workload.raws, judge)
        base_group = raw_insert(work / "raw-group.sqlite", workload.signed, BATCH_ENTRIES)
        group = group_commit(work / "group", workload.raws, appenders, judge)
        base_intake = raw_insert(work / "raw-intake.sqlite", workload.signed, BATCH_ENTRIES)
        intake = gossip_intake(work / "intake", workload.raws, per_message, judge)
        verified = [entry.verify(raw, NET) for raw in workload.raws]  # untimed
        base_store = raw_insert(work / "raw-store.sqlite", workload.signed, BATCH_ENTRIES,
                                verify=False)
        store_alone = group_commit(work / "store-alone", verified, appenders, judge)
        base_replay = raw_replay(work / "raw-group.sqlite", count)
        sub_replay = replay_verify(work / "group", count, judge)
        for name, subject, baseline, in_verify in (
                ("one per commit", sub_one, base_one, verify_one),
                ("group commit", group.seconds, base_group, group.in_verify),
                ("group commit, gossip intake", intake.seconds, base_intake, None),
                ("group commit, store alone", store_alone.seconds, base_store, None),
                ("replay verify", sub_replay, base_replay, None)):
            target = TARGETS[name.partition(",")[0]]
            results[name] = {
                "seconds": subject, "per_second": count / subject,
                "baseline_seconds": baseline, "baseline_per_second": count / baseline,
                "ratio_to_baseline": baseline / subject, "target_per_second": target,
                "met": count / subject >= target,
                "verify_share": in_verify / subject if in_verify is not None else None}
        for name, run in (("group commit", group), ("group commit, gossip intake", intake),
                          ("group commit, store alone", store_alone)):
            sizes = run.batch_sizes
            results[name]["batches"] = {
                "count": len(sizes), "mean": statistics.fmean(sizes),
                "median": statistics.median(sizes), "max": max(sizes),
                "insert_share": run.in_insert / run.seconds,
                "wait_seconds": committer_module.BATCH_WAIT}
        directory = str(work.parent)
    return {"entries": count, "authors": authors, "appenders": appenders,
            "per_message": per_message,
            "deps_per_entry": workload.deps / count, "directory": directory,
            "filesystem": filesystem_of(Path(directory)), "loadavg_before": loadavg,
            "batch_wait_overridden": committer_module.BATCH_WAIT != DEFAULT_BATCH_WAIT,
            "make_seconds": made, "total_seconds": time.perf_counter() - started,
            "results": results}


def print_table(r: dict[str, Any]) -> None:
    print(f"ledger store: {r['entries']:,} entries by {r['authors']} authors "
          f"({r['deps_per_entry']:.1f} deps each on average), signed beforehand in "
          f"{r['make_seconds']:.1f} s (load average before: {r['loadavg_before']:.2f})")
    print(f"data in a temporary directory under {r['directory']} ({r['filesystem']}); "
          "WAL, synchronous=FULL")
    print(f"{'':36} {'entries/s':>9} {'baseline/s':>10} {'ratio':>5} {'in verify':>9}  target")
    labels = {"one per commit": "append, verify+store, 1 per commit",
              "group commit": f"  group commit, {r['appenders']} tasks",
              "group commit, gossip intake": f"  gossip intake, {r['per_message']}/message",
              "group commit, store alone": "  same, entries verified before",
              "replay verify": "replay verify (LedgerStore.verify)"}
    for name, label in labels.items():
        s = r["results"][name]
        share = f"{s['verify_share']:9.0%}" if s["verify_share"] is not None else f"{'':9}"
        verdict = "met" if s["met"] else "NOT met"
        print(f"{label:36} {s['per_second']:9,.0f} {s['baseline_per_second']:10,.0f} "
              f"{s['ratio_to_baseline']:5.2f} {share}  >= {s['target_per_second']:,.0f} "
              f"({verdict})")
    for name, what in (("group commit", "verify+store"),
                       ("group commit, gossip intake", "gossip intake"),
                       ("group commit, store alone", "verified before")):
        b = r["results"][name]["batches"]
        print(f"group commit, {what}: {b['count']} batches, entries per batch mean "
              f"{b['mean']:.1f}, median {b['median']:g}, max {b['max']}; "
              f"{b['insert_share']:.0%} of the time in LedgerStore.insert")
    wait = r["results"]["group commit"]["batches"]["wait_seconds"]
    print(f"batch wait {wait * 1000:g} ms"
          + (" (--batch-wait, not the store's)" if r["batch_wait_overridden"] else " (the store's)")
          + f", at most {BATCH_ENTRIES} entries per batch")
    print("baselines: nacl VerifyKey.verify + INSERT of blobs into a plain table, one "
          f"transaction per row, per {BATCH_ENTRIES} rows, per {BATCH_ENTRIES} rows without "
          "verify; replay: paged SELECT + verify.")
    print("ratio = baseline seconds / subject seconds; 'in verify' = share of the subject's "
          f"time in entry.verify. Total {r['total_seconds']:.0f} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="entries in the workload")
    parser.add_argument("--authors", type=int, default=50, help="authors writing them")
    parser.add_argument("--appenders", type=int, default=64,
                        help="concurrent trio tasks appending through the group committer")
    parser.add_argument("--per-message", type=int, default=16,
                        help="entries per gossip message in the gossip intake run (the "
                             f"daemon sends up to {GOSSIP_BATCH_ENTRIES})")
    parser.add_argument("--dir", type=Path, default=REPO,
                        help="where the temporary data directory is made (default: the "
                             "repository, for its filesystem; /dev/shm makes fsync free)")
    parser.add_argument("--batch-wait", type=float, default=None, metavar="SECONDS",
                        help="diagnostic: replace the group committer's BATCH_WAIT "
                             f"({DEFAULT_BATCH_WAIT:g} s) for this run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the workload")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.entries < 1 or args.authors < 2 or args.appenders < 1 or args.per_message < 1:
        parser.error("--entries, --appenders and --per-message must be at least 1, "
                     "--authors at least 2")
    if args.batch_wait is not None:
        if args.batch_wait < 0:
            parser.error("--batch-wait must not be negative")
        committer_module.BATCH_WAIT = args.batch_wait
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a directory")
    results = run_all(args.entries, args.authors, args.appenders, args.dir, args.seed,
                      args.per_message)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
