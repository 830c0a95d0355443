"""Tasks across 4 meshd processes: receipts earn the tasks pool, a liar is slashed.

t0 submits; t1 and t2 are honest; t3 runs a lying copy of the "square"
plugin. All four are genesis validators (so their receipts and verdicts
count), epochs last EPOCH_SECONDS, and t3 stakes so that its penalty shows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshd.testing import eventually_blocking
from tests.e2e.harness import Meshd, ctl_json, start_network, validator_genesis, wait_final
from tests.plugin_dist import plugin_env

EPOCH_SECONDS = 3
ALLOCATION = 10_000_000
STAKE = 1_000_000
CAPABILITIES = ["", "honest,x", "honest,x", "x"]


@pytest.fixture
def network(tmp_path: Path) -> Iterator[list[Meshd]]:
    names = [f"t{i}" for i in range(4)]
    genesis, _ = validator_genesis(
        tmp_path, names, allocation=ALLOCATION, epoch_seconds=EPOCH_SECONDS,
        options=["--name", "TaskNet", "--token-name", "WORK", "--token-symbol", "WK",
                 "--emission", "1000000", "--plugin", "storage", "--plugin", "square",
                 "--spot-checks", "10000"])  # validators audit every receipt
    honest = plugin_env(tmp_path / "site-honest",
                        {"square": "tests.plugin_fixtures:SquarePlugin"})
    lying = plugin_env(tmp_path / "site-lying",
                       {"square": "tests.plugin_fixtures:LyingSquarePlugin"})

    def env(index: int) -> dict[str, str]:
        return {**(lying if index == 3 else honest),
                "MESHD_TASKS_CAPABILITIES": CAPABILITIES[index]}

    with start_network(tmp_path, genesis, names, env=env) as nodes:
        yield nodes


def task_points(node: Meshd, epoch: int) -> dict[str, int]:
    rewards = ctl_json(node, "rewards", "ls", "--epoch", str(epoch))
    return {a["account"]: int(r["points"]) for a in rewards["accounts"]
            for r in a["rewards"] if r["pool"] == "tasks" and int(r["points"])}


def bonded(node: Meshd, account: str) -> int:
    return int(ctl_json(node, "ledger", "balance", account)["bonded"])


def test_receipts_earn_the_tasks_pool_and_a_lying_provider_is_slashed(
        network: list[Meshd], tmp_path: Path) -> None:
    t0, t1, _, t3 = network
    ids = [str(n.status()["peer_id"]) for n in network]
    eventually_blocking(lambda: all(n.status()["peer_count"] == 3 for n in network),
                        timeout=60, interval=0.3, what="every node to see the other three")
    t3.ctl("ledger", "stake", str(STAKE))
    t0.until_settled(lambda: bonded(t0, ids[3]), lambda stake: stake == STAKE,
                     what="t3's stake to be bonded")

    # Both plugins run everywhere, with their task kinds.
    plugins = {p["name"]: p for p in ctl_json(t1, "plugins", "ls")}
    assert plugins["storage"]["task_kinds"] == ["STORE_FILE"]
    assert plugins["square"]["task_kinds"] == ["digest", "square"]

    # Store a chunk on two honest providers: two receipts.
    chunk = tmp_path / "chunk.bin"
    chunk.write_bytes(os.urandom(300 * 1024))
    stored = ctl_json(t0, "tasks", "submit", "storage", "STORE_FILE", "--file", str(chunk),
                      "-k", "2", "-c", "honest")
    assert stored["state"] == "done", stored
    assert sorted(stored["providers"]) == sorted(ids[1:3])
    assert all(a["units"] == 300 and len(a["receipt"]) == 64 for a in stored["attempts"])

    # A digest on three providers, one of them the liar: outvoted, two verdicts.
    # A watcher subscribed before it was submitted sees it change, then end.
    with t0.follow("tasks", "watch") as watcher:
        watcher.until(lambda t: t["task_id"] == stored["task_id"] and t["state"] == "done",
                      what="the stored task in the watch's first listing")
        outvoted = ctl_json(t0, "tasks", "submit", "square", "digest", "some data", "-k", "3",
                            "-c", "x")
        watched = watcher.until(lambda t: t["task_id"] == outvoted["task_id"]
                                and t["state"] == "done", what="the digest task done")
    assert watched["attempts"] == outvoted["attempts"]
    assert outvoted["state"] == "done", outvoted
    liar = next(a for a in outvoted["attempts"] if a["provider"] == ids[3])
    assert liar["state"] == "wrong" and len(liar["verdicts"]) == 2

    # Working on tasks shows as the Participating state, on both sides.
    eventually_blocking(lambda: all(n.status()["state"] == "participating" for n in (t0, t1)),
                        timeout=10, interval=0.3,
                        what="requester and provider to show participating")

    # The human output, and the exit code of a failed task.
    shown = t0.ctl("tasks", "show", stored["task_id"][:10]).stdout
    assert "storage/STORE_FILE" in shown and "RECEIPT" in shown
    failed = t0.ctl("tasks", "submit", "square", "square", "4", "-c", "nobody-has-this",
                    check=False)
    assert failed.returncode == 1
    assert "0 connected peers execute square/square with nobody-has-this" in failed.stdout
    listed = ctl_json(t0, "tasks", "ls")
    assert [t["state"] for t in listed] == ["failed", "done", "done"]

    # The receipts earn the tasks pool once their epoch is final: 300 units
    # each for t1 and t2 (storage) and 5 each for the digest ("some data" is 9
    # bytes: units = payload length).
    earned: dict[str, int] = {}

    def receipts_settled() -> bool:
        final = int(ctl_json(t0, "ledger", "state-root")["epoch"])
        earned.clear()
        for epoch in range(max(0, final - 12), final + 1):
            for account, points in task_points(t0, epoch).items():
                earned[account] = earned.get(account, 0) + points
        return earned.get(ids[1], 0) >= 309 and earned.get(ids[2], 0) >= 309

    t0.until_settled(receipts_settled, what="the receipts to be settled")
    assert earned == {ids[1]: 309, ids[2]: 309}, earned  # nothing for the liar

    # Two eligible verdicts: the liar loses 10 % of its stake, seen alike everywhere.
    t0.until_settled(lambda: bonded(t0, ids[3]), lambda stake: stake == STAKE * 9 // 10,
                     what="t3 to be slashed")
    final = int(ctl_json(t0, "ledger", "state-root")["epoch"])
    wait_final(network, final)
    assert {bonded(n, ids[3]) for n in network} == {STAKE * 9 // 10}
    # `rewards explain` names the offence, its verdicts and the amount.
    (slash,) = _slashes(t0, ids[3])
    assert (slash["stake"], slash["slashed"], slash["jailed"]) == (STAKE, STAKE // 10, False)
    (offence,) = slash["offences"]
    assert offence["kind"] == "failed_task" and len(offence["evidence"]) == 2, offence

    # The validators the beacon drew audited every receipt (p = 1 in this genesis),
    # none by its requester or provider (`meshctl tasks audits`): the storage
    # receipts passed storage's rule, the digests have no rule to check them by.
    def audited() -> list[dict[str, Any]]:
        return [ctl_json(n, "tasks", "audits") for n in network]
    shown = eventually_blocking(audited, lambda got: sum(
        sum(c for k, c in a["counts"].items() if k != "drawn") for a in got) == 4,
        timeout=60, what="the 4 receipts audited")
    totals = {k: sum(a["counts"][k] for a in shown) for k in shown[0]["counts"]}
    assert totals == {"drawn": 4, "passed": 2, "failed": 0, "unshown": 0, "reported": 0,
                      "unchecked": 2}, totals
    for node, listed in zip(network, shown, strict=True):
        for audit in listed["audits"]:
            assert node.status()["peer_id"] not in (audit["provider"], audit["requester"])
            assert audit["outcome"] == ("passed" if audit["plugin"] == "storage"
                                        else "unchecked"), audit
    assert "OUTCOME" in next(n for n, a in zip(network, shown, strict=True)
                             if a["audits"]).ctl("tasks", "audits").stdout


def _slashes(node: Meshd, account: str) -> list[dict[str, Any]]:
    final = int(ctl_json(node, "ledger", "state-root")["epoch"])
    found: list[dict[str, Any]] = []
    for epoch in range(final, -1, -1):
        found += ctl_json(node, "rewards", "explain", str(epoch), account)["slashes"]
    return found
