"""The ledger across 5 meshd processes: settlement, rewards, partition, bank test.

docs/ledger.md §5-§8. Every node is a genesis validator (weight 1) with an
allocation; epochs last EPOCH_SECONDS, so several settle within a test.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from tests.e2e.harness import (
    Meshd,
    ctl_json,
    final_epoch,
    start_network,
    validator_genesis,
    wait_final,
)

EPOCH_SECONDS = 3
EMISSION = 1_000_000
ALLOCATION = 10_000_000
NODES = 5


@pytest.fixture
def network(tmp_path: Path) -> Iterator[list[Meshd]]:
    names = [f"v{i}" for i in range(NODES)]
    genesis, _ = validator_genesis(
        tmp_path, names, allocation=ALLOCATION, epoch_seconds=EPOCH_SECONDS,
        options=["--name", "BankNet", "--token-name", "COIN", "--token-symbol", "CN",
                 "--emission", str(EMISSION)])
    with start_network(tmp_path, genesis, names) as nodes:
        yield nodes


def roots_at(nodes: list[Meshd], epoch: int) -> set[str]:
    return {ctl_json(n, "ledger", "state-root", "--epoch", str(epoch))["root"] for n in nodes}


def account(node: Meshd) -> str:
    return str(node.status()["peer_id"])


def books(node: Meshd, ids: list[str]) -> tuple[Any, list[Any]]:
    """Token info and every balance, read within one final epoch (a settlement
    that lands between the reads would mix two epochs: read again).

    Over one gRPC channel: seven meshctl processes take longer than a 3 s epoch
    on a loaded 2-core machine, so their reads straddled a settlement nearly
    every time (CI runs 40 and 42).
    """
    with grpc.insecure_channel(f"unix:{node.socket}") as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)

        def read(call: Any, request: Any) -> dict[str, Any]:
            return MessageToDict(call(request, timeout=10), preserving_proto_field_name=True,
                                 always_print_fields_with_no_presence=True)

        for _ in range(10):
            before = read(ledger.GetTokenInfo, ledger_pb2.GetTokenInfoRequest())
            balances = [read(ledger.GetBalance, ledger_pb2.GetBalanceRequest(account=i))
                        for i in ids]
            after = read(ledger.GetTokenInfo, ledger_pb2.GetTokenInfoRequest())
            if after["final_epoch"] == before["final_epoch"]:
                return before, balances
        raise AssertionError("settlements kept landing between the reads")


def test_five_nodes_settle_alike_and_rewards_follow_the_evidence(
        network: list[Meshd]) -> None:
    nodes = network
    wait_final(nodes, 3)
    for epoch in (1, 2, 3):
        assert len(roots_at(nodes, epoch)) == 1, f"nodes disagree on the root of {epoch}"
    explained = ctl_json(nodes[3], "rewards", "explain", "3")
    assert explained == ctl_json(nodes[0], "rewards", "explain", "3")

    # The expectation, computed here from the evidence the explanation names.
    uptime_pool, tasks_pool, gov_pool = (EMISSION * 40 // 100, EMISSION * 40 // 100,
                                         EMISSION * 20 // 100)
    uptime_points: dict[str, int] = {}
    gov_points: dict[str, int] = {}
    for line in explained["lines"]:
        if line["pool"] == "uptime":
            scores = []
            for evidence in line["evidence"]:
                answered, probes = map(int, evidence["detail"].split("/"))
                assert evidence["value"] == answered * 1000 // probes
                assert evidence["author"] != line["account"]
                scores.append(evidence["value"])
            scores.sort()
            uptime_points[line["account"]] = scores[(len(scores) - 1) // 2] \
                if len(scores) >= 2 else 0
        elif line["pool"] == "governance":
            gov_points[line["account"]] = len(line["evidence"])
    assert len(uptime_points) == NODES and all(p > 0 for p in uptime_points.values())
    assert len(gov_points) == NODES  # every validator's precommit of epoch 2 counted
    minted = 0
    for line in explained["lines"]:
        points = uptime_points if line["pool"] == "uptime" else gov_points
        pool = uptime_pool if line["pool"] == "uptime" else gov_pool
        expected = pool * points[line["account"]] // sum(points.values())
        assert line["amount"] == expected, line
        minted += expected
    assert explained["minted"] == minted
    assert explained["minted"] <= EMISSION - tasks_pool  # no tasks: that pool is not minted

    info = ctl_json(nodes[1], "token", "info")
    assert int(info["supply"]) == ALLOCATION * NODES + int(info["minted_total"])


def test_a_partitioned_node_catches_up_after_the_partition_heals(
        network: list[Meshd]) -> None:
    nodes = network
    wait_final(nodes, 1)
    lonely, rest = nodes[4], nodes[:4]
    lonely_id = account(lonely)
    for node in rest:
        node.ctl("peers", "block", lonely_id)
        lonely.ctl("peers", "block", account(node))
    paid = ctl_json(rest[0], "ledger", "transfer", lonely_id, "777")
    mine = ctl_json(lonely, "ledger", "transfer", account(rest[1]), "55")
    during = final_epoch(rest[0])
    wait_final(rest, during + 2)  # 4 of 5 validators are a quorum: settlement goes on
    assert final_epoch(lonely) < during + 2
    for node in rest:
        node.ctl("peers", "unblock", lonely_id)
        lonely.ctl("peers", "unblock", account(node))
    # The connection managers redial on their own; this only hurries it (and
    # may find the peer connected already).
    lonely.ctl("peers", "connect", rest[0].status()["listen_addrs"][0], check=False)
    target = final_epoch(rest[0]) + 2
    wait_final(nodes, target)
    assert len(roots_at(nodes, target)) == 1
    history = ctl_json(lonely, "ledger", "history", lonely_id)
    hashes = {e["hash"] for e in history}
    assert paid["hash"] in hashes and mine["hash"] in hashes
    balance = ctl_json(lonely, "ledger", "balance")
    assert balance["pending_in"] == "0" and balance["pending_out"] == "0"


def test_bank_random_transfers_on_every_node_keep_the_books(network: list[Meshd]) -> None:
    nodes = network
    ids = [account(n) for n in nodes]
    acknowledged: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(index)
        deadline = time.monotonic() + 2.5 * EPOCH_SECONDS
        while time.monotonic() < deadline:
            to = rng.choice([i for i in ids if i != ids[index]])
            result = nodes[index].ctl("ledger", "transfer", to, str(rng.randint(1, 5000)),
                                      "--json", check=False)
            if result.returncode == 0:
                with lock:
                    acknowledged.append(json.loads(result.stdout))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(NODES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(acknowledged) >= NODES * 3
    last = max(int(e["epoch"]) for e in acknowledged)
    wait_final(nodes, last + 2)
    target = min(final_epoch(n) for n in nodes)
    assert len(roots_at(nodes, target)) == 1, "nodes did not converge"
    info, balances = books(nodes[2], ids)
    for balance in balances:
        assert int(balance["settled"]) >= 0 and int(balance["available"]) >= 0
        assert balance["pending_in"] == "0" and balance["pending_out"] == "0"
    held = sum(int(b["settled"]) + int(b["bonded"]) for b in balances)
    assert int(info["supply"]) == held == ALLOCATION * NODES + int(info["minted_total"])
    sent = sum(int(e["amount"]) for e in acknowledged)
    assert sent > 0
