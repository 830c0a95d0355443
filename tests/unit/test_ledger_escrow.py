"""Paid tasks in Settle(E): locks, payments out of them, refunds (docs/ledger.md §12)."""

from __future__ import annotations

import dataclasses

import pytest

from meshcore.genesis import MarketPolicy
from meshcore.ledger import escrow
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.evidence_rules import claim_hash, evidence_problem
from meshcore.ledger.explain import explain_json, explain_lines
from meshcore.ledger.rules import ZERO, judge
from meshcore.ledger.settle import Settlement, settle
from meshcore.ledger.state import Account, Escrow, Settled
from meshcore.ledger.stateroot import state_root
from tests.unit.settle_helpers import (
    NET,
    PLUGINS,
    Author,
    start,
    task_claim,
    task_id,
    total_held,
    value,
)


def run(prev: Settled, *cut: Verified) -> Settlement:
    return settle(prev, prev.epoch + 1, 1, value(prev.epoch + 1), list(cut), plugins=PLUGINS)


def test_a_lock_pays_each_receipts_price_and_refunds_the_rest_at_its_end() -> None:
    requester, p1, p2 = Author(21), Author(22), Author(23)
    prev = start({requester.key: Account(liquid=1000)})
    lock = requester.lock(task=7, amount=300, until=2)
    first = run(prev, lock).settled
    assert first.account(requester.key).liquid == 700
    assert first.escrows == {(requester.key, task_id(7)): Escrow(300, 2)}
    assert first.supply == total_held(first) == 1000  # locked tokens are still tokens

    paid = run(first, requester.receipt(1, p1, 7, units=5, price=120, escrow=7),
               requester.receipt(1, p2, 7, units=5, price=100, escrow=7)).settled
    assert (paid.account(p1.key).liquid, paid.account(p2.key).liquid) == (120, 100)
    assert paid.escrows[(requester.key, task_id(7))] == Escrow(80, 2)
    assert paid.supply == total_held(paid) == 1000
    assert sorted(p.paid for p in paid.record.payments) == [100, 120]

    refunded = run(paid).settled  # the settlement of epoch 2 = until
    assert refunded.account(requester.key).liquid == 780 and not refunded.escrows
    assert [(r.requester, r.amount) for r in refunded.record.refunds] == [(requester.key, 80)]
    assert refunded.supply == total_held(refunded) == 1000
    lines = "\n".join(explain_lines(refunded))
    assert "refund" in lines and "80 left of the lock" in lines
    assert explain_json(paid, p1.key)["payments"][0]["paid"] == 120


def test_a_lock_never_pays_more_than_it_holds_nor_a_receipt_more_than_its_price() -> None:
    requester, p1, p2 = Author(21), Author(22), Author(23)
    prev = start({requester.key: Account(liquid=500)})
    first = run(prev, requester.lock(task=1, amount=150, until=3),
                requester.receipt(0, p1, 1, units=5, price=100, escrow=1),
                requester.receipt(0, p2, 1, units=5, price=100, escrow=1)).settled
    paid = {p.provider: p for p in first.record.payments}
    assert sorted(p.paid for p in paid.values()) == [50, 100]  # in receipt hash order
    assert any(p.reason == "the lock ran out" for p in paid.values())
    assert not first.escrows  # spent
    assert first.account(p1.key).liquid + first.account(p2.key).liquid == 150
    assert first.supply == total_held(first) == 500
    # A receipt naming no lock pays nothing, and says so.
    other = run(first, requester.receipt(1, p1, 9, units=5, price=10, escrow=9)).settled
    assert other.record.payments[0].paid == 0
    assert other.record.payments[0].reason == "no lock of that task is left"


def test_a_claim_failed_by_a_verdict_quorum_is_not_paid() -> None:
    requester, provider, v1, v2 = (Author(n) for n in range(31, 35))
    prev = start({requester.key: Account(liquid=1000, bonded=100),
                  provider.key: Account(bonded=1000), v1.key: Account(bonded=100),
                  v2.key: Account(bonded=100)})
    claim = task_claim(requester, provider, 4, units=5, epoch=0, price=90, escrow=4)
    settled = run(prev, requester.lock(task=4, amount=90, until=2),
                  requester.receipt(0, provider, 4, units=5, price=90, escrow=4),
                  v1.verdict(0, claim, provider), v2.verdict(0, claim, provider)).settled
    assert b"\x02" + claim_hash(claim) in settled.offences
    assert settled.account(provider.key).liquid == 0
    assert settled.record.payments[0].reason == "its claim failed (a verdict quorum)"
    assert settled.escrows[(requester.key, task_id(4))] == Escrow(90, 2)


