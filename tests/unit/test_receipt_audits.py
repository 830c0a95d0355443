"""Receipt audits (meshd/tasks/receipt_audits.py) and the provider's journal
(meshd/tasks/executions.py): the draw is at the network's rate and nobody's choice,
an execution shown is the claim's or refused, and the journal keeps what it must."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.evidence_rules import claim_hash, parse_claim
from meshcore.tasks import claims
from meshd import errors
from meshd.plugin_host.context import beacon
from meshd.tasks.executions import ExecutionJournal
from meshd.tasks.pending_audits import Kept, PendingAuditFile
from meshd.tasks.receipt_audits import (
    RECEIPT_AUDIT_PROTOCOL,
    SHOW_EPOCHS,
    Drawn,
    ReceiptAuditor,
    drawn,
    is_report,
    mismatch,
    ranked,
)

SEED = hashlib.sha256(b"beacon").digest()


@pytest.mark.parametrize("bps", [0, 1000, 5000, 10_000])
def test_receipts_are_drawn_at_the_networks_rate(bps: int) -> None:
    count = 20_000
    hits = sum(drawn(SEED, os.urandom(32), bps) for _ in range(count))
    p = bps / 10_000
    assert abs(hits - count * p) <= 4 * math.sqrt(count * p * (1 - p)) + 1


def test_another_beacon_draws_other_receipts() -> None:
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(200)]
    other = hashlib.sha256(b"another").digest()
    assert [drawn(SEED, d, 5000) for d in digests] != [drawn(other, d, 5000) for d in digests]


def test_each_validator_audits_first_about_as_often() -> None:
    validators = [bytes([v]) * 32 for v in range(4)]
    firsts = [ranked(SEED, os.urandom(32), validators)[0] for _ in range(4000)]
    assert sorted(validators) == sorted(ranked(SEED, b"x" * 32, validators))
    for validator in validators:
        assert abs(firsts.count(validator) - 1000) <= 4 * math.sqrt(4000 * 0.25 * 0.75)


def execution(result: bytes = b"out") -> tuple[wire_pb2.TaskVerdictRequest, bytes]:
    requester, provider = b"r" * 32, b"p" * 32
    task = wire_pb2.TaskRequest(plugin="compute", kind="RUN", payload=b"in", nonce=b"n" * 16)
    base = claims.base_id(requester, "compute", "RUN", b"in", b"n" * 16)
    claim = claims.make_claim(network_id="net", task_id=claims.execution_id(base, provider),
                              plugin="compute", requester=requester, provider=provider,
                              epoch=3, units=1, result=result)
    return wire_pb2.TaskVerdictRequest(task=task, requester=requester, result=result,
                                       claim=claim), claim


def test_an_execution_shown_must_be_the_one_the_claim_names() -> None:
    shown, claim_bytes = execution()
    claim = parse_claim(claim_bytes)
    assert claim is not None
    assert mismatch(shown, claim_bytes, claim) is None
    changes: list[tuple[str, str, object, str]] = [  # (part, field, value, why)
        ("task", "payload", b"other", "payload"), ("task", "nonce", b"m" * 16, "payload"),
        ("task", "kind", "OTHER", "payload"), ("", "result", b"forged", "result"),
        ("", "requester", b"x" * 32, "requester"), ("", "claim", b"another", "another claim")]
    for part, name, value, why in changes:
        changed = wire_pb2.TaskVerdictRequest()
        changed.CopyFrom(shown)
        setattr(changed.task if part else changed, name, value)
        assert why in str(mismatch(changed, claim_bytes, claim))


def test_the_journal_keeps_recent_executions_within_its_bounds(tmp_path: Path) -> None:
    path = tmp_path / "executions.sqlite"
    journal = ExecutionJournal(path, keep_epochs=4, shown_epochs=2, max_bytes=1000)
    journal.add(b"a", 1, b"x" * 400)
    journal.add(b"b", 2, b"y" * 400)
    journal.add(b"c", 3, b"z" * 400)  # over 1000 bytes, but all may still be audited
    assert journal.get(b"a") == (1, b"x" * 400) and journal.get(b"c") == (3, b"z" * 400)
    journal.add(b"d", 4, b"w" * 10)  # now a is past its audits: the oldest goes
    assert journal.get(b"a") is None and journal.get(b"b") is not None
    journal.add(b"e", 6, b"v" * 5000)  # b and c go; d (epoch 4) may still be audited
    assert journal.get(b"b") is None and journal.get(b"c") is None
    assert journal.get(b"d") == (4, b"w" * 10) and journal.get(b"e") == (6, b"v" * 5000)
    journal.add(b"f", 8, b"u" * 10)  # d is past its audits: over the bound, it goes
    assert journal.get(b"d") is None and journal.get(b"e") is not None
    journal.close()
    again = ExecutionJournal(path, keep_epochs=4, shown_epochs=2, max_bytes=1000)
    assert again.get(b"e") == (6, b"v" * 5000)  # on disk: a restart keeps it
    again.add(b"g", 10, b"t" * 10)
    assert again.get(b"e") is None  # the byte count was read back at open
    again.add(b"h", 13, b"s" * 10)  # keeps epochs 9 and later, whatever the size
    assert again.get(b"f") is None and again.get(b"g") == (10, b"t" * 10)


def test_a_report_shown_must_be_the_reported_work_the_claim_names() -> None:
    requester, provider = b"r" * 32, b"p" * 32
    claim_bytes = claims.make_claim(
        network_id="net", task_id=claims.report_id(requester, provider, "storage", "KEEP",
                                                   b"detail"),
        plugin="storage", requester=requester, provider=provider, epoch=3, units=2,
        result=b"detail")
    claim = parse_claim(claim_bytes)
    assert claim is not None
    report = wire_pb2.TaskReport(plugin="storage", kind="KEEP", detail=b"detail")
    assert is_report(report, claim)
    for changed in (wire_pb2.TaskReport(plugin="storage", kind="KEEP", detail=b"other"),
                    wire_pb2.TaskReport(plugin="storage", kind="RETRIEVE_FILE",
                                        detail=b"detail"),
                    wire_pb2.TaskReport(plugin="compute", kind="KEEP", detail=b"detail")):
        assert not is_report(changed, claim)
    _, execution_claim = execution()  # an execution's claim is no report
    parsed = parse_claim(execution_claim)
    assert parsed is not None and not is_report(report, parsed)


class FakeProvider:
    """The direct requests an auditor makes: the provider's answers, in turn."""

    def __init__(self, answers: list[bytes | errors.MeshError], reachable: bool) -> None:
        self.answers, self.reachable = answers, reachable
        self.asked: list[tuple[str, str]] = []  # (peer, protocol)

    async def request(self, peer_id: str, name: str, payload: bytes, *,
                      timeout: float) -> bytes:
        self.asked.append((peer_id, name))
        if name == RECEIPT_AUDIT_PROTOCOL:  # the confirmer's verdict
            return wire_pb2.TaskVerdictAnswer(verdict_entry=b"c" * 32).SerializeToString()
        answer = self.answers.pop(0)
        if isinstance(answer, errors.MeshError):
            raise answer
        return answer

    async def ping(self, peer_id: str, timeout: float) -> float:
        if not self.reachable:
            raise errors.DeadlineExceeded("no answer")
        return 0.01


