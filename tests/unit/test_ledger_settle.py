"""Settle(E): canonical chains, own effects, penalties, validator set (docs/ledger.md §4, §7)."""

from __future__ import annotations

import dataclasses

import pytest

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import PenaltyPolicy
from meshcore.ledger import accounts
from meshcore.ledger.constants import UNBONDING_EPOCHS, VALIDATOR_SET_SIZE
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash
from meshcore.ledger.settle import Settlement, settle
from meshcore.ledger.state import Account, Settled
from meshcore.ledger.stateroot import state_root
from tests.unit.settle_helpers import PLUGINS, PS, Author, start, task_claim, total_held, value


def run(prev: Settled, *cut: Verified, round_: int = 1) -> Settlement:
    return settle(prev, prev.epoch + 1, round_, value(prev.epoch + 1), list(cut))


def empty_epochs(state: Settled, upto: int) -> Settled:
    while state.epoch < upto:
        state = run(state).settled
    return state


def test_transfers_stake_and_unstake_take_effect_in_chain_order() -> None:
    a, b = Author(1), Author(2)
    prev = start({a.key: Account(liquid=100)})
    cut = [a.pay(b, 30), a.stake(50), a.unstake(80)]  # unstake clamps to bonded 50
    result = run(prev, *reversed(cut))
    mine, theirs = result.settled.account(a.key), result.settled.account(b.key)
    assert (mine.liquid, mine.bonded, mine.lots) == (20, 0, {UNBONDING_EPOCHS: 50})
    assert theirs.liquid == 30
    assert (mine.canon_seq, mine.canon_head) == (3, cut[-1].hash)
    assert result.newly_canonical == tuple(e.hash for e in cut)
    assert result.settled.supply == total_held(result.settled) == 100
    assert prev.account(a.key).liquid == 100  # prev is not modified


def test_entries_beyond_a_gap_or_already_canonical_have_no_effect() -> None:
    a, b = Author(1), Author(2)
    prev = start({a.key: Account(liquid=100)})
    first, second, third = a.pay(b, 1), a.pay(b, 2), a.pay(b, 4)
    after = run(prev, first, second).settled
    assert after.account(b.key).liquid == 3
    again = run(after, first, second).settled  # already canonical: nothing twice
    assert again.account(b.key).liquid == 3
    gap = run(start({a.key: Account(liquid=100)}), second, third).settled  # no seq 1
    assert gap.account(b.key).liquid == 0 and gap.account(a.key).canon_seq == 0


def test_a_fork_credits_at_most_one_branch_and_freezes_its_author() -> None:
    a, b, c = Author(1), Author(2), Author(3)
    prev = start({a.key: Account(liquid=100)})
    to_b = a.pay(b, 100)
    to_c = a.fork(transfer=ledger_pb2.Transfer(to=c.key, amount=100))
    both = run(prev, to_b, to_c)
    assert both.settled.account(a.key).frozen and a.key in both.frozen
    assert both.settled.account(b.key).liquid == both.settled.account(c.key).liquid == 0
    assert both.settled.account(a.key).liquid == 100
    later = a.add(transfer=ledger_pb2.Transfer(to=c.key, amount=1))  # builds on to_b
    still = run(both.settled, to_b, to_c, later).settled
    assert still.account(c.key).liquid == 0 and still.account(a.key).canon_seq == 0

    one_first = run(prev, to_b).settled  # the other branch arrives a settlement later
    then = run(one_first, to_c, to_b).settled
    assert then.account(b.key).liquid == 100 and then.account(c.key).liquid == 0
    assert not then.account(a.key).frozen  # the loser is not a candidate: seq 1 is settled


