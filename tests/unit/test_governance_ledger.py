"""Governance entries in the ledger: validity and settlement (docs/governance.md §3, §5)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import MUTABLE_PATHS, GovernanceParams, RewardSplit
from meshcore.governance.tally import Option, Outcome
from meshcore.ledger import entry, rules
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.settle import settle
from meshcore.ledger.state import Account, Params, Settled
from meshcore.ledger.stateroot import state_root
from tests.unit.settle_helpers import NET, PS, Author, start, total_held, value

A, B, C, D = Author(1), Author(2), Author(3), Author(4)


@pytest.fixture(autouse=True)
def fresh_chains() -> None:
    """Each test writes its authors' chains from seq 1."""
    for author in (A, B, C, D):
        author.chain.clear()


def genesis_state(pool: int = 0, **holdings: int) -> Settled:
    """A, B, C hold ``holdings`` liquid (by letter); a 2-epoch voting period."""
    keys = {"a": A.key, "b": B.key, "c": C.key, "d": D.key}
    state = start({keys[name]: Account(liquid=amount) for name, amount in holdings.items()})
    gov = GovernanceParams(proposal_stake=PS, voting_period_seconds=120, quorum_percent=40,
                           threshold_percent=50, veto_percent=33)
    state.params = state.params_after = Params(state.params.rewards, gov)
    state.community_pool, state.supply = pool, state.supply + pool
    return state


def propose(author: Author, epoch: int, deposit: int = PS, **action: object) -> Verified:
    return author.add(epoch, gov_proposal=ledger_pb2.GovProposal(
        title="a proposal", deposit=deposit, **action))  # type: ignore[arg-type]


def split_change(uptime: int, tasks: int, governance: int) -> dict[str, object]:
    split = json.dumps({"uptime": uptime, "tasks": tasks, "governance": governance})
    return {"params": ledger_pb2.ParamChange(values=[
        ledger_pb2.ParamValue(path="rewards.split", json=split)])}


def vote(author: Author, epoch: int, proposal: Verified, option: Option) -> Verified:
    return author.add(epoch, gov_vote=ledger_pb2.GovVote(proposal=proposal.hash,
                                                         option=int(option)))


def run(state: Settled, *cuts: list[Verified]) -> list[Settled]:
    """Settle one epoch per cut; the states after each."""
    states = []
    for cut in cuts:
        state = settle(state, state.epoch + 1, 1, value(state.epoch + 1), cut).settled
        states.append(state)
    return states


def held_with_pool(state: Settled) -> int:
    return total_held(state) + state.community_pool + sum(
        p.deposit for p in state.proposals.values() if p.is_open)


# --- settlement -----------------------------------------------------------------


