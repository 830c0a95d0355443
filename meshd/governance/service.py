"""This node's governance: proposing, voting, and what the API shows of proposals.

Proposals and votes are ledger entries written from this node's account
(docs/governance.md); their validity is the ledger's, so a refused vote says
why in the words of meshcore/governance/rules.py. Views are built from
the newest final settlement, plus this node's own proposals not settled yet.
"""

from __future__ import annotations

import json
import string
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import GenesisError, GovernanceParams
from meshcore.governance.rules import apply_changes, param_changes
from meshcore.governance.tally import Option, Tally, Vote, tally
from meshcore.ledger import accounts
from meshcore.ledger.entry import HASH_BYTES, Verified
from meshcore.ledger.record import Record
from meshcore.ledger.rewards import reprice
from meshcore.ledger.state import Proposal, Settled
from meshd import errors
from meshd.ledger.ledger import Ledger

MIN_ID_PREFIX = 8
OPTIONS = {option.name.lower(): option for option in Option}


@dataclass(frozen=True)
class ProposalView:
    """A proposal as ``meshctl gov ls|show`` prints it."""

    id: bytes
    author: bytes
    title: str
    description: str
    kind: str  # params, upgrade, spend or dispute
    action: dict[str, Any]  # the action, JSON-able, accounts as peer IDs
    deposit: int
    status: str  # pending (not settled yet), open, or the outcome
    submitted_epoch: int
    start: int | None  # None while pending
    end: int | None
    rules: GovernanceParams | None
    tally: Tally | None  # the running tally of the canonical votes, or the final one
    my_vote: str  # this node's counted vote ("" none or not known any more)


@dataclass(frozen=True)
class Shadow:
    """The newest settled epoch's rewards next to what the proposal would have minted."""

    epoch: int
    actual: Record
    proposed: Record


class Governance:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    # --- writing ----------------------------------------------------------------

    async def propose(self, title: str, description: str, deposit: int | None,
                      action: dict[str, Any]) -> ProposalView:
        """Write a proposal from this node's account; ``action`` is one GovProposal
        action field (``{"params": ParamChange(...)}``). The deposit defaults to the
        current proposal stake."""
        stake = self._ledger.settled.params.governance.proposal_stake
        body = ledger_pb2.GovProposal(title=title, description=description,
                                      deposit=stake if deposit is None else deposit, **action)
        item = await self._ledger.write(gov_proposal=body)
        return _pending(item)

    async def vote(self, proposal_id: str, option: str) -> tuple[Verified, bytes]:
        """Write this node's vote; returns the entry and the proposal's full ID."""
        chosen = OPTIONS.get(option.lower())
        if chosen is None:
            raise errors.InvalidArgument(f"vote {option!r} is not one of "
                                         f"{', '.join(OPTIONS)}")
        key = await self._resolve(proposal_id)
        item = await self._ledger.write(gov_vote=ledger_pb2.GovVote(proposal=key,
                                                                   option=int(chosen)))
        return item, key

    # --- reading ----------------------------------------------------------------

    async def proposals(self, open_only: bool = False) -> list[ProposalView]:
        """Every settled proposal, newest start first, after this node's pending ones."""
        settled = self._ledger.settled
        views = [_view(key, p, self._ledger.key, await self._entry(key))
                 for key, p in settled.proposals.items() if p.is_open or not open_only]
        views.sort(key=lambda v: (-(v.start or 0), v.id))
        return [_pending(item) for item in await self._own_pending(settled)] + views

    async def watch(self) -> AsyncGenerator[tuple[ProposalView, int], None]:
        """Every proposal :meth:`proposals` shows (oldest first), then each one
        again when a settlement changed it, with the newest final epoch; forever."""
        last: dict[bytes, ProposalView] = {}
        while True:
            final = self._ledger.final_epoch
            # proposals() reads the settled state before its first await: final's.
            views = await self.proposals()
            for view in reversed(views):
                if last.get(view.id) != view:
                    last[view.id] = view
                    yield view, final
            await self._ledger.next_final(final)

    async def proposal(self, proposal_id: str) -> tuple[ProposalView, Shadow | None]:
        """One proposal, and the shadow epoch of an open parameter change."""
        key = await self._resolve(proposal_id)
        settled = self._ledger.settled
        found = settled.proposals.get(key)
        item = await self._entry(key)
        if found is None:
            if item is None:
                raise errors.NotFound(f"no proposal {key.hex()} on this node")
            return _pending(item), None
        view = _view(key, found, self._ledger.key, item)
        return view, self._shadow(found) if found.is_open else None

    def _shadow(self, proposal: Proposal) -> Shadow | None:
        action = ledger_pb2.GovProposal.FromString(proposal.action)
        latest = self._ledger.settled
        before = self._ledger.settled_at(latest.epoch - 1)
        if action.WhichOneof("action") != "params" or latest.epoch < 0 or before is None:
            return None
        try:
            changed = apply_changes(before.params, param_changes(action.params.values,
                                                                 proposal.rules.mutable))
        except (GenesisError, ValueError):
            return None
        return Shadow(latest.epoch, latest.record, reprice(latest.record, changed.rewards))

    async def _own_pending(self, settled: Settled) -> list[Verified]:
        return await self._ledger.own_unsettled("gov_proposal", settled)

    async def _entry(self, key: bytes) -> Verified | None:
        item = await trio.to_thread.run_sync(self._ledger.store.get, key)
        return item if item is not None and item.kind == "gov_proposal" else None

    async def _resolve(self, proposal_id: str) -> bytes:
        """The full hash of a proposal named by a hex ID or a unique prefix of it."""
        text = proposal_id.strip().lower()
        if len(text) < MIN_ID_PREFIX or any(c not in string.hexdigits for c in text):
            raise errors.InvalidArgument(f"proposal ID {proposal_id!r} is not hex of at least "
                                         f"{MIN_ID_PREFIX} characters (see 'meshctl gov ls')")
        if len(text) == 2 * HASH_BYTES:
            return bytes.fromhex(text)
        settled = self._ledger.settled
        known = set(settled.proposals) | {
            item.hash for item in await self._own_pending(settled)}
        matches = sorted(key for key in known if key.hex().startswith(text))
        if not matches:
            raise errors.NotFound(f"no proposal starting {text} on this node (a proposal of "
                                  "another node shows here once it has settled)")
        if len(matches) > 1:
            raise errors.InvalidArgument(f"proposal ID {text} is ambiguous: "
                                         f"{', '.join(m.hex()[:16] for m in matches)}")
        return matches[0]


