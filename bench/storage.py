"""Benchmark: storing and getting a file over meshd processes, repair time, audit detection.

* **Put/get throughput.** ``--nodes`` meshd processes on loopback (default 10:
  the uploader, n=8 holders and a spare), the storage plugin required. The
  uploader's ``meshctl storage put`` of ``--mib`` MiB of random bytes, coded
  k-of-n (default 4-of-8), then ``meshctl storage get`` of it on another node;
  each timed from meshctl's start to its exit, in MB/s of the file (10^6
  bytes). The baseline, in the same run: ``bench/p2p_stream.py`` copying the
  same number of bytes over one libp2p stream between two processes.
  Goal (the storage issue): put and get >= 0.5x the stream.
* **Time to full redundancy.** In a second network whose nodes run with
  ``repair_every = 1`` and ``repair_grace = 5``, a ``--repair-mib`` MiB file
  is stored and one of its holders SIGKILLed; timed until ``storage status``
  on another node shows every stripe back at the repair threshold, then
  with n live pieces: detection plus rebuilding. In operation, add the
  grace (default 3600 s).
* **Audit detection.** A holder missing a fraction p of its segments, audited
  N times (a random segment of a random piece each time, through the plugin's
  own ``audit.answer`` and ``audit.check``): the share of ``--trials`` trials
  that caught it, against 1 - (1 - p)^N.

Run from the repository root: ``.venv/bin/python bench/storage.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cluster
import output
from mesh_storage import merkle
from mesh_storage.audit import AuditError, answer, check

MIB = 1 << 20
GOAL = 0.5
CONFIG = "[plugins.settings.storage]\nrepair_every = 1\nrepair_grace = 5\n"


def ctl(node: cluster.Node, *args: str, timeout: float = 600) -> Any:
    result = subprocess.run([str(cluster.BIN / "meshctl"), "--socket", str(node.socket),
                             *args, "--json"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"meshctl {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def timed(node: cluster.Node, *args: str) -> tuple[Any, float]:
    started = time.monotonic()
    result = ctl(node, *args)
    return result, time.monotonic() - started


def stream_baseline(mib: int) -> float:
    """MB/s of one libp2p stream copying ``mib`` MiB (bench/p2p_stream.py, one round)."""
    script = Path(__file__).with_name("p2p_stream.py")
    result = subprocess.run([sys.executable, str(script), "--mib", str(mib), "--rounds", "1",
                             "--connections", "2", "--json"], capture_output=True, text=True,
                            timeout=600, check=True)
    return float(json.loads(result.stdout)["throughput"]["libp2p"]["mb_s"])


def transfer_figures(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Put on node 0 and get on node 1, the nodes on their default settings."""
    workdir.mkdir()
    original = workdir / "file.bin"
    original.write_bytes(os.urandom(args.mib * MIB))
    megabytes = args.mib * MIB / 1e6
    with cluster.running_nodes(workdir, args.nodes, 60,
                               genesis_args=lambda ids: ["--plugin", "storage"]) as nodes:
        uploader, reader = nodes[0], nodes[1]
        all_announced(uploader, args.nodes)
        put, put_s = timed(uploader, "storage", "put", str(original), "-k", str(args.k),
                           "-n", str(args.n))
        copy = workdir / "copy.bin"
        _, get_s = timed(reader, "storage", "get", put["cid"], "-o", str(copy))
        if copy.read_bytes() != original.read_bytes():
            raise RuntimeError("the file came back different")
    return {"put_mb_s": round(megabytes / put_s, 2), "get_mb_s": round(megabytes / get_s, 2),
            "put_seconds": round(put_s, 1), "get_seconds": round(get_s, 1),
            "stripes": put["stripes"]}


