"""Who must have answered before a restarted node writes again (docs/ledger.md §9).

A data directory restored from an old copy lacks the node's newest entries.
Writing before they are fetched back signs a second entry for a seq its peers
hold already: an equivocation, slashed 50 % and jailed for ever; and for a
validator, a second vote. One peer's answer is not enough: in the chaos
campaign (docs/reliability.md §4) restored validators asked one peer that sat
on the other side of a partition from their newest entries, and three of four
signed second votes, which broke the network's safety (two certificates for
one epoch).

So the check waits for answers from peers holding, with this node's own
weight, a quorum of the validators' weight (3·w ≥ 2·total, as a certificate).
Such a set shares validators with every quorum that certified anything, and
validators are the nodes that hold every consensus entry soonest; it is not
a proof that no copy of an own entry hides elsewhere (nothing short of
asking every node is), but it turns "one peer, maybe the wrong side of a
partition" into "most of the network's weight". This is the same
idea as CometBFT's `double_sign_check_height` and Ethereum clients'
doppelganger protection: look at the network before signing again. Peers
that are not validators answer too (their own entries are fetched from them),
but carry no weight.

A network without validators settles nothing, so one peer's answer is
enough there. A node that is not a validator risks only its own chain; when
no quorum of validators answers (they are not its members) it writes after
NON_VALIDATOR_WAIT with one peer's answer, saying so in the log. A validator
never does: its votes are the network's safety, and without a quorum of
validators online the network cannot settle anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcore.ledger import accounts
from meshcore.ledger.consensus import is_quorum
from meshcore.ledger.state import ValidatorSet

# A node that is not a validator and has heard from a peer, but from no
# quorum of validators, writes after this long (three anti-entropy rounds).
NON_VALIDATOR_WAIT = 30.0


@dataclass
class OwnChainCheck:
    """The answers so far since start; :meth:`verdict` says whether they suffice."""

    own_key: bytes
    answered: set[str] = field(default_factory=set)  # peers whose own heads are all stored
    behind: dict[str, int] = field(default_factory=dict)  # peer -> newest own seq not fetched
    first_answer_at: float | None = None

    def answer(self, peer_id: str, missing_newest_seq: int, now: float) -> None:
        """``peer_id`` showed its heads; ``missing_newest_seq`` is the newest own
        seq it knows that this node still lacks (0: none)."""
        if self.first_answer_at is None:
            self.first_answer_at = now
        if missing_newest_seq:
            self.answered.discard(peer_id)
            self.behind[peer_id] = missing_newest_seq
        else:
            self.answered.add(peer_id)
            self.behind.pop(peer_id, None)

    def verdict(self, validators: ValidatorSet, now: float) -> str | None:
        """None when own writes may go on, else what is still awaited (for the
        log and the error a refused write gets)."""
        if self.behind:
            peer, seq = max(self.behind.items(), key=lambda item: item[1])
            return (f"peer {peer} knows this node's own entries up to seq {seq}, which it "
                    "could not fetch yet")
        if not self.answered:
            return "no peer has answered since it started"
        weights = dict(validators)
        total = sum(weights.values())
        weight = weights.get(self.own_key, 0) + sum(
            w for key, w in weights.items() if accounts.peer_id_of(key) in self.answered)
        if not total or is_quorum(weight, total):
            return None  # with no validators nothing settles, so nothing is slashed
        if self.own_key not in weights and self.first_answer_at is not None and \
                now - self.first_answer_at >= NON_VALIDATOR_WAIT:
            return None
        waiting = self.validators_to_ask(validators)
        return (f"validators with {weight} of {total} weight have answered, a quorum needs "
                f"{-(-2 * total // 3)}; waiting for {len(waiting)} more: "
                + ", ".join(waiting[:4]) + (" …" if len(waiting) > 4 else ""))

    def validators_to_ask(self, validators: ValidatorSet) -> list[str]:
        """Peer ids of the validators (not this node) that have not answered."""
        return [peer for peer in (accounts.peer_id_of(key) for key, _ in validators
                                  if key != self.own_key) if peer not in self.answered]
