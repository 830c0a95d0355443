"""mesh.ledger.v1.LedgerService: forwards to the node's Ledger."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from meshcore.ledger import accounts
from meshcore.ledger.entry import Verified
from meshd import errors
from meshd.ledger import queries
from meshd.ledger.ledger import Ledger
from meshd.ledger.standing import wire_fields
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
DEFAULT_HISTORY = 50


# receipt entry hash -> (plugin, note) left on it by this node's plugin (meshd/tasks/notes.py)
NoteOf = Callable[[bytes], tuple[str, str] | None]


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, bridge: TrioBridge, ledger: Ledger,
                 note_of: NoteOf = lambda receipt: None) -> None:
        self._bridge = bridge
        self._ledger = ledger
        self._note_of = note_of
        self._token = ledger.genesis.token

    async def GetBalance(self, request: ledger_pb2.GetBalanceRequest,
                         context: Context) -> ledger_pb2.GetBalanceResponse:
        b = await unary(context, self._bridge, self._ledger.balance, request.account)
        s = await unary(context, self._bridge, self._ledger.stake_balance, request.account)
        return ledger_pb2.GetBalanceResponse(
            account=b.account, settled=str(b.settled), pending_out=str(b.pending_out),
            pending_in=str(b.pending_in), available=str(b.available), bonded=str(b.bonded),
            symbol=self._token.symbol, decimals=self._token.decimals,
            pending_stake=str(s.pending_stake), pending_unstake=str(s.pending_unstake),
            unbonding=str(s.unbonding), withdrawable=str(s.withdrawable))

    async def ListHistory(self, request: ledger_pb2.ListHistoryRequest,
                          context: Context) -> ledger_pb2.ListHistoryResponse:
        found = await unary(context, self._bridge, self._ledger.history, request.account,
                            request.limit or DEFAULT_HISTORY)
        return ledger_pb2.ListHistoryResponse(entries=[history_entry(e) for e in found])

    async def Transfer(self, request: ledger_pb2.TransferRequest,
                       context: Context) -> ledger_pb2.TransferResponse:
        stored = await unary(context, self._bridge, self._transfer, request)
        return ledger_pb2.TransferResponse(entry=history_entry(stored), stored_at=_now())

    async def VerifyLedger(self, request: ledger_pb2.VerifyLedgerRequest,
                           context: Context) -> ledger_pb2.VerifyLedgerResponse:
        checked, bad = await unary(context, self._bridge, self._ledger.verify)
        first_bad = ""
        if bad is not None:
            author = accounts.peer_id_of(bad.author) if len(bad.author) == 32 else "?"
            first_bad = (f"entry #{bad.rowid} {bad.hash.hex()[:16]} (author {author}, "
                         f"seq {bad.seq}): {bad.reason}")
        return ledger_pb2.VerifyLedgerResponse(checked=checked, first_bad=first_bad)

    async def Stake(self, request: ledger_pb2.StakeRequest,
                    context: Context) -> ledger_pb2.StakeResponse:
        stored = await unary(context, self._bridge, _with_amount, self._ledger.stake,
                             request.amount)
        return ledger_pb2.StakeResponse(entry=history_entry(stored), stored_at=_now())

    async def Unstake(self, request: ledger_pb2.UnstakeRequest,
                      context: Context) -> ledger_pb2.UnstakeResponse:
        stored = await unary(context, self._bridge, _with_amount, self._ledger.unstake,
                             request.amount)
        return ledger_pb2.UnstakeResponse(entry=history_entry(stored), stored_at=_now())

    async def Withdraw(self, request: ledger_pb2.WithdrawRequest,
                       context: Context) -> ledger_pb2.WithdrawResponse:
        stored = await unary(context, self._bridge, _with_amount, self._ledger.withdraw,
                             request.amount)
        return ledger_pb2.WithdrawResponse(entry=history_entry(stored), stored_at=_now())

    async def GetStateRoot(self, request: ledger_pb2.GetStateRootRequest,
                           context: Context) -> ledger_pb2.GetStateRootResponse:
        info = await unary(context, self._bridge, self._ledger.state_root,
                           request.epoch if request.HasField("epoch") else None,
                           request.account)
        return ledger_pb2.GetStateRootResponse(
            epoch=info.epoch, root=info.root.hex(), supply=str(info.supply),
            canonical_seq=info.canonical_seq, stored_seq=info.stored_seq,
            heads_digest=info.heads_digest.hex())

    async def GetEntry(self, request: ledger_pb2.GetEntryRequest,
                       context: Context) -> ledger_pb2.GetEntryResponse:
        item, canonical, epoch = await unary(context, self._bridge, self._ledger.entry,
                                             request.hash)
        return ledger_pb2.GetEntryResponse(entry=history_entry(item), canonical=canonical,
                                            final_epoch=epoch)

    async def WatchSettlements(self, request: ledger_pb2.WatchSettlementsRequest,
                               context: Context,
                               ) -> AsyncIterator[ledger_pb2.WatchSettlementsResponse]:
        def settlements() -> AsyncIterator[queries.FinalSettlement]:
            return self._ledger.watch_settlements(
                request.from_epoch if request.HasField("from_epoch") else None)

        async for final in server_stream(context, self._bridge, settlements):
            yield ledger_pb2.WatchSettlementsResponse(
                epoch=final.epoch, root=final.root.hex(), supply=str(final.supply),
                round=final.round, value=final.value.hex(), minted=str(final.minted),
                slashed=str(final.slashed))

    async def ListRewards(self, request: ledger_pb2.ListRewardsRequest,
                          context: Context) -> ledger_pb2.ListRewardsResponse:
        found = await unary(context, self._bridge, self._ledger.rewards,
                            request.epoch if request.HasField("epoch") else None)
        return rewards_pb(found)

    async def ExplainRewards(self, request: ledger_pb2.ExplainRewardsRequest,
                             context: Context) -> ledger_pb2.ExplainRewardsResponse:
        found = await unary(context, self._bridge, self._ledger.explain_rewards, request.epoch,
                            request.account, not request.full)
        notes = self._notes(found.record)
        lines = list(found.lines)
        if notes:
            lines.append("notes of this node's plugins on the receipts above (not evidence):")
            lines.extend(f"  entry {entry if request.full else entry[:8] + '…'}: {n['note']} "
                         f"({n['plugin']})" for entry, n in notes.items())
        return ledger_pb2.ExplainRewardsResponse(
            epoch=found.epoch, lines=lines,
            record_json=json.dumps({**found.record, "notes": notes}, sort_keys=True,
                                   separators=(",", ":")))

    def _notes(self, record: dict[str, Any]) -> dict[str, dict[str, str]]:
        """Entry (hex) -> {plugin, note} for the evidence of ``record`` this node has notes
        on: which pieces a storage receipt was for, say."""
        notes = {}
        for line in record["lines"]:
            for entry in [e["entry"] for e in line["evidence"] + line["ignored"]]:
                found = self._note_of(bytes.fromhex(entry))
                if found is not None:
                    notes[entry] = {"plugin": found[0], "note": found[1]}
        return notes

    async def GetStanding(self, request: ledger_pb2.GetStandingRequest,
                          context: Context) -> ledger_pb2.GetStandingResponse:
        s = await unary(context, self._bridge, self._ledger.standing, request.account)
        return ledger_pb2.GetStandingResponse(account=s.peer_id, **wire_fields(s))

    async def GetTokenInfo(self, request: ledger_pb2.GetTokenInfoRequest,
                           context: Context) -> ledger_pb2.GetTokenInfoResponse:
        return token_info_pb(await unary(context, self._bridge, self._ledger.token_info))

    async def ListValidators(self, request: ledger_pb2.ListValidatorsRequest,
                             context: Context) -> ledger_pb2.ListValidatorsResponse:
        epoch, current, following = await unary(context, self._bridge, self._ledger.validators)
        return ledger_pb2.ListValidatorsResponse(
            final_epoch=epoch,
            validators=[ledger_pb2.ValidatorWeight(account=a, weight=str(w)) for a, w in current],
            next_validators=[ledger_pb2.ValidatorWeight(account=a, weight=str(w))
                             for a, w in following])

    async def _transfer(self, request: ledger_pb2.TransferRequest) -> Verified:
        return await self._ledger.transfer(request.to, base_units(request.amount), request.memo)


def base_units(text: str) -> int:
    """A request's amount: a decimal string of base units."""
    if not text.isascii() or not text.isdigit():
        raise errors.InvalidArgument(
            f"amount {text!r} is not a whole number of base units (e.g. 1500000 is 1.5 "
            "tokens of 6 decimals)")
    return int(text)


