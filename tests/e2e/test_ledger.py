"""The ledger on real meshd processes: transfers, balances, history, verify, durability."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import grpc

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from tests.e2e.conftest import LOOPBACK
from tests.e2e.harness import Meshd, meshctl, run_meshd


def identity(data_dir: Path) -> str:
    result = run_meshd("identity", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def funded_genesis(tmp_path: Path, allocations: dict[str, int]) -> Path:
    allocate = [arg for peer, amount in allocations.items()
                for arg in ("--allocate", f"{peer}:{amount}")]
    meshctl("network", "init", "--allow-no-validators",
            "--name", "LedgerNet", "--token-name", "COIN",
            "--token-symbol", "CN", "--out", str(tmp_path / "net"), *allocate)
    return tmp_path / "net" / "genesis.toml"


def start(tmp_path: Path, name: str, genesis: Path) -> Meshd:
    return Meshd(tmp_path, name, genesis, *LOOPBACK).start()


def test_transfer_balance_history_and_verify(tmp_path: Path) -> None:
    alice_id = identity(tmp_path / "alice")
    bob_id = identity(tmp_path / "bob")
    alice = start(tmp_path, "alice", funded_genesis(tmp_path, {alice_id: 1000}))
    try:
        sent = json.loads(alice.ctl("ledger", "transfer", bob_id, "300", "--memo", "rent",
                                    "--json").stdout)
        assert (sent["kind"], sent["to"], sent["amount"], sent["seq"]) == (
            "transfer", bob_id, "300", 1)
        balance = json.loads(alice.ctl("ledger", "balance", "--json").stdout)
        assert (balance["settled"], balance["pending_out"], balance["available"]) == (
            "1000", "300", "700")
        assert json.loads(alice.ctl("ledger", "balance", bob_id, "--json").stdout)[
            "pending_in"] == "300"
        short = alice.ctl("ledger", "transfer", bob_id, "701", check=False)
        assert short.returncode == 1 and "exceeds the author's available balance" in short.stderr
        for bad, message in ((("ledger", "transfer", bob_id, "abc"), "whole number"),
                             (("ledger", "transfer", "xyz", "1"), "recipient"),
                             (("ledger", "transfer", alice_id, "1"), "own account"),
                             (("ledger", "transfer", bob_id, "0"), "amount must be")):
            result = alice.ctl(*bad, check=False)
            assert result.returncode == 1 and message in result.stderr, result.stderr
        history = json.loads(alice.ctl("ledger", "history", "--json").stdout)
        assert [(e["kind"], e["amount"], e["memo"]) for e in history] == [
            ("transfer", "300", "rent")]
        assert json.loads(alice.ctl("ledger", "history", bob_id, "--json").stdout) == history
        assert json.loads(alice.ctl("ledger", "verify", "--json").stdout) == {
            "checked": 1, "ok": True, "first_bad": None}
    finally:
        alice.kill()


def test_acknowledged_transfers_survive_sigkill(tmp_path: Path) -> None:
    alice_id = identity(tmp_path / "alice")
    bob_id = identity(tmp_path / "bob")
    alice = start(tmp_path, "alice", funded_genesis(tmp_path, {alice_id: 10**9}))
    acknowledged: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def send_until_killed() -> None:
        with grpc.insecure_channel(f"unix:{alice.socket}") as channel:
            stub = ledger_pb2_grpc.LedgerServiceStub(channel)
            for _ in range(5000):  # bounded; the daemon dies long before
                try:
                    reply = stub.Transfer(ledger_pb2.TransferRequest(to=bob_id, amount="1"),
                                          timeout=10)
                except grpc.RpcError:
                    return  # the daemon is gone
                with lock:
                    acknowledged.append(reply.entry.hash)
                    if len(acknowledged) >= 200:
                        enough.set()

    senders = [threading.Thread(target=send_until_killed) for _ in range(4)]
    try:
        for sender in senders:
            sender.start()
        assert enough.wait(60), "fewer than 200 transfers acknowledged in 60 s"
        alice.stop(signal.SIGKILL)  # mid-burst: the senders are still sending
        for sender in senders:
            sender.join(30)
        with lock:
            acked = set(acknowledged)
        alice.start()
        history = json.loads(alice.ctl("ledger", "history", "-n", "1000", "--json").stdout)
        stored = {e["hash"] for e in history}
        assert acked <= stored, f"{len(acked - stored)} acknowledged entries lost"
        assert sorted(e["seq"] for e in history) == list(range(1, len(history) + 1))
        assert json.loads(alice.ctl("ledger", "verify", "--json").stdout)["ok"] is True
        balance = json.loads(alice.ctl("ledger", "balance", "--json").stdout)
        assert int(balance["available"]) == 10**9 - len(history)
        # and the chain goes on where it stopped
        more = json.loads(alice.ctl("ledger", "transfer", bob_id, "1", "--json").stdout)
        assert more["seq"] == len(history) + 1
    finally:
        alice.kill()
