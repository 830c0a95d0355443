"""meshctl peers on separate meshd processes, with a node of another network."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import Meshd, meshctl


def peers_of(node: Meshd) -> list[str]:
    return [p["peer_id"] for p in json.loads(node.ctl("peers", "ls", "--json").stdout)]


def test_connect_list_ping_disconnect(node: Callable[..., Meshd]) -> None:
    n1, n2 = node("n1"), node("n2")
    address = n1.status()["listen_addrs"][0]
    connected = json.loads(n2.ctl("peers", "connect", address, "--json").stdout)
    assert connected["peer_id"] == n1.status()["peer_id"]
    assert connected["direction"] == "outbound" and connected["agent"].startswith("meshd/")
    assert abs(connected["clock_offset_ms"]) < 2000  # one machine: one clock, plus the delay
    n1.watch_until(lambda s: s.peer_count == 1)
    assert peers_of(n1) == [n2.status()["peer_id"]]
    assert n1.status()["state"] in ("connected", "active")

    ping = json.loads(n2.ctl("peers", "ping", connected["peer_id"], "-c", "3", "--json").stdout)
    assert len(ping["rtt_ms"]) == 3 and all(0 < ms < 1000 for ms in ping["rtt_ms"])
    assert "min/avg/max" in n2.ctl("peers", "ping", connected["peer_id"], "-c", "1").stdout

    n2.ctl("peers", "disconnect", connected["peer_id"])
    n1.watch_until(lambda s: s.peer_count == 0)
    # n1's DHT may redial n2; n2 refuses it during its cooldown, so neither admits.
    assert peers_of(n1) == peers_of(n2) == []
    assert n1.status()["peer_count"] == n2.status()["peer_count"] == 0


def test_a_node_of_another_network_is_refused(node: Callable[..., Meshd],
                                               tmp_path: Path) -> None:
    meshctl("network", "init", "--allow-no-validators",
            "--name", "Other", "--token-name", "O", "--token-symbol", "OT",
            "--out", str(tmp_path / "other"))
    ours = node("ours")
    foreign = node("foreign", genesis_file=tmp_path / "other" / "genesis.toml")
    refused = foreign.ctl("peers", "connect", ours.status()["listen_addrs"][0], check=False)
    assert refused.returncode == 1
    assert "refused" in refused.stderr and "on network net_" in refused.stderr
    assert peers_of(ours) == [] and peers_of(foreign) == []
    assert ours.status()["peer_count"] == 0
    assert "peer refused" in ours.log()


def test_bad_peer_input(node: Callable[..., Meshd]) -> None:
    n1 = node("n1")
    bad = n1.ctl("peers", "connect", "not-an-address", check=False)
    assert bad.returncode == 1 and "not a multiaddr" in bad.stderr
    unknown = n1.ctl("peers", "ping", "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS",
                     check=False)
    assert unknown.returncode == 1 and "not connected" in unknown.stderr
    stranger = n1.ctl("peers", "disconnect",
                      "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS", check=False)
    assert stranger.returncode == 1 and "not connected" in stranger.stderr
    garbage = n1.ctl("peers", "disconnect", "xyz", check=False)
    assert garbage.returncode == 1 and "not a peer ID" in garbage.stderr


def test_peers_watch_and_events_show_joins_and_leaves_as_they_happen(
        node: Callable[..., Meshd]) -> None:
    import subprocess

    from tests.e2e.harness import MESHCTL

    n1, n2, n3 = node("n1"), node("n2"), node("n3")
    address = n1.status()["listen_addrs"][0]
    n2.ctl("peers", "connect", address)
    n1.watch_until(lambda s: s.peer_count == 1)
    id2, id3 = n2.status()["peer_id"], n3.status()["peer_id"]

    def watcher(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([MESHCTL, "--socket", str(n1.socket), "--json", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def next_event(process: subprocess.Popen[str]) -> dict[str, object]:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        event: dict[str, object] = json.loads(line)
        return event

    watch = watcher("peers", "watch", "-n", "4")
    merged = watcher("events", "--kind", "peer", "-n", "2")
    try:
        # The member already there comes first: both streams are live from here.
        first = next_event(watch)
        assert (first["kind"], first["peer_id"], first["present"]) == ("joined", id2, True)
        assert next_event(merged) == {"kind": "peer", "event": first}
        # Then what happens after the client subscribed, in order.
        n3.ctl("peers", "connect", address)
        joined = next_event(watch)
        assert (joined["kind"], joined["peer_id"], joined["present"]) == ("joined", id3, False)
        assert joined["direction"] == "inbound" and str(joined["agent"]).startswith("meshd/")
        assert next_event(merged)["event"] == joined
        n2.ctl("peers", "disconnect", n1.status()["peer_id"])
        left = next_event(watch)
        assert (left["kind"], left["peer_id"], left["missed"]) == ("left", id2, 0)
        n3.stop()
        assert next_event(watch)["kind"] == "left"
        assert watch.wait(timeout=10) == 0 and merged.wait(timeout=10) == 0  # -n reached
    finally:
        for process in (watch, merged):
            process.kill()
            process.wait()