def describe_action(action: ledger_pb2.GovProposal) -> tuple[str, dict[str, Any]]:
    """(kind, JSON-able fields) of a proposal's action, accounts as peer IDs."""
    kind = action.WhichOneof("action") or ""
    if kind == "params":
        values: dict[str, Any] = {}
        for value in action.params.values:
            try:
                values[value.path] = json.loads(value.json)
            except ValueError:
                values[value.path] = value.json
        return kind, {"changes": values}
    if kind == "upgrade":
        u = action.upgrade
        return kind, {"version": u.version, "url": u.url, "sha256": u.sha256.hex(),
                      "activation_epoch": u.activation_epoch}
    if kind == "spend":
        return kind, {"to": _peer(action.spend.to), "amount": str(action.spend.amount)}
    if kind == "dispute":
        d = action.dispute
        return kind, {"account": _peer(d.account), "slash_bps": d.slash_bps,
                      "evidence": [e.decode("utf-8", "replace") for e in d.evidence]}
    return kind, {}


def _peer(key: bytes) -> str:
    try:
        return accounts.peer_id_of(key)
    except ValueError:
        return key.hex()


def _pending(item: Verified) -> ProposalView:
    body = item.body.gov_proposal
    kind, action = describe_action(body)
    return ProposalView(item.hash, item.author, body.title, body.description, kind, action,
                        body.deposit, "pending", item.body.epoch, None, None, None, None, "")


def _view(key: bytes, proposal: Proposal, me: bytes, item: Verified | None) -> ProposalView:
    body = ledger_pb2.GovProposal.FromString(proposal.action)
    kind, action = describe_action(body)
    result = proposal.result
    if result is None:
        votes = [Vote(voter, seq, Option(option))
                 for voter, (seq, option) in proposal.votes.items()]
        result = tally(proposal.snapshot, votes, proposal.rules)
    mine = proposal.votes.get(me)
    return ProposalView(
        key, proposal.author, body.title, body.description, kind, action, proposal.deposit,
        "open" if proposal.is_open else result.outcome.value,
        item.body.epoch if item else proposal.start, proposal.start, proposal.end,
        proposal.rules, result, Option(mine[1]).name.lower() if mine else "")
