"""Builders shared by the settlement tests: authors with chains, states, evidence."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import GovernanceParams, RewardPolicy, RewardSplit
from meshcore.ledger import entry
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import encode_claim, sign_claim
from meshcore.ledger.state import Account, Params, Settled

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
PS = 1000  # proposal_stake: MIN_ATTEST_STAKE 100, MIN_VALIDATOR_STAKE 1000
PLUGINS = frozenset({"compute"})


def value(n: int) -> bytes:
    """A stand-in for the hash of decided proposal ``n``."""
    return hashlib.sha256(b"value %d" % n).digest()


def params(emission: int = 0, split: tuple[int, int, int] = (40, 40, 20)) -> Params:
    return Params(RewardPolicy(epoch_seconds=60, emission_per_epoch=emission,
                               split=RewardSplit(*split)),
                  GovernanceParams(proposal_stake=PS))


class Author:
    """A key and its own chain; ``fork`` signs a second body for the last seq."""

    def __init__(self, n: int) -> None:
        self.seed = bytes([n]) * 32
        self.key = entry.public_key(self.seed)
        self.chain: list[Verified] = []

    def body(self, epoch: int, seq: int, prev: bytes,
             **kind: object) -> ledger_pb2.EntryBody:
        return ledger_pb2.EntryBody(network_id=NET, author=self.key, seq=seq, prev=prev,
                                    epoch=epoch, **kind)  # type: ignore[arg-type]

    def add(self, epoch: int = 0, **kind: object) -> Verified:
        prev = self.chain[-1] if self.chain else None
        item = entry.verify(entry.sign(self.seed, self.body(
            epoch, prev.seq + 1 if prev else 1, prev.hash if prev else b"", **kind)), NET)
        self.chain.append(item)
        return item

    def fork(self, epoch: int = 0, **kind: object) -> Verified:
        """Another body for the seq of the last entry, on the same prev (not chained on)."""
        last = self.chain[-1]
        return entry.verify(entry.sign(self.seed, self.body(
            epoch, last.seq, last.body.prev, **kind)), NET)

    def pay(self, to: Author, amount: int, epoch: int = 0) -> Verified:
        return self.add(epoch, transfer=ledger_pb2.Transfer(to=to.key, amount=amount))

    def stake(self, amount: int, epoch: int = 0) -> Verified:
        return self.add(epoch, stake=ledger_pb2.Stake(amount=amount))

    def unstake(self, amount: int, epoch: int = 0) -> Verified:
        return self.add(epoch, unstake=ledger_pb2.Unstake(amount=amount))

    def withdraw(self, amount: int, epoch: int = 0) -> Verified:
        return self.add(epoch, withdraw=ledger_pb2.Withdraw(amount=amount))

    def attest(self, epoch: int, *observed: tuple[Author, int, int]) -> Verified:
        """An attestation: (subject, probes, answered) per subject."""
        return self.add(epoch, attestation=ledger_pb2.UptimeAttestation(observations=[
            ledger_pb2.Observation(subject=s.key, probes=p, answered=a)
            for s, p, a in sorted(observed, key=lambda o: o[0].key)]))

    def receipt(self, epoch: int, provider: Author, task: int, units: int, *,
                price: int = 0, escrow: int | None = None) -> Verified:
        """A receipt of ``provider``'s claim; ``price`` out of the lock of task ``escrow``."""
        claim = task_claim(self, provider, task, units, epoch, price=price, escrow=escrow)
        return self.add(epoch, task_receipt=ledger_pb2.TaskReceipt(
            claim=claim, provider_signature=sign_claim(provider.seed, claim)))

    def lock(self, task: int, amount: int, until: int, epoch: int = 0) -> Verified:
        return self.add(epoch, lock=ledger_pb2.EscrowLock(task=task_id(task), amount=amount,
                                                          until=until))

    def verdict(self, epoch: int, claim: bytes, provider: Author) -> Verified:
        return self.add(epoch, task_verdict=ledger_pb2.TaskVerdict(
            claim=claim, provider_signature=sign_claim(provider.seed, claim),
            expected_digest=bytes([0xEE]) * 32))

    def accuse(self, epoch: int, a: Verified, b: Verified) -> Verified:
        first, second = sorted([a, b], key=lambda e: e.hash)
        return self.add(epoch, penalty=ledger_pb2.Penalty(
            equivocation=ledger_pb2.Equivocation(entry_a=first.raw, entry_b=second.raw)))

    def precommit(self, epoch: int, voted_epoch: int, round_: int, voted: bytes) -> Verified:
        return self.add(epoch, precommit=ledger_pb2.SettlementSignature(
            epoch=voted_epoch, round=round_, value=voted, state_root=bytes(32)))


def task_id(task: int) -> bytes:
    return hashlib.sha256(b"task %d" % task).digest()


def task_claim(requester: Author, provider: Author, task: int, units: int,
               epoch: int, *, price: int = 0, escrow: int | None = None) -> bytes:
    return encode_claim(ledger_pb2.TaskClaim(
        network_id=NET, task_id=hashlib.sha256(b"task %d exec %s" % (task, provider.key))
        .digest() if escrow is not None else task_id(task), plugin="compute",
        requester=requester.key, provider=provider.key, epoch=epoch, units=units,
        result_digest=bytes([0xDD]) * 32, price=price,
        escrow=task_id(escrow) if escrow is not None else b""))


def start(holdings: dict[bytes, Account], validators: tuple[bytes, ...] = (),
          emission: int = 0, split: tuple[int, int, int] = (40, 40, 20)) -> Settled:
    """A ``Settled(-1)`` holding ``holdings``; supply is their sum."""
    rules = params(emission, split)
    vset = tuple(sorted((key, 1) for key in validators))
    supply = sum(a.liquid + a.bonded + sum(a.lots.values()) for a in holdings.values())
    return Settled(epoch=-1, accounts={k: replace(a, lots=dict(a.lots))
                                       for k, a in holdings.items()},
                   validators=vset, validators_after=vset, params=rules, params_after=rules,
                   network_id=NET, supply=supply)


def total_held(state: Settled) -> int:
    """Every token an account holds or has locked in an escrow."""
    return sum(a.liquid + a.bonded + sum(a.lots.values()) for a in state.accounts.values()) \
        + sum(e.remaining for e in state.escrows.values())