def test_a_passed_param_change_applies_from_the_second_epoch_after_the_tally() -> None:
    state = genesis_state(a=5000, b=3000, c=2000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    s0, s1, s2, s3 = run(state, [proposal], [vote(A, 1, proposal, Option.YES),
                                              vote(B, 1, proposal, Option.NO)],
                         [vote(C, 2, proposal, Option.YES)], [])
    opened = s0.proposals[proposal.hash]
    assert (opened.start, opened.end, s0.account(A.key).liquid) == (0, 2, 5000 - PS)
    assert opened.snapshot == {A.key: 5000 - PS, B.key: 3000, C.key: 2000}
    assert s1.proposals[proposal.hash].votes == {A.key: (2, 1), B.key: (1, 2)}
    result = s2.proposals[proposal.hash].result
    assert result is not None and result.outcome is Outcome.PASSED
    assert (result.yes, result.no, result.eligible) == (4000 + 2000, 3000, 9000)
    assert s2.account(A.key).liquid == 5000  # deposit returned
    assert s2.params.rewards.split == RewardSplit(40, 40, 20)  # Params(3): not yet
    assert s2.params_after.rewards.split == RewardSplit(50, 30, 20)  # Params(4)
    assert s3.params.rewards.split == RewardSplit(50, 30, 20)
    assert all(held_with_pool(s) == s.supply for s in (s0, s1, s2, s3))


def test_the_failed_task_slash_changes_by_governance_where_the_genesis_lets_it() -> None:
    state = genesis_state(a=5000, b=3000, c=2000)
    change = {"params": ledger_pb2.ParamChange(values=[
        ledger_pb2.ParamValue(path="penalties.failed_task_bps", json="2500")])}
    assert "not mutable in this network" in refusal(proposal_entry(**change), state)
    everything = dataclasses.replace(state.params.governance, mutable=MUTABLE_PATHS)
    state.params = state.params_after = dataclasses.replace(state.params, governance=everything)
    too_much = {"params": ledger_pb2.ParamChange(values=[
        ledger_pb2.ParamValue(path="penalties.failed_task_bps", json="10001")])}
    assert "between 0 and 10000" in refusal(proposal_entry(**too_much), state)
    proposal = propose(A, 0, **change)
    *_, s3 = run(state, [proposal], [vote(A, 1, proposal, Option.YES),
                                     vote(B, 1, proposal, Option.YES)], [], [])
    assert s3.params.penalties.failed_task_bps == 2500  # Params(4), as any change
    assert state.params.penalties.failed_task_bps == 1000


def test_a_rejected_proposal_changes_nothing_and_returns_the_deposit() -> None:
    state = genesis_state(a=5000, b=6000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    *_, s2 = run(state, [proposal], [vote(A, 1, proposal, Option.YES),
                                     vote(B, 1, proposal, Option.NO)], [])
    assert s2.proposals[proposal.hash].result.outcome is Outcome.REJECTED  # type: ignore[union-attr]
    assert s2.params_after == state.params_after
    assert s2.account(A.key).liquid == 5000 and s2.supply == state.supply


@pytest.mark.parametrize("option", [Option.VETO, None])
def test_a_vetoed_proposal_or_one_without_quorum_burns_the_deposit(option: Option | None) -> None:
    state = genesis_state(a=5000, b=6000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    votes = [vote(B, 1, proposal, option)] if option else []
    *_, s2 = run(state, [proposal], votes, [])
    result = s2.proposals[proposal.hash].result
    assert result is not None
    assert result.outcome is (Outcome.VETOED if option else Outcome.NO_QUORUM)
    assert s2.account(A.key).liquid == 5000 - PS
    assert s2.supply == state.supply - PS == held_with_pool(s2)
    assert s2.deposits_burned_total == PS


def test_the_last_vote_of_a_voter_counts_and_votes_after_the_end_count_nothing() -> None:
    state = genesis_state(a=5000, b=6000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    b_no = vote(B, 1, proposal, Option.NO)
    b_yes = vote(B, 2, proposal, Option.YES)
    late = vote(A, 3, proposal, Option.NO)
    *_, s2, s3 = run(state, [proposal], [b_no], [b_yes], [late])
    assert s2.proposals[proposal.hash].result.outcome is Outcome.PASSED  # type: ignore[union-attr]
    assert s3.proposals[proposal.hash] == s2.proposals[proposal.hash]


def test_weights_are_the_snapshot_at_the_start_so_later_transfers_cannot_swing_a_vote() -> None:
    state = genesis_state(a=5000, b=3000, c=100)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    buy = B.pay(C, 3000, 0)  # canonical with the proposal: in the snapshot
    late_buy = A.pay(C, 3000, 1)  # after the start: not in the snapshot
    *_, s2 = run(state, [proposal, buy], [late_buy, vote(C, 1, proposal, Option.NO),
                                          vote(A, 1, proposal, Option.YES)], [])
    result = s2.proposals[proposal.hash].result
    assert result is not None and (result.yes, result.no) == (5000 - PS, 3100)
    assert result.outcome is Outcome.PASSED


def test_a_spend_pays_at_most_what_the_community_pool_holds() -> None:
    state = genesis_state(pool=700, a=5000)
    proposal = propose(A, 0, spend=ledger_pb2.Spend(to=D.key, amount=900))
    *_, s2 = run(state, [proposal], [vote(A, 1, proposal, Option.YES)], [])
    assert (s2.community_pool, s2.account(D.key).liquid) == (0, 700)
    assert held_with_pool(s2) == s2.supply


def test_a_passed_dispute_slashes_its_share_of_the_stake_once() -> None:
    state = genesis_state(a=5000)
    state.accounts[D.key] = Account(bonded=2000, lots={50: 1000})
    state.supply += 3000
    proposal = propose(A, 0, dispute=ledger_pb2.Dispute(account=D.key, slash_bps=2500,
                                                        evidence=[b"log line"]))
    *_, s2, s3 = run(state, [proposal], [vote(A, 1, proposal, Option.YES)], [], [])
    slashed = s2.account(D.key)
    assert (slashed.bonded, slashed.lots) == (2000 - 750, {50: 1000})
    assert [o.kind for s in s2.record.slashes for o in s.offences] == ["dispute"]
    assert s2.slashed_total == 750 and s2.supply == held_with_pool(s2)
    assert s3.account(D.key) == slashed


def test_a_passed_upgrade_is_recorded_in_the_state_and_its_root() -> None:
    state = genesis_state(a=5000)
    proposal = propose(A, 0, upgrade=ledger_pb2.Upgrade(
        version="2.0.0", url="https://example.org/meshd-2.0.0.tar.gz", sha256=bytes(32),
        activation_epoch=9))
    *_, s1, s2 = run(state, [proposal], [vote(A, 1, proposal, Option.YES)], [])
    assert s2.upgrade is not None and (s2.upgrade.version, s2.upgrade.activation_epoch) == (
        "2.0.0", 9)
    without = dataclasses.replace(s2, upgrade=None)
    assert state_root(without) != state_root(s2)
    assert s1.upgrade is None


def test_a_vote_changes_the_state_root() -> None:
    state = genesis_state(a=5000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    (s0,) = run(state, [proposal])
    with_vote = settle(s0, 1, 1, value(1), [vote(A, 1, proposal, Option.YES)]).settled
    without = settle(s0, 1, 1, value(1), []).settled
    assert state_root(with_vote) != state_root(without)


# --- validity -------------------------------------------------------------------


def judge(item: Verified, settled: Settled) -> rules.Derived:
    """Judge ``item`` (a first entry or one on ``item``'s author chain) against ``settled``."""
    dep = dataclasses.replace(rules.ZERO, fin=settled.epoch, epoch=settled.epoch)
    return rules.judge(item, None, [dep] if settled.epoch >= 0 else [], settled)


def first_entry(author: Author, epoch: int, **kind: object) -> Verified:
    body = ledger_pb2.EntryBody(network_id=NET, author=author.key, seq=1, epoch=epoch,
                                deps=[bytes(32)], **kind)  # type: ignore[arg-type]
    return entry.verify(entry.sign(author.seed, body), NET)


def proposal_entry(deposit: int = PS, **action: object) -> Verified:
    return first_entry(A, 0, gov_proposal=ledger_pb2.GovProposal(
        title="t", deposit=deposit, **action))  # type: ignore[arg-type]


def refusal(item: Verified, settled: Settled) -> str:
    with pytest.raises(EntryError) as caught:
        judge(item, settled)
    return str(caught.value)


def test_a_proposal_below_the_stake_requirement_is_refused() -> None:
    state = genesis_state(a=5000)
    assert "below the proposal stake of 1000" in refusal(
        proposal_entry(PS - 1, **split_change(50, 30, 20)), state)
    assert judge(proposal_entry(PS, **split_change(50, 30, 20)), state).debit == PS


def test_a_proposal_deposit_must_be_covered_by_the_liquid_balance() -> None:
    assert "exceeds the author's available balance (999)" in refusal(
        proposal_entry(**split_change(50, 30, 20)), genesis_state(a=999))


@pytest.mark.parametrize(("path", "value", "reason"), [
    ("rewards.split", '{"uptime": 50, "tasks": 30, "governance": 30}', "sum to 100"),
    ("governance.quorum_percent", "101", "between 0 and 100"),
    ("governance.quorum_percent", "thirty", "not JSON"),
    ("governance.mutable", "[]", "not mutable in this network"),
    ("rewards.epoch_seconds", "30", "epoch clock is fixed at genesis"),
])
def test_a_parameter_change_is_refused_when_its_value_breaks_the_genesis_rules(
        path: str, value: str, reason: str) -> None:
    change = ledger_pb2.ParamChange(values=[ledger_pb2.ParamValue(path=path, json=value)])
    assert reason in refusal(proposal_entry(params=change), genesis_state(a=5000))


@pytest.mark.parametrize(("action", "reason"), [
    ({}, "needs an action"),
    ({"upgrade": ledger_pb2.Upgrade(version="two", url="https://x", sha256=bytes(32))},
     "not a PEP 440 version"),
    ({"upgrade": ledger_pb2.Upgrade(version="2.0", url="http://x", sha256=bytes(32))},
     "https://"),
    ({"spend": ledger_pb2.Spend(to=b"short", amount=1)}, "32-byte key"),
    ({"dispute": ledger_pb2.Dispute(account=bytes(32), slash_bps=10_001)}, "1-10000"),
])
def test_malformed_actions_are_refused(action: dict[str, object], reason: str) -> None:
    assert reason in refusal(proposal_entry(**action), genesis_state(a=5000))


def test_a_vote_is_refused_unless_the_voter_held_tokens_when_the_proposal_started() -> None:
    state = genesis_state(a=5000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    (s0,) = run(state, [proposal])
    ballot = ledger_pb2.GovVote(proposal=proposal.hash, option=1)
    reason = refusal(first_entry(D, 1, gov_vote=ballot), s0)
    assert "held no tokens when proposal" in reason and "(epoch 0)" in reason
    assert judge(first_entry(B, 1, gov_vote=ballot), dataclasses.replace(
        s0, proposals={proposal.hash: dataclasses.replace(
            s0.proposals[proposal.hash], snapshot={B.key: 1})})).seq == 1


def test_a_vote_on_an_unknown_or_ended_proposal_or_with_a_bad_option_is_refused() -> None:
    state = genesis_state(a=5000)
    proposal = propose(A, 0, **split_change(50, 30, 20))
    s0, _, s2 = run(state, [proposal], [], [])
    voter = Author(9)

    def ballot(option: int = 1, target: bytes = proposal.hash, epoch: int = 1) -> Verified:
        return first_entry(voter, epoch, gov_vote=ledger_pb2.GovVote(proposal=target,
                                                                    option=option))

    assert "not canonical in the settled state" in refusal(ballot(target=bytes(32)), s0)
    assert "ended with epoch 2" in refusal(ballot(epoch=3), s0)
    assert "ended with epoch 2" in refusal(ballot(epoch=3), s2)
    assert "not 1 yes, 2 no" in refusal(ballot(option=5), s0)
