"""Paid tasks: locks, payments out of them, refunds (docs/ledger.md §12): pure.

A requester locks tokens for a task before it asks providers to run it (a
``lock`` entry, debited from its liquid like a transfer). Each receipt it
writes for an accepted execution names the lock (``claim.escrow``) and the
price the provider signed (``claim.price``); the settlement that makes the
receipt canonical pays the provider that price, or what is left of the lock
if less. Of each payment, the base fee (the claim's units at the epoch's
base price, §12.4) is burned and the provider gets the rest. At the lock's
``until`` epoch, the rest returns to the requester. The base price of the
next epoch then moves toward the target use by at most ``max_change_bps``.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshcore.genesis import MarketPolicy
from meshcore.ledger.constants import BPS
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash, parse_claim
from meshcore.ledger.penalties import FAILED_TASK
from meshcore.ledger.record import Payment, Refund
from meshcore.ledger.state import Account, Escrow, Settled

PER = 1000  # base prices are per 1000 units of work


def lock(state: Settled, item: Verified) -> None:
    """A newly canonical lock: its amount leaves the author's liquid for the escrow.
    A second lock of one task adds to it and may extend it."""
    body = item.body.lock
    key = (item.author, body.task)
    state.accounts.setdefault(item.author, Account()).liquid -= body.amount
    held = state.escrows.get(key)
    state.escrows[key] = Escrow(body.amount, body.until) if held is None else \
        Escrow(held.remaining + body.amount, max(held.until, body.until))


def pay(state: Settled, receipts: Iterable[Verified], base_price: int
        ) -> tuple[Payment, ...]:
    """Pay the providers of newly canonical receipts that name an escrow, in
    ascending entry hash order, burning the base fee at ``base_price``; a claim
    with a failed-task offence applied is not paid."""
    payments = []
    for item in sorted(receipts, key=lambda e: e.hash):
        claim = parse_claim(item.body.task_receipt.claim)
        if claim is None or not claim.escrow:
            continue
        key = (item.author, claim.escrow)
        held = state.escrows.get(key)
        if FAILED_TASK + claim_hash(item.body.task_receipt.claim) in state.offences:
            payments.append(Payment(item.hash, item.author, claim.escrow, claim.provider,
                                    claim.price, 0, "its claim failed (a verdict quorum)"))
            continue
        if held is None:
            payments.append(Payment(item.hash, item.author, claim.escrow, claim.provider,
                                    claim.price, 0, "no lock of that task is left"))
            continue
        paid = min(claim.price, held.remaining)
        if held.remaining > paid:
            state.escrows[key] = Escrow(held.remaining - paid, held.until)
        else:  # spent: nothing to return
            del state.escrows[key]
        burned = min(paid, claim.units * base_price // PER)
        state.accounts.setdefault(claim.provider, Account()).liquid += paid - burned
        state.market_burned_total += burned
        payments.append(Payment(item.hash, item.author, claim.escrow, claim.provider,
                                claim.price, paid,
                                "" if paid == claim.price else "the lock ran out",
                                burned, claim.units))
    return tuple(payments)


def next_base_price(base: int, used: int, market: MarketPolicy) -> int:
    """The base price after an epoch whose payments counted ``used`` units: up when
    above the target, down when below, by at most ``max_change_bps`` of it, rounded
    toward no change; up by at least 1 (as EIP-1559 does), so that a small price can
    rise. A price of 0 stays 0 (the base fee is off) unless ``min_base_price`` lifts it."""
    target = market.target_units
    excess = max(-target, min(target, used - target))
    moved = base * abs(excess) * market.max_change_bps // (target * BPS)
    if excess > 0 and base:
        return max(market.min_base_price, base + max(1, moved))
    return max(market.min_base_price, base - moved)


def refund(state: Settled, epoch: int) -> tuple[Refund, ...]:
    """Return what is left of every escrow whose ``until`` is ``epoch`` or before."""
    refunds = []
    for (requester, task), held in sorted(state.escrows.items()):
        if held.until <= epoch:
            del state.escrows[(requester, task)]
            if held.remaining:
                state.accounts.setdefault(requester, Account()).liquid += held.remaining
                refunds.append(Refund(requester, task, held.remaining))
    return tuple(refunds)
