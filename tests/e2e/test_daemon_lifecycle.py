"""meshd as a service: readiness, status, signals, restart, exclusivity, bad input."""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import Meshd, free_port, meshctl, run_meshd


def test_status_json_after_ready(node: Callable[..., Meshd], network_id: str) -> None:
    daemon = node()
    # READY=1 was sent only once the API answers: this first call must succeed.
    status = daemon.status()
    assert status["peer_id"].startswith("12D3KooW")
    assert status["network_id"] == network_id
    assert status["network_name"] == "StorageNet"
    assert status["state"] == "connecting"
    assert status["role"] == "node"
    assert status["peer_count"] == 0
    assert status["version"]
    assert status["uptime_seconds"] >= 0
    assert [a.startswith("/ip4/127.0.0.1/tcp/") and a.endswith("/p2p/" + status["peer_id"])
            for a in status["listen_addrs"]] == [True]
    human = daemon.ctl("status").stdout
    assert status["peer_id"] in human and "connecting" in human


def test_files_are_private(node: Callable[..., Meshd]) -> None:
    daemon = node()
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon.data_dir / "identity.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_within_10_s(node: Callable[..., Meshd], sig: int) -> None:
    daemon = node()
    code, elapsed = daemon.stop(sig)
    assert code == 0, daemon.log()
    assert elapsed < 10
    assert "STOPPING=1" in daemon.notifications
    assert not daemon.socket.exists()
    assert "Traceback" not in daemon.log()
    gone = daemon.ctl("status", check=False)
    assert gone.returncode == 1
    assert "cannot reach meshd" in gone.stderr and "is it running?" in gone.stderr


def test_restart_keeps_identity_and_genesis(node: Callable[..., Meshd], tmp_path: Path,
                                            network_id: str) -> None:
    first = node()
    peer_id = first.status()["peer_id"]
    assert first.stop()[0] == 0
    # The data dir remembers its network: --genesis is optional from now on.
    again = node("n1", genesis_file=None)
    assert again.status()["peer_id"] == peer_id
    assert again.status()["network_id"] == network_id


def test_second_meshd_on_same_data_dir_is_refused(node: Callable[..., Meshd]) -> None:
    first = node()
    second = node("n1", start=False)
    second.start(wait=False)
    assert second.wait_exit() == 1
    assert "is in use by another meshd" in second.log()
    assert first.status()["state"] == "connecting"  # the first one is unharmed


def test_another_network_on_the_data_dir_is_refused(node: Callable[..., Meshd],
                                                    tmp_path: Path) -> None:
    assert node().stop()[0] == 0
    meshctl("network", "init", "--allow-no-validators",
            "--name", "Other", "--token-name", "O", "--token-symbol", "OT",
            "--out", str(tmp_path / "other"))
    other = node("n1", genesis_file=tmp_path / "other" / "genesis.toml", start=False)
    other.start(wait=False)
    assert other.wait_exit() == 1
    assert "belongs to network net_" in other.log()


def test_a_second_meshd_on_the_same_p2p_port_is_refused(tmp_path: Path,
                                                         genesis: Path) -> None:
    # py-libp2p's listeners set SO_REUSEPORT: without meshd's check the second
    # would bind too, and the kernel would share the first one's connections.
    port = free_port()
    listen = ("--listen", f"/ip4/127.0.0.1/tcp/{port}")
    first = Meshd(tmp_path, "a", genesis, *listen).start()
    try:
        second = Meshd(tmp_path, "b", genesis, *listen)
        second.start(wait=False)
        assert second.wait_exit() == 1
        assert f"cannot listen on /ip4/127.0.0.1/tcp/{port}: Address already in use" \
            in second.log()
        assert first.status()["listen_addrs"][0].startswith(f"/ip4/127.0.0.1/tcp/{port}/")
    finally:
        first.stop()
    # Once the first has stopped, the port is free again at once (TIME_WAIT is no bar).
    Meshd(tmp_path, "b", genesis, *listen).start().stop()


def test_bad_config_is_refused_with_exit_2(tmp_path: Path, genesis: Path) -> None:
    config = tmp_path / "meshd.toml"
    config.write_text('[log]\nlevel = "loud"\n')
    result = run_meshd("run", "--config", str(config), "--genesis", str(genesis),
                       "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "log.level" in result.stderr and "'loud'" in result.stderr
    config.write_text("[node]\ncolour = 1\n")
    result = run_meshd("run", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "node.colour: unknown key" in result.stderr


def test_a_bootstrap_address_nobody_can_dial_is_refused_with_exit_2(
        tmp_path: Path, genesis: Path) -> None:
    data_dir = tmp_path / "d"
    own = run_meshd("identity", "--data-dir", str(data_dir)).stdout.strip()
    for address, why in [
            ("/ip4/127.0.0.1/tcp/4001/p2p/0", "bad peer ID"),
            ("http://203.0.113.7:4001", "unknown URL scheme"),
            (f"/ip4/0.0.0.0/tcp/4001/p2p/{own}", "listen-on-everything"),
            (f"/ip4/127.0.0.1/tcp/70000/p2p/{own}", "port 70000"),
            (f"/ip4/127.0.0.1/tcp/4001/p2p/{own}", "this node's own address")]:
        result = run_meshd("run", "--genesis", str(genesis), "--data-dir", str(data_dir),
                           "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", address)
        assert result.returncode == 2, (address, result.stderr)
        assert "p2p.bootstrap[0]" in result.stderr and why in result.stderr, result.stderr


def test_bad_genesis_is_refused_naming_the_field(tmp_path: Path, genesis: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(genesis.read_text().replace('symbol = "STR"', 'symbol = "s!"'))
    result = run_meshd("run", "--genesis", str(bad), "--data-dir", str(tmp_path / "d"),
                       "--listen", "/ip4/127.0.0.1/tcp/0")
    assert result.returncode == 1
    assert "token.symbol" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_meshd("run", "--data-dir", str(tmp_path / "d2"))
    assert missing.returncode == 1 and "pass --genesis" in missing.stderr


def test_json_logs(node: Callable[..., Meshd]) -> None:
    daemon = node("n1", "--log-format", "json")
    assert daemon.stop()[0] == 0
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    ready = [e for e in lines if e["msg"] == "meshd ready"]
    assert ready and ready[0]["level"] == "info" and ready[0]["peer_id"].startswith("12D3")
    assert {e["msg"] for e in lines} >= {"starting meshd", "shutting down", "meshd stopped"}


def test_help_is_useful() -> None:
    result = run_meshd("run", "--help")
    assert result.returncode == 0
    for option in ("--genesis", "--config", "--data-dir", "--listen", "--bootstrap", "--socket"):
        assert option in result.stdout
    assert "bootstrap" in run_meshd("--help").stdout


def test_the_watchdog_is_fed_from_the_running_daemon(node: Callable[..., Meshd]) -> None:
    # As systemd passes it with WatchdogSec=0.2s: WATCHDOG=1 every 0.1 s.
    daemon = node(env={"WATCHDOG_USEC": "200000"})
    for _ in range(3):
        daemon.notifications.clear()
        daemon.wait_for_notification("WATCHDOG=1", timeout=5)
    code, _ = daemon.stop()
    assert code == 0 and "STOPPING=1" in daemon.notifications
