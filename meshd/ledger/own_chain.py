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

1. No peer that answered knows an own entry this node still lacks. It is
   recorded as soon as the peer's heads arrive, so a sync that fails while
   fetching keeps writes held; it is cleared when this node stores that
   entry, from whichever peer.
2. At least one peer answered (a node with no member at all writes after a
   grace period, unless a peer has answered or held writes up before). A
   node whose store held no entry at all at start needs no more: it is new,
   with no own entry to fork (one that stored other entries has run
   before, and a copy of it may predate its first own entry).
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
   closer's clock ahead by up to an epoch still closes after the start;
   the start's epoch is raised to the newest epoch of any entry stored
   until CONNECT_SETTLE after the first answer, so a clock that lags the
   network's cannot make an old settlement pass for a new one);
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
# A peer whose sync failed is asked again after this long, not at every look.
RETRY_FAILED = 10.0


@dataclass
class OwnChainCheck:
    """The answers so far since start; :meth:`verdict` says whether they suffice.

    ``start_epoch``: the clock's epoch at start; ``fresh``: the store held no
    entry at all at start."""

    own_key: bytes
    start_epoch: int
    fresh: bool
    answered: set[str] = field(default_factory=set)  # peers whose own heads are all stored
    # peer -> (seq, hash) of the newest own entry it knows and this node lacks
    behind: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)  # peers whose sync failed
    first_answer_at: float | None = None
    alone_since: float | None = None  # trio time since which no member was connected

    def answer(self, peer_id: str, missing: tuple[int, bytes] | None, now: float) -> None:
        """``peer_id`` showed its heads; ``missing``: (seq, hash) of the newest
        own entry among them that this node lacks, or None."""
        if self.first_answer_at is None:
            self.first_answer_at = now
        self.failed_at.pop(peer_id, None)
        if missing is not None:
            self.answered.discard(peer_id)
            self.behind[peer_id] = missing
        else:
            self.answered.add(peer_id)
            self.behind.pop(peer_id, None)

    def failed(self, peer_id: str, now: float) -> None:
        """A sync with ``peer_id`` failed: it does not hold writes up (unless its
        heads showed a missing own entry first) and is asked again later."""
        self.failed_at[peer_id] = now

    def missing_hashes(self) -> list[bytes]:
        return [entry_hash for _, entry_hash in self.behind.values()]

    def stored(self, hashes: set[bytes]) -> None:
        """These own entries are stored now: peers that were ahead only by them
        are answered."""
        for peer_id, (_, entry_hash) in list(self.behind.items()):
            if entry_hash in hashes:
                del self.behind[peer_id]
                self.answered.add(peer_id)

    def saw_epoch(self, epoch: int, now: float) -> None:
        """An entry of ``epoch`` was stored: the network's clock was at least
        there at the start. Counted until CONNECT_SETTLE after the first
        answer (the catch-up), not after: new entries carry new epochs, and
        the start's epoch would then move on for ever."""
        if self.first_answer_at is None or now - self.first_answer_at < CONNECT_SETTLE:
            self.start_epoch = max(self.start_epoch, epoch)

    def members_now(self, count: int, now: float) -> None:
        if count:
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = now

    def may_write_alone(self, now: float, grace: float) -> bool:
        """No member for ``grace`` seconds, and none ever answered or held
        writes up: nobody to ask (a lone founder's node, a network not there yet)."""
        return (self.alone_since is not None and now - self.alone_since >= grace
                and self.first_answer_at is None and not self.behind)

    def verdict(self, validators: ValidatorSet, final_epoch: int, now: float,
                members: set[str]) -> str | None:
        """None when own writes may go on, else what is still awaited (for the
        log and the error a refused write gets). ``validators``: V of the first
        epoch not final; ``final_epoch``: the newest final epoch here;
        ``members``: the peers connected now."""
        if self.behind:
            peer, (seq, _) = max(self.behind.items(), key=lambda item: item[1][0])
            return (f"peer {peer} knows this node's own entries up to seq {seq}, which it "
                    "could not fetch yet")
        if self.first_answer_at is None:
            return "no peer has answered since it started"
        if self.fresh:
            return None
        settling = self.first_answer_at + CONNECT_SETTLE - now
        if settling > 0:
            return f"waiting {settling:.0f} s more for peers to connect and answer"
        unasked = sorted(members - self.answered - set(self.failed_at))
        if unasked:
            return (f"waiting for {len(unasked)} connected peers to answer: "
                    + ", ".join(unasked[:4]) + (" …" if len(unasked) > 4 else ""))
        weights = dict(validators)
        total = sum(weights.values())
        weight = weights.get(self.own_key, 0) + sum(
            w for key, w in weights.items() if accounts.peer_id_of(key) in self.answered)
        if final_epoch > self.start_epoch or not total or is_quorum(weight, total):
            return None
        if self.own_key not in weights and now - self.first_answer_at >= NON_VALIDATOR_WAIT:
            return None
        waiting = self.validators_to_ask(validators)
        return (f"validators with {weight} of {total} weight have answered, a quorum needs "
                f"{-(-2 * total // 3)}; waiting for epoch {self.start_epoch + 1} to be final "
                f"here or for {len(waiting)} more validators to answer: "
                + ", ".join(waiting[:4]) + (" …" if len(waiting) > 4 else ""))

    def to_ask(self, validators: ValidatorSet, members: set[str], now: float) -> list[str]:
        """The connected peers to sync with: those that have not answered (a
        failed one RETRY_FAILED after its failure), the validators first."""
        due = {p for p in members - self.answered
               if now - self.failed_at.get(p, -RETRY_FAILED) >= RETRY_FAILED}
        first = [p for p in self.validators_to_ask(validators) if p in due]
        return first + sorted(due - set(first))

    def validators_to_ask(self, validators: ValidatorSet) -> list[str]:
        """Peer ids of the validators (not this node) that have not answered."""
        return [peer for peer in (accounts.peer_id_of(key) for key, _ in validators
                                  if key != self.own_key) if peer not in self.answered]
