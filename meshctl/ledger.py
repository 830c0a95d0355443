"""meshctl ledger: balances, history, transfers and verification of the token ledger."""

from __future__ import annotations

from typing import Any

import click

from mesh.ledger.v1 import service_pb2, service_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, fields


def _stub(client: MeshClient) -> service_pb2_grpc.LedgerServiceStub:
    return service_pb2_grpc.LedgerServiceStub(client.channel())


def entry_to_dict(entry: service_pb2.HistoryEntry) -> dict[str, Any]:
    """The stable JSON shape of a ledger entry (amounts: strings of base units)."""
    data: dict[str, Any] = {"hash": entry.hash, "author": entry.author, "seq": entry.seq,
                            "epoch": entry.epoch, "kind": entry.kind}
    if entry.kind == "transfer":
        data.update(to=entry.to, amount=entry.amount, memo=entry.memo)
    elif entry.amount:
        data["amount"] = entry.amount
    return data


def _history_table(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no entries"
    rows = [("EPOCH", "KIND", "AMOUNT", "FROM", "TO")]
    rows += [(str(e["epoch"]), e["kind"], e.get("amount", "-"), e["author"], e.get("to", "-"))
             for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
                     + "  " + r[4] for r in rows)


@click.group()
def ledger() -> None:
    """Balances, history, transfers; verify the stored ledger.

    Amounts are whole numbers of base units (10^-decimals of a token).
    """


@ledger.command()
@click.argument("account", required=False, default="")
@json_option
@with_client
def balance(client: MeshClient, account: str, as_json: bool) -> None:
    """Show ACCOUNT's balance (a peer ID; default: this node's)."""
    r = client.unary(_stub(client).GetBalance, service_pb2.GetBalanceRequest(account=account))
    data = {"account": r.account, "settled": r.settled, "pending_out": r.pending_out,
            "pending_in": r.pending_in, "available": r.available, "bonded": r.bonded,
            "symbol": r.symbol, "decimals": r.decimals}
    emit(data, as_json, lambda d: fields([
        ("Account", d["account"]), ("Available", f"{d['available']} (base units of "
                                                 f"{d['symbol']}, {d['decimals']} decimals)"),
        ("Settled", d["settled"]), ("Pending out", d["pending_out"]),
        ("Pending in", f"{d['pending_in']} (spendable once settled)"),
        ("Bonded", d["bonded"])]))


@ledger.command()
@click.argument("account", required=False, default="")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Entries to show, newest first.")
@json_option
@with_client
def history(client: MeshClient, account: str, limit: int, as_json: bool) -> None:
    """List ACCOUNT's entries and the transfers it received (default: this node's)."""
    r = client.unary(_stub(client).ListHistory,
                     service_pb2.ListHistoryRequest(account=account, limit=limit))
    emit([entry_to_dict(e) for e in r.entries], as_json, _history_table)


@ledger.command()
@click.argument("to")
@click.argument("amount")
@click.option("--memo", default="", help="A note for the recipient (at most 256 bytes).")
@json_option
@with_client
def transfer(client: MeshClient, to: str, amount: str, memo: str, as_json: bool) -> None:
    """Send AMOUNT base units from this node's account to the peer ID TO.

    Returns once the signed entry is durably stored.
    """
    r = client.unary(_stub(client).Transfer,
                     service_pb2.TransferRequest(to=to, amount=amount, memo=memo))
    data = entry_to_dict(r.entry)
    emit(data, as_json, lambda d: f"sent {d['amount']} to {d['to']} (entry {d['hash'][:16]}, "
                                  f"seq {d['seq']})")


@ledger.command()
@json_option
@with_client
def verify(client: MeshClient, as_json: bool) -> None:
    """Re-check every stored entry's encoding, signature and links.

    Exits 1 and names the first bad entry if there is one.
    """
    r = client.unary(_stub(client).VerifyLedger, service_pb2.VerifyLedgerRequest())
    data = {"checked": r.checked, "ok": not r.first_bad, "first_bad": r.first_bad or None}
    emit(data, as_json, lambda d: f"{d['checked']} entries verified" if d["ok"]
         else f"{d['checked']} entries good, then: {d['first_bad']}")
    if r.first_bad:
        raise SystemExit(1)
