"""Settlement invariants under random histories (docs/ledger.md §10 tests 2, 3, 4, 7, 8).

A model writes only valid entries (each author's debits covered by the settled
state and its own pending entries, as §3.2 requires), forks some chains,
accuses forkers, attests, files receipts and verdicts, and delivers part of
each chain late. Every settlement is computed three ways: from the full
causal past, from the reduced cut, and from the reduced cut shuffled with
repeats; all must agree, and the invariants must hold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import MarketPolicy
from meshcore.ledger.entry import Verified
from meshcore.ledger.explain import explain_json
from meshcore.ledger.settle import settle
from meshcore.ledger.state import Account, Settled
from meshcore.ledger.stateroot import state_root
from tests.properties import examples
from tests.replay import Draws, Replay, recording
from tests.unit.settle_helpers import PLUGINS, PS, Author, start, total_held, value

N_AUTHORS = 5
KINDS = ["transfer", "stake", "unstake", "withdraw", "attest", "receipt", "verdict", "fork",
         "accuse", "accuse", "precommit", "lock", "paid_receipt", "paid_receipt"]


@dataclass
class Writer:
    """One author of the model: its chain, what is not canonical yet, whether it forked."""

    author: Author
    pending: list[Verified] = field(default_factory=list)
    held: list[Verified] = field(default_factory=list)  # written, delivered next epoch
    last_epoch: int = 0
    forked: tuple[Verified, Verified] | None = None


def _sums(items: list[Verified]) -> tuple[int, int, int, int]:
    debit = withdrawn = staked = unstaked = 0
    for e in items:
        if e.kind == "transfer":
            debit += e.body.transfer.amount
        elif e.kind == "lock":
            debit += e.body.lock.amount
        elif e.kind == "stake":
            debit += e.body.stake.amount
            staked += e.body.stake.amount
        elif e.kind == "withdraw":
            withdrawn += e.body.withdraw.amount
        elif e.kind == "unstake":
            unstaked += e.body.unstake.amount
    return debit, withdrawn, staked, unstaked


@settings(max_examples=examples(100))
@given(data=st.data())
# A fork whose second body repeated the first (one entry, no fork), which the
# model then accused: issue 14.
@example(data=Replay([0, 0, 27, 109, 0, 23, 1, 1000, 34, 470, 0, 11, 272, 2000, 38, 4889,
                      (40, 40, 20), 9328, 2, 7, 2, "transfer", 0, 1, 0, 2, 2, "accuse", 1, 4,
                      "fork", 1, 3, "precommit", 1, 2, "fork", 0, 1, 2, 0, "unstake", 0]))
def test_settlements_conserve_tokens_and_do_not_depend_on_cut_order(data: Draws) -> None:
    with recording(data) as draws:
        _run_model(draws)


def _run_model(data: Draws) -> None:
    writers = [Writer(Author(120 + i)) for i in range(N_AUTHORS)]
    keys = [w.author.key for w in writers]
    holdings = {k: Account(liquid=data.draw(st.integers(0, 500)),
                           bonded=data.draw(st.sampled_from([0, PS // 10, PS, 2 * PS])),
                           lots={0: data.draw(st.integers(1, 50)), 30: 40})
                for k in keys}
    emission = data.draw(st.integers(0, 10**6))
    split = data.draw(st.sampled_from([(40, 40, 20), (100, 0, 0), (33, 33, 34)]))
    state = start(holdings, validators=tuple(keys[:3]), emission=emission, split=split)
    # Paid tasks burn a base fee that moves with use (docs/ledger.md §12.4).
    market = MarketPolicy(min_base_price=data.draw(st.integers(0, 5)),
                          target_units=data.draw(st.integers(1, 3000)),
                          max_change_bps=data.draw(st.integers(1, 10_000)))
    state.params = state.params_after = replace(state.params, market=market)
    state.base_price = data.draw(st.integers(0, 400))
    allocations = state.supply
    full: list[Verified] = []  # K: everything delivered so far
    canonical: set[bytes] = set()
    claims: list[tuple[bytes, Author]] = []
    forks: list[tuple[Verified, Verified]] = []
    rng = random.Random(data.draw(st.integers(0, 2**32)))

    for epoch in range(data.draw(st.integers(1, 4))):
        cut_new: list[Verified] = []
        for w in writers:  # late entries of the last epoch arrive now
            cut_new += w.held
            w.held = []
        for _ in range(data.draw(st.integers(0, 16))):
            w = writers[data.draw(st.integers(0, N_AUTHORS - 1))]
            if w.forked:
                continue
            item = _write(data, w, writers, state, epoch, claims, forks)
            if item is None:
                continue
            # A cut is causally closed: once an entry is late, so is the rest of its chain.
            late = bool(w.held) or data.draw(st.integers(0, 4)) == 0
            (w.held if late else cut_new).append(item)
        full += cut_new
        reduced = [e for e in full if e.hash not in canonical or e.body.epoch >= epoch
                   or e.kind in ("task_verdict", "penalty")]
        shuffled = reduced + rng.sample(reduced, len(reduced) // 3)
        rng.shuffle(shuffled)
        # As strict as the daemon, whose store holds only valid evidence.
        reference = settle(state, epoch, 1, value(epoch), full, plugins=PLUGINS)
        for cut in (reduced, shuffled):
            other = settle(state, epoch, 1, value(epoch), cut, plugins=PLUGINS)
            assert other.settled == reference.settled
            assert state_root(other.settled) == state_root(reference.settled)
            assert other.newly_canonical == reference.newly_canonical
        after = reference.settled
        canonical |= set(reference.newly_canonical)
        for w in writers:
            w.pending = [e for e in w.pending if e.hash not in canonical]

        # Conservation, no negative balance, minting bounded by the emission.
        held = allocations + after.minted_total - after.slashed_total - after.market_burned_total
        assert total_held(after) == after.supply == held
        assert after.base_price >= market.min_base_price
        assert abs(after.base_price - state.base_price) <= \
            max(1, state.base_price * market.max_change_bps // 10_000) + market.min_base_price
        assert all(a.liquid >= 0 and a.bonded >= 0 and all(v > 0 for v in a.lots.values())
                   for a in after.accounts.values())
        # Escrows hold something, and last no longer than their lock said.
        assert all(e.remaining > 0 and e.until > epoch for e in after.escrows.values())
        assert all(p.burned <= p.paid <= p.price for p in after.record.payments)
        assert 0 <= after.minted_total - state.minted_total <= emission
        assert after.minted_total + after.emission_burned_total == emission * (epoch + 1)
        # At most one branch of a fork ever takes effect.
        assert all(not (x.hash in canonical and y.hash in canonical) for x, y in forks)
        # The explanation adds up and names only entries of the cut.
        explained = explain_json(after)
        for pool in explained["pools"]:
            assert pool["minted"] == sum(line["amount"] for line in explained["lines"]
                                         if line["pool"] == pool["pool"])
        named = {e["entry"] for line in explained["lines"]
                 for e in line["evidence"] + line["ignored"]}
        named |= {h for s in explained["slashes"] for o in s["offences"] for h in o["evidence"]}
        assert named <= {e.hash.hex() for e in reduced}
        state = after


def _write(data: Draws, w: Writer, writers: list[Writer], state: Settled, epoch: int,
           claims: list[tuple[bytes, Author]],
           forks: list[tuple[Verified, Verified]]) -> Verified | None:
    """One valid entry of ``w`` (or None when the drawn kind is not possible now)."""
    me, others = w.author, [x.author for x in writers if x is not w]
    kind = data.draw(st.sampled_from(KINDS))
    ep = data.draw(st.integers(max(epoch, w.last_epoch), max(epoch, w.last_epoch) + 1))
    if ep > epoch + 2:
        return None
    acc = state.account(me.key)
    debit, withdrawn, staked, unstaked = _sums(w.pending)
    available = acc.liquid + withdrawn - debit
    item: Verified | None = None
    if kind in ("transfer", "stake") and available >= 1:
        amount = data.draw(st.integers(1, available))
        item = (me.pay(others[data.draw(st.sampled_from(range(len(others))))], amount, ep)
                if kind == "transfer"
                else me.stake(amount, ep))
    elif kind == "unstake" and acc.bonded + staked - unstaked >= 1:
        item = me.unstake(data.draw(st.integers(1, acc.bonded + staked - unstaked)), ep)
    elif kind == "withdraw" and state.matured(me.key, state.epoch) - withdrawn >= 1:
        item = me.withdraw(data.draw(st.integers(
            1, state.matured(me.key, state.epoch) - withdrawn)), ep)
    elif kind == "attest":
        subjects = [others[i] for i in data.draw(st.lists(
            st.sampled_from(range(len(others))), min_size=1, max_size=3, unique=True))]
        item = me.attest(ep, *[(s, 10, data.draw(st.integers(0, 10))) for s in subjects])
    elif kind == "receipt":
        provider = others[data.draw(st.sampled_from(range(len(others))))]
        task, units = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 2_000_000))
        item = me.receipt(ep, provider, task, units)
        claims.append((item.body.task_receipt.claim, provider))
    elif kind == "lock" and available >= 1:
        item = me.lock(task=data.draw(st.integers(100, 103)),
                       amount=data.draw(st.integers(1, available)),
                       until=ep + data.draw(st.integers(1, 8)), epoch=ep)
    elif kind == "paid_receipt":
        # Out of one of its locks (or one it never made, or one already spent).
        provider = others[data.draw(st.sampled_from(range(len(others))))]
        task = data.draw(st.integers(100, 104))
        item = me.receipt(ep, provider, task, data.draw(st.integers(1, 1000)),
                          price=data.draw(st.integers(1, 300)), escrow=task)
        claims.append((item.body.task_receipt.claim, provider))
    elif kind == "verdict" and claims:
        claim, provider = claims[data.draw(st.sampled_from(range(len(claims))))]
        if provider.key != me.key:
            item = me.verdict(ep, claim, provider)
    elif kind == "fork" and w.pending and w.pending[-1] is me.chain[-1]:
        # A second body for the last (not yet canonical) seq, spending what the
        # first one spent or more: valid against its own past, as both branches are.
        # It pays someone the first does not: the same body again would be the
        # same entry, no fork at all.
        last = me.chain[-1]
        before_debit, before_withdrawn, _, _ = _sums(w.pending[:-1])
        room = acc.liquid + before_withdrawn - before_debit
        payee = others[1] if last.kind == "transfer" and last.body.transfer.to == others[0].key \
            else others[0]
        if room >= 1:
            other = me.fork(last.body.epoch,
                            transfer=ledger_pb2.Transfer(to=payee.key, amount=room))
            assert other.hash != last.hash
            w.forked = (last, other)
            forks.append((last, other))
            return other
    elif kind == "accuse":
        guilty = [x.forked for x in writers if x.forked and x is not w]
        if guilty:
            a, b = guilty[data.draw(st.sampled_from(range(len(guilty))))]
            item = me.accuse(ep, a, b)
    elif kind == "precommit" and epoch >= 1 and any(k == me.key for k, _ in state.validators):
        item = me.precommit(ep, epoch - 1, 1, value(epoch - 1))
    if item is not None:
        w.pending.append(item)
        w.last_epoch = item.body.epoch
    return item
