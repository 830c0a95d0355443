"""Step 4 of a settlement: the rewards of epoch E (docs/ledger.md §6).

Three pools (uptime, tasks, governance) are cut from ``Params(E)``'s emission
and each is shared by points: ``pool · points // Σpoints``. What no evidence
justifies (an empty pool, rounding remainders) is not minted. Every amount is
computed together with its :class:`~meshcore.ledger.record.RewardLine`, so the
explanation is the computation.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshcore.genesis import RewardPolicy
from meshcore.ledger.constants import MAX_UNITS_PER_RECEIPT, MIN_ATTESTERS, REQUESTER_UNITS_CAP
from meshcore.ledger.eligibility import ineligibility
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash, parse_claim
from meshcore.ledger.penalties import FAILED_TASK
from meshcore.ledger.record import (
    POOLS,
    Evidence,
    Ignored,
    PoolTotal,
    Record,
    RewardLine,
    Slash,
    pool_byte,
)
from meshcore.ledger.state import Settled


@dataclass
class _Draft:
    """A line being built: its points and the evidence listed for it."""

    points: int = 0
    rule: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


def compute_rewards(state: Settled, prev: Settled, epoch: int, evidence: Iterable[Verified],
                    canonical: Iterable[Verified], slashes: tuple[Slash, ...] = ()) -> Record:
    """The reward record of ``epoch``; amounts are not credited here.

    Args:
        state: the settlement in progress, after penalties (jail flags, applied
            offences).
        prev: ``Settled(epoch - 1)``: ``Params(epoch)``, ``V(epoch)``, bonded
            stake for eligibility, the decided (round, value) of ``epoch - 1``.
        epoch: the epoch whose rewards these are.
        evidence: ``evidence(E)``: the canonical entries of the cut with
            ``body.epoch == epoch``.
        canonical: every entry of the cut found canonical in this settlement
            (for the precommits of ``epoch - 1``).
        slashes: step 3's outcome, carried into the record.
    """
    items = sorted(evidence, key=lambda e: (e.author, e.seq))
    drafts = {
        "uptime": _uptime(state, prev, [e for e in items if e.kind == "attestation"]),
        "tasks": _tasks(state, prev, [e for e in items if e.kind == "task_receipt"]),
        "governance": _governance(state, prev, epoch, canonical),
    }
    policy = prev.params.rewards
    emission = policy.emission_per_epoch
    sizes = pool_sizes(policy)
    pools: list[PoolTotal] = []
    lines: list[RewardLine] = []
    for pool in POOLS:
        total = sum(d.points for d in drafts[pool].values())
        minted = 0
        for account, draft in sorted(drafts[pool].items()):
            amount = share(sizes[pool], draft.points, total)
            minted += amount
            lines.append(RewardLine(pool, account, draft.points, amount, draft.rule,
                                    tuple(draft.evidence), tuple(draft.ignored)))
        pools.append(PoolTotal(pool, sizes[pool], total, minted))
    lines.sort(key=lambda line: (pool_byte(line.pool), line.account))
    return Record(epoch=epoch, emission=emission, pools=tuple(pools), lines=tuple(lines),
                  slashes=slashes)


def pool_sizes(policy: RewardPolicy) -> dict[str, int]:
    """Each pool's share of the epoch's emission, rounded down."""
    emission = policy.emission_per_epoch
    return {pool: emission * getattr(policy.split, pool) // 100 for pool in POOLS}


def share(size: int, points: int, total: int) -> int:
    """An account's amount of a pool: pro rata to its points, rounded down."""
    return size * points // total if total else 0


def reprice(record: Record, policy: RewardPolicy) -> Record:
    """``record``'s points shared under another reward policy: the shadow epoch
    of a parameter change (docs/governance.md §6). Points do not depend on the
    split or the emission, so the result is what ``compute_rewards`` would
    have minted under ``policy``."""
    sizes = pool_sizes(policy)
    totals = {pool.pool: pool.points for pool in record.pools}
    lines = tuple(dataclasses.replace(line, amount=share(sizes[line.pool], line.points,
                                                         totals.get(line.pool, 0)))
                  for line in record.lines)
    pools = tuple(PoolTotal(pool.pool, sizes[pool.pool], pool.points,
                            sum(line.amount for line in lines if line.pool == pool.pool))
                  for pool in record.pools)
    return Record(record.epoch, policy.emission_per_epoch, pools, lines, record.slashes)


