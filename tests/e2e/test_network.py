"""Networks of several meshd processes: bootstrap, joining, watching status."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import MESHCTL, Meshd, free_port, meshctl


def test_bootstrap_node_and_joiner(node: Callable[..., Meshd], network_id: str) -> None:
    port = free_port()
    boot = node("boot", "--port", str(port), command="bootstrap", loopback=False)
    status = boot.status()
    assert status["role"] == "bootstrap"
    assert any(f"/tcp/{port}/p2p/" in a for a in status["listen_addrs"])
    address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{status['peer_id']}"

    joiner = node("joiner", "--bootstrap", address)
    watch = subprocess.Popen([MESHCTL, "--socket", str(joiner.socket), "status", "--watch",
                              "--json"], stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        states = []
        for line in watch.stdout:  # one JSON object per status change
            states.append(json.loads(line)["state"])
            if states[-1] in ("connected", "active"):  # active follows within ms
                break
    finally:
        watch.terminate()
        watch.wait(10)
    assert states[0] in ("connecting", "connected", "active")
    assert states[-1] in ("connected", "active")
    assert joiner.status()["network_id"] == network_id
    info = json.loads(boot.ctl("network", "info", "--json").stdout)
    assert info["network_id"] == network_id and info["peer_count"] == 1
    assert info["genesis"]["bootstrap_port"] == 8080


def test_bootstrap_defaults_to_the_genesis_port(node: Callable[..., Meshd],
                                                tmp_path: Path) -> None:
    port = free_port()
    meshctl("network", "init", "--allow-no-validators",
            "--name", "PortNet", "--token-name", "P", "--token-symbol", "PN",
            "--bootstrap-port", str(port), "--out", str(tmp_path / "portnet"))
    # Given through the environment, not --genesis: the port must still come from it.
    boot = node("boot", genesis_file=None, command="bootstrap", loopback=False,
                env={"MESHD_NODE_GENESIS": str(tmp_path / "portnet" / "genesis.toml")})
    assert any(f"/tcp/{port}/p2p/" in a for a in boot.status()["listen_addrs"])


def test_a_bootstrap_node_can_be_kept_on_one_interface(node: Callable[..., Meshd]) -> None:
    port = free_port()
    boot = node("boot", "--listen", f"/ip4/127.0.0.1/tcp/{port}",
                "--listen", f"/ip4/127.0.0.1/tcp/{port}/ws", command="bootstrap", loopback=False)
    addrs = boot.status()["listen_addrs"]
    assert addrs and all(a.startswith("/ip4/127.0.0.1/") for a in addrs), addrs
    assert any(f"/tcp/{port}/ws/p2p/" in a for a in addrs), addrs
    both = node("both", "--port", str(port), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
                command="bootstrap", loopback=False, start=False)
    both.start(wait=False)
    assert both.wait_exit() == 2
    assert "--port or --listen" in both.log()
