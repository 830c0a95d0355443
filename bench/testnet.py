"""Benchmark: a founder's first minutes with ``meshctl testnet up``.

Times, on a fresh directory, ``meshctl testnet up -n N`` (identities, genesis,
N ``meshd run`` processes on 127.0.0.1, until every node has a peer), then
until every node sees an epoch final with rewards minted, and sums the nodes'
RSS then. Baseline, in the same run: ``testnet up -n 1`` (one node, no peer to
wait for), and its own time to the first minted reward. Epochs of
``--epoch-seconds`` (10, as ``make run``): the first reward cannot come before
the end of epoch 0, so the time to it is bounded below by the epoch.

Run from the repository root: ``.venv/bin/python bench/testnet.py [--nodes 20] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import output

BIN = Path(sys.executable).parent
TIMEOUT = 180.0


def meshctl(*args: str) -> dict[str, Any]:
    result = subprocess.run([str(BIN / "meshctl"), "--json", *args], capture_output=True,
                            text=True, timeout=TIMEOUT)
    if result.returncode not in (0, 1):  # status exits 1 while a node is down
        raise RuntimeError(f"meshctl {' '.join(args)}: {result.stderr.strip()}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(nodes: int, epoch_seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mesh-testnet-") as tmp:
        directory = str(Path(tmp) / "testnet")
        started = time.monotonic()
        up = meshctl("testnet", "up", "-n", str(nodes), "--dir", directory,
                     "--epoch-seconds", str(epoch_seconds))
        up_seconds = time.monotonic() - started
        try:
            while True:
                status = meshctl("testnet", "status", "--dir", directory)
                if all(int(n.get("minted_total", "0")) > 0 for n in status["nodes"]):
                    break
                if time.monotonic() - started > TIMEOUT:
                    raise RuntimeError(f"no reward minted on every node within {TIMEOUT:g} s")
                time.sleep(0.5)
            minted_seconds = time.monotonic() - started
            rss = [rss_mib(n["pid"]) for n in up["nodes"]]
        finally:
            meshctl("testnet", "down", "--dir", directory)
    return {"nodes": nodes, "up_seconds": up_seconds, "first_reward_seconds": minted_seconds,
            "rss_total_mib": sum(rss), "rss_median_mib": sorted(rss)[len(rss) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20, help="testnet size (2-50)")
    parser.add_argument("--epoch-seconds", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    baseline = one_run(1, args.epoch_seconds)
    subject = one_run(args.nodes, args.epoch_seconds)
    results = {"load_average_before": load, "epoch_seconds": args.epoch_seconds,
               "baseline": baseline, "testnet": subject,
               "ratio_up": subject["up_seconds"] / baseline["up_seconds"],
               "ratio_first_reward": subject["first_reward_seconds"]
               / baseline["first_reward_seconds"]}

    def table(r: dict[str, Any]) -> None:
        print(f"meshctl testnet up, epochs of {r['epoch_seconds']} s "
              f"(load average before: {r['load_average_before']:.2f})")
        print(f"{'nodes':>5} {'up (all have a peer)':>21} {'first reward on all':>20} "
              f"{'RSS total':>10} {'RSS median':>11}")
        for row in (r["baseline"], r["testnet"]):
            print(f"{row['nodes']:>5} {row['up_seconds']:>19.1f} s "
                  f"{row['first_reward_seconds']:>18.1f} s {row['rss_total_mib']:>6.0f} MiB "
                  f"{row['rss_median_mib']:>7.0f} MiB")
        print(f"ratio {r['testnet']['nodes']} nodes / 1 node: up {r['ratio_up']:.1f}, "
              f"first reward {r['ratio_first_reward']:.2f}")

    output.emit(results, args.json, table)


if __name__ == "__main__":
    main()
