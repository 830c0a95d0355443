"""``meshctl rewards explain``: the reward record of a settlement, for people and scripts.

docs/ledger.md §6.5. Both renderings read only the record ``Settle`` built
while computing the amounts, so an explanation cannot drift from the amounts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshcore.ledger import accounts
from meshcore.ledger.record import Evidence, Ignored, Payment, Refund, RewardLine, Slash
from meshcore.ledger.state import Settled

_Show = Callable[[bytes], str]
_RULES = {
    "uptime.lower_median": "lower median of",
    "uptime.too_few": "too few eligible attesters in",
    "uptime.subject_jailed": "subject jailed; attested by",
    "tasks.units": "sum of receipts",
    "tasks.no_counting_receipt": "no counting receipt",
    "gov.settlement_signature": "precommit",
    "gov.jailed": "validator jailed",
}


def explain_json(settled: Settled, account: bytes | None = None) -> dict[str, Any]:
    """The record of ``settled`` as JSON-able data (hashes in hex, accounts as peer IDs).

    Args:
        settled: ``Settled(E)``; its record is that of epoch E.
        account: only this account's lines and slashes (pools stay whole).
    """
    record = settled.record
    return {
        "epoch": settled.epoch,
        "decided_round": settled.decided_round,
        "decided_value": settled.decided_value.hex(),
        "emission": record.emission,
        "minted": record.minted,
        "not_minted": record.emission - record.minted,
        "pools": [{"pool": p.pool, "size": p.size, "points": p.points, "minted": p.minted,
                   "not_minted": p.not_minted} for p in record.pools],
        "lines": [_line_json(line) for line in record.lines
                  if account is None or line.account == account],
        "slashes": [_slash_json(s) for s in record.slashes
                    if account is None or s.offender == account],
        "payments": [_payment_json(p) for p in record.payments
                     if account is None or account in (p.requester, p.provider)],
        "refunds": [_refund_json(r) for r in record.refunds
                    if account is None or r.requester == account],
    }


def explain_lines(settled: Settled, account: bytes | None = None, *,
                  short: bool = True) -> list[str]:
    """The record of ``settled`` as text, one amount and its reasons per block.

    Args:
        settled: ``Settled(E)``.
        account: only this account's lines and slashes.
        short: abbreviate hashes and peer IDs (as the CLI prints them).
    """
    record = settled.record

    def peer(key: bytes) -> str:
        text = accounts.peer_id_of(key)
        return text[:9] + "…" if short else text

    def digest(value: bytes) -> str:
        return value.hex()[:8] + "…" if short else value.hex()

    sizes = {p.pool: p for p in record.pools}
    out = [f"epoch {settled.epoch}: value {digest(settled.decided_value)} "
           f"(round {settled.decided_round})"]
    if record.pools:
        divided = sum(p.size for p in record.pools)
        out.append(f"emission {record.emission} = "
                   + " + ".join(f"{p.pool} {p.size}" for p in record.pools)
                   + (f" + {record.emission - divided} (division remainder)"
                      if record.emission != divided else ""))
    for line in record.lines:
        if account is not None and line.account != account:
            continue
        pool = sizes[line.pool]
        described = ", ".join(_evidence_text(e, peer, digest) for e in line.evidence)
        out.append(f"{line.pool:<7} {peer(line.account)}  points {line.points} "
                   f"({line.rule}: {_RULES.get(line.rule, line.rule)} [{described}])")
        if pool.points:
            out.append(f"        amount {line.amount} = {pool.size} · {line.points} "
                       f"// {pool.points}")
        else:
            out.append(f"        amount {line.amount} (no points in the {line.pool} pool)")
        out.extend(f"        ignored: {_ignored_text(i, peer, digest)}" for i in line.ignored)
    for slash in record.slashes:
        if account is None or slash.offender == account:
            out.append(_slash_text(slash, peer, digest))
    for payment in record.payments:
        if account is None or account in (payment.requester, payment.provider):
            out.append(_payment_text(payment, peer, digest))
    for refunded in record.refunds:
        if account is None or refunded.requester == account:
            out.append(f"refund  {peer(refunded.requester)}  {refunded.amount} left of the "
                       f"lock of task {digest(refunded.task)}, returned at its end")
    if record.pools:
        out.append("not minted: " + ", ".join(
            f"{p.pool} {p.not_minted}" + (" (no points)" if not p.points else "")
            for p in record.pools))
    return out


def _evidence_text(e: Evidence, peer: _Show, digest: _Show) -> str:
    return f"{e.value} ({peer(e.author)}, entry {digest(e.entry)}, {e.detail})"


def _ignored_text(i: Ignored, peer: _Show, digest: _Show) -> str:
    return f"{peer(i.author)} entry {digest(i.entry)} ({i.rule}: {i.reason})"


def _slash_text(slash: Slash, peer: _Show, digest: _Show) -> str:
    offences = "; ".join(f"{o.kind}: {o.detail} (entries "
                         f"{', '.join(digest(h) for h in o.evidence)})" for o in slash.offences)
    return (f"penalty {peer(slash.offender)}  {offences}: slashed {slash.slashed} of "
            f"{slash.stake}" + (", jailed" if slash.jailed else ""))


def _payment_text(p: Payment, peer: _Show, digest: _Show) -> str:
    why = f" ({p.reason})" if p.reason else ""
    burned = f"; base fee {p.burned} burned, {p.paid - p.burned} to the provider" \
        if p.burned else ""
    return (f"market  {peer(p.provider)}  paid {p.paid} of its price {p.price}{why} by "
            f"{peer(p.requester)} from the lock of task {digest(p.task)} "
            f"(receipt {digest(p.receipt)}, units {p.units}{burned})")


def _payment_json(p: Payment) -> dict[str, Any]:
    return {"receipt": p.receipt.hex(), "requester": accounts.peer_id_of(p.requester),
            "task": p.task.hex(), "provider": accounts.peer_id_of(p.provider),
            "price": p.price, "paid": p.paid, "reason": p.reason, "burned": p.burned,
            "units": p.units}


def _refund_json(r: Refund) -> dict[str, Any]:
    return {"requester": accounts.peer_id_of(r.requester), "task": r.task.hex(),
            "amount": r.amount}


def _line_json(line: RewardLine) -> dict[str, Any]:
    return {
        "pool": line.pool, "account": accounts.peer_id_of(line.account),
        "points": line.points, "amount": line.amount, "rule": line.rule,
        "evidence": [{"entry": e.entry.hex(), "author": accounts.peer_id_of(e.author),
                      "value": e.value, "detail": e.detail} for e in line.evidence],
        "ignored": [{"entry": i.entry.hex(), "author": accounts.peer_id_of(i.author),
                     "rule": i.rule, "reason": i.reason} for i in line.ignored],
    }


def _slash_json(slash: Slash) -> dict[str, Any]:
    return {
        "offender": accounts.peer_id_of(slash.offender), "stake": slash.stake,
        "slashed": slash.slashed, "jailed": slash.jailed,
        "offences": [{"key": o.key.hex(), "kind": o.kind, "share": o.share,
                      "detail": o.detail, "evidence": [h.hex() for h in o.evidence]}
                     for o in slash.offences],
    }
