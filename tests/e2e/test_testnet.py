"""meshctl testnet: a local network that mints, started, restarted and stopped by one command."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from meshd.testing import eventually_blocking
from tests.e2e.harness import meshctl


def _status(directory: Path) -> dict[str, Any]:
    result = meshctl("--json", "testnet", "status", "--dir", str(directory), check=False)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_a_testnet_mints_within_a_minute_restarts_with_its_data_and_stops(
        tmp_path: Path) -> None:
    directory = tmp_path / "testnet"
    up = meshctl("--json", "testnet", "up", "-n", "4", "--dir", str(directory),
                 "--epoch-seconds", "5", timeout=90)
    started = json.loads(up.stdout)
    assert len(started["nodes"]) == 4
    pids = [n["pid"] for n in started["nodes"]]
    try:
        # A second `up` while it runs is refused, saying how to stop it.
        again = meshctl("testnet", "up", "--dir", str(directory), check=False)
        assert again.returncode == 2 and "testnet down" in again.stderr

        data = eventually_blocking(
            lambda: _status(directory),
            lambda d: all(int(n.get("minted_total", "0")) > 0 for n in d["nodes"]),
            timeout=60, what="every node to see rewards minted")
        assert all(n["running"] and n["peer_count"] >= 1 for n in data["nodes"])
        # Every node is a validator with tokens: the genesis says so.
        genesis = json.loads(meshctl("--json", "network", "inspect",
                                     started["genesis"]).stdout)
        assert sorted(v["peer_id"] for v in genesis["genesis"]["validators"]) == \
            sorted(n["peer_id"] for n in started["nodes"])
        epoch_before = min(n["final_epoch"] for n in data["nodes"])
        # The set that settles next: the four, as the genesis made them.
        validators = json.loads(meshctl("--json", "--socket", started["nodes"][1]["socket"],
                                        "ledger", "validators").stdout)
        assert sorted(v["account"] for v in validators["validators"]) == \
            sorted(n["peer_id"] for n in started["nodes"])
        assert {v["weight"] for v in validators["validators"]} == {"1"}
        # Each node serves its REST gateway and dashboard on loopback.
        for node in data["nodes"]:
            url = f"{node['dashboard']}mesh.node.v1.NodeService/GetStatus"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert json.loads(answer.read())["status"]["peerId"] == node["peer_id"]
    finally:
        down = json.loads(meshctl("--json", "testnet", "down", "--dir", str(directory),
                                  timeout=60).stdout)
    assert down["stopped"] == {f"node-{i}": "exited" for i in range(4)}
    assert not any(_running(pid) for pid in pids)
    assert _status(directory)["nodes"][0]["running"] is False

    # `up` again: the same network, its ledger kept, settling on.
    restarted = json.loads(meshctl("--json", "testnet", "up", "-n", "4", "--dir",
                                   str(directory), "--epoch-seconds", "5", timeout=90).stdout)
    try:
        assert restarted["network_id"] == started["network_id"]

        eventually_blocking(
            lambda: _status(directory)["nodes"],
            lambda nodes: min(n.get("final_epoch", -1) for n in nodes) > epoch_before,
            timeout=60, what="epochs to settle on after the restart")
    finally:
        meshctl("testnet", "down", "--dir", str(directory), "--purge", timeout=60)
    assert not directory.exists()


def test_testnet_commands_explain_bad_input(tmp_path: Path) -> None:
    missing = meshctl("testnet", "status", "--dir", str(tmp_path / "none"), check=False)
    assert missing.returncode == 2 and "testnet up" in missing.stderr
    too_many = meshctl("testnet", "up", "-n", "51", "--dir", str(tmp_path / "t"), check=False)
    assert too_many.returncode == 2 and "51" in too_many.stderr
    assert meshctl("testnet", "down", "--dir", str(tmp_path / "none")).stdout.startswith(
        "Nothing was running")
    # A directory that holds something else is never deleted.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = meshctl("testnet", "down", "--dir", str(other), "--purge", check=False)
    assert refused.returncode == 2 and (other / "keep.txt").exists()


def _doctor(socket: str) -> tuple[int, dict[str, str]]:
    result = meshctl("--json", "--socket", socket, "doctor", check=False)
    data = json.loads(result.stdout)
    return result.returncode, {c["name"]: c["status"] for c in data["checks"]}


def test_doctor_passes_on_a_healthy_testnet_and_names_what_broke(tmp_path: Path) -> None:
    directory = tmp_path / "testnet"
    started = json.loads(meshctl("--json", "testnet", "up", "-n", "4", "--dir", str(directory),
                                 "--epoch-seconds", "3", "--plugin", "storage",
                                 timeout=90).stdout)
    nodes = started["nodes"]
    try:
        # Healthy once the first epochs settled: every check passes, exit 0.
        code, checks = eventually_blocking(
            lambda: _doctor(nodes[0]["socket"]), lambda r: r[0] == 0, timeout=60,
            what="doctor to pass on a settling testnet")
        assert set(checks.values()) == {"pass"}, checks
        assert {"daemon", "files", "peers", "settlement", "validators", "plugins"} <= set(checks)

        # Half the validators stop: reachable weight below 2/3 at once, and
        # epochs stop settling a few epochs later.
        for node in nodes[2:]:
            os.kill(node["pid"], 15)
        code, checks = eventually_blocking(
            lambda: _doctor(nodes[0]["socket"]), lambda r: r[1].get("settlement") == "fail",
            timeout=60, what="doctor to see that epochs stopped settling")
        assert code == 2 and checks["validators"] == "fail", checks
        human = meshctl("--socket", nodes[0]["socket"], "doctor", check=False).stdout
        assert "start the missing validators" in human

        # A socket others can use.
        Path(nodes[1]["socket"]).chmod(0o666)
        code, checks = _doctor(nodes[1]["socket"])
        assert code == 2 and checks["files"] == "fail"
    finally:
        meshctl("testnet", "down", "--dir", str(directory), timeout=60)
    # A stopped daemon: one failing check, with what to do.
    stopped = meshctl("--socket", nodes[0]["socket"], "doctor", check=False)
    assert stopped.returncode == 2 and "FAIL  daemon" in stopped.stdout
    assert "start it" in stopped.stdout


def test_make_run_mints_within_a_minute_and_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    repo = Path(__file__).parents[2]
    directory = tmp_path / "dev"
    # `make run` itself (its setup is up to date: make test did it), in its own
    # process group as a terminal would run it: Ctrl-C reaches the whole group.
    run = subprocess.Popen(["make", "--no-print-directory", "run", f"DEV_DIR={directory}",
                            f"VENV={sys.prefix}"], cwd=repo,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        data = eventually_blocking(
            lambda: _status(directory) if (directory / "testnet.json").exists() else {},
            lambda d: bool(d) and len(d["nodes"]) == 4
            and all(int(n.get("minted_total", "0")) > 0 for n in d["nodes"]),
            timeout=60, what="make run's network to mint")
        pids = [n["pid"] for n in data["nodes"]]
        os.killpg(run.pid, signal.SIGINT)
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert "stopped: node-0 (exited), node-1 (exited), node-2 (exited), node-3 (exited)" in out
    assert not any(_running(pid) for pid in pids)
