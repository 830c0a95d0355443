"""Receipt audits (meshd/tasks/receipt_audits.py) and the provider's journal
(meshd/tasks/executions.py): the draw is at the network's rate and nobody's choice,
an execution shown is the claim's or refused, and the journal keeps what it must."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest

from mesh.wire.v1 import wire_pb2
from meshcore.ledger.evidence_rules import parse_claim
from meshcore.tasks import claims
from meshd.tasks.executions import ExecutionJournal
from meshd.tasks.receipt_audits import drawn, is_report, mismatch, ranked

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
    journal = ExecutionJournal(tmp_path / "executions.sqlite", keep_epochs=2, max_bytes=1000)
    journal.add(b"a", 1, b"x" * 400)
    journal.add(b"b", 2, b"y" * 400)
    assert journal.get(b"a") == (1, b"x" * 400)
    journal.add(b"c", 3, b"z" * 400)  # over 1000 bytes: the oldest goes
    assert journal.get(b"a") is None and journal.get(b"c") == (3, b"z" * 400)
    journal.add(b"d", 5, b"w" * 10)  # epoch 5 keeps epochs 3 and later
    assert journal.get(b"b") is None and journal.get(b"c") is not None
    journal.add(b"e", 5, b"v" * 5000)  # alone over the bound: kept, the rest go
    assert journal.get(b"e") == (5, b"v" * 5000) and journal.get(b"c") is None
    journal.close()
    again = ExecutionJournal(tmp_path / "executions.sqlite", keep_epochs=2, max_bytes=1000)
    assert again.get(b"e") == (5, b"v" * 5000)  # on disk: a restart keeps it
    again.add(b"f", 5, b"u" * 10)
    assert again.get(b"e") is None  # the byte count was read back at open


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