def repair_seconds(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """SIGKILL enough holders of a ``--repair-mib`` MiB file to bring its stripes below the
    repair threshold; seconds until every stripe is back at the threshold (out of danger)
    and until every stripe is n/n, and the live pieces per stripe at the end."""
    workdir.mkdir()
    config = workdir / "storage.toml"
    config.write_text(CONFIG)
    original = workdir / "repair.bin"
    original.write_bytes(os.urandom(args.repair_mib * MIB))
    threshold = args.k + -(-(args.n - args.k) // 2)  # mesh_storage.repair.threshold
    victims = args.n - threshold + 1
    count = 1 + args.n + victims  # the uploader, the holders, a spare for each victim
    with cluster.running_nodes(workdir, count, 60, env={"MESHD_CONFIG": str(config)},
                               genesis_args=lambda ids: ["--plugin", "storage"]) as nodes:
        uploader, reader = nodes[0], nodes[1]
        all_announced(uploader, count)
        cid = ctl(uploader, "storage", "put", str(original), "-k", str(args.k), "-n",
                  str(args.n))["cid"]
        status = ctl(reader, "storage", "status", cid)
        held = {h for s in status["stripes"] for p in s["pieces"] for h in p["holders"]}
        by_id = {n.status().peer_id: n for n in nodes}
        for victim in sorted(held - {reader.status().peer_id})[:victims]:
            by_id[victim].sigkill()
        died = time.monotonic()
        live: list[int] = []

        def at_least(pieces: int) -> bool:
            live[:] = [s["healthy"] for s in ctl(reader, "storage", "status", cid)["stripes"]]
            return min(live) >= pieces

        safe = cluster.wait_until(lambda: at_least(threshold), args.repair_timeout, 0.5)
        safe_s = time.monotonic() - died
        full = cluster.wait_until(lambda: at_least(args.n), args.repair_timeout, 0.5)
        full_s = time.monotonic() - died
    return {"killed": victims, "threshold": threshold,
            "safe_seconds": round(safe_s, 1) if safe else None,
            "full_seconds": round(full_s, 1) if full else None, "live_at_end": live}


def all_announced(node: cluster.Node, nodes: int) -> None:
    if not cluster.wait_until(lambda: len(ctl(node, "storage", "holders")) >= nodes - 1,
                              60, 0.5):
        raise RuntimeError("not every node announced itself as a holder")


def detection(p: float, audits: int, trials: int, rng: random.Random) -> float:
    """Share of ``trials`` in which ``audits`` audits caught a holder missing ``p`` of its
    segments (20 pieces of 16 segments; a missing segment is answered with zeros)."""
    segment, pieces, per_piece = 1024, 20, 16
    data = [rng.randbytes(segment * per_piece) for _ in range(pieces)]
    roots = [merkle.root(d, segment) for d in data]
    caught = 0
    for _ in range(trials):
        missing = set(rng.sample(range(pieces * per_piece), round(p * pieces * per_piece)))
        for _ in range(audits):
            piece, index = rng.randrange(pieces), rng.randrange(per_piece)
            kept = data[piece]
            if piece * per_piece + index in missing:  # it answers with what it has: nothing
                start = index * segment
                kept = kept[:start] + bytes(segment) + kept[start + segment:]
            try:
                check(answer(kept, index, segment), roots[piece], index, per_piece)
            except AuditError:
                caught += 1
                break
    return caught / trials


def table(results: dict[str, Any]) -> None:
    net = results["network"]
    print(f"{results['mib']} MiB file, k={results['k']} n={results['n']}, "
          f"{results['nodes']} meshd processes on loopback ({net['stripes']} stripes)")
    print(f"one libp2p stream (baseline)   {results['stream_mb_s']:>8.1f} MB/s")
    print(f"storage put                    {net['put_mb_s']:>8.2f} MB/s  ({net['put_seconds']} s;"
          f" ratio {results['put_ratio']}, goal >= {GOAL})")
    print(f"storage get                    {net['get_mb_s']:>8.2f} MB/s  ({net['get_seconds']} s;"
          f" ratio {results['get_ratio']}, goal >= {GOAL})")
    repair = net["repair"]
    print(f"repair, {repair['killed']} holders of a {results['repair_mib']} MiB file killed "
          "(5 s grace included, checks every second):")
    print(f"  every stripe back at the threshold ({repair['threshold']}): "
          f"{repair['safe_seconds']} s; every stripe n/n: {repair['full_seconds']} s")
    print(f"  live pieces per stripe at the end: {repair['live_at_end']}")
    print("audit detection: p, audits N -> measured vs 1-(1-p)^N "
          f"({results['trials']} trials each)")
    for row in results["detection"]:
        print(f"  p={row['p']:<5} N={row['audits']:<3} {row['measured']:.3f} vs "
              f"{row['formula']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--repair-mib", type=int, default=16)
    parser.add_argument("--repair-timeout", type=float, default=180)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(7)
    rows = [{"p": p, "audits": n, "measured": round(detection(p, n, args.trials, rng), 3),
             "formula": round(1 - (1 - p) ** n, 3)}
            for p in (0.01, 0.1) for n in (1, 10, 50)]
    stream = stream_baseline(args.mib)
    with tempfile.TemporaryDirectory(prefix="mesh-bench-storage-") as tmp:
        network = transfer_figures(args, Path(tmp) / "transfer")
    with tempfile.TemporaryDirectory(prefix="mesh-bench-storage-") as tmp:
        network["repair"] = repair_seconds(args, Path(tmp) / "repair")
    results = {"mib": args.mib, "k": args.k, "n": args.n, "nodes": args.nodes,
               "load_average": os.getloadavg()[0], "stream_mb_s": round(stream, 1),
               "network": network, "put_ratio": round(network["put_mb_s"] / stream, 4),
               "get_ratio": round(network["get_mb_s"] / stream, 4),
               "trials": args.trials, "detection": rows, "repair_mib": args.repair_mib}
    output.emit(results, args.json, table)


if __name__ == "__main__":
    main()
