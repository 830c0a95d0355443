"""Evidence entries judged by their own content (docs/ledger.md §3.2 table)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import nacl.signing
import pytest

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import entry
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash, encode_claim, evidence_problem, sign_claim
from tests.unit.settle_helpers import NET, PLUGINS, Author, task_claim

REQ, PROV, OTHER = Author(90), Author(91), Author(92)


def problem(item: Verified) -> str | None:
    return evidence_problem(item, NET, PLUGINS)


def observe(*observations: tuple[bytes, int, int], author: Author | None = None) -> Verified:
    return (author or Author(93)).add(0, attestation=ledger_pb2.UptimeAttestation(
        observations=[ledger_pb2.Observation(subject=s, probes=p, answered=a)
                      for s, p, a in observations]))


def receipt_with(claim: bytes, signature: bytes | None = None, epoch: int = 0) -> Verified:
    return REQ.add(epoch, task_receipt=ledger_pb2.TaskReceipt(
        claim=claim, provider_signature=signature or sign_claim(PROV.seed, claim)))


def claim(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "network_id": NET, "task_id": bytes(32), "plugin": "compute", "requester": REQ.key,
        "provider": PROV.key, "units": 3, "result_digest": bytes([1]) * 32}
    fields.update(changes)
    return encode_claim(ledger_pb2.TaskClaim(**fields))  # type: ignore[arg-type]


def test_claim_hash_and_signature_are_domain_separated() -> None:
    raw = claim()
    assert claim_hash(raw) == hashlib.sha256(b"mesh/task-claim/v1\x00" + raw).digest()
    nacl.signing.VerifyKey(PROV.key).verify(b"mesh/task-claim/v1\x00" + raw,
                                            sign_claim(PROV.seed, raw))


def test_valid_evidence_has_no_problem() -> None:
    a, b = Author(94), Author(95)
    x = a.add(0, anchor=ledger_pb2.Anchor())
    y = a.fork(stake=ledger_pb2.Stake(amount=1))
    assert problem(observe((a.key, 3, 3), (b.key, 10, 0))) is None
    assert problem(REQ.receipt(0, PROV, task=1, units=5)) is None
    assert problem(OTHER.verdict(4, task_claim(REQ, PROV, 1, 5, epoch=2), PROV)) is None
    assert problem(OTHER.accuse(0, x, y)) is None


@pytest.mark.parametrize("observations, reason", [
    ([], "1 to 1024 observations"),
    ([(bytes(31), 3, 3)], "32-byte key"),
    ([(bytes([1]) * 32, 2, 2)], "probes must be 3 to 100000"),
    ([(bytes([1]) * 32, 100_001, 2)], "probes must be 3 to 100000"),
    ([(bytes([1]) * 32, 3, 4)], "answered 4 exceeds probes 3"),
    ([(bytes([2]) * 32, 3, 3), (bytes([1]) * 32, 3, 3)], "strictly ascending"),
    ([(bytes([2]) * 32, 3, 3), (bytes([2]) * 32, 3, 3)], "strictly ascending"),
])
def test_attestation_rules(observations: list[tuple[bytes, int, int]], reason: str) -> None:
    assert reason in (problem(observe(*observations)) or "")


def test_an_attester_cannot_observe_itself() -> None:
    me = Author(96)
    assert "observes itself" in (problem(observe((me.key, 3, 3), author=me)) or "")


@pytest.mark.parametrize("item, reason", [
    (lambda: receipt_with(claim() + b"\x50\x01"), "canonically encoded"),  # unknown field 10
    (lambda: receipt_with(claim(network_id="net_other")), "not net_"),
    (lambda: receipt_with(claim(requester=OTHER.key)), "name its author as requester"),
    (lambda: receipt_with(claim(provider=REQ.key)), "provider must be another account"),
    (lambda: receipt_with(claim(plugin="storage")), "not required by the genesis"),
    (lambda: receipt_with(claim(epoch=1)), "differs from the entry's epoch"),
    (lambda: receipt_with(claim(units=0)), "units must be at least 1"),
    (lambda: receipt_with(claim(task_id=bytes(31))), "task_id is not 32 bytes"),
    (lambda: receipt_with(claim(result_digest=b"")), "result_digest is not 32 bytes"),
    (lambda: receipt_with(claim(), sign_claim(OTHER.seed, claim())), "does not verify"),
])
def test_receipt_rules(item: Callable[[], Verified], reason: str) -> None:
    assert reason in (problem(item()) or "")


def test_verdict_rules() -> None:
    raw = claim(epoch=0)
    by_provider = PROV.add(0, task_verdict=ledger_pb2.TaskVerdict(
        claim=raw, provider_signature=sign_claim(PROV.seed, raw), expected_digest=bytes(32)))
    assert "cannot judge its own task" in (problem(by_provider) or "")
    agreeing = OTHER.add(0, task_verdict=ledger_pb2.TaskVerdict(
        claim=raw, provider_signature=sign_claim(PROV.seed, raw),
        expected_digest=bytes([1]) * 32))
    assert "not a failure" in (problem(agreeing) or "")
    short = OTHER.add(0, task_verdict=ledger_pb2.TaskVerdict(
        claim=raw, provider_signature=sign_claim(PROV.seed, raw), expected_digest=bytes(31)))
    assert "expected_digest is not 32 bytes" in (problem(short) or "")


def test_penalty_rules() -> None:
    a, b, accuser = Author(97), Author(98), Author(99)
    x = a.add(0, anchor=ledger_pb2.Anchor())
    y = a.fork(stake=ledger_pb2.Stake(amount=1))
    other_seq = a.add(0, stake=ledger_pb2.Stake(amount=2))
    someone_else = b.add(0, anchor=ledger_pb2.Anchor())
    low, high = sorted([x, y], key=lambda e: e.hash)

    def accuse(first: bytes, second: bytes) -> Verified:
        return accuser.add(0, penalty=ledger_pb2.Penalty(
            equivocation=ledger_pb2.Equivocation(entry_a=first, entry_b=second)))

    assert "entry_a's hash first" in (problem(accuse(high.raw, low.raw)) or "")
    assert "entry_a's hash first" in (problem(accuse(x.raw, x.raw)) or "")
    assert "same author and seq" in (problem(accuse(x.raw, other_seq.raw)) or "")
    assert "same author and seq" in (problem(accuse(x.raw, someone_else.raw)) or "")
    wire = ledger_pb2.Entry.FromString(y.raw)
    forged = ledger_pb2.Entry(body=wire.body, signature=bytes(64)).SerializeToString()
    assert "signature does not verify" in (problem(accuse(low.raw, forged)) or "")
    assert "not canonically encoded" in (problem(accuse(low.raw, y.raw + b"\x18\x01")) or "")
    assert "carry equivocation" in (problem(accuser.add(0, penalty=ledger_pb2.Penalty()))
                                    or "")
    foreign = ledger_pb2.EntryBody(network_id="net_other", author=a.key, seq=1,
                                   anchor=ledger_pb2.Anchor())
    assert "of network" in (problem(accuse(low.raw, entry.sign(a.seed, foreign))) or "")


def test_other_kinds_are_not_evidence() -> None:
    with pytest.raises(ValueError, match="not an evidence kind"):
        problem(Author(100).add(0, anchor=ledger_pb2.Anchor()))
