"""Validity of an entry against its causal past (docs/ledger.md §3.2 rules 4-6).

Each stored entry keeps :class:`Derived` values computed in O(1) from its prev
and deps; an entry is judged with them and with the settled state its past
has reached (``Settled(fin_p)``). Nothing here depends on arrival order: the
causal past is fixed by the hashes.

Every kind of ledger-v1 is judged here: the fund kinds by this module, the
evidence kinds by meshcore/ledger/evidence_rules.py, the governance kinds by
meshcore/governance/rules.py and the consensus kinds by
meshcore/ledger/consensus_rules.py (which looks up the past through a
:class:`ConsensusPast`). A kind this version does not know is refused as
:class:`Unsupported`: a node never stores what it cannot judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshcore.governance.rules import proposal_problem, vote_problem
from meshcore.ledger.consensus_rules import ConsensusPast, consensus_problem
from meshcore.ledger.constants import ESCROW_MAX_EPOCHS
from meshcore.ledger.entry import HASH_BYTES, KEY_BYTES, EntryError, Verified
from meshcore.ledger.evidence_rules import EVIDENCE_KINDS, evidence_problem
from meshcore.ledger.state import Settled

MAX_EPOCH_AHEAD = 3
MAX_ENTRIES_PER_EPOCH = 10_000
MEMO_MAX_BYTES = 256
CONSENSUS_KINDS = frozenset({"close", "proposal", "prevote", "precommit", "certificate"})
FUND_KINDS = frozenset({"transfer", "stake", "unstake", "withdraw", "anchor", "lock"})
DEBIT_KINDS = frozenset({"transfer", "stake", "gov_proposal", "lock"})  # liquid they spend
GOVERNANCE_KINDS = frozenset({"gov_proposal", "gov_vote"})
SUPPORTED_KINDS = FUND_KINDS | EVIDENCE_KINDS | CONSENSUS_KINDS | GOVERNANCE_KINDS
NO_ROUND = (-1, 0)  # (epoch, round) of "no such vote yet"


@dataclass(frozen=True)
class Derived:
    """Running values of an author's chain, up to and including one entry."""

    seq: int
    epoch: int
    fin: int  # highest certified epoch in the causal past (-1: none)
    epoch_count: int  # the author's entries with this epoch, this one included
    debit: int  # transfer, stake and lock amounts, proposal deposits
    withdrawn: int
    staked: int
    unstaked: int
    # (epoch, round) of the author's latest proposal, prevote and precommit
    # on this chain (NO_ROUND: none): rounds must increase along a chain.
    last_proposal: tuple[int, int] = NO_ROUND
    last_prevote: tuple[int, int] = NO_ROUND
    last_precommit: tuple[int, int] = NO_ROUND

    def last_round(self, kind: str) -> tuple[int, int] | None:
        """(epoch, round) of the latest ``kind`` vote up to here, None if none."""
        found: tuple[int, int] = getattr(self, f"last_{kind}")
        return None if found == NO_ROUND else found


class Unsupported(EntryError):
    """An entry of a kind this version cannot judge: not stored, but not proof
    of misbehaviour either (a newer node may have written it)."""


ZERO = Derived(seq=0, epoch=0, fin=-1, epoch_count=0, debit=0, withdrawn=0, staked=0,
               unstaked=0)


class Judge(Protocol):
    """Judges an entry whose prev and deps are stored, given their derived values."""

    def __call__(self, item: Verified, prev: Derived | None, deps: list[Derived]) -> Derived: ...


class Surroundings(Protocol):
    """What judging needs besides an entry's prev and deps: the store answers."""

    def settled(self, epoch: int) -> Settled:
        """``Settled(epoch)``; raises EntryError subclass if not known yet."""
        ...

    def canon_base(self, item: Verified, settled: Settled) -> Derived | None:
        """Derived values of the author's canonical head in ``settled`` (None:
        none yet); raises EntryError if that head is not on ``item``'s prev-chain."""
        ...

    def consensus_past(self, item: Verified, prev: Derived | None) -> ConsensusPast: ...


def fin_p(prev: Derived | None, deps: list[Derived]) -> int:
    """The highest certified epoch in an entry's causal past (-1: none)."""
    return max([d.fin for d in deps] + ([prev.fin] if prev else []), default=-1)


def judge_with(states: Callable[[int], Settled], plugins: frozenset[str] = frozenset(),
               ) -> Judge:
    """A :class:`Judge` of the fund and evidence kinds, before any settlement
    matters (``states`` gives ``Settled(fin_p)``); consensus kinds are refused."""
    def judge_entry(item: Verified, prev: Derived | None, deps: list[Derived]) -> Derived:
        return judge(item, prev, deps, states(fin_p(prev, deps)), plugins=plugins)
    return judge_entry


def judge_in(surroundings: Surroundings, plugins: frozenset[str] = frozenset()) -> Judge:
    """A :class:`Judge` of every kind, with the store's :class:`Surroundings`."""
    def judge_entry(item: Verified, prev: Derived | None, deps: list[Derived]) -> Derived:
        settled = surroundings.settled(fin_p(prev, deps))
        return judge(item, prev, deps, settled, surroundings.canon_base(item, settled),
                     past=surroundings.consensus_past(item, prev), plugins=plugins)
    return judge_entry


