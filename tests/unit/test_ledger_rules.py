"""Validity against the causal past, before the first settlement (docs/ledger.md §3.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.ledger.v1 import ledger_pb2
from meshcore import genesis
from meshcore.ledger import accounts, entry, rules
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.rules import Derived
from meshcore.ledger.state import Account, Settled, genesis_state

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
ALICE_SEED, BOB_SEED = bytes(range(1, 33)), bytes(range(2, 34))
ALICE, BOB = entry.public_key(ALICE_SEED), entry.public_key(BOB_SEED)


def state(liquid: int = 100, bonded: int = 0, lots: dict[int, int] | None = None) -> Settled:
    return Settled(epoch=-1, accounts={ALICE: Account(liquid=liquid, bonded=bonded,
                                                      lots=lots or {})})


class Chain:
    """Alice's entries, judged one after the other as a node would."""

    def __init__(self, settled: Settled) -> None:
        self.settled = settled
        self.head: tuple[Verified, Derived] | None = None

    def add(self, epoch: int = 0, deps: list[Derived] | None = None, **kind: object) -> Derived:
        prev = self.head
        body = ledger_pb2.EntryBody(
            network_id=NET, author=ALICE, seq=prev[1].seq + 1 if prev else 1,
            prev=prev[0].hash if prev else b"", epoch=epoch,
            deps=[bytes([i + 1]) * 32 for i in range(len(deps or []))],
            **kind)  # type: ignore[arg-type]
        item = entry.verify(entry.sign(ALICE_SEED, body), NET)
        derived = rules.judge(item, prev[1] if prev else None, deps or [], self.settled)
        self.head = (item, derived)
        return derived


def pay(amount: int, to: bytes = BOB, memo: str = "") -> dict[str, object]:
    return {"transfer": ledger_pb2.Transfer(to=to, amount=amount, memo=memo)}


def test_genesis_allocations_become_liquid_balances() -> None:
    peer_a = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
    doc = genesis.loads(f"""
name = "Net"
genesis_time = 2026-01-01T00:00:00Z
[token]
name = "T"
symbol = "TT"
allocations = [{{ account = "{peer_a}", amount = 500 }}]
[[validators]]
peer_id = "{peer_a}"
weight = 3
""")
    settled = genesis_state(doc)
    key = accounts.key_of(peer_a)
    assert settled.epoch == -1 and settled.account(key).liquid == 500
    assert settled.validators == ((key, 3),) and settled.account(ALICE).liquid == 0


def test_an_author_spends_what_it_has_and_no_more() -> None:
    chain = Chain(state(liquid=100))
    chain.add(**pay(60))
    chain.add(**{"stake": ledger_pb2.Stake(amount=40)})
    with pytest.raises(EntryError, match="exceeds the author's available balance"):
        chain.add(**pay(1))


def test_unstake_and_withdraw_are_bounded_by_stake_and_matured_lots() -> None:
    chain = Chain(state(liquid=10, bonded=5, lots={-1: 3, 20: 9}))
    chain.add(**{"unstake": ledger_pb2.Unstake(amount=5)})
    with pytest.raises(EntryError, match="exceeds the author's bonded stake"):
        Chain(state(bonded=5)).add(**{"unstake": ledger_pb2.Unstake(amount=6)})
    chain.add(**{"withdraw": ledger_pb2.Withdraw(amount=3)})  # the lot released at -1
    with pytest.raises(EntryError, match="matured"):
        chain.add(**{"withdraw": ledger_pb2.Withdraw(amount=1)})  # 20 is not yet


@pytest.mark.parametrize("kind, reason", [
    (pay(0), "amount must be at least 1"),
    (pay(1, to=ALICE), "to oneself"),
    (pay(1, to=bytes(31)), "32-byte key"),
    (pay(1, memo="é" * 129), "memo over 256 bytes"),
    ({"close": ledger_pb2.EpochClose(epoch=0)}, "only with the store.s past"),
    ({"anchor": ledger_pb2.Anchor()}, "anchor must name deps"),
])
def test_kind_rules(kind: dict[str, object], reason: str) -> None:
    with pytest.raises(EntryError, match=reason):
        Chain(state()).add(**kind)


def test_epochs_never_go_back_and_stay_near_the_settled_past() -> None:
    chain = Chain(state())
    chain.add(epoch=2, **pay(1))
    with pytest.raises(EntryError, match="before its prev"):
        chain.add(epoch=1, **pay(1))
    with pytest.raises(EntryError, match=r"outside 0\.\.2"):
        Chain(state()).add(epoch=3, **pay(1))


def test_the_settled_state_must_match_the_past() -> None:
    settled_later = Settled(epoch=4)
    with pytest.raises(ValueError, match=r"needs Settled\(-1\)"):
        Chain(settled_later).add(**pay(1))


@given(st.lists(st.tuples(st.sampled_from(["transfer", "stake"]), st.integers(1, 60)),
                max_size=30), st.integers(0, 200))
def test_no_sequence_of_debits_overspends(ops: list[tuple[str, int]], liquid: int) -> None:
    chain = Chain(state(liquid=liquid))
    accepted = 0
    for kind, amount in ops:
        fields = pay(amount) if kind == "transfer" else {"stake": ledger_pb2.Stake(amount=amount)}
        try:
            chain.add(**fields)
        except EntryError:
            # Refused, so never stored: the next entry builds on the last good one.
            continue
        accepted += amount
    assert accepted <= liquid
    if chain.head is not None:
        assert chain.head[1].debit == accepted
