"""Validity of the consensus kinds against the causal past (docs/ledger.md §3.2).

The table rows close, proposal, prevote, precommit and certificate. Each rule
is answered with a handful of lookups of :class:`ConsensusPast`, every one an
index query of the store: no search of the causal past. That is why a vote
must *name* the proposal it votes for (see :func:`consensus_problem`).

e **names** x when x is in e's deps, or x is an entry of e's own author on
e's prev-chain (own entries cannot be deps).
"""

from __future__ import annotations

from typing import Protocol

from meshcore.ledger.consensus import Validators, is_quorum, leader
from meshcore.ledger.entry import Verified

VOTE_KINDS = ("proposal", "prevote", "precommit")  # kinds with (epoch, round)


class ConsensusPast(Protocol):
    """The lookups the consensus rules make, each one index query of the store."""

    def get(self, entry_hash: bytes) -> Verified | None:
        """A stored entry."""
        ...

    def own_entry(self, item: Verified, kind: str, epoch: int, round_: int) -> Verified | None:
        """The entry of ``item``'s author of ``kind`` (one of :data:`VOTE_KINDS`)
        for (epoch, round) on ``item``'s prev-chain, ``item`` excluded.

        At most one exists: rounds increase along a chain. The store looks up
        (author, kind, epoch, round) and keeps the hit on the prev-chain.
        """
        ...

    def last_round(self, item: Verified, kind: str) -> tuple[int, int] | None:
        """(epoch, round) of the latest ``kind`` entry on ``item``'s prev-chain,
        ``item`` excluded (a derived value of ``item.prev``); None if there is none."""
        ...

    def validators(self, epoch: int) -> Validators:
        """``V(epoch)``; asked only for an epoch at most ``fin_p + 1``, fixed by
        ``Settled(epoch - 2)``."""
        ...

    def state_root_of(self, epoch: int, value: bytes) -> bytes:
        """``root(Settle(epoch, value))`` (docs/ledger.md §4.2-4.3); asked only
        when ``value`` is an original proposal for ``epoch`` and ``fin_p = epoch - 1``.

        The root also encodes the decided round: an implementation bound to
        one entry takes it from that precommit's round.
        """
        ...


def consensus_problem(item: Verified, fin_p: int, past: ConsensusPast) -> str | None:
    """What is wrong with a consensus entry, if anything (the kind's row of §3.2).

    Rules 1-4 of §3.2 have passed and ``item``'s causal past is stored.

    A prevote or precommit for a value must name it (docs/ledger.md says "in
    e's past"; naming it keeps the check an index lookup, and an honest
    validator names the proposal it votes for anyway). A re-proposal's origin
    is then in its past through any prevote of its POL.

    Args:
        fin_p: the highest certified epoch of ``item``'s prev and deps (-1: none).

    Raises:
        ValueError: ``item`` is not of a consensus kind.
    """
    kind = item.kind
    if kind == "close":
        close = item.body.close
        if close.epoch >= item.body.epoch:
            return f"a close of epoch {close.epoch} must be written in a later epoch"
        return None
    if kind == "proposal":
        return _proposal_problem(item, fin_p, past)
    if kind in ("prevote", "precommit"):
        return _vote_problem(item, fin_p, past)
    if kind == "certificate":
        return _certificate_problem(item, fin_p, past)
    raise ValueError(f"{kind!r} is not a consensus kind")


def _proposal_problem(item: Verified, fin_p: int, past: ConsensusPast) -> str | None:
    proposal = item.body.proposal
    epoch, round_, origin, valid_round = (proposal.epoch, proposal.round, proposal.origin,
                                          proposal.valid_round)
    problem = _round_problem(item, "proposal", epoch, round_, fin_p, past)
    if problem:
        return problem
    validators = past.validators(epoch)
    if item.author != leader(epoch, round_, validators):
        return f"the author does not lead round {round_} of epoch {epoch}"
    if not origin:
        return None if valid_round == 0 else "an original proposal must have valid_round 0"
    if not 1 <= valid_round < round_:
        return f"a re-proposal's valid_round must be in 1..{round_ - 1}, not {valid_round}"
    if not _is_original(past.get(origin), epoch):
        return f"origin is not an original proposal for epoch {epoch}"
    if not is_quorum(_named_weight(item, past, "prevote", epoch, valid_round, origin,
                                   validators), _total(validators)):
        return (f"does not name prevotes for origin in round {valid_round} from a quorum "
                f"(its proof of lock)")
    return None