def test_locks_are_valid_only_within_the_authors_balance_and_bounds() -> None:
    requester = Author(41)
    state = start({requester.key: Account(liquid=100)})

    def judged(**lock: int) -> str:
        fields = {"task": 1, "amount": 50, "until": 2} | lock
        item = Author(41).lock(**fields)
        try:
            judge(item, None, [], state)
        except EntryError as exc:
            return str(exc)
        return ""

    assert judged() == ""
    assert "exceeds the author's available balance (100)" in judged(amount=101)
    assert "lasts until epoch 1 to 8" in judged(until=0)
    assert "lasts until epoch 1 to 8" in judged(until=9)
    assert "at least 1" in judged(amount=0)
    # A lock is a debit: the next transfer sees less.
    after = judge(requester.lock(task=1, amount=60, until=2), None, [], state)
    assert after.debit == 60
    with pytest.raises(EntryError, match="available balance"):
        judge(requester.pay(Author(42), 50), after, [], state)
    assert ZERO.debit == 0


def test_a_claim_has_a_price_and_an_escrow_or_neither() -> None:
    requester, provider = Author(51), Author(52)
    good = requester.receipt(0, provider, 3, units=1, price=5, escrow=3)
    assert evidence_problem(good, NET, PLUGINS) is None
    for price, named in [(5, None), (0, 3)]:
        item = Author(51).receipt(0, provider, 3, units=1, price=price, escrow=named)
        assert evidence_problem(item, NET, PLUGINS) == \
            "a claim names a price and an escrow, or neither"


def test_state_roots_without_escrows_are_unchanged_and_escrows_change_them() -> None:
    requester = Author(61)
    prev = start({requester.key: Account(liquid=100)})
    plain = run(prev, requester.pay(Author(62), 1)).settled
    locked_state = run(prev).settled
    assert not plain.escrows and state_root(plain) != state_root(locked_state)
    with_lock = run(start({requester.key: Account(liquid=100)}),
                    Author(61).lock(task=1, amount=10, until=3)).settled
    without = run(start({requester.key: Account(liquid=100)})).settled
    assert state_root(with_lock) != state_root(without)
    # The same state with its escrow removed encodes as if none had existed.
    with_lock.escrows.clear()
    with_lock.accounts[requester.key].liquid = 100
    with_lock.accounts[requester.key].canon_seq = 0
    with_lock.accounts[requester.key].canon_head = b""
    assert state_root(with_lock) == state_root(without)


def test_the_base_fee_is_burned_and_the_base_price_follows_use() -> None:
    requester, provider = Author(71), Author(72)
    market = MarketPolicy(target_units=1000, max_change_bps=1250)
    prev = start({requester.key: Account(liquid=10_000)})
    prev.params = prev.params_after = dataclasses.replace(prev.params, market=market)
    prev.base_price = 80  # per 1000 units
    busy = run(prev, requester.lock(task=1, amount=500, until=3),
               requester.receipt(0, provider, 1, units=2000, price=400, escrow=1)).settled
    (payment,) = busy.record.payments
    assert (payment.paid, payment.burned) == (400, 160)  # 2000 units at 80 per 1000
    assert busy.account(provider.key).liquid == 240  # the tip
    assert busy.market_burned_total == 160 and busy.supply == 10_000 - 160
    assert busy.supply == total_held(busy)
    assert busy.base_price == 90  # twice the target: +12.5 %
    assert "base fee 160 burned" in "\n".join(explain_lines(busy))
    idle = run(busy).settled  # no use: -12.5 %, rounded toward no change
    assert idle.base_price == 90 - 90 * 1250 // 10_000
    assert escrow.next_base_price(1, 2000, market) == 2  # a small price can rise
    assert escrow.next_base_price(0, 2000, market) == 0  # 0 is off
    assert escrow.next_base_price(0, 0, dataclasses.replace(market, min_base_price=3)) == 3
    assert escrow.next_base_price(1000, 10**9, market) == 1125  # at most +12.5 %
