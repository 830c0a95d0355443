"""What the ledger API shows of a settled state (meshd/ledger/queries.py), without a daemon."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from meshcore.genesis import Allocation, Genesis, Token
from meshcore.ledger import accounts
from meshcore.ledger.record import Evidence, PoolTotal, Record, RewardLine
from meshcore.ledger.rules import ZERO
from meshcore.ledger.state import Account, Settled, genesis_state
from meshcore.ledger.stateroot import state_root
from meshd import errors
from meshd.ledger import queries

A, B, C = (bytes([n]) * 32 for n in (1, 2, 3))


def settled_epoch_4() -> Settled:
    record = Record(
        epoch=4, emission=1000,
        pools=(PoolTotal("uptime", 400, 10, 400), PoolTotal("tasks", 400, 0, 0),
               PoolTotal("governance", 200, 2, 200)),
        lines=(RewardLine("uptime", B, 6, 240, "uptime.lower_median",
                          (Evidence(C * 1, C, 990, "99/100"),)),
               RewardLine("uptime", A, 4, 160, "uptime.lower_median"),
               RewardLine("governance", A, 1, 100, "gov.settlement_signature"),
               RewardLine("governance", B, 1, 100, "gov.settlement_signature")))
    return Settled(epoch=4, network_id="net_x", supply=3600, decided_value=b"\x07" * 32,
                   accounts={A: Account(liquid=1000, bonded=200, lots={30: 100}),
                             B: Account(liquid=2000), C: Account(jailed=True)},
                   record=record)


@pytest.mark.parametrize(("epoch", "error", "message"), [
    (5, errors.NotFound, "epoch 5 is not final yet (the newest final epoch on this node is 4)"),
    (3, errors.NotFound, "no longer holds the settlement of epoch 3"),
    (-1, errors.InvalidArgument, "epoch -1 is the genesis state"),
    (-2, errors.InvalidArgument, "does not exist"),
])
def test_an_epoch_that_is_not_final_is_refused_saying_why(
        epoch: int, error: type[Exception], message: str) -> None:
    settled = settled_epoch_4()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        queries.final_settled(4, lambda e: settled if e == 4 else None, epoch, "rewards")
    assert queries.final_settled(4, lambda e: settled if e == 4 else None, None,
                                 "rewards") is settled


def test_before_the_first_settlement() -> None:
    genesis = genesis_state(make_genesis())
    found = queries.final_settled(-1, lambda e: genesis if e == -1 else None, None,
                                  "state root", genesis_ok=True)
    assert queries.state_root_info(found) == queries.StateRootInfo(-1, b"", 4000)
    with pytest.raises(errors.NotFound, match="no epoch is final yet"):
        queries.final_settled(-1, lambda e: genesis if e == -1 else None, None, "rewards")
    with pytest.raises(errors.NotFound, match="epoch 0 is not final yet"):
        queries.final_settled(-1, lambda e: genesis if e == -1 else None, 0, "rewards")


def test_state_root_of_a_final_epoch() -> None:
    settled = settled_epoch_4()
    assert queries.state_root_info(settled) == queries.StateRootInfo(4, state_root(settled),
                                                                     3600)


def test_rewards_per_account_in_pool_order() -> None:
    found = queries.rewards(settled_epoch_4())
    assert (found.epoch, found.emission, found.minted) == (4, 1000, 600)
    assert found.accounts == (
        queries.AccountRewards(A, (("uptime", 4, 160), ("governance", 1, 100)), 260),
        queries.AccountRewards(B, (("uptime", 6, 240), ("governance", 1, 100)), 340))


def test_explanation_for_one_account_and_a_bad_peer_id() -> None:
    settled = settled_epoch_4()
    found = queries.explanation(settled, accounts.peer_id_of(B))
    assert {line["account"] for line in found.record["lines"]} == {accounts.peer_id_of(B)}
    assert found.lines[0].startswith("epoch 4: value 07070707")
    with pytest.raises(errors.InvalidArgument, match="account: 'nobody' is not"):
        queries.explanation(settled, "nobody")


def make_genesis() -> Genesis:
    return Genesis(name="N", genesis_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                   token=Token("COIN", "CN", 2, (
                       Allocation(accounts.peer_id_of(A), 1000),
                       Allocation(accounts.peer_id_of(B), 3000))))


def test_token_info_top_accounts_and_shares() -> None:
    info = queries.token_info(make_genesis(), settled_epoch_4(), top=1)
    assert (info.name, info.symbol, info.decimals, info.final_epoch, info.supply) == (
        "COIN", "CN", 2, 4, 3600)
    assert info.holders == 2  # C holds nothing (a jailed flag is not a holding)
    assert info.top == (queries.Holder(B, 2000, 0, 0),)
    assert info.allocations == ((accounts.peer_id_of(A), 1000), (accounts.peer_id_of(B), 3000))
    assert queries.share_percent(1300, 3600) == "36.11"
    assert queries.share_percent(1, 0) == "0.00"


def test_stake_balance_counts_only_what_is_not_settled() -> None:
    settled = settled_epoch_4()
    canon = dataclasses.replace(ZERO, staked=200, withdrawn=10)
    head = dataclasses.replace(ZERO, staked=250, unstaked=30, withdrawn=10)
    s = queries.stake_balance(settled, A, head, canon)
    assert (s.bonded, s.pending_stake, s.pending_unstake, s.unbonding, s.withdrawable) == (
        200, 50, 30, 100, 0)
    assert s.unstakable == 220
    matured = queries.stake_balance(Settled(epoch=30, accounts=settled.accounts), A, None, None)
    assert (matured.unbonding, matured.withdrawable) == (0, 100)
