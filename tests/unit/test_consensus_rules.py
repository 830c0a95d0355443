"""The §3.2 rows close, proposal, prevote, precommit, certificate, against a fake store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger.consensus import Validators
from meshcore.ledger.consensus_rules import consensus_problem
from meshcore.ledger.entry import Verified, entry_hash

NET = "net_test"
A, B, C, D = (bytes([i]) * 32 for i in (1, 2, 3, 4))
FOUR: Validators = ((A, 1), (B, 1), (C, 1), (D, 1))  # epoch 1: round 1 led by B, 2 by C
E = 1
ROOT = b"r" * 32
Kind = dict[str, Any]  # one EntryBody kind field, as keyword arguments


@dataclass
class FakePast:
    """Entries by hash, each author's chain as a list (no forks), V(E) and roots."""

    entries: dict[bytes, Verified] = field(default_factory=dict)
    chains: dict[bytes, list[Verified]] = field(default_factory=dict)

    def add(self, author: bytes, deps: tuple[Verified, ...] = (), epoch: int = E,
            **kind: Any) -> Verified:
        chain = self.chains.setdefault(author, [])
        body = ledger_pb2.EntryBody(
            network_id=NET, author=author, seq=len(chain) + 1,
            prev=chain[-1].hash if chain else b"", epoch=epoch,
            deps=sorted(d.hash for d in deps), **kind)
        item = Verified(entry_hash(body.SerializeToString(deterministic=True)), body, b"")
        self.entries[item.hash] = item
        chain.append(item)
        return item

    def get(self, entry_hash: bytes) -> Verified | None:
        return self.entries.get(entry_hash)

    def _before(self, item: Verified) -> list[Verified]:
        return self.chains[item.author][:item.seq - 1]

    def own_entry(self, item: Verified, kind: str, epoch: int, round_: int) -> Verified | None:
        for x in self._before(item):
            message = getattr(x.body, kind) if x.kind == kind else None
            if message is not None and (message.epoch, message.round) == (epoch, round_):
                return x
        return None

    def last_round(self, item: Verified, kind: str) -> tuple[int, int] | None:
        rounds = [(getattr(x.body, kind).epoch, getattr(x.body, kind).round)
                  for x in self._before(item) if x.kind == kind]
        return rounds[-1] if rounds else None

    def validators(self, epoch: int) -> Validators:
        return FOUR

    def state_root_of(self, epoch: int, value: bytes) -> bytes:
        return ROOT


def proposal(round_: int = 1, origin: bytes = b"", valid_round: int = 0
             ) -> Kind:
    return {"proposal": ledger_pb2.SettlementProposal(epoch=E, round=round_, origin=origin,
                                                      valid_round=valid_round)}


def prevote(value: bytes, round_: int = 1, epoch: int = E) -> Kind:
    return {"prevote": ledger_pb2.Prevote(epoch=epoch, round=round_, value=value)}


def precommit(value: bytes, round_: int = 1, root: bytes = ROOT) -> Kind:
    return {"precommit": ledger_pb2.SettlementSignature(epoch=E, round=round_, value=value,
                                                        state_root=root if value else b"")}


def certificate(value: bytes, round_: int = 1) -> Kind:
    return {"certificate": ledger_pb2.Certificate(epoch=E, round=round_, value=value)}


def check(item: Verified, past: FakePast, fin_p: int = E - 1) -> str | None:
    return consensus_problem(item, fin_p, past)


@pytest.fixture
def past() -> FakePast:
    return FakePast()


def test_close_is_written_after_its_epoch(past: FakePast) -> None:
    assert check(past.add(A, close=ledger_pb2.EpochClose(epoch=0), epoch=1), past) is None
    assert "later epoch" in str(check(past.add(A, close=ledger_pb2.EpochClose(epoch=1),
                                               epoch=1), past))


def test_original_proposal(past: FakePast) -> None:
    assert check(past.add(B, **proposal(1)), past) is None
    assert "does not lead" in str(check(past.add(A, **proposal(1)), past))
    assert "exactly epoch 0 final" in str(check(past.add(B, **proposal(2)), past, fin_p=-1))
    assert "rounds start at 1" in str(check(past.add(D, **proposal(0)), past))
    assert "valid_round 0" in str(check(past.add(C, **proposal(2, valid_round=1)), past))


def test_proposal_rounds_increase_along_the_chain(past: FakePast) -> None:
    assert check(past.add(B, **proposal(1)), past) is None
    assert check(past.add(B, **proposal(5)), past) is None
    assert "does not follow" in str(check(past.add(B, **proposal(1)), past))


def pol(past: FakePast, value: Verified, voters: tuple[bytes, ...], round_: int = 1
        ) -> tuple[Verified, ...]:
    return tuple(past.add(v, deps=(value,) if v != value.author else (),
                          **prevote(value.hash, round_)) for v in voters)


