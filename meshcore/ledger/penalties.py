"""Step 3 of a settlement: offences, slashing and jail (docs/ledger.md §7).

Three offences exist in v1. Equivocation (two signed bodies for one seq) is
proved by one canonical penalty entry and costs SLASH_EQUIVOCATION_BPS of the
stake at risk plus permanent jail. A failed task is proved by canonical
failure verdicts from VERIFY_QUORUM distinct eligible verifiers, gathered over
any number of settlements, and costs the provider ``penalties.failed_task_bps``
of Params(E) (genesis, changed by governance; 1000 by default). A
passed dispute proposal (docs/governance.md §5) costs its account the share
the proposal names. Each offence key is applied once ever; slashed tokens are
burned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from meshcore.ledger.constants import (
    BPS,
    SLASH_EQUIVOCATION_BPS,
    VERIFY_QUORUM,
)
from meshcore.ledger.eligibility import ineligibility
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash, equivocation_of, parse_claim
from meshcore.ledger.record import Offence, Slash
from meshcore.ledger.state import Account, PendingVerdicts, Settled

EQUIVOCATION, FAILED_TASK, DISPUTE = b"\x01", b"\x02", b"\x03"  # offence key prefixes


@dataclass(frozen=True)
class PassedDispute:
    """A dispute proposal that passed in this settlement."""

    proposal: bytes  # its entry hash
    account: bytes
    bps: int


@dataclass(frozen=True)
class _Found:
    key: bytes
    kind: str
    offender: bytes
    evidence: tuple[bytes, ...]
    detail: str
    bps: int


def apply_penalties(state: Settled, prev: Settled, epoch: int,
                    newly_canonical: Iterable[Verified],
                    disputes: Iterable[PassedDispute] = ()) -> tuple[Slash, ...]:
    """Apply the offences proved by this settlement to ``state``, in place.

    Args:
        state: the settlement in progress (after own effects); its bonded
            stake, lots, jail flags, applied offences, verdict tally and
            ``slashed_total`` change.
        prev: ``Settled(epoch - 1)``, for verifier eligibility.
        epoch: the epoch being settled: lots releasing after it are at risk.
        newly_canonical: the entries that became canonical in this settlement
            (entries canonical before were counted when they became so).
        disputes: the dispute proposals that passed in this settlement.

    Returns:
        One :class:`Slash` per offender, ascending offender.
    """
    found: dict[bytes, _Found] = {}
    for item in sorted(newly_canonical, key=lambda e: e.hash):
        if item.kind == "penalty":
            offender, seq = equivocation_of(item.body.penalty)
            key = EQUIVOCATION + offender
            if key not in state.offences and key not in found:  # first by entry hash
                found[key] = _Found(key, "equivocation", offender, (item.hash,),
                                    f"two bodies for seq {seq}", SLASH_EQUIVOCATION_BPS)
        elif item.kind == "task_verdict":
            _tally(state, item)
    for claim, pending in sorted(state.verdicts.items()):
        voters = {(verifier, entry) for verifier, entry in pending.votes
                  if verifier != pending.provider
                  and ineligibility(verifier, prev, prev) is None}
        if len({verifier for verifier, _ in voters}) >= VERIFY_QUORUM:
            key = FAILED_TASK + claim
            found[key] = _Found(key, "failed_task", pending.provider,
                                tuple(sorted(entry for _, entry in voters)),
                                f"claim {claim.hex()} failed by "
                                f"{len({v for v, _ in voters})} verifiers",
                                prev.params.penalties.failed_task_bps)
    for dispute in disputes:
        key = DISPUTE + dispute.proposal
        if key not in state.offences:
            found[key] = _Found(key, "dispute", dispute.account, (dispute.proposal,),
                                f"dispute {dispute.proposal.hex()[:16]} passed",
                                dispute.bps)
    by_offender: dict[bytes, list[_Found]] = defaultdict(list)
    for key in sorted(found):
        by_offender[found[key].offender].append(found[key])
    slashes = [_slash(state, offender, offences, epoch)
               for offender, offences in sorted(by_offender.items())]
    for key in found:
        state.offences |= {key}
        if key.startswith(FAILED_TASK):
            state.verdicts.pop(key[1:], None)
    return tuple(slashes)


def _tally(state: Settled, item: Verified) -> None:
    verdict = item.body.task_verdict
    claim = parse_claim(verdict.claim)
    assert claim is not None, f"verdict {item.hash.hex()} was stored with a bad claim"
    digest = claim_hash(verdict.claim)
    if FAILED_TASK + digest in state.offences:
        return  # already slashed: more verdicts change nothing
    pending = state.verdicts.get(digest) or PendingVerdicts(claim.provider, frozenset())
    state.verdicts[digest] = PendingVerdicts(pending.provider,
                                             pending.votes | {(item.author, item.hash)})


def _slash(state: Settled, offender: bytes, offences: list[_Found], epoch: int) -> Slash:
    account = state.accounts.setdefault(offender, Account())
    # S0: stake at risk before any slash of this settlement; matured lots are immune.
    at_risk = account.bonded + sum(a for release, a in account.lots.items() if release > epoch)
    shares = [at_risk * o.bps // BPS for o in offences]
    slashed = min(at_risk, sum(shares))
    taken = min(slashed, account.bonded)
    account.bonded -= taken
    rest = slashed - taken
    for release in sorted((r for r in account.lots if r > epoch), reverse=True):
        if not rest:
            break
        cut = min(rest, account.lots[release])
        account.lots[release] -= cut
        rest -= cut
        if not account.lots[release]:
            del account.lots[release]
    assert rest == 0
    state.slashed_total += slashed
    jail = any(o.kind == "equivocation" for o in offences)
    account.jailed = account.jailed or jail
    return Slash(offender=offender, stake=at_risk, slashed=slashed, jailed=jail,
                 offences=tuple(Offence(o.key, o.kind, o.evidence, share, o.detail)
                                for o, share in zip(offences, shares, strict=True)))
