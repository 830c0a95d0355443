"""meshctl dht on separate meshd processes: a hub and two spokes joining through it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from mesh.node.v1 import node_pb2
from tests.e2e.harness import Meshd


def test_dht_across_processes(node: Callable[..., Meshd]) -> None:
    hub = node("hub")
    address = hub.status()["listen_addrs"][0]
    b = node("b", "--bootstrap", address)
    c = node("c", "--bootstrap", address)
    for spoke in (b, c):
        spoke.watch_until(lambda s: s.state == node_pb2.NODE_STATE_ACTIVE)
    hub.watch_until(lambda s: s.peer_count == 2 and s.state == node_pb2.NODE_STATE_ACTIVE)
    assert c.status()["state"] == "active"
    info = json.loads(hub.ctl("network", "info", "--json").stdout)
    assert info["peer_count"] == 2 and info["routing_table_size"] == 2

    b.ctl("dht", "put", "greeting", "hello mesh")
    first = c.ctl("dht", "get", "greeting")
    assert first.stdout == "hello mesh"  # the value alone; how it was found goes to stderr
    # b's put stored it at the closest peers (c among them, or the hub c knows).
    assert re.fullmatch(r"\(found locally: 0 hops\)\n|\(1 hop; \d+ peers queried, "
                        r"[1-9]\d* had the value\)\n", first.stderr), first.stderr
    got = json.loads(c.ctl("dht", "get", "greeting", "--json").stdout)
    # c kept the value its first get found: answered locally now.
    assert got == {"key": "greeting", "value": "hello mesh", "encoding": "utf-8",
                   "hops": 0, "queried_peers": 0, "peers_with_value": 0}

    b.ctl("dht", "provide", "content-1")
    providers = json.loads(c.ctl("dht", "find-providers", "content-1", "--json").stdout)
    b_id = b.status()["peer_id"]
    assert b_id in [p["peer_id"] for p in providers]

    found = json.loads(c.ctl("dht", "find-peer", b_id, "--json").stdout)
    assert found["peer_id"] == b_id and found["addrs"]

    missing = c.ctl("dht", "get", "nobody-put-this", check=False)
    assert missing.returncode == 1 and "no value" in missing.stderr
    no_value = c.ctl("dht", "put", "k", check=False)
    assert no_value.returncode == 2 and "either as VALUE or with --file" in no_value.stderr
    bad_peer = c.ctl("dht", "find-peer", "xyz", check=False)
    assert bad_peer.returncode == 1 and "not a peer ID" in bad_peer.stderr