def test_an_equivocation_is_slashed_once_and_jails() -> None:
    a, b, c, d = Author(1), Author(2), Author(3), Author(4)
    prev = start({a.key: Account(liquid=100, bonded=1000, lots={5: 300, 40: 200}),
                  d.key: Account(liquid=1)})
    x = a.pay(b, 10)
    y = a.fork(transfer=ledger_pb2.Transfer(to=c.key, amount=10))
    state = empty_epochs(prev, 9)  # lot 5 is matured by epoch 10
    accusation = d.accuse(10, x, y)
    after = run(state, x, y, accusation)
    acc = after.settled.account(a.key)
    # S0 = 1000 bonded + 200 unmatured (the lot of epoch 5 is immune); 50 % = 600
    assert (acc.bonded, acc.lots, acc.liquid) == (400, {5: 300, 40: 200}, 100)
    assert acc.jailed and acc.frozen
    assert after.settled.slashed_total == 600 and after.settled.supply == state.supply - 600
    assert after.settled.offences == {b"\x01" + a.key}
    (slash,) = after.record.slashes
    assert (slash.offender, slash.stake, slash.slashed, slash.jailed) == (a.key, 1200, 600, True)
    assert slash.offences[0].evidence == (accusation.hash,)
    second = d.accuse(11, x, y)
    again = run(after.settled, second).settled
    assert again.account(a.key).bonded == 400 and again.slashed_total == 600


def test_an_uncanonical_penalty_entry_does_nothing() -> None:
    a, b, d = Author(1), Author(2), Author(4)
    x = a.pay(b, 1)
    y = a.fork(transfer=ledger_pb2.Transfer(to=b.key, amount=2))
    d.pay(b, 1)
    accusation = d.accuse(0, x, y)  # seq 2 of d, its seq 1 is missing from the cut
    prev = start({a.key: Account(liquid=10, bonded=1000), d.key: Account(liquid=1)})
    result = run(prev, x, y, accusation).settled
    assert result.account(a.key).bonded == 1000 and not result.offences


def test_slash_takes_bonded_then_unmatured_lots_latest_first() -> None:
    a, b, d = Author(1), Author(2), Author(4)
    prev = empty_epochs(start({a.key: Account(bonded=10, lots={5: 100, 30: 100, 40: 100}),
                               d.key: Account(liquid=1)}), 9)
    x = a.pay(b, 1)
    y = a.fork(transfer=ledger_pb2.Transfer(to=b.key, amount=2))
    result = run(prev, d.accuse(10, x, y)).settled
    # S0 = 10 + 100 + 100 = 210; slash 105: bonded 10, then 95 of the lot of 40
    assert result.account(a.key).bonded == 0
    assert result.account(a.key).lots == {5: 100, 30: 100, 40: 5}


def test_an_unstaked_lot_releases_exactly_unbonding_epochs_later() -> None:
    a = Author(1)
    prev = start({a.key: Account(bonded=50)})
    state = run(prev, a.unstake(50, epoch=0)).settled
    assert state.account(a.key).lots == {UNBONDING_EPOCHS: 50}
    state = empty_epochs(state, UNBONDING_EPOCHS - 1)
    assert state.matured(a.key, state.epoch) == 0
    state = run(state).settled
    assert state.epoch == UNBONDING_EPOCHS and state.matured(a.key, state.epoch) == 50
    state = run(state, a.withdraw(30, epoch=UNBONDING_EPOCHS + 1)).settled
    assert state.account(a.key).liquid == 30 and state.account(a.key).lots == {24: 20}


def test_a_failed_task_slashes_the_provider_once_verdicts_reach_quorum() -> None:
    requester, provider, v1, v2, idle = (Author(n) for n in range(11, 16))
    prev = start({requester.key: Account(bonded=100), provider.key: Account(bonded=1000),
                  v1.key: Account(bonded=100), v2.key: Account(bonded=100),
                  idle.key: Account(bonded=99)})  # below MIN_ATTEST_STAKE = PS // 10
    claim = task_claim(requester, provider, task=1, units=5, epoch=0)
    first = run(prev, v1.verdict(0, claim, provider), idle.verdict(0, claim, provider))
    assert first.settled.account(provider.key).bonded == 1000  # one eligible verifier so far
    assert claim_hash(claim) in first.settled.verdicts
    second = run(first.settled, v2.verdict(1, claim, provider)).settled
    assert second.account(provider.key).bonded == 900  # 10 %
    assert second.offences == {b"\x02" + claim_hash(claim)}
    assert not second.account(provider.key).jailed and not second.verdicts
    third = run(second, v2.verdict(2, claim, provider), idle.verdict(2, claim, provider))
    assert third.settled.account(provider.key).bonded == 900


