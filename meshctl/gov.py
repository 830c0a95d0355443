"""meshctl gov: proposals, votes and tallies (docs/governance.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mesh.governance.v1 import governance_pb2, governance_pb2_grpc
from meshcore.genesis import GenesisError, parse_split
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, emit_stream, fields, table

OPTIONS = ("yes", "no", "abstain", "veto")
EVIDENCE_MAX_BYTES = 60_000  # an entry, evidence included, stays within 64 KiB


def _stub(client: MeshClient) -> governance_pb2_grpc.GovernanceServiceStub:
    return governance_pb2_grpc.GovernanceServiceStub(client.channel())


@click.group()
def gov() -> None:
    """Governance: propose, vote, and follow proposals to their tally.

    A proposal locks a deposit (the genesis proposal stake) from this node's
    account; it opens for votes at the next settlement and is tallied when its
    voting period ends. Votes weigh the tokens each account held when the
    proposal opened. IDs are entry hashes; any unique prefix of 8+ hex
    characters works.
    """


# --- JSON shapes ---------------------------------------------------------------


def proposal_to_dict(p: governance_pb2.Proposal) -> dict[str, Any]:
    """The stable JSON shape of a proposal (amounts: strings of base units)."""
    tally = None
    if p.HasField("tally"):
        t = p.tally
        tally = {"yes": t.yes, "no": t.no, "abstain": t.abstain, "veto": t.veto,
                 "eligible": t.eligible, "voters": t.voters, "ignored": t.ignored,
                 "outcome": t.outcome, "reason": t.reason, "quorum_percent": t.quorum_percent,
                 "threshold_percent": t.threshold_percent, "veto_percent": t.veto_percent}
    return {
        "id": p.id, "author": p.author, "title": p.title, "description": p.description,
        "kind": p.kind, "action": json.loads(p.action_json or "{}"), "deposit": p.deposit,
        "status": p.status, "submitted_epoch": p.submitted_epoch,
        "start_epoch": p.start_epoch if p.HasField("start_epoch") else None,
        "end_epoch": p.end_epoch if p.HasField("end_epoch") else None,
        "tally": tally, "my_vote": p.my_vote or None,
    }


def shadow_to_dict(s: governance_pb2.ShadowEpoch) -> dict[str, Any]:
    return {"epoch": s.epoch, "actual_minted": s.actual_minted,
            "proposed_minted": s.proposed_minted,
            "lines": [{"pool": line.pool, "account": line.account, "points": line.points,
                       "actual": line.actual, "proposed": line.proposed} for line in s.lines]}


# --- text ---------------------------------------------------------------------


def _period(d: dict[str, Any]) -> str:
    if d["start_epoch"] is None:
        return "opens at the next settlement"
    return f"epochs {d['start_epoch'] + 1}..{d['end_epoch']}"


def _tally_text(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    return (f"yes {t['yes']}, no {t['no']}, abstain {t['abstain']}, veto {t['veto']} "
            f"of {t['eligible']} eligible ({t['voters']} voters): {t['reason']}")


def _proposal_text(d: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [
        ("ID", d["id"]), ("Title", d["title"]), ("Kind", d["kind"]),
        ("Action", json.dumps(d["action"], sort_keys=True)), ("Author", d["author"]),
        ("Deposit", d["deposit"]), ("Status", d["status"]), ("Voting", _period(d)),
        ("Tally", _tally_text(d["tally"])), ("My vote", d["my_vote"] or "none")]
    if d["description"]:
        rows.insert(2, ("Description", d["description"]))
    return fields(rows)


def _list_text(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no proposals (start one with 'meshctl gov propose')"
    rows = [("ID", "STATUS", "KIND", "VOTING", "MY VOTE", "TITLE")]
    rows += [(d["id"][:16], d["status"], d["kind"], _period(d), d["my_vote"] or "-",
              d["title"]) for d in items]
    return table(rows)


def _show_text(d: dict[str, Any]) -> str:
    out = [_proposal_text(d["proposal"])]
    shadow = d["shadow"]
    if shadow is not None:
        out += ["", f"Shadow epoch {shadow['epoch']}: minted {shadow['actual_minted']}, "
                f"under this proposal {shadow['proposed_minted']}", ""]
        rows = [("POOL", "ACCOUNT", "POINTS", "ACTUAL", "PROPOSED")]
        rows += [(line["pool"], line["account"], str(line["points"]), line["actual"],
                  line["proposed"]) for line in shadow["lines"]]
        out.append(table(rows) if shadow["lines"] else "no account was rewarded that epoch")
    return "\n".join(out)


# --- commands -----------------------------------------------------------------


@gov.command("ls")
@click.option("--open", "open_only", is_flag=True, help="Only proposals open for votes.")
@json_option
@with_client
def ls(client: MeshClient, open_only: bool, as_json: bool) -> None:
    """List proposals: this node's pending ones, then every settled one."""
    r = client.unary(_stub(client).ListProposals,
                     governance_pb2.ListProposalsRequest(open_only=open_only))
    emit([proposal_to_dict(p) for p in r.proposals], as_json, _list_text)


