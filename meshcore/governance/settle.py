"""Governance inside ``Settle(E)`` (docs/governance.md §3-§5): pure, like Settle.

The order within a settlement (docs/ledger.md §4.2):

* step 2 (own effects): a newly canonical proposal locks its deposit and
  starts (:func:`open_proposal`); newly canonical votes of an open period are
  recorded (:func:`record_votes`);
* before step 3: proposals whose period ends at E are tallied and their
  deposits returned or burned (:func:`close_due`); passed disputes go to the
  penalties of step 3 (:func:`passed_disputes`);
* step 5: passed parameter changes, upgrades and spends take effect
  (:func:`apply_effects`), then the proposals started at E take their
  snapshot of Settled(E) (:func:`take_snapshots`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import GenesisError
from meshcore.governance.rules import apply_changes, param_changes
from meshcore.governance.tally import Option, Outcome, Vote, tally, voting_epochs
from meshcore.ledger.entry import Verified
from meshcore.ledger.penalties import PassedDispute
from meshcore.ledger.state import Account, Params, Proposal, Settled, UpgradeNotice

Closed = tuple[bytes, Proposal]  # (proposal hash, the proposal with its result)


def open_proposal(state: Settled, item: Verified, epoch: int, params: Params) -> None:
    """Lock the deposit of a proposal canonical in Settle(``epoch``) and start it.

    ``params`` are Params(epoch): they fix the voting period and the rules
    that will decide the proposal.
    """
    body = item.body.gov_proposal
    account = state.accounts.setdefault(item.author, Account())
    account.liquid -= body.deposit
    period = voting_epochs(params.governance, params.rewards.epoch_seconds)
    state.proposals[item.hash] = Proposal(
        author=item.author, action=body.SerializeToString(deterministic=True),
        deposit=body.deposit, start=epoch, end=epoch + period, rules=params.governance)


def record_votes(state: Settled, items: Iterable[Verified], epoch: int) -> None:
    """Record the votes canonical in Settle(``epoch``): of a voter's votes the
    highest seq counts; votes after the period's end count nothing."""
    by_proposal: dict[bytes, list[Verified]] = defaultdict(list)
    for item in items:
        by_proposal[item.body.gov_vote.proposal].append(item)
    for key, votes in by_proposal.items():
        proposal = state.proposals.get(key)
        if proposal is None or not proposal.is_open or not proposal.start < epoch <= proposal.end:
            continue  # validity makes this a late vote: stored, but counts nothing
        recorded = dict(proposal.votes)
        for item in votes:
            held = recorded.get(item.author)
            if held is None or item.seq > held[0]:
                recorded[item.author] = (item.seq, item.body.gov_vote.option)
        state.proposals[key] = dataclasses.replace(proposal, votes=recorded)


def close_due(state: Settled, epoch: int) -> list[Closed]:
    """Tally every proposal whose period ends at ``epoch``, ascending hash;
    return or burn its deposit. The snapshot and votes are dropped: the
    result keeps the sums."""
    closed: list[Closed] = []
    for key in sorted(k for k, p in state.proposals.items() if p.is_open and p.end == epoch):
        proposal = state.proposals[key]
        votes = [Vote(voter, seq, Option(option))
                 for voter, (seq, option) in proposal.votes.items()]
        result = tally(proposal.snapshot, votes, proposal.rules)
        done = dataclasses.replace(proposal, result=result, snapshot={}, votes={})
        state.proposals[key] = done
        if result.outcome.deposit_returned:
            state.accounts.setdefault(proposal.author, Account()).liquid += proposal.deposit
        else:
            state.deposits_burned_total += proposal.deposit
            state.supply -= proposal.deposit
        closed.append((key, done))
    return closed


def passed_disputes(closed: Iterable[Closed]) -> list[PassedDispute]:
    disputes = []
    for key, proposal in closed:
        action = _action(proposal)
        if _passed(proposal) and action.WhichOneof("action") == "dispute":
            disputes.append(PassedDispute(key, action.dispute.account, action.dispute.slash_bps))
    return disputes


def apply_effects(state: Settled, closed: Iterable[Closed]) -> None:
    """Step 5: passed changes set Params(E+2) (the higher hash last, so it
    wins a path both change), upgrades replace the notice, spends pay out of
    the community pool (as much as it holds)."""
    for key, proposal in closed:
        if not _passed(proposal):
            continue
        action = _action(proposal)
        which = action.WhichOneof("action")
        if which == "params":
            try:
                changes = param_changes(action.params.values, proposal.rules.mutable)
                state.params_after = apply_changes(state.params_after, changes)
            except (GenesisError, ValueError):
                # Validity checked each value under Params(fin + 1); the rules of
                # one value do not depend on others, so this cannot happen.
                raise AssertionError(f"passed proposal {key.hex()} has an invalid change") from None
        elif which == "upgrade":
            upgrade = action.upgrade
            state.upgrade = UpgradeNotice(key, upgrade.version, upgrade.url, upgrade.sha256,
                                          upgrade.activation_epoch)
        elif which == "spend":
            paid = min(action.spend.amount, state.community_pool)
            state.community_pool -= paid
            state.accounts.setdefault(action.spend.to, Account()).liquid += paid


def take_snapshots(state: Settled, epoch: int) -> None:
    """The weights of the proposals started at ``epoch``: tokens in Settled(epoch)."""
    started = [k for k, p in state.proposals.items() if p.start == epoch and p.is_open]
    if not started:
        return
    weights = {key: acc.liquid + acc.bonded + sum(acc.lots.values())
               for key, acc in state.accounts.items()}
    snapshot = {key: weight for key, weight in weights.items() if weight > 0}
    for key in started:
        state.proposals[key] = dataclasses.replace(state.proposals[key], snapshot=snapshot)


def _action(proposal: Proposal) -> ledger_pb2.GovProposal:
    return ledger_pb2.GovProposal.FromString(proposal.action)


def _passed(proposal: Proposal) -> bool:
    return proposal.result is not None and proposal.result.outcome is Outcome.PASSED
