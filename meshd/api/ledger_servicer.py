"""mesh.ledger.v1.LedgerService: forwards to the node's Ledger."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from mesh.ledger.v1 import service_pb2, service_pb2_grpc
from meshcore.ledger import accounts
from meshcore.ledger.entry import Verified
from meshd import errors
from meshd.api.bridge import TrioBridge
from meshd.api.status import unary
from meshd.ledger.ledger import Ledger

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
DEFAULT_HISTORY = 50


class LedgerServicer(service_pb2_grpc.LedgerServiceServicer):
    def __init__(self, bridge: TrioBridge, ledger: Ledger) -> None:
        self._bridge = bridge
        self._ledger = ledger
        self._token = ledger.genesis.token

    async def GetBalance(self, request: service_pb2.GetBalanceRequest,
                         context: Context) -> service_pb2.GetBalanceResponse:
        b = await unary(context, self._bridge, self._ledger.balance, request.account)
        return service_pb2.GetBalanceResponse(
            account=b.account, settled=str(b.settled), pending_out=str(b.pending_out),
            pending_in=str(b.pending_in), available=str(b.available), bonded=str(b.bonded),
            symbol=self._token.symbol, decimals=self._token.decimals)

    async def ListHistory(self, request: service_pb2.ListHistoryRequest,
                          context: Context) -> service_pb2.ListHistoryResponse:
        found = await unary(context, self._bridge, self._ledger.history, request.account,
                            request.limit or DEFAULT_HISTORY)
        return service_pb2.ListHistoryResponse(entries=[history_entry(e) for e in found])

    async def Transfer(self, request: service_pb2.TransferRequest,
                       context: Context) -> service_pb2.TransferResponse:
        stored = await unary(context, self._bridge, self._transfer, request)
        stored_at = Timestamp()
        stored_at.FromDatetime(dt.datetime.now(dt.UTC))
        return service_pb2.TransferResponse(entry=history_entry(stored), stored_at=stored_at)

    async def VerifyLedger(self, request: service_pb2.VerifyLedgerRequest,
                           context: Context) -> service_pb2.VerifyLedgerResponse:
        checked, bad = await unary(context, self._bridge, self._ledger.verify)
        first_bad = ""
        if bad is not None:
            author = accounts.peer_id_of(bad.author) if len(bad.author) == 32 else "?"
            first_bad = (f"entry #{bad.rowid} {bad.hash.hex()[:16]} (author {author}, "
                         f"seq {bad.seq}): {bad.reason}")
        return service_pb2.VerifyLedgerResponse(checked=checked, first_bad=first_bad)

    async def _transfer(self, request: service_pb2.TransferRequest) -> Verified:
        if not request.amount.isdigit():
            raise errors.InvalidArgument(
                f"amount {request.amount!r} is not a whole number of base units")
        return await self._ledger.transfer(request.to, int(request.amount), request.memo)



def history_entry(item: Verified) -> service_pb2.HistoryEntry:
    entry = service_pb2.HistoryEntry(hash=item.hash.hex(), author=accounts.peer_id_of(item.author),
                                     seq=item.seq, epoch=item.body.epoch, kind=item.kind)
    if item.kind == "transfer":
        transfer = item.body.transfer
        entry.to = accounts.peer_id_of(transfer.to)
        entry.amount = str(transfer.amount)
        entry.memo = transfer.memo
    elif item.kind in ("stake", "unstake", "withdraw"):
        entry.amount = str(getattr(item.body, item.kind).amount)
    return entry