class FakeLedger:
    key = b"a" * 32
    final_epoch = 4

    def __init__(self) -> None:
        self.clock = 5
        self.verdicts: list[bytes] = []  # expected digests written

    def clock_epoch(self) -> int:
        return self.clock

    async def write(self, *, task_verdict: ledger_pb2.TaskVerdict) -> SimpleNamespace:
        self.verdicts.append(task_verdict.expected_digest)
        return SimpleNamespace(hash=bytes([len(self.verdicts)]) * 32)


class FakeHost:
    """The auditor's host: a provider it reaches (dialled when not connected: counted)."""

    def __init__(self, provider: FakeProvider) -> None:
        self.direct = provider
        self.dialled = 0

    async def reach(self, peer_id: str, timeout: float) -> None:
        self.dialled += 1
        if not self.direct.reachable:
            raise errors.FailedPrecondition("the DHT has no address for it")


class MemoryPendingFile:
    """pending_audits.PendingAuditFile, in memory."""

    def __init__(self) -> None:
        self.kept: list[Kept] = []

    def load(self) -> list[Kept]:
        return list(self.kept)

    def save(self, kept: list[Kept]) -> None:
        self.kept = list(kept)


def auditing(answers: list[bytes | errors.MeshError], *, reachable: bool,
             pending_file: PendingAuditFile | MemoryPendingFile | None = None,
             ) -> tuple[ReceiptAuditor, FakeProvider, FakeLedger, Drawn]:
    provider, ledger = FakeProvider(answers, reachable), FakeLedger()
    plugins = SimpleNamespace(task_kind=lambda plugin, kind: None)  # no rule here
    auditor = ReceiptAuditor(FakeHost(provider), ledger, plugins,  # type: ignore
                             pending_file or MemoryPendingFile())
    _, claim_bytes = execution()
    claim = parse_claim(claim_bytes)
    receipt = SimpleNamespace(hash=b"R" * 32, body=SimpleNamespace(
        epoch=3, task_receipt=SimpleNamespace(claim=claim_bytes, provider_signature=b"s")))
    return auditor, provider, ledger, Drawn(receipt, claim, [b"c" * 32])  # type: ignore


