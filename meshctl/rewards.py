"""meshctl rewards: what each final settlement minted, and why (docs/ledger.md §6)."""

from __future__ import annotations

import json
from typing import Any

import click

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, table

POOLS = ("uptime", "tasks", "governance")


def _stub(client: MeshClient) -> ledger_pb2_grpc.LedgerServiceStub:
    return ledger_pb2_grpc.LedgerServiceStub(client.channel())


@click.group()
def rewards() -> None:
    """Rewards minted by final settlements, per account and pool.

    Amounts are whole numbers of base units (10^-decimals of a token).
    """


def rewards_to_dict(r: ledger_pb2.ListRewardsResponse) -> dict[str, Any]:
    """The stable JSON shape of one epoch's rewards (amounts: strings of base units)."""
    return {
        "epoch": r.epoch, "emission": r.emission, "minted": r.minted,
        "pools": [{"pool": p.pool, "size": p.size, "points": p.points, "minted": p.minted,
                   "not_minted": p.not_minted} for p in r.pools],
        "accounts": [{"account": a.account, "total": a.total,
                      "rewards": [{"pool": p.pool, "points": p.points, "amount": p.amount}
                                  for p in a.pools]} for a in r.accounts],
    }


def _rewards_text(d: dict[str, Any]) -> str:
    out = [f"epoch {d['epoch']}: emission {d['emission']}, minted {d['minted']}", ""]
    out.append(table([("POOL", "SIZE", "POINTS", "MINTED", "NOT MINTED")]
                     + [(p["pool"], p["size"], str(p["points"]), p["minted"], p["not_minted"])
                        for p in d["pools"]]))
    out.append("")
    if not d["accounts"]:
        out.append("no account was rewarded")
        return "\n".join(out)
    rows = [("ACCOUNT", *(pool.upper() for pool in POOLS), "TOTAL")]
    for account in d["accounts"]:
        amounts = {r["pool"]: r["amount"] for r in account["rewards"]}
        rows.append((account["account"], *(amounts.get(pool, "-") for pool in POOLS),
                     account["total"]))
    out.append(table(rows))
    return "\n".join(out)


@rewards.command("ls")
@click.option("--epoch", type=click.IntRange(min=0), default=None,
              help="A final epoch (default: the newest).")
@json_option
@with_client
def ls(client: MeshClient, epoch: int | None, as_json: bool) -> None:
    """List what each account was minted, per pool, in a final epoch."""
    request = ledger_pb2.ListRewardsRequest()
    if epoch is not None:
        request.epoch = epoch
    r = client.unary(_stub(client).ListRewards, request)
    emit(rewards_to_dict(r), as_json, _rewards_text)


@rewards.command()
@click.argument("epoch", type=click.IntRange(min=0))
@click.argument("peer", required=False, default="")
@click.option("--full", is_flag=True, help="Full peer IDs and hashes, not abbreviated.")
@json_option
@with_client
def explain(client: MeshClient, epoch: int, peer: str, full: bool, as_json: bool) -> None:
    """Show the evidence and the rule behind each amount of EPOCH's settlement.

    PEER (a peer ID) limits the lines and penalties to one account. Read from
    the settlement's own record, so the explanation cannot drift from the
    amounts (docs/ledger.md §6.5).
    """
    r = client.unary(_stub(client).ExplainRewards,
                     ledger_pb2.ExplainRewardsRequest(epoch=epoch, account=peer, full=full))
    if as_json:
        emit(json.loads(r.record_json), True, str)
    else:
        click.echo("\n".join(r.lines))
