"""mesh.governance.v1.GovernanceService: forwards to the node's Governance."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from mesh.governance.v1 import governance_pb2, governance_pb2_grpc
from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import accounts
from meshcore.ledger.entry import HASH_BYTES
from meshd import errors
from meshd.api.ledger_servicer import base_units
from meshd.governance.service import Governance, ProposalView, Shadow
from meshd.ledger.queries import account_key
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class GovernanceServicer(governance_pb2_grpc.GovernanceServiceServicer):
    def __init__(self, bridge: TrioBridge, governance: Governance) -> None:
        self._bridge = bridge
        self._governance = governance

    async def Propose(self, request: governance_pb2.ProposeRequest,
                      context: Context) -> governance_pb2.ProposeResponse:
        view = await unary(context, self._bridge, self._propose, request)
        return governance_pb2.ProposeResponse(proposal=proposal_pb(view))

    async def Vote(self, request: governance_pb2.VoteRequest,
                   context: Context) -> governance_pb2.VoteResponse:
        item, key = await unary(context, self._bridge, self._governance.vote,
                                request.proposal_id, request.option)
        return governance_pb2.VoteResponse(proposal_id=key.hex(), entry=item.hash.hex(),
                                           epoch=item.body.epoch)

    async def ListProposals(self, request: governance_pb2.ListProposalsRequest,
                            context: Context) -> governance_pb2.ListProposalsResponse:
        views = await unary(context, self._bridge, self._governance.proposals,
                            request.open_only)
        return governance_pb2.ListProposalsResponse(proposals=[proposal_pb(v) for v in views])

    async def GetProposal(self, request: governance_pb2.GetProposalRequest,
                          context: Context) -> governance_pb2.GetProposalResponse:
        view, shadow = await unary(context, self._bridge, self._governance.proposal,
                                   request.proposal_id)
        response = governance_pb2.GetProposalResponse(proposal=proposal_pb(view))
        if shadow is not None:
            response.shadow.CopyFrom(shadow_pb(shadow))
        return response

    async def WatchProposals(self, request: governance_pb2.WatchProposalsRequest,
                             context: Context,
                             ) -> AsyncIterator[governance_pb2.WatchProposalsResponse]:
        async def changes() -> AsyncIterator[governance_pb2.WatchProposalsResponse]:
            async with contextlib.aclosing(self._governance.watch()) as views:
                async for view, final_epoch in views:
                    yield governance_pb2.WatchProposalsResponse(
                        proposal=proposal_pb(view), final_epoch=final_epoch)

        async for change in server_stream(context, self._bridge, changes):
            yield change

    async def _propose(self, request: governance_pb2.ProposeRequest) -> ProposalView:
        deposit = base_units(request.deposit) if request.deposit else None
        return await self._governance.propose(request.title, request.description, deposit,
                                              action_of(request))


def action_of(request: governance_pb2.ProposeRequest) -> dict[str, Any]:
    """The GovProposal action of a request, with accounts and digests decoded."""
    kind = request.WhichOneof("action")
    if kind == "params":
        return {"params": ledger_pb2.ParamChange(values=[
            ledger_pb2.ParamValue(path=s.path, json=s.json) for s in request.params.settings])}
    if kind == "upgrade":
        u = request.upgrade
        try:
            digest = bytes.fromhex(u.sha256)
        except ValueError:
            digest = b""
        if len(digest) != HASH_BYTES:
            raise errors.InvalidArgument(f"sha256 {u.sha256!r} is not 64 hex characters")
        return {"upgrade": ledger_pb2.Upgrade(version=u.version, url=u.url, sha256=digest,
                                              activation_epoch=u.activation_epoch)}
    if kind == "spend":
        return {"spend": ledger_pb2.Spend(to=account_key(request.spend.to, "spend recipient"),
                                          amount=base_units(request.spend.amount))}
    if kind == "dispute":
        d = request.dispute
        return {"dispute": ledger_pb2.Dispute(account=account_key(d.account, "dispute account"),
                                              slash_bps=d.slash_bps, evidence=list(d.evidence))}
    raise errors.InvalidArgument("a proposal needs an action: params, upgrade, spend or dispute")


def proposal_pb(view: ProposalView) -> governance_pb2.Proposal:
    proposal = governance_pb2.Proposal(
        id=view.id.hex(), author=accounts.peer_id_of(view.author), title=view.title,
        description=view.description, kind=view.kind,
        action_json=json.dumps(view.action, sort_keys=True), deposit=str(view.deposit),
        status=view.status, submitted_epoch=view.submitted_epoch, my_vote=view.my_vote)
    if view.start is not None and view.end is not None:
        proposal.start_epoch, proposal.end_epoch = view.start, view.end
    if view.tally is not None and view.rules is not None:
        t = view.tally
        proposal.tally.CopyFrom(governance_pb2.Tally(
            yes=str(t.yes), no=str(t.no), abstain=str(t.abstain), veto=str(t.veto),
            eligible=str(t.eligible), voters=t.voters, ignored=t.ignored,
            outcome=t.outcome.value, reason=t.reason,
            quorum_percent=view.rules.quorum_percent,
            threshold_percent=view.rules.threshold_percent,
            veto_percent=view.rules.veto_percent))
    return proposal


def shadow_pb(shadow: Shadow) -> governance_pb2.ShadowEpoch:
    proposed = {(line.pool, line.account): line.amount for line in shadow.proposed.lines}
    return governance_pb2.ShadowEpoch(
        epoch=shadow.epoch, actual_minted=str(shadow.actual.minted),
        proposed_minted=str(shadow.proposed.minted),
        lines=[governance_pb2.ShadowLine(
            pool=line.pool, account=accounts.peer_id_of(line.account), points=line.points,
            actual=str(line.amount), proposed=str(proposed[(line.pool, line.account)]))
            for line in shadow.actual.lines])
