"""meshctl ledger: balances, history, transfers and verification of the token ledger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, emit_stream, fields, token_amount


def _stub(client: MeshClient) -> ledger_pb2_grpc.LedgerServiceStub:
    return ledger_pb2_grpc.LedgerServiceStub(client.channel())


def entry_to_dict(entry: ledger_pb2.HistoryEntry) -> dict[str, Any]:
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
    """Balances, history, transfers, stake; verify the stored ledger.

    Amounts are whole numbers of base units (10^-decimals of a token).
    """


@ledger.command()
@click.argument("account", required=False, default="")
@json_option
@with_client
def balance(client: MeshClient, account: str, as_json: bool) -> None:
    """Show ACCOUNT's balance (a peer ID; default: this node's)."""
    r = client.unary(_stub(client).GetBalance, ledger_pb2.GetBalanceRequest(account=account))
    data = {"account": r.account, "settled": r.settled, "pending_out": r.pending_out,
            "pending_in": r.pending_in, "available": r.available, "bonded": r.bonded,
            "symbol": r.symbol, "decimals": r.decimals, "pending_stake": r.pending_stake,
            "pending_unstake": r.pending_unstake, "unbonding": r.unbonding,
            "withdrawable": r.withdrawable}
    emit(data, as_json, lambda d: fields([
        ("Account", d["account"]),
        ("Available", token_amount(d["available"], d["decimals"], d["symbol"])),
        ("Settled", d["settled"]), ("Pending out", f"{d['pending_out']} (transfers and stakes)"),
        ("Pending in", f"{d['pending_in']} (spendable once settled)"),
        ("Bonded", f"{d['bonded']} (settled)"),
        ("Pending stake", f"{d['pending_stake']} (bonded once settled)"),
        ("Pending unstake", f"{d['pending_unstake']} (unbonding once settled)"),
        ("Unbonding", d["unbonding"]),
        ("Withdrawable", f"{d['withdrawable']} (matured: 'meshctl ledger withdraw')")]))


@ledger.command()
@click.argument("account", required=False, default="")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Entries to show, newest first.")
@json_option
@with_client
def history(client: MeshClient, account: str, limit: int, as_json: bool) -> None:
    """List ACCOUNT's entries and the transfers it received (default: this node's)."""
    r = client.unary(_stub(client).ListHistory,
                     ledger_pb2.ListHistoryRequest(account=account, limit=limit))
    emit([entry_to_dict(e) for e in r.entries], as_json, _history_table)


@ledger.command()
@click.argument("account", required=False, default="")
@json_option
@with_client
def standing(client: MeshClient, account: str, as_json: bool) -> None:
    """Show ACCOUNT's track record in the final settlements (default: this node's).

    Task receipts counted for it, uptime epochs, offences it was slashed for,
    what it earned and paid in the market: folded from every final settlement,
    so every node shows the same figures up to the epoch it has reached
    (docs/ledger.md §12.5). Amounts are in base units.
    """
    r = client.unary(_stub(client).GetStanding, ledger_pb2.GetStandingRequest(account=account))
    data = {"account": r.account, "through_epoch": r.through_epoch,
            "since_epoch": r.since_epoch, "receipts": r.receipts, "units": r.units,
            "uptime_epochs": r.uptime_epochs, "offences": r.offences,
            "failed_tasks": r.failed_tasks, "last_offence_epoch": r.last_offence_epoch,
            "slashed": r.slashed, "earned": r.earned, "paid": r.paid, "refunded": r.refunded}

    def epoch(e: int) -> str:
        return "-" if e < 0 else str(e)
    emit(data, as_json, lambda d: fields([
        ("Account", d["account"]),
        ("Through epoch", epoch(d["through_epoch"])),
        ("Since epoch", f"{epoch(d['since_epoch'])} (its first settlement)"),
        ("Receipts", f"{d['receipts']} ({d['units']} units of work)"),
        ("Uptime epochs", d["uptime_epochs"]),
        ("Offences", f"{d['offences']} ({d['failed_tasks']} failed tasks; last in epoch "
                     f"{epoch(d['last_offence_epoch'])})"),
        ("Slashed", d["slashed"]),
        ("Market", f"earned {d['earned']}, paid {d['paid']}, refunded {d['refunded']}")]))


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
                     ledger_pb2.TransferRequest(to=to, amount=amount, memo=memo))
    data = entry_to_dict(r.entry)
    emit(data, as_json, lambda d: f"sent {d['amount']} to {d['to']} (entry {d['hash'][:16]}, "
                                  f"seq {d['seq']})")


@ledger.command()
@click.argument("amount")
@json_option
@with_client
def stake(client: MeshClient, amount: str, as_json: bool) -> None:
    """Bond AMOUNT base units of this node's available balance.

    The stake counts as bonded once the epoch settles; until then 'ledger
    balance' shows it as pending stake.
    """
    r = client.unary(_stub(client).Stake, ledger_pb2.StakeRequest(amount=amount))
    emit(entry_to_dict(r.entry), as_json, lambda d: _written("staked", d,
                                                             "bonded once settled"))


@ledger.command()
@click.argument("amount")
@json_option
@with_client
def unstake(client: MeshClient, amount: str, as_json: bool) -> None:
    """Start unbonding AMOUNT base units of this node's stake.

    The lot matures 24 epochs after the settlement that applies the unstake;
    then 'ledger withdraw' makes it available.
    """
    r = client.unary(_stub(client).Unstake, ledger_pb2.UnstakeRequest(amount=amount))
    emit(entry_to_dict(r.entry), as_json, lambda d: _written(
        "unstaked", d, "withdrawable 24 epochs after it settles"))


@ledger.command()
@click.argument("amount")
@json_option
@with_client
def withdraw(client: MeshClient, amount: str, as_json: bool) -> None:
    """Move AMOUNT base units of matured unbonded stake to the available balance."""
    r = client.unary(_stub(client).Withdraw, ledger_pb2.WithdrawRequest(amount=amount))
    emit(entry_to_dict(r.entry), as_json, lambda d: _written("withdrew", d, "available now"))


def _written(verb: str, d: dict[str, Any], then: str) -> str:
    return f"{verb} {d['amount']} (entry {d['hash'][:16]}, seq {d['seq']}); {then}"


@ledger.command("state-root")
@click.option("--epoch", type=click.IntRange(min=-1), default=None,
              help="A final epoch (default: the newest).")
@json_option
@with_client
def state_root(client: MeshClient, epoch: int | None, as_json: bool) -> None:
    """Show the state root of a final epoch, to compare with other nodes.

    Two nodes that show the same root for an epoch computed the same settlement
    (docs/ledger.md §4.3). Before any epoch is final: epoch -1 and no root.
    """
    request = ledger_pb2.GetStateRootRequest()
    if epoch is not None:
        request.epoch = epoch
    r = client.unary(_stub(client).GetStateRoot, request)
    data = {"epoch": r.epoch, "root": r.root, "supply": r.supply}
    emit(data, as_json, lambda d: fields([
        ("Epoch", d["epoch"]), ("Root", d["root"]), ("Supply", d["supply"])])
        if d["epoch"] >= 0 else
        f"no epoch is final yet: the genesis state has no state root (supply {d['supply']})")


@ledger.command()
@click.argument("entry_hash", metavar="HASH")
@json_option
@with_client
def show(client: MeshClient, entry_hash: str, as_json: bool) -> None:
    """Show one stored entry and whether it has taken effect.

    HASH is the entry's hash as transfer, stake, history and gov vote print it
    (64 hex digits). Exit 1 when this node does not store it.
    """
    r = client.unary(_stub(client).GetEntry, ledger_pb2.GetEntryRequest(hash=entry_hash))
    data = {**entry_to_dict(r.entry), "canonical": r.canonical, "final_epoch": r.final_epoch}
    emit(data, as_json, lambda d: fields([
        *[(key.replace("_", " ").capitalize(), value) for key, value in d.items()
          if key not in ("canonical", "final_epoch")],
        ("Taken effect", f"yes, settled by epoch {d['final_epoch']}" if d["canonical"]
         else "not yet (stored, not settled)")]))


@ledger.command()
@click.option("--from", "from_epoch", type=click.IntRange(min=0), default=None,
              help="First epoch to show (default: the newest final one).")
@click.option("-n", "--count", type=click.IntRange(min=1),
              help="Stop after this many settlements (default: until interrupted).")
@json_option
@with_client
def watch(client: MeshClient, from_epoch: int | None, count: int | None,
          as_json: bool) -> None:
    """Print each final settlement as this node learns it (--json: one per line).

    Epochs come in order: from --from (or the newest final one) up to the
    newest, then each new one. A node catching up shows every epoch it settles.
    """
    emit_stream(settlement_stream(client, from_epoch), count, as_json, settlement_line)


def settlement_stream(client: MeshClient, from_epoch: int | None = None,
                      ) -> Iterator[dict[str, Any]]:
    """``WatchSettlements`` as the JSON shape ``ledger watch`` prints (also ``events``)."""
    request = ledger_pb2.WatchSettlementsRequest()
    if from_epoch is not None:
        request.from_epoch = from_epoch
    return (settlement_to_dict(r)
            for r in client.stream(_stub(client).WatchSettlements, request))


def settlement_to_dict(r: ledger_pb2.WatchSettlementsResponse) -> dict[str, Any]:
    return {"epoch": r.epoch, "root": r.root, "supply": r.supply, "round": r.round,
            "value": r.value, "minted": r.minted, "slashed": r.slashed}


def settlement_line(d: dict[str, Any]) -> str:
    return (f"epoch {d['epoch']} final (round {d['round']}): root {d['root'][:16]}, "
            f"minted {d['minted']}, slashed {d['slashed']}, supply {d['supply']}")


@ledger.command()
@json_option
@with_client
def verify(client: MeshClient, as_json: bool) -> None:
    """Re-check every stored entry's encoding, signature and links.

    Exits 1 and names the first bad entry if there is one.
    """
    r = client.unary(_stub(client).VerifyLedger, ledger_pb2.VerifyLedgerRequest())
    data = {"checked": r.checked, "ok": not r.first_bad, "first_bad": r.first_bad or None}
    emit(data, as_json, lambda d: f"{d['checked']} entries verified" if d["ok"]
         else f"{d['checked']} entries good, then: {d['first_bad']}")
    if r.first_bad:
        raise SystemExit(1)


@ledger.command()
@json_option
@with_client
def validators(client: MeshClient, as_json: bool) -> None:
    """The validators that settle the next epoch, and the epoch after, with weights.

    From the genesis at first, then elected by bonded stake (docs/ledger.md
    §4.4). A settlement needs 2/3 of the weight.
    """
    r = client.unary(_stub(client).ListValidators, ledger_pb2.ListValidatorsRequest())

    def rows(items: Any) -> list[dict[str, Any]]:
        return [{"account": v.account, "weight": v.weight} for v in items]

    data = {"final_epoch": r.final_epoch, "validators": rows(r.validators),
            "next_validators": rows(r.next_validators)}

    def human(d: dict[str, Any]) -> str:
        total = sum(int(v["weight"]) for v in d["validators"]) or 1
        lines = [f"Validators of epoch {d['final_epoch'] + 1} (the next to settle):"]
        lines += [f"  {v['account']}  weight {v['weight']} ({int(v['weight']) / total:.0%})"
                  for v in d["validators"]] or ["  none: no epoch will settle"]
        if d["next_validators"] != d["validators"]:
            lines.append(f"Epoch {d['final_epoch'] + 2}:")
            lines += [f"  {v['account']}  weight {v['weight']}" for v in d["next_validators"]]
        return "\n".join(lines)

    emit(data, as_json, human)
