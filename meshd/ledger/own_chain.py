"""Who must have answered before a restarted node writes again (docs/ledger.md §9).

A data directory restored from an old copy lacks the node's newest entries.
Writing before they are fetched back signs a second entry for a seq its peers
hold already: an equivocation, slashed 50 % and jailed for ever; and for a
validator, a second vote. One peer's answer is not enough: in the chaos
campaign (docs/reliability.md §4) restored validators asked one peer that sat
on the other side of a partition from their newest entries, and three of four
signed second votes, which broke the network's safety (two certificates for
one epoch).

Own writes go on when these hold, checked in this order:

1. No peer that answered knows an own entry this node still lacks (a sync
   fetches such entries first; one it cannot fetch keeps writes held).
2. At least one peer answered. A node whose store held no entry at all at
   start needs no more: it is new, with no own entry to fork (one that
   stored other entries has run before, and a copy of it may predate its
   first own entry).
3. CONNECT_SETTLE has passed since the first answer, and every peer
   connected now has answered, or its sync failed (it is asked again). A
   restored node's newest entries are most likely on the peers it was
   talking to before; with rule 4 alone, a chaos run still saw restored
   validators sign second votes for a round: the quorum that answered first
   need not include the peers that saw the newest entries, and those may
   connect a moment later.
4. And one of: an epoch that ended after this start is final here (its cut
   holds closes from a quorum of V(E), and a close names every head its
   author stores, docs/ledger.md §5.1, so the cut holds every own entry that
   reached any of those validators before they closed, after this node
   started; having settled it, this node stores them; this needs no direct
   connection to the validators; E is the epoch after the start's, so a
   closer's clock ahead by up to an epoch still closes after the start);
   peers holding, with this node's own weight, a quorum of V's weight
   (3·w ≥ 2·total, as a certificate) have answered (this lets a validator
   whose weight the others need for a quorum write again: the epoch would
   never become final without it); the network has no validators (nothing settles, so
   nothing is slashed); or this node is not a validator and
   NON_VALIDATOR_WAIT has passed since the first answer (it risks only its
   own chain, and would otherwise wait up to two epochs, an hour or more on
   some networks).

Rules 3 and 4 are CometBFT's `double_sign_check_height` and Ethereum
clients' doppelganger protection in this ledger's terms: look at what the
network holds of one's own signatures before signing again. Neither proves
that no copy of an own entry hides elsewhere (nothing short of asking every
node does), but they turn "one peer, maybe on the wrong side of a partition"
into "every peer in reach, and most of the validators' weight". A validator
never writes on the non-validator wait: its votes are the network's safety.
A copy restored from before the node stored anything is not protected (it
looks new).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcore.ledger import accounts
from meshcore.ledger.consensus import is_quorum
from meshcore.ledger.state import ValidatorSet

# A node that is not a validator and has heard from a peer, but from no
# quorum of validators, writes after this long (three anti-entropy rounds).
NON_VALIDATOR_WAIT = 30.0
# Peers that connect this long after the first answer are waited for too: the
# connection manager dials known peers in rounds of MAINTAIN_INTERVAL (2 s),
# and the ones a restored node talked to before are likely among them.
CONNECT_SETTLE = 5.0


@dataclass
class OwnChainCheck:
    """The answers so far since start; :meth:`verdict` says whether they suffice.

    ``start_epoch``: the clock's epoch at start; ``fresh``: the store held no
    entry at all at start."""

    own_key: bytes
    start_epoch: int
    fresh: bool
    answered: set[str] = field(default_factory=set)  # peers whose own heads are all stored
    behind: dict[str, int] = field(default_factory=dict)  # peer -> newest own seq not fetched
    unanswering: set[str] = field(default_factory=set)  # peers whose sync failed
    first_answer_at: float | None = None

    def answer(self, peer_id: str, missing_newest_seq: int, now: float) -> None:
        """``peer_id`` showed its heads; ``missing_newest_seq`` is the newest own
        seq it knows that this node still lacks (0: none)."""
        if self.first_answer_at is None:
            self.first_answer_at = now
        self.unanswering.discard(peer_id)
        if missing_newest_seq:
            self.answered.discard(peer_id)
            self.behind[peer_id] = missing_newest_seq
        else:
            self.answered.add(peer_id)
            self.behind.pop(peer_id, None)

    def failed(self, peer_id: str) -> None:
        """A sync with ``peer_id`` failed: it was asked, and does not hold writes
        up (it is asked again; an answer that shows missing entries would)."""
        self.unanswering.add(peer_id)

    def verdict(self, validators: ValidatorSet, final_epoch: int, now: float,
                members: set[str]) -> str | None:
        """None when own writes may go on, else what is still awaited (for the
        log and the error a refused write gets). ``validators``: V of the first
        epoch not final; ``final_epoch``: the newest final epoch here;
        ``members``: the peers connected now."""
        if self.behind:
            peer, seq = max(self.behind.items(), key=lambda item: item[1])
            return (f"peer {peer} knows this node's own entries up to seq {seq}, which it "
                    "could not fetch yet")
        if not self.answered:
            return "no peer has answered since it started"
        if self.fresh:
            return None
        assert self.first_answer_at is not None
        settling = self.first_answer_at + CONNECT_SETTLE - now
        if settling > 0:
            return f"waiting {settling:.1f} s more for peers to connect and answer"
        unasked = sorted(members - self.answered - self.unanswering)
        if unasked:
            return (f"waiting for {len(unasked)} connected peers to answer: "
                    + ", ".join(unasked[:4]) + (" …" if len(unasked) > 4 else ""))
        weights = dict(validators)
        total = sum(weights.values())
        weight = weights.get(self.own_key, 0) + sum(
            w for key, w in weights.items() if accounts.peer_id_of(key) in self.answered)
        if final_epoch > self.start_epoch or not total or is_quorum(weight, total):
            return None
        if self.own_key not in weights and self.first_answer_at is not None and \
                now - self.first_answer_at >= NON_VALIDATOR_WAIT:
            return None
        waiting = self.validators_to_ask(validators)
        return (f"validators with {weight} of {total} weight have answered, a quorum needs "
                f"{-(-2 * total // 3)}; waiting for epoch {self.start_epoch + 1} to be final "
                f"here or for {len(waiting)} more validators to answer: "
                + ", ".join(waiting[:4]) + (" …" if len(waiting) > 4 else ""))

    def to_ask(self, validators: ValidatorSet, members: set[str]) -> list[str]:
        """The connected peers to sync with: those that have not answered, the
        validators among them first."""
        first = [p for p in self.validators_to_ask(validators) if p in members]
        return first + sorted(members - self.answered - set(first))

    def validators_to_ask(self, validators: ValidatorSet) -> list[str]:
        """Peer ids of the validators (not this node) that have not answered."""
        return [peer for peer in (accounts.peer_id_of(key) for key, _ in validators
                                  if key != self.own_key) if peer not in self.answered]