async def test_a_provider_that_answers_pings_but_not_the_audit_twice_is_judged() -> None:
    kept_none = errors.InvalidArgument("this node keeps no execution")
    auditor, provider, ledger, found = auditing([kept_none, kept_none], reachable=True)
    audited = await auditor.audit(found)
    assert (audited.outcome, ledger.verdicts) == ("pending", [])  # one ask: asked again
    assert "1 of 2" in audited.detail and "keeps no execution" in audited.detail
    await auditor.ask_again(4)  # the same final epoch: not asked twice in it
    assert len(provider.asked) == 1
    ledger.final_epoch = 5
    await auditor.ask_again(5)
    assert audited.outcome == "failed" and "not shown to 2 asks" in audited.detail
    assert ledger.verdicts == [claims.unshown_digest(found.receipt.body.task_receipt.claim)]
    # The next validator in the draw's order is asked to audit it itself.
    assert provider.asked[-1][1] == RECEIPT_AUDIT_PROTOCOL
    assert audited.verdicts == [(b"\x01" * 32).hex(), (b"c" * 32).hex()]
    assert (auditor.counts.failed, auditor.counts.unshown) == (1, 0)


async def test_a_provider_not_reachable_within_the_window_is_not_judged() -> None:
    auditor, _, ledger, found = auditing([], reachable=False)  # no address answers
    audited = await auditor.audit(found)
    assert "the DHT has no address for it" in audited.detail
    for final in (5, 6):
        ledger.final_epoch = final
        await auditor.ask_again(final)
        assert audited.outcome == "pending" and "0 of 2" in audited.detail
    ledger.clock = found.receipt.body.epoch + SHOW_EPOCHS  # the window is over
    ledger.final_epoch = 7
    await auditor.ask_again(7)
    assert audited.outcome == "unshown" and ledger.verdicts == []
    assert (auditor.counts.unshown, auditor.counts.failed) == (1, 0)
    dialled = auditor._host.dialled
    await auditor.ask_again(8)
    assert auditor._host.dialled == dialled  # no longer pending: not asked again