def test_the_failed_task_slash_is_the_epochs_parameter() -> None:
    requester, provider, v1, v2 = (Author(n) for n in range(11, 15))
    prev = start({requester.key: Account(bonded=100), provider.key: Account(bonded=1000),
                  v1.key: Account(bonded=100), v2.key: Account(bonded=100)})
    harsh = dataclasses.replace(prev.params, penalties=PenaltyPolicy(failed_task_bps=2500))
    prev.params = prev.params_after = harsh  # as a passed governance change leaves them
    claim = task_claim(requester, provider, task=1, units=5, epoch=0)
    settled = run(prev, v1.verdict(0, claim, provider), v2.verdict(0, claim, provider)).settled
    assert settled.account(provider.key).bonded == 750  # 25 %, not the default 10 %


def test_validator_set_is_the_top_stakes_by_key_with_carry_over() -> None:
    authors = [Author(n) for n in range(20, 20 + VALIDATOR_SET_SIZE + 3)]
    keys = sorted(a.key for a in authors)
    holdings = {k: Account(bonded=PS + (i % 3)) for i, k in enumerate(keys)}
    holdings[keys[0]].jailed = True
    holdings[keys[0]].bonded = 10 * PS
    prev = start(holdings, validators=(keys[0], keys[1]))
    result = run(prev).settled
    expected = sorted([k for k in keys[1:]],
                      key=lambda k: (-holdings[k].bonded, k))[:VALIDATOR_SET_SIZE]
    assert result.validators == prev.validators_after  # V(E+1) was fixed before
    assert result.validators_after == tuple(sorted((k, holdings[k].bonded) for k in expected))

    few = start({keys[0]: Account(bonded=PS, jailed=True), keys[1]: Account(bonded=PS),
                 keys[2]: Account(bonded=PS - 1)}, validators=(keys[0], keys[2]))
    assert run(few).settled.validators_after == ((keys[2], 1),)  # carried over minus jailed
    only_jailed = start({keys[0]: Account(jailed=True)}, validators=(keys[0],))
    assert run(only_jailed).settled.validators_after == ((keys[0], 1),)


def test_full_causal_past_and_reduced_cut_settle_alike() -> None:
    a, b, v = Author(1), Author(2), Author(3)
    prev = start({a.key: Account(liquid=100, bonded=500), b.key: Account(bonded=500),
                  v.key: Account(liquid=1, bonded=500)}, validators=(v.key,), emission=1000)
    # Epoch 1 evidence written early, canonical at settlement 0, then an epoch-2 entry on it.
    e0 = [a.pay(b, 10, epoch=0), a.attest(1, (b, 10, 9)), a.pay(b, 1, epoch=2),
          v.pay(b, 1, epoch=0), v.attest(1, (b, 10, 10))]
    s0 = run(prev, *e0).settled
    e1 = [b.attest(1, (a, 10, 5)), v.precommit(1, 0, 1, value(0)), a.pay(b, 5, epoch=1)]
    full = run(s0, *e0, *e1)
    reduced_cut = e1 + [e for e in e0 if e.body.epoch >= 1]
    reduced = run(s0, *reduced_cut)
    assert full.settled == reduced.settled
    assert state_root(full.settled) == state_root(reduced.settled)
    uptime = {line.account: line for line in full.record.lines if line.pool == "uptime"}
    assert uptime[b.key].points == 900  # the early attestations of a and v count in epoch 1
    assert full.settled.minted_total > 0


def test_liquid_going_negative_is_an_invariant_violation() -> None:
    a, b = Author(1), Author(2)
    prev = start({a.key: Account(liquid=5)})
    with pytest.raises(AssertionError, match=accounts.peer_id_of(a.key)):
        run(prev, a.pay(b, 6))


def test_settle_needs_the_previous_epoch() -> None:
    with pytest.raises(ValueError, match=r"needs Settled\(2\)"):
        settle(start({}), 3, 1, value(3), [])
    with pytest.raises(ValueError, match="32-byte"):
        settle(start({}), 0, 1, b"short", [])


def test_with_plugins_the_cut_is_rechecked_for_invalid_evidence() -> None:
    requester, provider = Author(1), Author(2)
    prev = start({requester.key: Account(bonded=PS)})
    good = requester.receipt(0, provider, task=1, units=3)
    assert settle(prev, 0, 1, value(0), [good], plugins=PLUGINS).settled.epoch == 0
    with pytest.raises(ValueError, match="not required by the genesis"):
        settle(prev, 0, 1, value(0), [good], plugins=frozenset({"storage"}))
