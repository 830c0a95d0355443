"""Soak: a node's memory and disk over thousands of settled epochs.

A ledger that runs for months must not grow in memory with every epoch. This
runs the daemon's own ledger parts in one trio process — the store, its group
committer, the settlements, the epoch driver of a single validator — against a
clock that runs ``--speed`` times faster than the wall clock, so a network
with 1 s epochs settles as fast as the store allows (no peers are needed: one
validator is a quorum). Each epoch the node writes ``--transfers`` transfers to
a fixed set of ``--accounts`` accounts, so the state has a steady size and only
history grows.

After ``--warmup`` epochs (caches full, windows filled) the RSS is sampled every
``--every`` epochs after a garbage collection. Printed: epochs per second, RSS at
the end of the warm-up and at the end, the growth in per cent and its slope in
KiB per epoch (least squares over the samples), the disk the data dir gained
per epoch (the ledger, and the settlement archive of meshd/ledger/archive.py).
Then the time a restart takes to open the ledger, taking up
the settlement archive. Baselines, in the same run: the RSS of this process
before the ledger opened (the interpreter and the imports); the same restart
without the archive, settling every epoch again.

Target (docs/reliability.md): RSS within 5 % from the end of the warm-up to
5,000 epochs.

Run from the repository root: ``.venv/bin/python bench/ledger_soak.py [--epochs 5000] [--json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from meshcore import genesis as genesis_module
from meshcore.genesis import Genesis
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.entry import public_key
from meshd.ledger.archive import ARCHIVE_FILE
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.ledger.settlement_driver import SettlementDriver
from meshd.ledger.store import LEDGER_FILE

REPO = Path(__file__).resolve().parent.parent
ALLOCATION = 10**15
FILES = (LEDGER_FILE, ARCHIVE_FILE)  # with their -wal / -shm / -journal companions


def rss_kib() -> int:
    """This process's resident set size (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def disk_bytes(directory: Path, prefix: str) -> int:
    """Bytes of the files in ``directory`` whose names start with ``prefix``."""
    return sum(p.stat().st_size for p in directory.glob(prefix + "*") if p.is_file())


def make_genesis(validator: bytes, start: dt.datetime) -> Genesis:
    me = peer_id_of(public_key(validator))
    return genesis_module.loads(f"""
name = "Soak"
genesis_time = {start.strftime("%Y-%m-%dT%H:%M:%SZ")}
[token]
name = "Soak"
symbol = "SOK"
allocations = [{{ account = "{me}", amount = {ALLOCATION} }}]
[rewards]
epoch_seconds = 1
[[validators]]
peer_id = "{me}"
""")


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of (epoch, KiB) points, in KiB per epoch."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / den if den else 0.0


async def write_transfers(ledger: Ledger, recipients: list[str], per_epoch: int,
                          rng: random.Random) -> None:
    """``per_epoch`` transfers each time an epoch becomes final, forever."""
    seen = ledger.final_epoch
    while True:
        await ledger.next_final(seen)
        seen = ledger.final_epoch
        for _ in range(per_epoch):
            await ledger.transfer(rng.choice(recipients), rng.randint(1, 1000))


async def timed_open(data_dir: Path, seed: bytes, genesis: Genesis,
                     clock: Callable[[], float]) -> float:
    """Seconds to open the ledger of ``data_dir`` (the settlements ready) and close it."""
    began = time.monotonic()
    async with open_ledger(data_dir, seed, genesis, clock=clock):
        opened = time.monotonic() - began
    return opened


