"""meshctl storage put|get across meshd processes: 5 MB out of one node, back from another."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path

from meshd.testing import eventually_blocking
from tests.e2e.harness import Meshd, ctl_json

SIZE = 5 * 1000 * 1000 + 12345  # 10 chunks, the last one partial


def connected(nodes: list[Meshd]) -> None:
    for n in nodes:
        eventually_blocking(lambda n=n: n.status()["peer_count"] >= len(nodes) - 1,
                            timeout=30, interval=0.3, what="the nodes to connect")


def receipts(node: Meshd) -> list[dict[str, object]]:
    """The task_receipt entries the node wrote (it countersigned work done for it)."""
    history = ctl_json(node, "ledger", "history", "-n", "1000")
    return [e for e in history if e["kind"] == "task_receipt"]


def test_a_file_stored_on_one_node_is_retrieved_byte_identical_from_another(
        node: Callable[..., Meshd], tmp_path: Path) -> None:
    n1 = node("n1")
    bootstrap = ("--bootstrap", n1.status()["listen_addrs"][0])
    n2, n3 = node("n2", *bootstrap), node("n3", *bootstrap)
    connected([n1, n2, n3])
    original = tmp_path / "photo.bin"
    original.write_bytes(os.urandom(SIZE))

    # Kept by n1 alone: n2 gets every chunk from n1 over the network.
    put = n1.ctl("storage", "put", str(original), "--replicas", "0")
    file_hash = put.stdout.strip()
    assert len(file_hash) == 64, put.stdout
    assert "storing photo.bin" in put.stderr  # the progress bar's label, on stderr
    got = n2.ctl("storage", "get", file_hash, "-o", str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == original.read_bytes()
    assert "Size:" in got.stdout and str(SIZE) in got.stdout
    assert not list(tmp_path.glob(".copy.bin.part"))
    # n1 reported each delivery (10 chunks and the manifest); n2 countersigned.
    eventually_blocking(lambda: len(receipts(n2)) == 11, timeout=30, interval=0.3,
                        what="n2 to countersign n1's 11 deliveries")

    # With two replicas, n2 and n3 each keep a copy (as receipted tasks): the
    # file outlives n1.
    second = tmp_path / "notes.bin"
    second.write_bytes(os.urandom(700_000))
    stored = ctl_json(n1, "storage", "put", str(second), "--replicas", "2")
    assert (stored["chunks"], stored["replicas"], stored["size"]) == (2, 2, 700_000)
    tasks = ctl_json(n1, "tasks", "ls")
    assert len(tasks) == 3 and {t["state"] for t in tasks} == {"done"}
    n1.kill()
    out = tmp_path / "notes-copy.bin"
    result = json.loads(n3.ctl("storage", "get", stored["hash"], "-o", str(out),
                               "--json").stdout)
    assert result["name"] == "notes.bin" and out.read_bytes() == second.read_bytes()

    # Wrong input gets a clear error, and nothing is written.
    missing = n3.ctl("storage", "get", "ab" * 32, "-o", str(tmp_path / "x"), check=False)
    assert missing.returncode == 1 and "holds chunk " + "ab" * 32 in missing.stderr
    assert not (tmp_path / "x").exists()
    bad = n3.ctl("storage", "get", "not-a-hash", "-o", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "is not a file hash" in bad.stderr
    chunk_name = json.loads(n3.ctl("plugins", "call", "storage", "STORE_FILE", "raw",
                                   "--json").stdout)["answer_base64"]
    plain = n3.ctl("storage", "get", base64.b64decode(chunk_name).decode(), "-o",
                   str(tmp_path / "x"), check=False)
    assert plain.returncode == 1 and "is a chunk, not a file" in plain.stderr
    # Peers cannot make a node store or fetch on their behalf.
    n2_id = n2.status()["peer_id"]
    refused = n3.ctl("plugins", "call", "storage", "GET_CHUNK", "ab" * 32, "--peer", n2_id,
                     check=False)
    assert refused.returncode == 1 and "is for this node's operator" in refused.stderr