@gov.command()
@click.argument("proposal_id", metavar="ID")
@json_option
@with_client
def show(client: MeshClient, proposal_id: str, as_json: bool) -> None:
    """Show a proposal, its tally, and for an open parameter change the shadow
    epoch: the last settled epoch's rewards recomputed under the proposal."""
    r = client.unary(_stub(client).GetProposal,
                     governance_pb2.GetProposalRequest(proposal_id=proposal_id))
    emit({"proposal": proposal_to_dict(r.proposal),
          "shadow": shadow_to_dict(r.shadow) if r.HasField("shadow") else None},
         as_json, _show_text)


@gov.command()
@click.option("-n", "--count", type=click.IntRange(min=1),
              help="Stop after this many lines (default: until interrupted).")
@json_option
@with_client
def watch(client: MeshClient, count: int | None, as_json: bool) -> None:
    """Print every proposal, then each one again when a settlement changes it.

    One line per change (--json: one object per line, the proposal as in 'gov
    ls --json' plus "final_epoch"): opened, each new tally, passed, rejected.
    """
    emit_stream(proposal_stream(client), count, as_json, proposal_change_line)


def proposal_stream(client: MeshClient) -> Iterator[dict[str, Any]]:
    """``WatchProposals`` as the JSON shape ``gov watch`` prints (also ``events``)."""
    stream = client.stream(_stub(client).WatchProposals, governance_pb2.WatchProposalsRequest())
    return (proposal_to_dict(r.proposal) | {"final_epoch": r.final_epoch} for r in stream)


def proposal_change_line(d: dict[str, Any]) -> str:
    return (f"epoch {d['final_epoch']}: {d['id'][:12]} {d['title']!r} {d['status']}; "
            f"tally {_tally_text(d['tally'])}")


@gov.command()
@click.argument("proposal_id", metavar="ID")
@json_option
@with_client
def tally(client: MeshClient, proposal_id: str, as_json: bool) -> None:
    """Show the tally of a proposal: running while open (the outcome if the
    period ended now, from the votes settled so far), final once closed."""
    r = client.unary(_stub(client).GetProposal,
                     governance_pb2.GetProposalRequest(proposal_id=proposal_id))
    d = proposal_to_dict(r.proposal)
    if d["tally"] is None:
        fail(f"proposal {d['id'][:16]} is not settled yet: it has no tally until it opens")
    emit({"id": d["id"], "status": d["status"], **d["tally"]}, as_json,
         lambda t: f"{t['status']}: {_tally_text(d['tally'])}")


@gov.command()
@click.argument("proposal_id", metavar="ID")
@click.argument("option", type=click.Choice(OPTIONS, case_sensitive=False))
@json_option
@with_client
def vote(client: MeshClient, proposal_id: str, option: str, as_json: bool) -> None:
    """Vote OPTION on proposal ID from this node's account.

    A later vote replaces this one until the period ends. Refused when the
    account held no tokens when the proposal opened.
    """
    r = client.unary(_stub(client).Vote,
                     governance_pb2.VoteRequest(proposal_id=proposal_id, option=option))
    emit({"proposal_id": r.proposal_id, "option": option.lower(), "entry": r.entry,
          "epoch": r.epoch}, as_json,
         lambda d: f"voted {d['option']} on {d['proposal_id'][:16]} (entry {d['entry'][:16]}, "
                   f"epoch {d['epoch']}); it counts once settled")


@gov.group()
def propose() -> None:
    """Propose a parameter change, an upgrade, a spend or a dispute."""


def _common(fn: Any) -> Any:
    fn = click.option("--deposit", default="", metavar="BASE_UNITS",
                      help="Deposit to lock (default: the current proposal stake).")(fn)
    fn = click.option("--description", default="", help="Longer text (up to 10,000 bytes).")(fn)
    fn = click.option("--title", required=True, help="A one-line title (up to 200 bytes).")(fn)
    return fn