async def soak(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    seed = rng.randbytes(32)
    recipients = [peer_id_of(public_key(rng.randbytes(32))) for _ in range(args.accounts)]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    genesis = make_genesis(seed, start)
    wall0, clock0 = time.monotonic(), start.timestamp()

    def clock() -> float:
        return clock0 + (time.monotonic() - wall0) * args.speed

    gc.collect()
    baseline = rss_kib()
    samples: list[tuple[int, int]] = []
    data_dir = directory / "node"
    data_dir.mkdir()
    async with open_ledger(data_dir, seed, genesis, clock=clock) as ledger, \
            trio.open_nursery() as nursery:
        await nursery.start(SettlementDriver(ledger, clock=clock, close_wait=0.0).run)
        nursery.start_soon(write_transfers, ledger, recipients, args.transfers, rng)
        began = time.monotonic()
        warm_disk: dict[str, int] = {}
        warm_at = 0.0
        while ledger.final_epoch < args.epochs:
            await ledger.next_final(ledger.final_epoch)
            epoch = ledger.final_epoch
            if epoch >= args.warmup + args.every * len(samples):
                gc.collect()
                samples.append((epoch, rss_kib()))
                if len(samples) == 1:
                    warm_disk = {f: disk_bytes(data_dir, f) for f in FILES}
                    warm_at = time.monotonic()
                if not args.json:
                    print(f"  epoch {epoch:6d}  rss {samples[-1][1] / 1024:7.1f} MiB",
                          flush=True)
        elapsed = time.monotonic() - began
        end_disk = {f: disk_bytes(data_dir, f) for f in FILES}
        stored = ledger.store.count()
        nursery.cancel_scope.cancel()
    # A restart: takes up the archive, then (baseline) with no archive, settling
    # every epoch again as a start did before the archive persisted.
    restart = await timed_open(data_dir, seed, genesis, clock)
    (data_dir / ARCHIVE_FILE).unlink()
    replay = await timed_open(data_dir, seed, genesis, clock)
    first, last = samples[0], samples[-1]
    epochs_after_warmup = last[0] - first[0]
    return {
        "epochs": args.epochs, "warmup": args.warmup, "entries": stored,
        "epochs_per_second": round(args.epochs / elapsed, 1),
        "seconds_after_warmup": round(time.monotonic() - warm_at, 1),
        "baseline_rss_mib": round(baseline / 1024, 1),
        "warm_rss_mib": round(first[1] / 1024, 1), "end_rss_mib": round(last[1] / 1024, 1),
        "growth_percent": round(100 * (last[1] - first[1]) / first[1], 2),
        "slope_kib_per_epoch": round(slope(samples), 3),
        "disk_bytes_per_epoch": {
            f: round((end_disk[f] - warm_disk[f]) / max(1, epochs_after_warmup)) for f in FILES},
        "disk_mib": {f: round(end_disk[f] / 2**20, 1) for f in FILES},
        "restart_seconds": round(restart, 2), "replay_seconds": round(replay, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5000, help="epochs to settle (5000)")
    parser.add_argument("--warmup", type=int, default=500,
                        help="epochs before the first RSS sample (500)")
    parser.add_argument("--every", type=int, default=250, help="epochs between samples (250)")
    parser.add_argument("--transfers", type=int, default=5, help="transfers per epoch (5)")
    parser.add_argument("--accounts", type=int, default=50, help="recipients (50)")
    parser.add_argument("--speed", type=float, default=1000.0,
                        help="how much faster than the wall clock the node's clock runs (1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=REPO,
                        help="where the temporary data dir is made (fsync cost depends on it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.epochs < args.warmup + args.every:
        parser.error("--epochs must exceed --warmup by at least --every")
    load = os.getloadavg()[0]
    if not args.json:
        print(f"ledger soak: {args.epochs} epochs, load average {load:.2f} at start")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".soak-") as directory:
        result = trio.run(soak, args, Path(directory))
    if args.json:
        print(json.dumps(result))
        return
    print(f"settled {result['epochs']} epochs at {result['epochs_per_second']}/s "
          f"({result['entries']} entries)")
    print(f"RSS: {result['baseline_rss_mib']} MiB before the ledger (baseline), "
          f"{result['warm_rss_mib']} MiB at epoch {result['warmup']}, "
          f"{result['end_rss_mib']} MiB at epoch {result['epochs']}: "
          f"{result['growth_percent']:+.2f} % ({result['slope_kib_per_epoch']:+.3f} KiB/epoch)")
    print(f"restart: {result['restart_seconds']} s taking up the archive; "
          f"{result['replay_seconds']} s settling every epoch again (baseline), "
          f"ratio {result['restart_seconds'] / max(result['replay_seconds'], 0.001):.3f}")
    for name in FILES:
        print(f"disk, {name}: {result['disk_bytes_per_epoch'][name]} bytes per epoch, "
              f"{result['disk_mib'][name]} MiB at the end")


if __name__ == "__main__":
    main()
