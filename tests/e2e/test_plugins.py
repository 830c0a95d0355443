"""Plugins on real meshd processes: what runs, and refusing to start without one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import Meshd, meshctl


def test_the_required_storage_plugin_runs_and_is_listed(node: Callable[..., Meshd]) -> None:
    n1 = node()
    listed = json.loads(n1.ctl("plugins", "ls", "--json").stdout)
    assert [p["name"] for p in listed] == ["storage"]
    storage = listed[0]
    assert (storage["kind"], storage["state"], storage["required"]) == (
        "in-process", "running", True)
    assert storage["events"] == [
        "AUDIT", "AUDIT_FILE", "CONFIRM_AUDIT", "DROP_FILE", "FETCH_MANIFEST", "FETCH_PIECE",
        "FILES", "GET_MANIFEST", "GET_STRIPE", "HAVE", "HOLDERS", "HOLD_MANIFEST",
        "HOLD_PIECE", "LAYOUT", "PROMISE", "PUT_MANIFEST", "PUT_STRIPE", "READ", "REMOVE",
        "REMOVED", "RETRIEVE_FILE", "STATUS", "STORE_FILE", "VERIFY_STORAGE"]
    assert storage["version"] == "1.0.0" and storage["restarts"] == 0
    assert storage["started_at"].endswith("Z")
    info = n1.ctl("plugins", "info", "storage").stdout
    assert "storage 1.0.0 (in-process)" in info and "STORE_FILE" in info
    table = n1.ctl("plugins", "ls").stdout
    assert table.splitlines()[0].split() == ["NAME", "VERSION", "KIND", "STATE", "REQUIRED",
                                             "RESTARTS", "HANDLES"]
    missing = n1.ctl("plugins", "info", "nope", check=False)
    assert missing.returncode == 1
    assert "no plugin 'nope' runs on this node (running: storage)" in missing.stderr


def test_a_node_missing_a_required_plugin_refuses_to_start(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    meshctl("network", "init", "--allow-no-validators",
            "--name", "NeedsMore", "--token-name", "N", "--token-symbol",
            "NM", "--plugin", "storage>=1.0", "--plugin", "vision>=2", "--out",
            str(tmp_path / "needs"))
    n1 = node("n1", genesis_file=tmp_path / "needs" / "genesis.toml", start=False)
    n1.start(wait=False)
    assert n1.wait_exit() == 1
    assert "this network requires plugin 'vision' >=2, which is not installed " \
           "(installed plugins: compute, storage)" in n1.log()
    assert not n1.socket.exists()


def test_a_plugin_out_of_the_genesis_range_refuses_to_start(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    meshctl("network", "init", "--allow-no-validators",
            "--name", "NewStore", "--token-name", "N", "--token-symbol",
            "NS", "--plugin", "storage>=2", "--out", str(tmp_path / "new"))
    n1 = node("n1", genesis_file=tmp_path / "new" / "genesis.toml", start=False)
    n1.start(wait=False)
    assert n1.wait_exit() == 1
    assert "plugin 'storage' is installed in version 1.0.0 (mesh-storage), but the network " \
           "requires storage>=2" in n1.log()