async def test_a_provider_that_shows_the_execution_at_a_later_ask_is_not_judged() -> None:
    shown, _ = execution()
    answer = wire_pb2.TaskExecutionAnswer(execution=shown).SerializeToString()
    auditor, _, ledger, found = auditing(
        [errors.DeadlineExceeded("busy"), answer], reachable=True)
    audited = await auditor.audit(found)
    assert audited.outcome == "pending" and "1 of 2" in audited.detail
    ledger.final_epoch = 5
    await auditor.ask_again(5)
    assert audited.outcome == "unchecked" and ledger.verdicts == []  # no rule here


async def test_showing_what_is_not_the_claims_execution_is_a_denial() -> None:
    report = wire_pb2.TaskReport(plugin="compute", kind="RUN", detail=b"out")
    answer = wire_pb2.TaskExecutionAnswer(report=report).SerializeToString()
    auditor, _, ledger, found = auditing([answer, answer], reachable=True)
    audited = await auditor.audit(found)
    ledger.final_epoch = 5
    await auditor.ask_again(5)
    assert audited.outcome == "failed" and "the provider showed no execution" in audited.detail


def confirming(answers: list[bytes | errors.MeshError], *, counted: bool = True,
               pending_file: PendingAuditFile | None = None,
               ) -> tuple[ReceiptAuditor, FakeProvider, FakeLedger, list[bytes], bytes]:
    """A validator asked on receipt-audit: (its auditor, provider, ledger, the draw's
    order of validators, the receipt's hash). It ranks second."""
    auditor, provider, ledger, found = auditing(answers, reachable=True,
                                                pending_file=pending_file)
    validators = [bytes([v]) * 32 for v in range(10, 14)]
    decision = SimpleNamespace(value=b"v" * 32, root=b"r" * 32)
    ledger.settlements = SimpleNamespace(decision=lambda epoch: decision)  # type: ignore
    seed = beacon(ledger, 3)  # type: ignore
    order = ranked(seed, claim_hash(found.receipt.body.task_receipt.claim), validators)
    ledger.key = order[1]
    evidence = [SimpleNamespace(entry=found.receipt.hash)] if counted else []
    settled = SimpleNamespace(
        validators=[(v, 1) for v in validators],
        params=SimpleNamespace(market=SimpleNamespace(spot_check_bps=10_000)),
        record=SimpleNamespace(lines=[SimpleNamespace(pool="tasks", evidence=evidence)]))
    found.receipt.kind = "task_receipt"
    ledger.settled_at = lambda epoch: settled  # type: ignore
    ledger.store = SimpleNamespace(  # type: ignore
        get=lambda h: found.receipt if h == found.receipt.hash else None)
    return auditor, provider, ledger, order, found.receipt.hash


async def test_a_confirmer_judges_a_provider_that_denies_it_too_once_per_receipt(
        autojump_clock: trio.testing.MockClock) -> None:
    kept_none = errors.InvalidArgument("this node keeps no execution")
    confirmer, provider, ledger, order, receipt = confirming([kept_none, kept_none])
    ask = wire_pb2.ReceiptAuditRequest(receipt=receipt).SerializeToString()
    answer = wire_pb2.TaskVerdictAnswer.FromString(
        await confirmer._serve_confirm(accounts.peer_id_of(order[0]), ask))
    assert answer.verdict_entry == b"\x01" * 32
    assert ledger.verdicts == [claims.unshown_digest(
        ledger.store.get(receipt).body.task_receipt.claim)]
    again = await confirmer._serve_confirm(accounts.peer_id_of(order[0]), ask)
    assert wire_pb2.TaskVerdictAnswer.FromString(again) == answer
    assert len(provider.asked) == 2 and len(ledger.verdicts) == 1  # not asked again
    [audited] = confirmer.recent
    assert audited.outcome == "failed" and audited.detail.startswith("asked by its auditor")


