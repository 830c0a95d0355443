"""meshctl ledger stake|unstake|withdraw|state-root, rewards, token info on a real meshd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.harness import Meshd, meshctl
from tests.e2e.test_ledger import funded_genesis, identity, start


def test_stake_unstake_withdraw_and_bad_amounts(tmp_path: Path) -> None:
    alice_id = identity(tmp_path / "alice")
    alice = start(tmp_path, "alice", funded_genesis(tmp_path, {alice_id: 1000}))
    try:
        staked = json.loads(alice.ctl("ledger", "stake", "300", "--json").stdout)
        assert (staked["kind"], staked["amount"], staked["seq"]) == ("stake", "300", 1)
        assert alice.ctl("ledger", "unstake", "100").stdout.startswith("unstaked 100 (entry ")

        def balance() -> tuple[str, ...]:
            b = json.loads(alice.ctl("ledger", "balance", "--json").stdout)
            return tuple(b[k] for k in ("available", "pending_out", "bonded", "pending_stake",
                                        "pending_unstake", "withdrawable"))

        # Stake is an own debit (at once); bonded counts settled stake only.
        assert balance() == ("700", "300", "0", "300", "100", "0")
        for args, message in (
                (("unstake", "201"), "this node can unstake at most 200 now"),
                (("stake", "701"), "exceeds the author's available balance"),
                (("withdraw", "1"), "this node can withdraw 0 now"),
                (("stake", "0"), "amount must be 1 to"),
                (("unstake", "18446744073709551616"), "amount must be 1 to"),
                (("stake", "abc"), "not a whole number of base units"),
                (("withdraw", "1.5"), "not a whole number of base units"),
                (("unstake", ""), "not a whole number of base units")):
            result = alice.ctl("ledger", *args, check=False)
            assert result.returncode == 1, (args, result.stdout)
            assert message in result.stderr and result.stdout == "", (args, result.stderr)
        assert balance() == ("700", "300", "0", "300", "100", "0")  # nothing written
        history = json.loads(alice.ctl("ledger", "history", "--json").stdout)
        assert [(e["kind"], e["amount"]) for e in history] == [("unstake", "100"),
                                                                ("stake", "300")]
        assert "Pending stake:" in alice.ctl("ledger", "balance").stdout
        assert json.loads(alice.ctl("ledger", "verify", "--json").stdout)["ok"] is True
    finally:
        alice.kill()


def test_before_any_settlement(tmp_path: Path) -> None:
    alice_id = identity(tmp_path / "alice")
    bob_id = identity(tmp_path / "bob")
    alice = start(tmp_path, "alice", funded_genesis(tmp_path, {alice_id: 1000, bob_id: 3000}))
    try:
        root = alice.ctl("ledger", "state-root")
        assert "no epoch is final yet" in root.stdout
        assert json.loads(alice.ctl("ledger", "state-root", "--json").stdout) == {
            "epoch": -1, "root": "", "supply": "4000"}
        later = alice.ctl("ledger", "state-root", "--epoch", "0", check=False)
        assert later.returncode == 1 and "epoch 0 is not final yet" in later.stderr

        info = json.loads(alice.ctl("token", "info", "--json").stdout)
        assert (info["name"], info["symbol"], info["decimals"], info["final_epoch"]) == (
            "COIN", "CN", 6, -1)
        assert info["supply"] == "4000" and info["holders"] == 2
        assert sorted((a["account"], a["amount"]) for a in info["genesis_allocations"]) == \
            sorted([(alice_id, "1000"), (bob_id, "3000")])
        assert [(h["account"], h["total"], h["share_percent"])
                for h in info["top_accounts"]] == [(bob_id, "3000", "75.00"),
                                                   (alice_id, "1000", "25.00")]
        assert info["split"] == {"uptime": 40, "tasks": 40, "governance": 20}
        text = alice.ctl("token", "info").stdout
        assert "COIN (CN), 6 decimals" in text and "4000 (0.004 CN)" in text

        for args, message in (
                (("rewards", "ls"), "no epoch is final yet"),
                (("rewards", "ls", "--epoch", "3"), "epoch 3 is not final yet"),
                (("rewards", "explain", "0"), "epoch 0 is not final yet"),
                (("rewards", "explain", "0", bob_id, "--json"), "epoch 0 is not final yet"),
                (("rewards", "explain", "0", "nobody"), "account: 'nobody' is not")):
            result = alice.ctl(*args, check=False)
            assert result.returncode == 1, (args, result.stdout)
            assert message in result.stderr and result.stdout == "", (args, result.stderr)
    finally:
        alice.kill()


def wait_final(node: Meshd, epoch: int, timeout: float = 30) -> dict[str, Any]:
    """Until ``epoch`` is final (the settlement stream), bounded; the state-root then."""
    try:
        node.wait_final(epoch, timeout)
    except AssertionError as late:
        raise AssertionError(f"{late}\n{node.log()[-2000:]}") from None
    root: dict[str, Any] = json.loads(node.ctl("ledger", "state-root", "--json").stdout)
    return root


def test_after_settlements_on_one_validator(tmp_path: Path) -> None:
    alice_id = identity(tmp_path / "alice")
    meshctl("network", "init", "--name", "Settles", "--token-name", "COIN", "--token-symbol",
            "CN", "--out", str(tmp_path / "net"), "--allocate", f"{alice_id}:{10**9}",
            "--validator", alice_id, "--epoch-seconds", "2")
    alice = start(tmp_path, "alice", tmp_path / "net" / "genesis.toml")
    try:
        staked = json.loads(alice.ctl("ledger", "stake", "250000000", "--json").stdout)
        root = wait_final(alice, staked["epoch"] + 1)
        assert len(bytes.fromhex(root["root"])) == 32

        balance = json.loads(alice.ctl("ledger", "balance", "--json").stdout)
        assert (balance["bonded"], balance["pending_stake"]) == ("250000000", "0")

        final = root["epoch"]
        rewards = json.loads(alice.ctl("rewards", "ls", "--epoch", str(final), "--json").stdout)
        assert rewards["epoch"] == final
        assert sum(int(a["total"]) for a in rewards["accounts"]) == int(rewards["minted"])
        assert [a["account"] for a in rewards["accounts"]] in ([], [alice_id])

        explained = json.loads(alice.ctl("rewards", "explain", str(final), alice_id,
                                         "--json").stdout)
        assert explained["epoch"] == final and explained["minted"] == int(rewards["minted"])
        assert sum(line["amount"] for line in explained["lines"]) == int(rewards["minted"])
        assert alice.ctl("rewards", "explain", str(final)).stdout.startswith(
            f"epoch {final}: value ")
        ahead = alice.ctl("rewards", "explain", str(final + 1000), check=False)
        assert ahead.returncode == 1 and f"epoch {final + 1000} is not final yet" in ahead.stderr

        info = json.loads(alice.ctl("token", "info", "--json").stdout)
        assert info["final_epoch"] >= final
        assert int(info["supply"]) == 10**9 + int(info["minted_total"]) - int(
            info["slashed_total"])
        assert [(h["account"], h["total"], h["share_percent"]) for h in info["top_accounts"]] \
            == [(alice_id, info["supply"], "100.00")]
    finally:
        alice.kill()