def test_re_proposal_needs_a_quorum_pol_of_an_earlier_round(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    votes = pol(past, original, (A, B, D))
    good = past.add(C, deps=(*votes, original), **proposal(2, original.hash, 1))
    assert check(good, past) is None
    short = past.add(C, deps=votes[:2], **proposal(6, original.hash, 1))  # C leads 2, 6, ...
    assert "proof of lock" in str(check(short, past))
    late = past.add(C, deps=votes, **proposal(10, original.hash, 10))
    assert "valid_round must be in 1..9" in str(check(late, past))
    not_original = past.add(C, deps=votes, **proposal(14, good.hash, 1))
    assert "not an original proposal" in str(check(not_original, past))


def test_re_proposal_counts_the_leaders_own_prevote_on_its_chain(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    a_vote, _, d_vote = pol(past, original, (A, C, D))
    assert check(past.add(C, deps=(a_vote, d_vote), **proposal(2, original.hash, 1)),
                 past) is None
    b_vote = pol(past, original, (B,))[0]
    assert check(past.add(C, deps=(a_vote, b_vote), **proposal(6, original.hash, 1)),
                 past) is None  # A, B named, C's own: 3 of 4
    d_lead = past.add(D, deps=(a_vote,), **proposal(3, original.hash, 1))
    assert "proof of lock" in str(check(d_lead, past))  # A named, D's own: 2 of 4


def test_pol_ignores_strangers_duplicates_and_other_rounds(past: FakePast) -> None:
    stranger = b"\x09" * 32
    original = past.add(B, **proposal(1))
    votes = (*pol(past, original, (A, B, stranger)), *pol(past, original, (D,), round_=2))
    re = past.add(C, deps=votes, **proposal(2, original.hash, 1))
    assert "proof of lock" in str(check(re, past))


def test_prevote(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    assert check(past.add(A, deps=(original,), **prevote(original.hash)), past) is None
    assert check(past.add(A, **prevote(b"", round_=2)), past) is None
    assert "does not follow" in str(check(past.add(A, **prevote(b"", round_=2)), past))
    assert "does not name" in str(check(past.add(A, **prevote(original.hash, 3)), past))
    assert check(past.add(B, **prevote(original.hash, 1)), past) is None  # own proposal
    assert "not a validator" in str(check(past.add(b"\x09" * 32, **prevote(b"")), past))
    assert "not an original" in str(check(past.add(C, **prevote(b"z" * 32)), past))
    assert "exactly epoch 0" in str(check(past.add(D, **prevote(b"")), past, fin_p=1))


def test_prevote_of_a_re_proposed_value_names_the_original(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    votes = pol(past, original, (A, B, D))
    re = past.add(C, deps=votes, **proposal(2, original.hash, 1))
    assert "does not name" in str(check(past.add(D, deps=(re,), **prevote(original.hash, 2)),
                                        past))
    assert check(past.add(A, deps=(original, re), **prevote(original.hash, 2)), past) is None
    assert "not an original" in str(check(past.add(A, deps=(re,), **prevote(re.hash, 3)), past))


def test_precommit_carries_the_settlement_root(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    assert check(past.add(A, deps=(original,), **precommit(original.hash)), past) is None
    assert check(past.add(A, **precommit(b"", 2)), past) is None
    wrong = past.add(A, deps=(original,), **precommit(original.hash, 3, root=b"q" * 32))
    assert "state_root" in str(check(wrong, past))
    nil_root = past.add(A, precommit=ledger_pb2.SettlementSignature(epoch=E, round=4,
                                                                    state_root=ROOT))
    assert "nil precommit" in str(check(nil_root, past))
    # Prevotes and precommits are separate sequences.
    assert check(past.add(A, deps=(original,), **prevote(original.hash, 1)), past) is None


def test_certificate_names_a_quorum_of_precommits_in_one_round(past: FakePast) -> None:
    original = past.add(B, **proposal(1))
    r1 = [past.add(v, deps=(original,) if v != B else (), **precommit(original.hash, 1))
          for v in (A, B)]
    r2 = past.add(D, deps=(original,), **precommit(original.hash, 2))
    mixed = past.add(C, deps=(*r1, r2), **certificate(original.hash, 1))
    assert "from a quorum" in str(check(mixed, past))
    own = past.add(C, deps=(original,), **precommit(original.hash, 1))
    assert check(past.add(C, deps=tuple(r1), **certificate(original.hash, 1)), past) is None
    by_anyone = past.add(b"\x09" * 32, deps=(*r1, own), **certificate(original.hash, 1))
    assert check(by_anyone, past) is None
    assert check(by_anyone, past, fin_p=5) is None  # a late certificate is still valid
    assert "epoch 0 final" in str(check(by_anyone, past, fin_p=-1))
    assert "not nil" in str(check(past.add(A, **certificate(b"", 1)), past))


def test_other_kinds_are_not_judged_here(past: FakePast) -> None:
    with pytest.raises(ValueError):
        check(past.add(A, anchor=ledger_pb2.Anchor()), past)