async def _with_amount(write: Callable[[int], Awaitable[Verified]], amount: str) -> Verified:
    return await write(base_units(amount))


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC))
    return stamp


def rewards_pb(found: queries.Rewards) -> ledger_pb2.ListRewardsResponse:
    return ledger_pb2.ListRewardsResponse(
        epoch=found.epoch, emission=str(found.emission), minted=str(found.minted),
        pools=[ledger_pb2.PoolTotal(pool=p.pool, size=str(p.size), points=p.points,
                                     minted=str(p.minted), not_minted=str(p.not_minted))
               for p in found.pools],
        accounts=[ledger_pb2.AccountRewards(
            account=accounts.peer_id_of(a.account), total=str(a.total),
            pools=[ledger_pb2.PoolReward(pool=pool, points=points, amount=str(amount))
                   for pool, points, amount in a.pools]) for a in found.accounts])


def token_info_pb(info: queries.TokenInfo) -> ledger_pb2.GetTokenInfoResponse:
    split = dict(info.split)
    return ledger_pb2.GetTokenInfoResponse(
        name=info.name, symbol=info.symbol, decimals=info.decimals,
        final_epoch=info.final_epoch, supply=str(info.supply),
        minted_total=str(info.minted_total),
        emission_burned_total=str(info.emission_burned_total),
        slashed_total=str(info.slashed_total),
        genesis_allocations=[ledger_pb2.TokenAllocation(account=account, amount=str(amount))
                             for account, amount in info.allocations],
        top_accounts=[ledger_pb2.TokenHolder(
            account=accounts.peer_id_of(h.account), liquid=str(h.liquid), bonded=str(h.bonded),
            unbonding=str(h.unbonding), total=str(h.total),
            share_percent=queries.share_percent(h.total, info.supply)) for h in info.top],
        holders=info.holders, emission_per_epoch=str(info.emission_per_epoch),
        epoch_seconds=info.epoch_seconds,
        split=ledger_pb2.RewardSplit(uptime=split["uptime"], tasks=split["tasks"],
                                      governance=split["governance"]),
        base_price=str(info.base_price), market_burned_total=str(info.market_burned_total),
        escrowed=str(info.escrowed), spot_check_bps=info.spot_check_bps)



def history_entry(item: Verified) -> ledger_pb2.HistoryEntry:
    entry = ledger_pb2.HistoryEntry(hash=item.hash.hex(), author=accounts.peer_id_of(item.author),
                                     seq=item.seq, epoch=item.body.epoch, kind=item.kind)
    if item.kind == "transfer":
        transfer = item.body.transfer
        entry.to = accounts.peer_id_of(transfer.to)
        entry.amount = str(transfer.amount)
        entry.memo = transfer.memo
    elif item.kind in ("stake", "unstake", "withdraw", "lock"):
        entry.amount = str(getattr(item.body, item.kind).amount)
    return entry
