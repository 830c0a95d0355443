"""Reported tasks (ctx.report_task) on three real daemons in one trio process.

b serves a job a asked for and reports it: a's plugin accepts, a records a
receipt signed by both. Reports a did not ask for, of kinds it does not
judge, or judged by a rule that breaks are refused with a message the
reporter sees; nothing is recorded for them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from meshcore.ledger import accounts
from meshd.ledger.ledger import Ledger
from meshd.testing import Node, open_network, plugin_under_test
from tests.plugin_fixtures import ReporterPlugin


async def report(provider: Node, to: Node | str, kind: str, detail: bytes,
                 units: int = 1) -> str:
    peer = to.peer_id if isinstance(to, Node) else to
    answer = await provider.call("reporter", "REPORT",
                                 f"{peer}\n{kind}\n{units}\n".encode() + detail, timeout=50)
    return answer.decode()


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