def _submit(client: MeshClient, as_json: bool, **request: Any) -> None:
    r = client.unary(_stub(client).Propose, governance_pb2.ProposeRequest(**request))
    emit(proposal_to_dict(r.proposal), as_json,
         lambda d: f"proposed {d['id']}\ndeposit {d['deposit']} locked once settled; votes "
                   "open at the next settlement ('meshctl gov show "
                   f"{d['id'][:16]}')")


def _setting(text: str) -> governance_pb2.ParamSetting:
    path, sep, value = text.partition("=")
    if not sep or not path:
        raise click.BadParameter(f"{text!r} is not PATH=VALUE (e.g. governance.quorum_percent=40 "
                                 "or rewards.split=uptime:50,tasks:30,governance:20)")
    try:
        json.loads(value)
    except ValueError:
        if path != "rewards.split":
            raise click.BadParameter(f"the value of {path} is not JSON: {value!r}") from None
        try:
            split = parse_split(value)
        except GenesisError as exc:
            raise click.BadParameter(str(exc)) from None
        value = json.dumps({"uptime": split.uptime, "tasks": split.tasks,
                            "governance": split.governance})
    return governance_pb2.ParamSetting(path=path, json=value)


@propose.command("param")
@click.argument("settings", nargs=-1, required=True, metavar="PATH=VALUE...")
@_common
@json_option
@with_client
def propose_param(client: MeshClient, settings: tuple[str, ...], title: str,
                  description: str, deposit: str, as_json: bool) -> None:
    """Change mutable genesis parameters (VALUE is JSON; rewards.split also
    takes uptime:50,tasks:30,governance:20). A passed change applies from the
    second epoch after the tally, on every node alike.

    \b
    Paths (where the genesis lists them in governance.mutable):
      governance.quorum_percent, governance.threshold_percent,
      governance.veto_percent, governance.voting_period_seconds,
      governance.proposal_stake, rewards.emission_per_epoch, rewards.split,
      penalties.failed_task_bps (what a failed task or storage audit costs)
    """
    try:
        parsed = [_setting(s) for s in settings]
    except click.BadParameter as exc:
        fail(f"invalid PATH=VALUE: {exc.message}", EXIT_INVALID)
    _submit(client, as_json, title=title, description=description, deposit=deposit,
            params=governance_pb2.ParamsAction(settings=parsed))


@propose.command("upgrade")
@click.argument("version")
@click.option("--url", required=True, help="https:// URL of the release artifact.")
@click.option("--sha256", required=True, help="SHA-256 of the artifact (64 hex characters).")
@click.option("--activation-epoch", type=click.IntRange(min=0), required=True,
              help="Epoch from which nodes on an older version warn.")
@_common
@json_option
@with_client
def propose_upgrade(client: MeshClient, version: str, url: str, sha256: str,
                    activation_epoch: int, title: str, description: str, deposit: str,
                    as_json: bool) -> None:
    """Announce protocol upgrade VERSION (PEP 440)."""
    _submit(client, as_json, title=title, description=description, deposit=deposit,
            upgrade=governance_pb2.UpgradeAction(version=version, url=url, sha256=sha256,
                                                 activation_epoch=activation_epoch))


@propose.command("spend")
@click.argument("account")
@click.argument("amount")
@_common
@json_option
@with_client
def propose_spend(client: MeshClient, account: str, amount: str, title: str,
                  description: str, deposit: str, as_json: bool) -> None:
    """Pay AMOUNT base units from the community pool to ACCOUNT (a peer ID)."""
    _submit(client, as_json, title=title, description=description, deposit=deposit,
            spend=governance_pb2.SpendAction(to=account, amount=amount))


@propose.command("dispute")
@click.argument("account")
@click.option("--slash-bps", type=click.IntRange(1, 10_000), required=True,
              help="Share of the account's stake to burn, in basis points (100 = 1 %).")
@click.option("--evidence", "evidence", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of evidence (repeatable, up to 16).")
@_common
@json_option
@with_client
def propose_dispute(client: MeshClient, account: str, slash_bps: int,
                    evidence: tuple[Path, ...], title: str, description: str, deposit: str,
                    as_json: bool) -> None:
    """Slash ACCOUNT (a peer ID) for misbehaviour the ledger cannot prove by itself."""
    pieces = [path.read_bytes() for path in evidence]
    if sum(len(p) for p in pieces) > EVIDENCE_MAX_BYTES:
        fail(f"evidence files total over {EVIDENCE_MAX_BYTES} bytes: a proposal is one "
             "ledger entry of at most 64 KiB; publish large evidence and give its hash",
             EXIT_INVALID)
    _submit(client, as_json, title=title, description=description, deposit=deposit,
            dispute=governance_pb2.DisputeAction(account=account, slash_bps=slash_bps,
                                                 evidence=pieces))
