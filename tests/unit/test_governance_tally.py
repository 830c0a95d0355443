"""Governance tally edge cases (docs/governance.md §4): quorum, ties, veto, changes, snapshots."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from meshcore.genesis import GovernanceParams
from meshcore.governance.tally import Option, Outcome, Vote, tally, voting_epochs

RULES = GovernanceParams(quorum_percent=33, threshold_percent=50, veto_percent=33)
A, B, C, D, E = (bytes([i]) * 32 for i in range(1, 6))
Y, N, AB, V = Option.YES, Option.NO, Option.ABSTAIN, Option.VETO


def votes(*cast: tuple[bytes, Option]) -> list[Vote]:
    return [Vote(voter, 1, option) for voter, option in cast]


def test_exact_quorum_counts_and_one_unit_less_does_not() -> None:
    weights = {A: 33, B: 67}
    exact = tally(weights, votes((A, Y)), RULES)
    assert exact.outcome is Outcome.PASSED and exact.cast == 33 and exact.eligible == 100
    short = tally({A: 32, B: 68}, votes((A, Y)), RULES)
    assert short.outcome is Outcome.NO_QUORUM
    assert "32 of 100 voted, 33 % needed" in short.reason
    assert not short.outcome.deposit_returned


def test_abstain_counts_towards_quorum_but_not_towards_passing() -> None:
    weights = {A: 30, B: 10, C: 60}
    result = tally(weights, votes((A, AB), (B, Y)), RULES)
    assert result.outcome is Outcome.PASSED  # 40 % turnout; 10 yes of 10 yes/no/veto
    all_abstain = tally(weights, votes((A, AB), (C, AB)), RULES)
    assert all_abstain.outcome is Outcome.REJECTED and all_abstain.outcome.deposit_returned


def test_a_tie_does_not_pass() -> None:
    result = tally({A: 50, B: 50}, votes((A, Y), (B, N)), RULES)
    assert result.outcome is Outcome.REJECTED
    assert "50 yes of 100 yes/no/veto, not more than 50 %" in result.reason
    one_more = tally({A: 51, B: 50}, votes((A, Y), (B, N)), RULES)
    assert one_more.outcome is Outcome.PASSED


def test_veto_above_its_threshold_beats_a_yes_majority_and_burns_the_stake() -> None:
    at_threshold = tally({A: 67, B: 33}, votes((A, Y), (B, V)), RULES)
    assert at_threshold.outcome is Outcome.PASSED  # 33 % veto is not more than 33 %
    above = tally({A: 66, B: 34}, votes((A, Y), (B, V)), RULES)
    assert above.outcome is Outcome.VETOED and not above.outcome.deposit_returned
    assert "34 of 100 cast vetoed" in above.reason


def test_veto_counts_against_passing_below_its_own_threshold() -> None:
    # yes 50, no 20, veto 30: not vetoed (30 %), and 50 of 100 yes/no/veto is not > 50 %
    result = tally({A: 50, B: 20, C: 30}, votes((A, Y), (B, N), (C, V)), RULES)
    assert result.outcome is Outcome.REJECTED


def test_the_last_vote_of_a_voter_counts_whatever_the_order() -> None:
    changed = [Vote(A, 7, N), Vote(B, 3, Y), Vote(A, 9, Y), Vote(A, 8, V)]
    for order in (changed, list(reversed(changed))):
        result = tally({A: 60, B: 40}, order, RULES)
        assert (result.yes, result.no, result.veto, result.voters) == (100, 0, 0, 2)
        assert result.outcome is Outcome.PASSED


def test_only_snapshot_weights_count() -> None:
    # E received tokens after the proposal started: it is not in the snapshot.
    snapshot = {A: 40, B: 60, C: 0}
    result = tally(snapshot, votes((A, Y), (C, N), (E, N)), RULES)
    assert (result.yes, result.no, result.voters, result.ignored) == (40, 0, 1, 2)
    assert result.eligible == 100 and result.outcome is Outcome.PASSED


def test_no_votes_or_no_tokens_is_no_quorum() -> None:
    assert tally({A: 10}, [], RULES).outcome is Outcome.NO_QUORUM
    assert tally({}, votes((A, Y)), RULES).outcome is Outcome.NO_QUORUM
    zero_quorum = dataclasses.replace(RULES, quorum_percent=0)
    assert tally({A: 10}, [], zero_quorum).outcome is Outcome.NO_QUORUM


def test_voting_period_is_rounded_up_to_whole_epochs() -> None:
    rules = dataclasses.replace(RULES, voting_period_seconds=7 * 24 * 3600)
    assert voting_epochs(rules, 3600) == 168
    assert voting_epochs(dataclasses.replace(rules, voting_period_seconds=10), 3) == 4
    assert voting_epochs(dataclasses.replace(rules, voting_period_seconds=1), 3600) == 1


accounts = st.binary(min_size=1, max_size=2)
ballots = st.lists(st.tuples(accounts, st.integers(1, 5), st.sampled_from(list(Option))),
                   max_size=12)
snapshots = st.dictionaries(accounts, st.integers(0, 10**12), max_size=8)
rules = st.builds(GovernanceParams, quorum_percent=st.integers(0, 100),
                  threshold_percent=st.integers(1, 100), veto_percent=st.integers(1, 100))


@given(snapshots, ballots, rules, st.randoms())
def test_the_outcome_does_not_depend_on_arrival_order(
        weights: dict[bytes, int], cast: list[tuple[bytes, int, Option]],
        params: GovernanceParams, rng: object) -> None:
    # one vote per (voter, seq), as a chain allows
    unique = list({(v, s): Vote(v, s, o) for v, s, o in cast}.values())
    shuffled = unique[:]
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert tally(weights, unique, params) == tally(weights, shuffled, params)


@given(snapshots, ballots, rules, st.integers(2, 1000))
def test_scaling_every_weight_keeps_the_outcome(
        weights: dict[bytes, int], cast: list[tuple[bytes, int, Option]],
        params: GovernanceParams, factor: int) -> None:
    unique = list({(v, s): Vote(v, s, o) for v, s, o in cast}.values())
    scaled = {a: w * factor for a, w in weights.items()}
    assert tally(weights, unique, params).outcome is tally(scaled, unique, params).outcome


@given(snapshots, ballots, rules)
def test_turning_a_no_into_a_yes_never_makes_a_passed_proposal_fail(
        weights: dict[bytes, int], cast: list[tuple[bytes, int, Option]],
        params: GovernanceParams) -> None:
    unique = list({(v, s): Vote(v, s, o) for v, s, o in cast}.values())
    before = tally(weights, unique, params)
    after = tally(weights, [Vote(v.voter, v.seq, Y if v.option is N else v.option)
                            for v in unique], params)
    if before.outcome is Outcome.PASSED:
        assert after.outcome is Outcome.PASSED
