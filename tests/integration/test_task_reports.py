"""Reported tasks (ctx.report_task) on three real daemons in one trio process.

b serves a job a asked for and reports it: a's plugin accepts, a records a
receipt signed by both. Reports a did not ask for, of kinds it does not
judge, or judged by a rule that breaks are refused with a message the
reporter sees; nothing is recorded for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import trio

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshcore.genesis import MarketPolicy
from meshcore.ledger import accounts
from meshd.ledger.ledger import Ledger
from meshd.testing import Node, eventually, open_network, plugin_under_test
from tests.integration.test_external_plugins import rpc
from tests.plugin_fixtures import ReporterPlugin


async def report(provider: Node, to: Node | str, kind: str, detail: bytes,
                 units: int = 1) -> str:
    peer = to.peer_id if isinstance(to, Node) else to
    answer = await provider.call("reporter", "REPORT",
                                 f"{peer}\n{kind}\n{units}\n".encode() + detail, timeout=50)
    return answer.decode()


def receipt_audits(node: Node) -> tasks_pb2.ListReceiptAuditsResponse:
    """What ``node`` says of its receipt audits (`meshctl tasks audits`; blocks)."""
    answer: tasks_pb2.ListReceiptAuditsResponse = rpc(
        node.socket, tasks_pb2_grpc.TasksServiceStub, "ListReceiptAudits",
        tasks_pb2.ListReceiptAuditsRequest())
    return answer


async def receipts(node: Node) -> dict[str, int]:
    """The task_receipt entries this node wrote: hash -> epoch."""
    return {e.hash: e.epoch for e in await node.history(200) if e.kind == "task_receipt"}


async def test_reports_are_countersigned_only_when_the_peer_agrees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(120):
        async with open_network(tmp_path, 3,
                                plugins=[plugin_under_test("reporter", ReporterPlugin)]) as net:
            a, b, c = net.nodes
            assert await a.call("reporter", "ASK", f"{b.peer_id}\n".encode() + b"job-1") \
                == b"1-boj"
            receipt = await report(b, a, "SERVED", b"job-1", units=5)
            assert len(receipt) == 64, receipt
            assert receipt in await receipts(a)
            # Asked again (the answer was lost, say): the same receipt, not a second.
            assert await report(b, a, "SERVED", b"job-1", units=5) == receipt
            assert len(await receipts(a)) == 1

            # Work a did not ask for, or not from this provider, is refused.
            refused = await report(c, a, "SERVED", b"job-1")
            assert "does not accept the report of SERVED" in refused, refused
            assert "does not accept the report" in await report(b, a, "SERVED", b"job-2")
            # Kinds without a rule on a, and a rule that raises.
            assert "does not accept reports of reporter/UNJUDGED" \
                in await report(b, a, "UNJUDGED", b"x")
            assert "report rule failed on this node (RuntimeError" \
                in await report(b, a, "BROKEN", b"x")
            # Bad reports are refused before they leave the node.
            assert "cannot report work done for itself" in await report(b, b, "SERVED", b"x")
            assert "detail is at most 4096 bytes" in await report(b, a, "SERVED", b"x" * 4097)
            assert "units must be 1 to" in await report(b, a, "SERVED", b"x", units=0)
            assert "is not a peer ID" in await report(b, "nobody", "SERVED", b"x")
            assert len(await receipts(a)) == 1

            # The provider signed an epoch a cannot write: a names its own, and
            # the provider signs again at it.
            b_key = accounts.key_of(b.peer_id)
            entry_epoch = Ledger.entry_epoch
            skewed: list[int] = []

            def ahead_once(ledger: Ledger) -> int:
                epoch = entry_epoch(ledger)
                if ledger.key == b_key and not skewed:
                    skewed.append(epoch)
                    return epoch + 1
                return epoch

            monkeypatch.setattr(Ledger, "entry_epoch", ahead_once)
            await a.call("reporter", "ASK", f"{b.peer_id}\n".encode() + b"job-3")
            second = await report(b, a, "SERVED", b"job-3", units=2)
            assert len(second) == 64 and second != receipt, second
            assert skewed, "the provider's epoch was not skewed"
            assert (await receipts(a))[second] <= skewed[0]


async def test_a_validator_auditing_a_reported_receipt_is_shown_the_report(
        tmp_path: Path) -> None:
    """The provider journals each report it made (executions.py), and shows it to the
    validator the beacon draws to audit the receipt (docs/tasks.md §5d): counted as
    reported work, never as an execution not shown."""
    with trio.fail_after(120):
        # Every receipt drawn (p = 1); c is the one validator neither party.
        async with open_network(tmp_path, 3, epoch_seconds=3,
                                market=MarketPolicy(spot_check_bps=10_000),
                                plugins=[plugin_under_test("reporter", ReporterPlugin)]) as net:
            a, b, c = net.nodes
            made = []
            for job in (b"job-1", b"job-2"):
                await a.call("reporter", "ASK", f"{b.peer_id}\n".encode() + job)
                made.append(await report(b, a, "SERVED", job, units=2))
            assert all(len(r) == 64 for r in made), made

            audited = await eventually(lambda: trio.to_thread.run_sync(receipt_audits, c),
                                       lambda got: got.reported == 2, timeout=60,
                                       what="c to audit both reported receipts")
            assert {r.receipt for r in audited.audits} == set(made), audited
            assert audited.failed == audited.unshown == 0, audited


async def test_work_reported_then_found_false_slashes_its_provider_on_two_verdicts(
        tmp_path: Path) -> None:
    with trio.fail_after(180):
        async with open_network(tmp_path, 3, epoch_seconds=3,
                                plugins=[plugin_under_test("reporter", ReporterPlugin)]) as net:
            a, b, c = net.nodes
            await trio.to_thread.run_sync(stake, b, STAKE)
            await eventually(lambda: bonded(a, b, STAKE), timeout=60, what="b's stake bonded")
            await a.call("reporter", "ASK", f"{b.peer_id}\n".encode() + b"job-1")
            await report(b, a, "SERVED", b"job-1", units=5)
            (accepted,) = json.loads(await a.call("reporter", "ACCEPTED"))
            assert accepted["provider"] == b.peer_id and accepted["claim"]

            # Bad failure reports are refused with why; nothing is written.
            forged = {**accepted, "detail": b"job-2".hex()}
            assert "not the provider's claim of this report" in await fail(a, forged, "wrong")
            assert "1 to 200 characters" in await fail(a, accepted, "")
            assert "this node is the provider" in await fail(b, accepted, "wrong")
            assert not await verdicts(a)

            # a finds the work false, and once is enough: the same verdict again.
            first = await fail(a, accepted, "the job's answer was wrong")
            assert len(first) == 64, first
            assert await fail(a, accepted, "still wrong") == first
            assert list(await verdicts(a)) == [first]
            # One verdict is not a quorum; c, shown the report, checks and agrees.
            second = await fail(c, accepted, "checked it: wrong")
            assert len(second) == 64 and second != first, second
            await eventually(lambda: bonded(a, b, STAKE * 9 // 10), timeout=60,
                             what="b slashed 10 % on two verdicts")
            assert int((await a.token_info()).slashed_total) == STAKE // 10


STAKE = 1_000_000


async def fail(node: Node, shown: dict[str, object], reason: str) -> str:
    answer = await node.call("reporter", "FAIL",
                             json.dumps(shown).encode() + b"\n" + reason.encode(), timeout=30)
    return answer.decode()


async def verdicts(node: Node) -> dict[str, int]:
    return {e.hash: e.epoch for e in await node.history(200) if e.kind == "task_verdict"}


def stake(node: Node, amount: int) -> None:
    with grpc.insecure_channel(f"unix:{node.socket}") as channel:
        ledger_pb2_grpc.LedgerServiceStub(channel).Stake(ledger_pb2.StakeRequest(amount=str(amount)),
                                                         timeout=10)


def bonded_of(reader: Node, account: Node) -> int:
    """``account``'s bonded stake as ``reader`` sees it (blocking)."""
    with grpc.insecure_channel(f"unix:{reader.socket}") as channel:
        return int(ledger_pb2_grpc.LedgerServiceStub(channel).GetBalance(
            ledger_pb2.GetBalanceRequest(account=account.peer_id), timeout=10).bonded)


async def bonded(reader: Node, account: Node, amount: int) -> bool:
    return await trio.to_thread.run_sync(bonded_of, reader, account) == amount