def _vote_problem(item: Verified, fin_p: int, past: ConsensusPast) -> str | None:
    kind = item.kind
    vote = item.body.prevote if kind == "prevote" else item.body.precommit
    epoch, round_, value = vote.epoch, vote.round, vote.value
    problem = _round_problem(item, kind, epoch, round_, fin_p, past)
    if problem:
        return problem
    if item.author not in dict(past.validators(epoch)):
        return f"the author is not a validator of epoch {epoch}"
    if value:
        proposal = past.get(value)
        if not _is_original(proposal, epoch):
            return f"value is not an original proposal for epoch {epoch}"
        assert proposal is not None
        if not _names(item, proposal, past):
            return f"the {kind} does not name the proposal it votes for"
    if kind == "precommit":
        root = item.body.precommit.state_root
        if not value:
            return "a nil precommit must have an empty state_root" if root else None
        if root != past.state_root_of(epoch, value):
            return "state_root is not the root of the settlement of the value"
    return None


def _certificate_problem(item: Verified, fin_p: int, past: ConsensusPast) -> str | None:
    certificate = item.body.certificate
    epoch, round_, value = certificate.epoch, certificate.round, certificate.value
    if fin_p < epoch - 1:
        return (f"a certificate for epoch {epoch} needs epoch {epoch - 1} final in its past "
                f"(it is settled up to {fin_p})")
    if round_ < 1:
        return "rounds start at 1"
    if not value:
        return "a certificate must certify a value, not nil"
    validators = past.validators(epoch)
    if not is_quorum(_named_weight(item, past, "precommit", epoch, round_, value, validators),
                     _total(validators)):
        return f"does not name precommits for the value in round {round_} from a quorum"
    return None


def _round_problem(item: Verified, kind: str, epoch: int, round_: int, fin_p: int,
                   past: ConsensusPast) -> str | None:
    """The rules proposals and votes share: built on E-1's certificate, rounds increase."""
    if fin_p != epoch - 1:
        return (f"a {kind} for epoch {epoch} must have exactly epoch {epoch - 1} final in its "
                f"past (it is settled up to {fin_p})")
    if round_ < 1:
        return "rounds start at 1"
    last = past.last_round(item, kind)
    if last is not None and (epoch, round_) <= last:
        return (f"(epoch, round) ({epoch}, {round_}) does not follow the author's previous "
                f"{kind} ({last[0]}, {last[1]})")
    return None


def _is_original(entry: Verified | None, epoch: int) -> bool:
    return (entry is not None and entry.kind == "proposal"
            and entry.body.proposal.epoch == epoch and not entry.body.proposal.origin)


def _names(item: Verified, x: Verified, past: ConsensusPast) -> bool:
    if x.author != item.author:
        return x.hash in item.body.deps
    message = getattr(x.body, x.kind)
    own = past.own_entry(item, x.kind, message.epoch, message.round)
    return own is not None and own.hash == x.hash


def _vote_value(entry: Verified, kind: str, epoch: int, round_: int) -> bytes | None:
    """The value of ``entry`` when it is a ``kind`` vote for (epoch, round)."""
    if entry.kind != kind:
        return None
    vote = entry.body.prevote if kind == "prevote" else entry.body.precommit
    return vote.value if (vote.epoch, vote.round) == (epoch, round_) else None


def _named_weight(item: Verified, past: ConsensusPast, kind: str, epoch: int, round_: int,
                  value: bytes, validators: Validators) -> int:
    """Weight of the distinct members of ``validators`` whose ``kind`` vote for
    (epoch, round, value) ``item`` names."""
    weights = dict(validators)
    authors: set[bytes] = set()
    for dep in item.body.deps:
        entry = past.get(dep)
        if entry is not None and _vote_value(entry, kind, epoch, round_) == value:
            authors.add(entry.author)
    own = past.own_entry(item, kind, epoch, round_)
    if own is not None and _vote_value(own, kind, epoch, round_) == value:
        authors.add(item.author)
    return sum(weights.get(author, 0) for author in authors)


def _total(validators: Validators) -> int:
    return sum(weight for _, weight in validators)
