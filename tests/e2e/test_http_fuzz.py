"""schemathesis against a real node's gateway, from its OpenAPI document: no 5xx, no crash.

The node runs in a network namespace (a test-bed host: nothing the fuzzer makes
it dial, ConnectPeer's random addresses included, leaves the namespaces), with a
peer on a third host, serving the gateway over TLS on the test bed; the fuzzer runs on another host
of the test bed with the token. ``make test`` sends up to 60 cases per
operation (30 valid, 30 broken), ``make soak`` up to 1,600 (at least 1,000).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meshd.testing import eventually_blocking, netns
from tests.e2e.harness import Meshd
from tests.e2e.test_api_access import self_signed
from tests.properties import PROFILE

ROOT = Path(__file__).resolve().parents[2]


# ~45 s alone on 2 cores; make soak's 1,000-1,600 cases per operation take ~15 minutes.
@pytest.mark.timeout(3600 if PROFILE == "soak" else 600)
def test_the_gateway_survives_schemathesis_with_clear_errors(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    # make soak: at least 1,000 cases per operation (the broken ones alone).
    valid, broken = (600, 1000) if PROFILE == "soak" else (30, 30)
    with netns.open_testbed(3) as bed:
        server, client, other = bed.hosts
        cert, key = self_signed(tmp_path, server.ip)
        config = tmp_path / "meshd.toml"
        config.write_text(f'[api]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
        daemon = node("n1", "--config", str(config), "--listen", f"/ip4/{server.ip}/tcp/4001",
                      "--http-listen", f"{server.ip}:8443", loopback=False, host=server)
        # A peer: the DHT and pubsub calls have someone to reach.
        node("n2", "--listen", f"/ip4/{other.ip}/tcp/4001", "--bootstrap",
             f"/ip4/{server.ip}/tcp/4001/p2p/{daemon.status()['peer_id']}", loopback=False,
             host=other)
        eventually_blocking(daemon.status, lambda s: s["peer_count"] == 1,
                            what="the two nodes to connect")
        url = f"https://{server.ip}:8443/"
        fuzz = subprocess.run(
            client.command([sys.executable, "-m", "tests.e2e.gateway_fuzz", url, str(cert),
                            str(daemon.data_dir / "api.token"), str(valid), str(broken)]),
            capture_output=True, text=True, timeout=3600, cwd=ROOT)
        assert fuzz.returncode == 0, fuzz.stderr[-3000:]
        report = json.loads(fuzz.stdout)
        assert report["failure_count"] == 0, json.dumps(report["failures"][:5], indent=1)
        per_operation = sorted(report["cases"].values())
        print(json.dumps({"statuses": report["statuses"], "cases": sum(per_operation),
                          "operations": len(per_operation), "fewest": per_operation[0],
                          "median": per_operation[len(per_operation) // 2]}))
        # Every operation of the document: every method by POST, every read by GET too.
        assert len(report["operations"]) >= 75  # 46 methods, 29 of them reads
        assert set(report["cases"]) == set(report["operations"]), \
            set(report["operations"]) - set(report["cases"])
        assert min(report["cases"].values()) >= broken
        # It did reach the servicers: answers, and refusals of each kind.
        assert {"200", "400", "404"} <= set(report["statuses"]), report["statuses"]
        assert daemon.status()["peer_id"]  # still serving
        log = daemon.log()
        at = log.find("Traceback")
        assert at < 0, log[at + 2500:at + 5000]