def _uptime(state: Settled, prev: Settled, attestations: list[Verified]) -> dict[bytes, _Draft]:
    drafts: dict[bytes, _Draft] = defaultdict(_Draft)
    seen: set[bytes] = set()
    for item in attestations:  # by (attester, seq): the first per attester counts
        refusal: tuple[str, str] | None = None
        if item.author in seen:
            refusal = ("uptime.not_first", "a lower-seq attestation of this attester counts")
        else:
            seen.add(item.author)
            reason = ineligibility(item.author, prev, state)
            if reason is not None:
                refusal = ("uptime.attester_ineligible", reason)
        for observation in item.body.attestation.observations:
            draft = drafts[observation.subject]
            if refusal is not None:
                draft.ignored.append(Ignored(item.hash, item.author, *refusal))
                continue
            score = observation.answered * 1000 // observation.probes
            draft.evidence.append(Evidence(item.hash, item.author, score,
                                           f"{observation.answered}/{observation.probes}"))
    for subject, draft in drafts.items():
        scores = sorted(e.value for e in draft.evidence)
        if state.account(subject).jailed:
            draft.rule = "uptime.subject_jailed"
        elif len(scores) < MIN_ATTESTERS:
            draft.rule = "uptime.too_few"
        else:
            draft.rule = "uptime.lower_median"
            draft.points = scores[(len(scores) - 1) // 2]
    return drafts


def _tasks(state: Settled, prev: Settled, receipts: list[Verified]) -> dict[bytes, _Draft]:
    drafts: dict[bytes, _Draft] = defaultdict(_Draft)
    counted: dict[bytes, list[tuple[Verified, bytes, int, int]]] = defaultdict(list)
    first: set[tuple[bytes, bytes]] = set()
    for item in receipts:  # by (requester, seq): the first per (requester, task_id) counts
        claim = parse_claim(item.body.task_receipt.claim)
        assert claim is not None, f"receipt {item.hash.hex()} was stored with a bad claim"
        draft = drafts[claim.provider]

        def ignore(rule: str, reason: str, item: Verified = item, draft: _Draft = draft) -> None:
            draft.ignored.append(Ignored(item.hash, item.author, rule, reason))

        reason = ineligibility(item.author, prev, state)
        if reason is not None:
            ignore("tasks.requester_ineligible", reason)
        elif (item.author, claim.task_id) in first:
            ignore("tasks.duplicate", f"task {claim.task_id.hex()} already has a receipt")
        elif FAILED_TASK + claim_hash(item.body.task_receipt.claim) in state.offences:
            first.add((item.author, claim.task_id))
            ignore("tasks.failed_claim", "failure verdicts reached quorum on this claim")
        else:
            first.add((item.author, claim.task_id))
            counted[item.author].append((item, claim.provider, claim.units,
                                         min(claim.units, MAX_UNITS_PER_RECEIPT)))
    for requester, receipts_of in counted.items():
        total = sum(c for *_, c in receipts_of)
        for item, provider, units, c in receipts_of:
            draft = drafts[provider]
            points, detail = c, f"units {units}" + (f", counted {c}" if c != units else "")
            if total > REQUESTER_UNITS_CAP:  # scaled, so the order of receipts does not matter
                points = c * REQUESTER_UNITS_CAP // total
                detail += (f", scaled to {points} (requester total {total} > "
                           f"{REQUESTER_UNITS_CAP})")
            if state.account(provider).jailed:
                draft.ignored.append(Ignored(item.hash, requester, "tasks.provider_jailed",
                                             "the provider is jailed"))
                continue
            draft.evidence.append(Evidence(item.hash, requester, points, detail))
    for draft in drafts.values():
        draft.points = sum(e.value for e in draft.evidence)
        draft.rule = "tasks.units" if draft.evidence else "tasks.no_counting_receipt"
    return drafts


def _governance(state: Settled, prev: Settled, epoch: int,
                canonical: Iterable[Verified]) -> dict[bytes, _Draft]:
    """One point per validator of V(E-1) whose precommit for E-1's decision is canonical.

    Validity already requires a precommit's author to be in V(E-1), which
    ``prev`` (= Settled(E-1)) no longer holds.
    """
    drafts: dict[bytes, _Draft] = defaultdict(_Draft)
    if epoch == 0 or not prev.decided_value:
        return drafts
    for item in sorted(canonical, key=lambda e: (e.author, e.seq)):
        vote = item.body.precommit
        if (item.kind != "precommit" or vote.epoch != epoch - 1
                or vote.round != prev.decided_round or vote.value != prev.decided_value):
            continue
        draft = drafts[item.author]
        if draft.evidence or draft.ignored:
            continue  # one point per validator, whatever it signed twice
        if state.account(item.author).jailed:
            draft.rule = "gov.jailed"
            draft.ignored.append(Ignored(item.hash, item.author, "gov.jailed",
                                         "the validator is jailed"))
            continue
        draft.rule = "gov.settlement_signature"
        draft.points = 1
        draft.evidence.append(Evidence(item.hash, item.author, 1,
                                       f"precommit of epoch {epoch - 1} round {vote.round}"))
    return drafts
