"""Behind NAT: relayed vs direct requests, and how often hole punching works.

Real hosts (meshd/testing/netns.py): one public host runs the relay (node 0);
three hosts sit behind NAT routers: two home routers (endpoint-independent
mapping: hole punching can work) and one carrier-grade NAT (symmetric: it
cannot). Each NAT'd node keeps one peer of its own (the relay), so others
reach it through the relay first. Printed:

* ping round trips (median, p90) and the throughput of fetching one file
  (``storage get``), from ``home`` to ``carrier`` (through the relay: the
  punch fails behind a symmetric NAT) and to ``home2`` (direct: punched
  through both home routers), and the ratio relayed / direct (the baseline);
* the hole-punch success rate over ``--tries`` fresh relayed connections
  between the two home routers (``home2`` restarts, reaches ``home`` through
  the relay, ``home`` punches).

    sudo .venv/bin/python bench/nat.py
    sudo .venv/bin/python bench/nat.py --tries 20 --file-mib 8 --json

Needs root (network namespaces) and nftables. About 3 minutes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cluster
import output

from meshd.testing import netns

PORT = 4001
CHUNK = 512 * 1024  # the storage plugin's largest chunk (STORE_FILE)
LONELY = {"MESHD_P2P_LOW_WATERMARK": "1", "MESHD_P2P_TARGET_PEERS": "1"}


def ctl(node: cluster.Node, *args: str, timeout: float = 120) -> Any:
    result = subprocess.run([str(cluster.BIN / "meshctl"), "--socket", str(node.socket),
                             "--timeout", str(timeout), *args, "--json"],
                            capture_output=True, text=True, timeout=timeout + 10)
    if result.returncode != 0:
        raise RuntimeError(f"meshctl {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout) if result.stdout.strip() else None


def relay_address(node: cluster.Node) -> str | None:
    return next((a for a in node.status().listen_addrs if "/p2p-circuit/" in a), None)


def connection(node: cluster.Node, peer_id: str) -> str:
    """"relayed", "direct" or "none": ``node``'s connection to ``peer_id``."""
    for peer in ctl(node, "peers", "ls"):
        if peer["peer_id"] == peer_id:
            return "relayed" if "/p2p-circuit" in peer["addrs"][0] else "direct"
    return "none"


def settle(node: cluster.Node, peer_id: str, timeout: float) -> str:
    """Wait until the punch on a relayed connection is decided."""
    cluster.wait_until(lambda: connection(node, peer_id) == "direct", timeout, interval=0.5)
    return connection(node, peer_id)


def pings(node: cluster.Node, peer_id: str, count: int) -> dict[str, float]:
    rtts = sorted(ctl(node, "peers", "ping", peer_id, "-c", str(count))["rtt_ms"])
    return {"median_ms": round(statistics.median(rtts), 2),
            "p90_ms": round(cluster.quantile(rtts, 0.9), 2)}


def fetch(node: cluster.Node, holder: cluster.Node, path: Path) -> float:
    """MiB/s of ``node`` fetching ``path``, kept by ``holder`` alone: chunk by chunk
    (the storage plugin's STORE_FILE and RETRIEVE_FILE), over whatever path
    connects the two (direct, punched or relayed)."""
    data = path.read_bytes()
    names = []
    for start in range(0, len(data), CHUNK):
        chunk = path.with_suffix(".chunk")
        chunk.write_bytes(data[start:start + CHUNK])
        answer = ctl(holder, "plugins", "call", "storage", "STORE_FILE", "--file", str(chunk))
        names.append(base64.b64decode(answer["answer_base64"]).decode())
    holder_id = holder.status().peer_id
    out = path.with_suffix(f".from-{holder.index}")
    started = time.monotonic()
    with out.open("wb") as sink:
        for name in names:
            part = path.with_suffix(".part")
            ctl(node, "plugins", "call", "storage", "RETRIEVE_FILE", name, "--peer", holder_id,
                "--call-timeout", "60", "-o", str(part))
            sink.write(part.read_bytes())
    elapsed = time.monotonic() - started
    assert out.read_bytes() == data
    return round(len(data) / elapsed / (1 << 20), 2)


