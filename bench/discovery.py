"""Discovery on real hosts: how soon every node has enough peers, from a cold start.

Each meshd runs in its own network namespace with its own IP on one switch
(meshd/testing/netns.py), listening on the default wildcard address, as an
operator runs it. Node 0 starts first; once it is READY the others start at
once with node 0 as their only bootstrap peer. Printed:

* baseline: seconds from the others' start until every node is READY (what
  starting that many processes costs on this machine);
* discovery: seconds from the same moment until every node has at least
  ``--min-peers`` admitted peers (issue 16's target: 30 s for 50 nodes), and
  the ratio to the baseline;
* the peer counts at that moment and the largest share of nodes connected to
  node 0 only (a star around the bootstrap node shows there).

    sudo .venv/bin/python bench/discovery.py --nodes 20
    sudo .venv/bin/python bench/discovery.py --nodes 50 --json

Needs root (network namespaces). About 1 minute for 20 nodes, 3 for 50.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cluster
import output

from meshd.testing import netns

PORT = 4001


def run(nodes: int, min_peers: int, timeout: float, workdir: Path) -> dict[str, Any]:
    with netns.open_testbed(nodes) as bed:
        genesis = cluster.make_genesis(workdir / "net", timeout)
        procs = [cluster.Node(workdir, i, genesis) for i in range(nodes)]
        listen = f"/ip4/0.0.0.0/tcp/{PORT}"
        try:
            procs[0].start(None, {}, listen=listen, wrap=bed.hosts[0].command)
            procs[0].wait_ready(time.monotonic() + timeout)
            bootstrap = procs[0].status().listen_addrs[0]
            started = time.monotonic()
            for node, host in zip(procs[1:], bed.hosts[1:], strict=True):
                node.start(bootstrap, {}, listen=listen, wrap=host.command)
            for node in procs[1:]:
                node.wait_ready(started + timeout)
            ready = time.monotonic() - started
            counts: list[int] = []

            def enough() -> bool:
                counts[:] = [node.status().peer_count for node in procs]
                return min(counts) >= min_peers

            converged = cluster.wait_until(enough, timeout - ready, interval=0.25)
            discovery = time.monotonic() - started if converged else None
            addresses = [a for node in procs for a in node.status().listen_addrs]
        finally:
            for node in procs:
                node.stop()
            for node in procs:
                if node.proc is not None and node.proc.poll() is None:
                    node.proc.wait(cluster.STOP_TIMEOUT)
                node.notify.close()
    return {
        "nodes": nodes, "min_peers": min_peers,
        "ready_seconds": round(ready, 2),
        "discovery_seconds": None if discovery is None else round(discovery, 2),
        "ratio": None if discovery is None else round(discovery / ready, 2),
        "peer_counts": {"min": min(counts), "median": statistics.median(counts),
                        "max": max(counts)},
        "unspecified_addresses": sum("/0.0.0.0/" in a or "/::/" in a for a in addresses),
    }


def print_table(result: dict[str, Any]) -> None:
    found = result["discovery_seconds"]
    print(f"{result['nodes']} nodes in network namespaces, one bootstrap, wildcard listeners")
    print(f"baseline: every node READY after {result['ready_seconds']} s")
    if found is None:
        print(f"discovery: NOT every node reached {result['min_peers']} peers in time")
    else:
        print(f"discovery: every node has >= {result['min_peers']} peers after {found} s "
              f"(ratio to the baseline {result['ratio']})")
    counts = result["peer_counts"]
    print(f"peers per node then: min {counts['min']}, median {counts['median']}, "
          f"max {counts['max']}; unspecified addresses shown: "
          f"{result['unspecified_addresses']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--min-peers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds for everything after node 0 is ready")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if not 2 <= args.nodes <= 150 or not 1 <= args.min_peers < args.nodes:
        parser.error("need 2 <= --nodes <= 150 and 1 <= --min-peers < --nodes")
    try:
        with tempfile.TemporaryDirectory(prefix="mesh-bench-discovery-") as tmp:
            result = run(args.nodes, args.min_peers, args.timeout, Path(tmp))
    except netns.TestbedUnavailable as exc:
        print(f"discovery: {exc}", file=sys.stderr)
        sys.exit(2)
    output.emit(result, args.json, print_table)
    if result["discovery_seconds"] is None:
        sys.exit(1)


if __name__ == "__main__":
    main()
