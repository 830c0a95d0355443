"""The JavaScript example plugin on meshd processes: tasks, calls, and no orphans.

Two nodes launch plugins/examples/js-hash from their config files. A task
submitted with meshctl on one is executed by the other's JavaScript process
and verified by the first's; when a meshd is killed with SIGKILL, its plugin
process dies with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from meshd.testing import eventually_blocking
from tests.e2e.harness import Meshd, ctl_json, meshctl
from tests.integration.test_external_plugins import JS_COMMAND, _alive


def write_config(path: Path) -> Path:
    command = json.dumps(JS_COMMAND)
    path.write_text(f"[plugins.external.js-hash]\ncommand = {command}\n")
    return path


def js_hash(node: Meshd) -> dict[str, object]:
    return ctl_json(node, "plugins", "info", "js-hash")  # type: ignore[no-any-return]


def test_the_javascript_plugin_serves_a_task_and_dies_with_its_meshd(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    meshctl("network", "init", "--allow-no-validators",
            "--name", "HashNet", "--token-name", "H", "--token-symbol",
            "HS", "--plugin", "js-hash>=1,<2", "--out", str(tmp_path / "hashnet"))
    genesis = tmp_path / "hashnet" / "genesis.toml"
    config = write_config(tmp_path / "meshd.toml")
    n1 = node("n1", "--config", str(config), genesis_file=genesis)
    n2 = node("n2", "--config", str(config), "--bootstrap", n1.status()["listen_addrs"][0],
              genesis_file=genesis)
    for n in (n1, n2):
        eventually_blocking(lambda n=n: js_hash(n)["state"] == "running", timeout=30,
                            interval=0.3, what="js-hash running")
    listed = ctl_json(n1, "plugins", "ls")
    assert [(p["name"], p["kind"], p["version"]) for p in listed] == [
        ("js-hash", "external", "1.0.0")]
    assert "Process" in n1.ctl("plugins", "info", "js-hash").stdout
    n2_id = n2.status()["peer_id"]
    eventually_blocking(lambda: n2_id in n1.ctl("plugins", "call", "js-hash", "PEERS").stdout,
                        timeout=60, interval=0.3, what="n1 to see n2")

    task = ctl_json(n1, "tasks", "submit", "js-hash", "SHA256", "depin")
    assert task["state"] == "done", task
    assert base64.b64decode(task["result_base64"]) == \
        hashlib.sha256(b"depin").hexdigest().encode()
    assert [a["provider"] for a in task["attempts"]] == [n2_id]
    echoed = n1.ctl("plugins", "call", "js-hash", "ECHO", "over the wire", "--peer", n2_id)
    assert echoed.stdout == "over the wire\n"
    refused = n1.ctl("plugins", "call", "js-hash", "NOPE", "--peer", n2_id, check=False)
    assert refused.returncode == 1 and "does not handle event 'NOPE'" in refused.stderr
    assert "js-hash 1.0.0 registered on node" in n1.log()  # its output is in meshd's log

    pid = int(js_hash(n1)["pid"])  # type: ignore[call-overload]
    assert _alive(pid)
    n1.kill()  # SIGKILL: meshd gets no chance to stop its plugin
    eventually_blocking(lambda: not _alive(pid), timeout=10, interval=0.3,
                        what="the plugin process to die with meshd")
    assert js_hash(n2)["state"] == "running"