def judge(item: Verified, prev: Derived | None, deps: list[Derived], settled: Settled,
          canon_base: Derived | None = None, *, past: ConsensusPast | None = None,
          plugins: frozenset[str] = frozenset()) -> Derived:
    """Check ``item`` and return its derived values.

    Args:
        prev: the derived values of the author's previous entry (None for seq 1).
        deps: those of each dep.
        settled: ``Settled(fin_p)``, where fin_p is the highest ``fin`` of prev
            and deps.
        canon_base: the derived values of the author's canonical head in
            ``settled`` (None when the author has no canonical entry yet); the
            caller has checked that it is on the item's prev-chain.
        past: lookups for the consensus kinds (without it they are refused).
        plugins: the genesis plugin names (task receipts must name one).

    Raises:
        EntryError: naming the rule the entry breaks.
    """
    body = item.body
    kind = item.kind

    def fail(message: str) -> EntryError:
        return EntryError(message, item.hash)

    fin = fin_p(prev, deps)
    if settled.epoch != fin:
        raise ValueError(f"judge() needs Settled({fin}), got Settled({settled.epoch})")
    if prev is not None and body.epoch < prev.epoch:
        raise fail(f"epoch {body.epoch} is before its prev's epoch {prev.epoch}")
    if not fin < body.epoch <= fin + MAX_EPOCH_AHEAD:
        raise fail(f"epoch {body.epoch} is outside {fin + 1}..{fin + MAX_EPOCH_AHEAD} "
                   f"(its past is settled up to epoch {fin})")
    same_epoch = prev is not None and prev.epoch == body.epoch
    count = (prev.epoch_count if same_epoch and prev else 0) + (kind not in CONSENSUS_KINDS)
    if count > MAX_ENTRIES_PER_EPOCH:
        raise fail(f"more than {MAX_ENTRIES_PER_EPOCH} entries of one author in epoch "
                   f"{body.epoch}")
    if kind not in SUPPORTED_KINDS:
        raise Unsupported(f"entries of kind {kind!r} are not supported by this version yet",
                          item.hash)

    base = prev or ZERO
    amount = getattr(body, kind).amount if kind in FUND_KINDS - {"anchor"} else 0
    if kind == "gov_proposal":
        amount = body.gov_proposal.deposit
    rounds = {f"last_{k}": base.last_round(k) or NO_ROUND
              for k in ("proposal", "prevote", "precommit")}
    if kind in ("proposal", "prevote", "precommit"):
        vote = getattr(body, kind)
        rounds[f"last_{kind}"] = (vote.epoch, vote.round)
    if kind == "certificate":
        fin = max(fin, body.certificate.epoch)
    derived = Derived(
        seq=item.seq, epoch=body.epoch, fin=fin, epoch_count=count,
        debit=base.debit + (amount if kind in DEBIT_KINDS else 0),
        withdrawn=base.withdrawn + (amount if kind == "withdraw" else 0),
        staked=base.staked + (amount if kind == "stake" else 0),
        unstaked=base.unstaked + (amount if kind == "unstake" else 0), **rounds)
    if kind in FUND_KINDS or kind == "gov_proposal":
        problem = _kind_problem(item, derived, settled, canon_base or ZERO)
    elif kind == "gov_vote":
        problem = vote_problem(item, settled)
    elif kind in EVIDENCE_KINDS:
        problem = evidence_problem(item, body.network_id, plugins)
    else:
        if past is None:
            raise Unsupported(f"{kind} entries are judged only with the store's past",
                              item.hash)
        problem = consensus_problem(item, fin_p(prev, deps), past)
    if problem is not None:
        raise fail(problem)
    return derived


def _kind_problem(item: Verified, derived: Derived, settled: Settled,
                  canon: Derived) -> str | None:
    """What is wrong with the entry's own fields and funds, if anything."""
    body, kind, author = item.body, item.kind, item.author
    account = settled.account(author)
    if kind == "anchor":
        return None if body.deps else "an anchor must name deps"
    if kind == "gov_proposal":
        problem = proposal_problem(item, settled)
        if problem is not None:
            return problem
        deposit = body.gov_proposal.deposit
        available = account.liquid + derived.withdrawn - canon.withdrawn - (
            derived.debit - canon.debit)
        if available < 0:
            return (f"proposal deposit of {deposit} exceeds the author's available balance "
                    f"({available + deposit})")
        return None
    amount = getattr(body, kind).amount
    if amount < 1:
        return f"{kind} amount must be at least 1"
    # Sums over the author's entries not yet canonical (docs/ledger.md: U).
    debit = derived.debit - canon.debit
    withdrawn = derived.withdrawn - canon.withdrawn
    if kind == "transfer":
        transfer = body.transfer
        if len(transfer.to) != KEY_BYTES:
            return "transfer recipient is not a 32-byte key"
        if transfer.to == author:
            return "a transfer to oneself"
        if len(transfer.memo.encode()) > MEMO_MAX_BYTES:
            return f"memo over {MEMO_MAX_BYTES} bytes"
    if kind == "lock":
        lock = body.lock
        if len(lock.task) != HASH_BYTES:
            return "a lock's task is not a 32-byte task ID"
        if not body.epoch < lock.until <= body.epoch + ESCROW_MAX_EPOCHS:
            return (f"a lock of epoch {body.epoch} lasts until epoch {body.epoch + 1} to "
                    f"{body.epoch + ESCROW_MAX_EPOCHS}, not {lock.until}")
    if kind in ("transfer", "stake", "lock"):
        available = account.liquid + withdrawn - debit
        if available < 0:
            return (f"{kind} of {amount} exceeds the author's available balance "
                    f"({available + amount})")
    elif kind == "unstake":
        if derived.unstaked - canon.unstaked > account.bonded + derived.staked - canon.staked:
            return f"unstake of {amount} exceeds the author's bonded stake"
    elif kind == "withdraw" and withdrawn > settled.matured(author, settled.epoch):
        return f"withdraw of {amount} exceeds the author's matured unbonded stake"
    return None
