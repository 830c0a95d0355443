"""Validity of governance entries against their causal past (docs/governance.md §3).

A proposal is judged by what it asks (each action's own rules) and by what its
author can pay (its deposit, like a transfer's amount, is checked by
meshcore/ledger/rules.py). A vote is judged against ``Settled(fin_p)``: the
proposal must be canonical and still open there, and the voter must have held
tokens when it started.
"""

from __future__ import annotations

import json
from typing import Any

from packaging.version import InvalidVersion, Version

from meshcore.genesis import GenesisError, changed_params
from meshcore.governance.tally import Option
from meshcore.ledger import accounts
from meshcore.ledger.entry import HASH_BYTES, KEY_BYTES, Verified
from meshcore.ledger.state import Params, Settled

TITLE_MAX_BYTES = 200
DESCRIPTION_MAX_BYTES = 10_000
PARAM_JSON_MAX_BYTES = 1024
URL_MAX_BYTES = 2048
EVIDENCE_MAX = 16
BPS_MAX = 10_000
# The epoch clock is fixed at genesis in this version (meshd/ledger/ledger.py):
# a change of the epoch length would need every node to re-time its epochs.
UNCHANGEABLE_YET = frozenset({"rewards.epoch_seconds"})


def proposal_problem(item: Verified, settled: Settled) -> str | None:
    """What is wrong with a GovProposal's own fields, judged under ``Params(fin_p + 1)``."""
    proposal = item.body.gov_proposal
    rules = settled.params.governance
    title = proposal.title.encode("utf-8")
    if not 1 <= len(title) <= TITLE_MAX_BYTES or not proposal.title.strip():
        return f"a proposal title must be 1-{TITLE_MAX_BYTES} bytes of text"
    if len(proposal.description.encode("utf-8")) > DESCRIPTION_MAX_BYTES:
        return f"a proposal description must be at most {DESCRIPTION_MAX_BYTES} bytes"
    if proposal.deposit < rules.proposal_stake:
        return (f"deposit of {proposal.deposit} is below the proposal stake of "
                f"{rules.proposal_stake}")
    action = proposal.WhichOneof("action")
    if action == "params":
        try:
            apply_changes(settled.params, param_changes(proposal.params.values, rules.mutable))
        except (GenesisError, ValueError) as exc:
            return str(exc)
        return None
    if action == "upgrade":
        return _upgrade_problem(proposal.upgrade)
    if action == "spend":
        if len(proposal.spend.to) != KEY_BYTES:
            return "spend recipient is not a 32-byte key"
        return None if proposal.spend.amount >= 1 else "spend amount must be at least 1"
    if action == "dispute":
        dispute = proposal.dispute
        if len(dispute.account) != KEY_BYTES:
            return "dispute account is not a 32-byte key"
        if not 1 <= dispute.slash_bps <= BPS_MAX:
            return f"dispute slash_bps must be 1-{BPS_MAX}, got {dispute.slash_bps}"
        if len(dispute.evidence) > EVIDENCE_MAX or not all(dispute.evidence):
            return f"a dispute carries at most {EVIDENCE_MAX} pieces of evidence, none empty"
        return None
    return "a proposal needs an action: params, upgrade, spend or dispute"


def vote_problem(item: Verified, settled: Settled) -> str | None:
    """What is wrong with a GovVote, judged against ``Settled(fin_p)``."""
    vote = item.body.gov_vote
    if vote.option not in tuple(Option):
        return f"vote option {vote.option} is not 1 yes, 2 no, 3 abstain or 4 veto"
    if len(vote.proposal) != HASH_BYTES:
        return "a vote names a proposal by its 32-byte entry hash"
    proposal = settled.proposals.get(vote.proposal)
    name = vote.proposal.hex()[:16]
    if proposal is None:
        return (f"proposal {name} is not canonical in the settled state of epoch "
                f"{settled.epoch}: a vote can follow only once the proposal has settled")
    if not proposal.is_open or item.body.epoch > proposal.end:
        return f"voting on proposal {name} ended with epoch {proposal.end}"
    if proposal.snapshot.get(item.author, 0) <= 0:
        return (f"account {accounts.peer_id_of(item.author)} held no tokens when proposal "
                f"{name} started (epoch {proposal.start}): it has no vote")
    return None


def param_changes(values: Any, mutable: tuple[str, ...]) -> dict[str, Any]:
    """Path -> parsed value of a ParamChange's values.

    Raises:
        ValueError: no values, a path twice, a path not mutable in this
            network, or a value that is not JSON.
    """
    changes: dict[str, Any] = {}
    if not values:
        raise ValueError("a parameter change names at least one parameter")
    for value in values:
        if value.path in changes:
            raise ValueError(f"{value.path} is changed twice")
        if value.path not in mutable:
            raise ValueError(f"{value.path} is not mutable in this network (genesis "
                             f"governance.mutable: {', '.join(mutable) or 'none'})")
        if value.path in UNCHANGEABLE_YET:
            raise ValueError(f"{value.path} cannot be changed by this version: the epoch "
                             "clock is fixed at genesis")
        if len(value.json.encode("utf-8")) > PARAM_JSON_MAX_BYTES:
            raise ValueError(f"the value of {value.path} is over {PARAM_JSON_MAX_BYTES} bytes")
        try:
            changes[value.path] = json.loads(value.json)
        except ValueError:
            raise ValueError(f"the value of {value.path} is not JSON: {value.json!r}") from None
    return changes


def apply_changes(params: Params, changes: dict[str, Any]) -> Params:
    """``params`` with parsed changes applied, by the genesis rules.

    Raises:
        GenesisError: a value breaks its rule.
    """
    return Params(*changed_params(params.rewards, params.governance, params.penalties,
                                  params.market, changes))


def _upgrade_problem(upgrade: Any) -> str | None:
    try:
        Version(upgrade.version)
    except InvalidVersion:
        return f"upgrade version {upgrade.version!r} is not a PEP 440 version"
    if not upgrade.url.startswith("https://") or len(upgrade.url.encode()) > URL_MAX_BYTES:
        return f"upgrade url must be an https:// URL of at most {URL_MAX_BYTES} bytes"
    if len(upgrade.sha256) != HASH_BYTES:
        return "upgrade sha256 must be 32 bytes"
    return None
