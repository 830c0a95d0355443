"""A restarted node rejoins the network from its known peers, bootstrap gone."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.e2e.harness import Meshd, free_port


def test_rejoin_without_bootstrap_after_restart(node: Callable[..., Meshd]) -> None:
    boot = node("boot")
    address = boot.status()["listen_addrs"][0]
    # Fixed ports: the addresses the nodes remember must still be theirs after a restart.
    ports = {name: free_port() for name in ("b", "c")}

    def start(name: str, *extra: str) -> Meshd:
        return node(name, "--listen", f"/ip4/127.0.0.1/tcp/{ports[name]}", *extra,
                    loopback=False)

    b = start("b", "--bootstrap", address)
    c = start("c", "--bootstrap", address)
    # Peer exchange through the bootstrap node makes b and c connect directly.
    c_id = c.status()["peer_id"]
    b.watch_until(lambda s: s.peer_count == 2)
    assert c_id in [p["peer_id"] for p in json.loads(b.ctl("peers", "ls", "--json").stdout)]
    for process in (b, c, boot):
        assert process.stop()[0] == 0
    known = json.loads((b.data_dir / "peers.json").read_text())
    assert c_id in [p["peer_id"] for p in known["peers"]]

    # Restart b and c without any bootstrap, the bootstrap node down: they meet again.
    b2, c2 = start("b"), start("c")
    b2.watch_until(lambda s: s.peer_count == 1)
    assert [p["peer_id"] for p in json.loads(b2.ctl("peers", "ls", "--json").stdout)] == [c_id]
    assert c2.status()["peer_count"] == 1