def run(tries: int, file_mib: int, pings_count: int, workdir: Path) -> dict[str, Any]:
    with netns.open_testbed(1, nat=[netns.Nat.ENDPOINT_INDEPENDENT,
                                    netns.Nat.ENDPOINT_INDEPENDENT, netns.Nat.SYMMETRIC]) as bed:
        genesis = cluster.make_genesis(workdir / "net", 60, ["--plugin", "storage"])
        hosts = [bed.hosts[0], *(site.hosts[0] for site in bed.sites)]
        nodes = [cluster.Node(workdir, i, genesis) for i in range(len(hosts))]
        relay, home, home2, carrier = nodes
        listen = f"/ip4/0.0.0.0/tcp/{PORT}"
        try:
            relay.start(None, {}, "info", listen=listen, wrap=hosts[0].command)
            relay.wait_ready(time.monotonic() + 60)
            bootstrap = relay.status().listen_addrs[0]
            for node, host in zip(nodes[1:], hosts[1:], strict=True):
                node.start(bootstrap, LONELY, "info", listen=listen, wrap=host.command)
                node.wait_ready(time.monotonic() + 60)
            ids = {node.index: node.status().peer_id for node in nodes}
            circuits: dict[int, str] = {}
            for node in nodes[1:]:
                if not cluster.wait_until(lambda n=node: relay_address(n) is not None, 60):
                    raise node.failure("got no relay address")
                circuits[node.index] = relay_address(node) or ""

            ctl(home, "peers", "connect", circuits[carrier.index])
            ctl(home, "peers", "connect", circuits[home2.index])
            kinds = {"relayed": settle(home, ids[carrier.index], 30),
                     "direct": settle(home, ids[home2.index], 30)}
            if kinds != {"relayed": "relayed", "direct": "direct"}:
                raise RuntimeError(f"expected one relayed and one direct connection: {kinds}")
            payload = workdir / "payload.bin"
            payload.write_bytes(os.urandom(file_mib << 20))
            measured = {
                "relayed": {**pings(home, ids[carrier.index], pings_count),
                            "mib_per_s": fetch(home, carrier, payload)},
                "direct": {**pings(home, ids[home2.index], pings_count),
                           "mib_per_s": fetch(home, home2, payload)},
            }

            punched = 0
            for _ in range(tries):
                home2.stop()
                assert home2.proc is not None
                home2.proc.wait(cluster.STOP_TIMEOUT)
                home2.start(bootstrap, LONELY, "info", listen=listen, wrap=hosts[2].command)
                home2.wait_ready(time.monotonic() + 60)
                ctl(home2, "peers", "connect", circuits[home.index])
                punched += settle(home2, ids[home.index], 30) == "direct"
        finally:
            for node in nodes:
                node.stop()
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.proc.wait(cluster.STOP_TIMEOUT)
                node.notify.close()
    relayed, direct = measured["relayed"], measured["direct"]
    return {
        "file_mib": file_mib, "pings": pings_count, **measured,
        "ratio_relayed_to_direct": {
            "median_rtt": round(relayed["median_ms"] / direct["median_ms"], 2),
            "throughput": round(relayed["mib_per_s"] / direct["mib_per_s"], 2)},
        "hole_punch": {"tries": tries, "direct": punched,
                       "success_rate": round(punched / tries, 2) if tries else None},
    }


def print_table(result: dict[str, Any]) -> None:
    print("home (behind a home router) to carrier (symmetric NAT, relayed) and to home2 "
          "(home router, hole punched)")
    fetched = f"get {result['file_mib']} MiB"
    print(f"{'':10} {'median RTT':>11} {'p90 RTT':>9} {fetched:>13}")
    for kind in ("relayed", "direct"):
        row = result[kind]
        print(f"{kind:10} {row['median_ms']:>8.2f} ms {row['p90_ms']:>6.2f} ms "
              f"{row['mib_per_s']:>7.2f} MiB/s")
    ratio = result["ratio_relayed_to_direct"]
    print(f"ratio relayed / direct: RTT {ratio['median_rtt']}, throughput {ratio['throughput']}")
    punch = result["hole_punch"]
    print(f"hole punching between two home routers: {punch['direct']} of {punch['tries']} "
          f"relayed connections became direct ({punch['success_rate']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20, help="hole punches to try")
    parser.add_argument("--file-mib", type=int, default=8)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if not 0 <= args.tries <= 200 or not 1 <= args.file_mib <= 60 \
            or not 1 <= args.pings <= 100:
        parser.error("need 0 <= --tries <= 200, 1 <= --file-mib <= 60, 1 <= --pings <= 100")
    try:
        with tempfile.TemporaryDirectory(prefix="mesh-bench-nat-") as tmp:
            result = run(args.tries, args.file_mib, args.pings, Path(tmp))
    except netns.TestbedUnavailable as exc:
        print(f"nat: {exc}", file=sys.stderr)
        sys.exit(2)
    output.emit(result, args.json, print_table)


if __name__ == "__main__":
    main()
