"""Governance tally: who voted what, with which weight, and the outcome (docs/governance.md §4).

Pure and integer-only, so that every node computes the same outcome from the
same votes: the settlement that ends a proposal's voting period calls
:func:`tally` with the weights snapshotted when the proposal started and the
canonical votes of its period. Comparisons are cross-multiplied, never
divided, so no rounding can differ between nodes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshcore.genesis import GovernanceParams


class Option(enum.IntEnum):
    """A vote's choice; the numbers are the wire values (0 is not a vote)."""

    YES = 1
    NO = 2
    ABSTAIN = 3
    VETO = 4


class Outcome(enum.Enum):
    """How a proposal ended; ``deposit_returned`` says what happens to its stake."""

    PASSED = "passed"
    REJECTED = "rejected"
    VETOED = "vetoed"
    NO_QUORUM = "no_quorum"

    @property
    def deposit_returned(self) -> bool:
        """Spam protection: a vetoed proposal, or one too few cared about, loses its stake."""
        return self in (Outcome.PASSED, Outcome.REJECTED)


@dataclass(frozen=True)
class Vote:
    """One vote entry: ``seq`` orders a voter's votes (its chain), the last one counts."""

    voter: bytes
    seq: int
    option: Option


@dataclass(frozen=True)
class Tally:
    yes: int
    no: int
    abstain: int
    veto: int
    eligible: int  # the weight of every account in the snapshot
    voters: int  # accounts whose vote counted (weight > 0)
    ignored: int  # accounts that voted with no weight in the snapshot
    outcome: Outcome
    reason: str  # the rule that decided, with its figures

    @property
    def cast(self) -> int:
        return self.yes + self.no + self.abstain + self.veto


def tally(weights: Mapping[bytes, int], votes: Iterable[Vote],
          rules: GovernanceParams) -> Tally:
    """The outcome of one proposal.

    ``weights``: each account's tokens (liquid + staked + unbonding) in the
    snapshot taken at the proposal's start; accounts absent have none.
    ``votes``: the canonical votes of the voting period, in any order; of a
    voter's votes the one with the highest seq counts (votes may change until
    the end). Rules, in this order (docs/governance.md §4):

    1. quorum: cast · 100 ≥ quorum_percent · eligible (abstain counts), else NO_QUORUM;
    2. veto: veto · 100 > veto_percent · cast, else
    3. threshold: yes · 100 > threshold_percent · (yes + no + veto) → PASSED,
       else REJECTED (a tie at 50 % does not pass; all-abstain does not pass).
    """
    last: dict[bytes, Vote] = {}
    for vote in votes:
        held = last.get(vote.voter)
        if held is None or vote.seq > held.seq:
            last[vote.voter] = vote
    sums = dict.fromkeys(Option, 0)
    voters = ignored = 0
    for voter, vote in last.items():
        weight = weights.get(voter, 0)
        if weight <= 0:
            ignored += 1
            continue
        sums[vote.option] += weight
        voters += 1
    eligible = sum(w for w in weights.values() if w > 0)
    yes, no, abstain, veto = (sums[o] for o in Option)
    cast = yes + no + abstain + veto
    q, v, t = rules.quorum_percent, rules.veto_percent, rules.threshold_percent
    if eligible == 0 or cast * 100 < q * eligible or cast == 0:
        outcome = Outcome.NO_QUORUM
        reason = f"quorum not met: {cast} of {eligible} voted, {q} % needed"
    elif veto * 100 > v * cast:
        outcome = Outcome.VETOED
        reason = f"vetoed: {veto} of {cast} cast vetoed, more than {v} %"
    elif yes * 100 > t * (yes + no + veto):
        outcome = Outcome.PASSED
        reason = f"passed: {yes} yes of {yes + no + veto} yes/no/veto, more than {t} %"
    else:
        outcome = Outcome.REJECTED
        reason = (f"rejected: {yes} yes of {yes + no + veto} yes/no/veto, "
                  f"not more than {t} %")
    return Tally(yes, no, abstain, veto, eligible, voters, ignored, outcome, reason)


def voting_epochs(rules: GovernanceParams, epoch_seconds: int) -> int:
    """Epochs a vote stays open: the voting period rounded up to whole epochs (≥ 1)."""
    return max(1, -(-rules.voting_period_seconds // epoch_seconds))