@pytest.mark.parametrize(("asker", "counted", "late", "why"), [
    (2, True, False, "did not draw that receipt for the asker"),
    (0, False, False, "settlement did not count that receipt"),
    (0, True, True, "past its audits"),
])
async def test_a_confirmer_refuses_what_is_not_its_to_audit(
        asker: int, counted: bool, late: bool, why: str) -> None:
    confirmer, provider, ledger, order, receipt = confirming([], counted=counted)
    if late:
        ledger.clock = 3 + SHOW_EPOCHS + 3
    ask = wire_pb2.ReceiptAuditRequest(receipt=receipt).SerializeToString()
    with pytest.raises(errors.InvalidArgument, match=why):
        await confirmer._serve_confirm(accounts.peer_id_of(order[asker]), ask)
    assert provider.asked == [] and ledger.verdicts == []


async def test_a_confirmer_the_provider_shows_the_execution_to_does_not_judge_it() -> None:
    shown, _ = execution()
    confirmer, _, ledger, order, receipt = confirming(
        [wire_pb2.TaskExecutionAnswer(execution=shown).SerializeToString()])
    ask = wire_pb2.ReceiptAuditRequest(receipt=receipt).SerializeToString()
    with pytest.raises(errors.InvalidArgument, match="showed the execution to this node"):
        await confirmer._serve_confirm(accounts.peer_id_of(order[0]), ask)
    assert ledger.verdicts == []


async def test_an_epoch_whose_audits_wait_does_not_hold_back_the_next() -> None:
    auditor, provider, ledger, _ = auditing([], reachable=True)
    provider.serving = lambda *args, **kwargs: contextlib.nullcontext()  # type: ignore
    finals_in, finals = trio.open_memory_channel[int](3)

    async def next_final(after: int) -> int:
        return await finals.receive()  # an epoch final, as the test says
    ledger.next_final = next_final  # type: ignore
    started: list[int] = []
    third = trio.Event()

    async def audit_epoch(epoch: int) -> None:
        started.append(epoch)
        if epoch == 7:
            third.set()
        if epoch == 5:  # a rule, or a confirmer, that takes an hour
            await trio.sleep_forever()
    auditor.audit_epoch = audit_epoch  # type: ignore
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(auditor.run)
            for final in (5, 6, 7):
                await finals_in.send(final)
            await third.wait()
            nursery.cancel_scope.cancel()
    assert started == [5, 6, 7]


async def test_a_pending_audit_is_taken_up_again_after_a_restart(tmp_path: Path) -> None:
    """A provider that denied one ask does not escape when its auditor restarts."""
    kept_none = errors.InvalidArgument("this node keeps no execution")
    path = PendingAuditFile(tmp_path / "receipt-audits.json")
    before, _, ledger, order, receipt = confirming([kept_none], pending_file=path)
    ledger.key = order[0]  # the receipt's auditor
    item = ledger.store.get(receipt)
    seed = beacon(ledger, 3)  # type: ignore[arg-type]
    [found] = before.mine(seed, ledger.settled_at(3), [item])  # type: ignore[arg-type]
    assert (await before.audit(found)).outcome == "pending"
    assert path.load() == [Kept(receipt, 1, 4)]

    after, provider, _, _, _ = confirming([kept_none], pending_file=path)
    after._ledger = ledger  # the same node, its ledger as it was
    after._host = FakeHost(provider)
    await after.resume()
    [resumed] = after.recent
    assert resumed.outcome == "pending" and "1 of 2" in resumed.detail
    ledger.final_epoch = 5
    await after.ask_again(5)
    assert resumed.outcome == "failed" and "not shown to 2 asks" in resumed.detail
    assert path.load() == []  # judged: no longer pending


def test_an_unreadable_pending_audit_file_costs_its_audits_not_the_start(
        tmp_path: Path) -> None:
    path = tmp_path / "receipt-audits.json"
    for damaged in (b"", b"{", b'{"pending": [{"receipt": "zz"}]}', b"[]"):
        path.write_bytes(damaged)
        assert PendingAuditFile(path).load() == []
