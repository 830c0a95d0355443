"""Networks on real hosts (network namespaces, meshd.testing.netns): issue 16.

Every node listens on the default wildcard address, as an operator runs it.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshd.testing.netns import Testbed, open_testbed
from tests.e2e.harness import Meshd, identity

NODES = 8
PORT = 4001
CONVERGE_SECONDS = 30
MIN_PEERS = 4


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with open_testbed(NODES) as testbed:
        yield testbed


def unspecified(address: str) -> bool:
    parts = address.split("/")
    return len(parts) > 2 and parts[1] in ("ip4", "ip6") \
        and ipaddress.ip_address(parts[2]).is_unspecified


def test_nodes_on_wildcard_listeners_meet_each_other_not_only_the_bootstrap(
        bed: Testbed, tmp_path: Path, genesis: Path) -> None:
    boot_id = identity(tmp_path / "boot")
    boot_address = f"/ip4/{bed.hosts[0].ip}/tcp/{PORT}/p2p/{boot_id}"
    nodes = [Meshd(tmp_path, "boot", genesis, "--port", str(PORT), command="bootstrap",
                   host=bed.hosts[0])]
    nodes += [Meshd(tmp_path, f"n{i}", genesis, "--bootstrap", boot_address, host=host)
              for i, host in enumerate(bed.hosts[1:], start=1)]
    try:
        for node in nodes:
            node.start()
        started = time.monotonic()
        while True:
            statuses = [node.status() for node in nodes]
            counts = [s["peer_count"] for s in statuses]
            if min(counts) >= MIN_PEERS:
                print(f"converged after {time.monotonic() - started:.1f} s: {counts}")
                break
            assert time.monotonic() - started < CONVERGE_SECONDS, \
                f"peers per node after {CONVERGE_SECONDS} s: {counts}"
            time.sleep(0.5)
        for host, status in zip(bed.hosts, statuses, strict=True):
            addrs = status["listen_addrs"]
            assert addrs[0] == f"/ip4/{host.ip}/tcp/{PORT}/p2p/{status['peer_id']}", addrs
            assert not any(unspecified(a) for a in addrs), addrs
        assert statuses[0]["listen_addrs"][0] == boot_address
    finally:
        for node in nodes:
            node.stop()
    for node in nodes:  # what identify and peer exchange taught each node, saved at exit
        book = json.loads((node.data_dir / "peers.json").read_text())["peers"]
        learned = [a for entry in book for a in entry["addrs"]]
        assert learned and not any(unspecified(a) for a in learned)
        assert all(a.startswith("/ip4/10.231.") for a in learned), learned
