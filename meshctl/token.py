"""meshctl token: the network's token, its supply and how it is distributed."""

from __future__ import annotations

from typing import Any

import click

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, fields, table, token_amount


def _stub(client: MeshClient) -> ledger_pb2_grpc.LedgerServiceStub:
    return ledger_pb2_grpc.LedgerServiceStub(client.channel())


@click.group()
def token() -> None:
    """The network's token (from genesis) and its supply."""


def token_to_dict(r: ledger_pb2.GetTokenInfoResponse) -> dict[str, Any]:
    """The stable JSON shape of ``token info`` (amounts: strings of base units)."""
    return {
        "name": r.name, "symbol": r.symbol, "decimals": r.decimals,
        "final_epoch": r.final_epoch, "supply": r.supply, "minted_total": r.minted_total,
        "emission_burned_total": r.emission_burned_total, "slashed_total": r.slashed_total,
        "genesis_allocations": [{"account": a.account, "amount": a.amount}
                                for a in r.genesis_allocations],
        "holders": r.holders,
        "top_accounts": [{"account": h.account, "liquid": h.liquid, "bonded": h.bonded,
                          "unbonding": h.unbonding, "total": h.total,
                          "share_percent": h.share_percent} for h in r.top_accounts],
        "emission_per_epoch": r.emission_per_epoch, "epoch_seconds": r.epoch_seconds,
        "split": {"uptime": r.split.uptime, "tasks": r.split.tasks,
                  "governance": r.split.governance},
        "base_price": r.base_price or "0", "market_burned_total": r.market_burned_total or "0",
        "escrowed": r.escrowed or "0", "spot_check_bps": r.spot_check_bps,
    }


def _token_text(d: dict[str, Any]) -> str:
    def amount(units: str) -> str:
        return token_amount(units, d["decimals"], d["symbol"])

    split = d["split"]
    final = (f"{d['final_epoch']}" if d["final_epoch"] >= 0
             else "none yet (the figures are the genesis state)")
    head = fields([
        ("Token", f"{d['name']} ({d['symbol']}), {d['decimals']} decimals"),
        ("Final epoch", final),
        ("Supply", amount(d["supply"])),
        ("Minted", amount(d["minted_total"])),
        ("Not minted", f"{amount(d['emission_burned_total'])}, emission no one earned"),
        ("Slashed", amount(d["slashed_total"])),
        ("Paid tasks", f"base price {d['base_price']} base units per 1000 units of work "
                       f"next epoch; {amount(d['market_burned_total'])} of base fees burned; "
                       f"{amount(d['escrowed'])} locked by requesters; spot checks of "
                       f"{d['spot_check_bps'] / 100:g} % of results"),
        ("Emission", f"{amount(d['emission_per_epoch'])} per epoch of "
                     f"{d['epoch_seconds']} s: uptime {split['uptime']} %, tasks "
                     f"{split['tasks']} %, governance {split['governance']} %"),
        ("Genesis", [f"{a['account']}  {amount(a['amount'])}"
                     for a in d["genesis_allocations"]] or ["no allocations"]),
        ("Holders", d["holders"]),
    ])
    if not d["top_accounts"]:
        return head
    rows = [("ACCOUNT", "TOTAL", "SHARE", "LIQUID", "BONDED", "UNBONDING")]
    rows += [(h["account"], h["total"], h["share_percent"] + " %", h["liquid"], h["bonded"],
              h["unbonding"]) for h in d["top_accounts"]]
    return (head + f"\n\nLargest accounts ({len(d['top_accounts'])} of {d['holders']}):\n"
            + table(rows))


@token.command()
@json_option
@with_client
def info(client: MeshClient, as_json: bool) -> None:
    """Show the token: name, symbol, decimals, supply and distribution.

    As of the newest final settlement (before the first: the genesis state).
    """
    r = client.unary(_stub(client).GetTokenInfo, ledger_pb2.GetTokenInfoRequest())
    emit(token_to_dict(r), as_json, _token_text)
