"""Settlement consensus of one epoch: Tendermint as a sans-IO state machine.

docs/ledger.md §5.2. One :class:`EpochConsensus` runs one validator (or a
non-validator observer) through the rounds of one epoch E. The daemon feeds it
what it stores (closes quorum, proposals, prevotes, precommits) and the
timeouts it was asked to schedule, and carries out the returned actions: write
a proposal or vote entry (durably, before publishing it), schedule a timeout,
write the certificate on a decision. Nothing here reads a clock, does I/O or
draws randomness; the machine is a function of the sequence of inputs.

Counting. A value's weight in a round is the weight of the distinct
validators that have a vote of that type for it, *every* vote counted: a
validator that equivocated (two votes for one round and type, which needs a
forked chain) counts towards each value it voted for, but only once towards
"any value" and towards the round-skip rule, and the second vote is reported
as a :class:`Conflict`. This is what the store sees (a certificate may name
either branch, docs/ledger.md §5.3), so a node's decisions agree with the
store's finality; it is safe because two quorums share an honest validator,
who never votes twice in a round.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Validators = tuple[tuple[bytes, int], ...]  # (account, weight), sorted by account

NIL = b""  # the nil value of a vote


class Step(enum.StrEnum):
    """A round's steps, also the names of its timeouts."""

    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


@dataclass(frozen=True)
class Propose:
    """Write this round's proposal.

    An empty ``origin`` asks for a new cut (an original proposal naming every
    head the daemon stores, with ``valid_round`` 0). Otherwise re-propose the
    original proposal ``origin`` with ``valid_round`` and name in deps the
    prevotes for (E, valid_round, origin) of ``pol`` (their authors; a quorum).
    """

    round: int
    origin: bytes = NIL
    valid_round: int = 0
    pol: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Prevote:
    """Write a prevote for ``value`` (an original proposal's hash; empty: nil)."""

    round: int
    value: bytes


@dataclass(frozen=True)
class Precommit:
    """Write a precommit; the daemon adds ``root(Settle(E, value))`` when not nil."""

    round: int
    value: bytes


@dataclass(frozen=True)
class Schedule:
    """Call ``on_timeout(step, round)`` after ``seconds``."""

    step: Step
    round: int
    seconds: float


@dataclass(frozen=True)
class Decided:
    """E is final with ``value``: ``precommitters`` (a quorum) precommitted it in ``round``."""

    round: int
    value: bytes
    precommitters: tuple[bytes, ...]


@dataclass(frozen=True)
class Conflict:
    """``author`` sent two different messages of one type for one round (it forked)."""

    step: Step
    round: int
    author: bytes
    first: bytes  # the value (proposal: entry hash) counted first
    second: bytes


Action = Propose | Prevote | Precommit | Schedule | Decided | Conflict
OwnEntry = Propose | Prevote | Precommit  # an own stored entry, for restore()


def leader(epoch: int, round_: int, validators: Sequence[tuple[bytes, int]]) -> bytes:
    """The proposer of (epoch, round): ``V(E)[(E + r - 1) mod |V(E)|]`` (rounds from 1)."""
    return validators[(epoch + round_ - 1) % len(validators)][0]


def is_quorum(weight: int, total: int) -> bool:
    """3·weight ≥ 2·total (docs/ledger.md §1)."""
    return 3 * weight >= 2 * total


def timeout_seconds(step: Step, round_: int) -> float:
    """Daemon defaults, growing with the round: propose 4 s + 2 s·(r-1), others 2 s + 1 s·(r-1)."""
    if step is Step.PROPOSE:
        return 4.0 + 2.0 * (round_ - 1)
    return 2.0 + 1.0 * (round_ - 1)


@dataclass
class _Tally:
    """The votes of one type in one round."""

    first: dict[bytes, bytes] = field(default_factory=dict)  # author -> first value
    voters: dict[bytes, set[bytes]] = field(default_factory=dict)  # value -> authors
    weight: dict[bytes, int] = field(default_factory=dict)  # value -> weight of voters
    total: int = 0  # weight of the distinct authors


class EpochConsensus:
    """One validator's (or an observer's) Tendermint instance for one epoch.

    Every ``on_*`` input and :meth:`start`/:meth:`restore` returns the actions
    to carry out, in order. Feed back every consensus entry the node stores
    for this epoch, its own included (own votes are counted when emitted, so
    their echo is a no-op; an own proposal's hash is only known once written).
    Inputs may arrive in any order and before :meth:`start`; they are kept.
    """

    def __init__(self, epoch: int, validators: Validators, me: bytes | None,
                 acceptable: Callable[[bytes], bool]) -> None:
        """Args:
            epoch: E.
            validators: ``V(E)``, sorted by account, weights ≥ 1.
            me: this validator's account, or None for an observer, which only
                detects the decision.
            acceptable: whether an original proposal (by hash) is acceptable
                (docs/ledger.md §5.1); called at most once per value.

        Raises:
            ValueError: an empty, unsorted or badly weighted validator set, or
                ``me`` not in it.
        """
        keys = [key for key, _ in validators]
        if not validators or keys != sorted(set(keys)):
            raise ValueError("validators must be non-empty, sorted by account, without repeats")
        if any(weight < 1 for _, weight in validators):
            raise ValueError("validator weights must be at least 1")
        self.epoch = epoch
        self.validators = validators
        self._weights = dict(validators)
        self._total = sum(self._weights.values())
        if me is not None and me not in self._weights:
            raise ValueError("me is not a validator of this epoch")
        self.me = me
        self._acceptable = acceptable
        self._accepted: dict[bytes, bool] = {}

        self.round = 0  # 0 until started
        self.step = Step.PROPOSE
        self.locked: tuple[bytes, int] = (NIL, 0)  # (value, round)
        self.valid: tuple[bytes, int] = (NIL, 0)
        self.decided: Decided | None = None
        self._closes = False

        self._proposals: dict[int, list[tuple[bytes, int]]] = {}  # round -> (value, vr)
        self._proposal_entry: dict[int, bytes] = {}  # round -> first proposal hash
        self._prevotes: dict[int, _Tally] = {}
        self._precommits: dict[int, _Tally] = {}
        self._round_voters: dict[int, set[bytes]] = {}  # any vote, for the skip rule
        self._round_weight: dict[int, int] = {}
        self._proposed: set[int] = set()
        self._my_prevote: dict[int, bytes] = {}
        self._my_precommit: dict[int, bytes] = {}
        self._prevote_timer: set[int] = set()
        self._precommit_timer: set[int] = set()

    # -- inputs ---------------------------------------------------------------

    def start(self) -> list[Action]:
        """Enter round 1 (a validator with no own vote for E yet).

        The first propose timeout runs from here: starting once a quorum of
        closes is stored keeps round 1 from timing out while the leader still
        waits for closes.
        """
        return self.restore(())

    def restore(self, own: Iterable[OwnEntry]) -> list[Action]:
        """Start from this validator's own stored proposals and votes of E.

        After a restart, call this instead of :meth:`start`, then feed the
        stored entries of E again. The round is the highest own round, the
        step follows the own votes in it, the lock is the highest own non-nil
        precommit (a lock is only ever taken with a precommit), so no vote is
        repeated differently. The valid value is recomputed from the stored
        prevotes as they are fed; until the lock's own quorum of prevotes is
        counted again, this validator does not propose.

        Raises:
            ValueError: two different own votes for one round (a fork of the
                own chain), or already started.
        """
        if self.round:
            raise ValueError("already started")
        if self.me is None:
            return []
        out: list[Action] = []
        top = 1
        for item in own:
            top = max(top, item.round)
            if isinstance(item, Propose):
                self._proposed.add(item.round)
                continue
            mine = self._my_prevote if isinstance(item, Prevote) else self._my_precommit
            if mine.setdefault(item.round, item.value) != item.value:
                raise ValueError(f"own votes conflict in round {item.round}")
            if isinstance(item, Precommit) and item.value and item.round > self.locked[1]:
                self.locked = (item.value, item.round)
        for r, value in self._my_prevote.items():
            self._add_vote(self._prevotes, Step.PREVOTE, self.me, r, value, out)
        for r, value in self._my_precommit.items():
            self._add_vote(self._precommits, Step.PRECOMMIT, self.me, r, value, out)
        self.round = top
        if top in self._my_precommit:
            self.step = Step.PRECOMMIT
        elif top in self._my_prevote:
            self.step = Step.PREVOTE
        else:
            self.step = Step.PROPOSE
            out.append(Schedule(Step.PROPOSE, top, timeout_seconds(Step.PROPOSE, top)))
        self._advance(out)
        return out

    def on_closes_quorum(self) -> list[Action]:
        """The daemon has the closes it wants for a cut (a quorum of ``V(E)``).

        From then on this validator proposes at once in each round it leads.
        """
        self._closes = True
        out: list[Action] = []
        self._advance(out)
        return out

    def on_proposal(self, author: bytes, round_: int, value: bytes, origin: bytes = NIL,
                    valid_round: int = 0) -> list[Action]:
        """A stored proposal entry of E.

        Args:
            value: the proposal entry's hash.
            origin: empty for an original proposal; for a re-proposal the
                original it re-proposes, which is then the value voted on.
            valid_round: the round of the re-proposal's POL (0 for an original).
        """
        out: list[Action] = []
        if (round_ < 1 or author != leader(self.epoch, round_, self.validators)
                or (not origin and valid_round != 0)
                or (origin and not 1 <= valid_round < round_)):
            return out  # not a valid proposal of E (the ledger rules refuse it too)
        first = self._proposal_entry.setdefault(round_, value)
        if first != value:
            out.append(Conflict(Step.PROPOSE, round_, author, first, value))
        proposed = (origin or value, valid_round)
        round_proposals = self._proposals.setdefault(round_, [])
        if proposed not in round_proposals:
            round_proposals.append(proposed)
        self._advance(out)
        return out

    def on_prevote(self, author: bytes, round_: int, value: bytes) -> list[Action]:
        """A stored prevote of E (``value`` empty: nil)."""
        out: list[Action] = []
        self._add_vote(self._prevotes, Step.PREVOTE, author, round_, value, out)
        self._advance(out)
        return out

    def on_precommit(self, author: bytes, round_: int, value: bytes) -> list[Action]:
        """A stored precommit of E (``value`` empty: nil)."""
        out: list[Action] = []
        self._add_vote(self._precommits, Step.PRECOMMIT, author, round_, value, out)
        self._advance(out)
        return out

    def on_timeout(self, step: Step, round_: int) -> list[Action]:
        """A timeout asked for by :class:`Schedule` expired (stale ones are ignored)."""
        out: list[Action] = []
        if self.me is None or self.decided or round_ != self.round:
            return out
        if step is Step.PROPOSE and self.step is Step.PROPOSE:
            self._prevote(NIL, out)
        elif step is Step.PREVOTE and self.step is Step.PREVOTE:
            self._precommit(NIL, out)
        elif step is Step.PRECOMMIT:
            self._start_round(round_ + 1, out)
        self._advance(out)
        return out

    # -- counting -------------------------------------------------------------

    def _add_vote(self, tallies: dict[int, _Tally], step: Step, author: bytes, round_: int,
                  value: bytes, out: list[Action]) -> None:
        weight = self._weights.get(author)
        if weight is None or round_ < 1:
            return  # not a member of V(E): its votes do not count
        tally = tallies.setdefault(round_, _Tally())
        voters = tally.voters.setdefault(value, set())
        if author in voters:
            return  # a duplicate
        voters.add(author)
        tally.weight[value] = tally.weight.get(value, 0) + weight
        first = tally.first.setdefault(author, value)
        if first != value:
            out.append(Conflict(step, round_, author, first, value))
        else:
            tally.total += weight
        round_voters = self._round_voters.setdefault(round_, set())
        if author not in round_voters:
            round_voters.add(author)
            self._round_weight[round_] = self._round_weight.get(round_, 0) + weight
        if (step is Step.PRECOMMIT and value and self.decided is None
                and is_quorum(tally.weight[value], self._total)):
            self.decided = Decided(round_, value, tuple(sorted(voters)))
            out.append(self.decided)

    def _quorum_for(self, tallies: dict[int, _Tally], round_: int, value: bytes) -> bool:
        tally = tallies.get(round_)
        return tally is not None and is_quorum(tally.weight.get(value, 0), self._total)

    def _quorum_any(self, tallies: dict[int, _Tally], round_: int) -> bool:
        tally = tallies.get(round_)
        return tally is not None and is_quorum(tally.total, self._total)

    def _is_acceptable(self, value: bytes) -> bool:
        if value not in self._accepted:
            self._accepted[value] = self._acceptable(value)
        return self._accepted[value]

    # -- the rules of §5.2 ----------------------------------------------------

    def _advance(self, out: list[Action]) -> None:
        """Apply every rule whose condition holds, until none does."""
        while self.decided is None and self.me is not None and self.round:
            self._update_valid()
            skip = max((r for r, w in self._round_weight.items()
                        if r > self.round and 3 * w > self._total), default=0)
            if skip:
                self._start_round(skip, out)
                continue
            r = self.round
            if (self.step is Step.PROPOSE and self._closes and r not in self._proposed
                    and self.valid[1] >= self.locked[1]  # else: restored, POL not fed yet
                    and leader(self.epoch, r, self.validators) == self.me):
                self._proposed.add(r)
                out.append(self._proposal())
            if self.step is Step.PROPOSE:
                vote = self._proposal_prevote()
                if vote is not None:
                    self._prevote(vote, out)
                    continue
            if self.step is Step.PREVOTE:
                if self._quorum_any(self._prevotes, r) and r not in self._prevote_timer:
                    self._prevote_timer.add(r)
                    out.append(Schedule(Step.PREVOTE, r, timeout_seconds(Step.PREVOTE, r)))
                locked = self._lockable()
                if locked is not None:
                    self.locked = (locked, r)
                    self._precommit(locked, out)
                    continue
                if self._quorum_for(self._prevotes, r, NIL):
                    self._precommit(NIL, out)
                    continue
            if self._quorum_for(self._precommits, r, NIL):
                # Nothing can be decided in r any more (a quorum for a value
                # would share an honest validator with this one), so waiting
                # out timeout_precommit only delays round r + 1: after a
                # partition heals, the burnt round ends this way.
                self._start_round(r + 1, out)
                continue
            if self._quorum_any(self._precommits, r) and r not in self._precommit_timer:
                self._precommit_timer.add(r)
                out.append(Schedule(Step.PRECOMMIT, r, timeout_seconds(Step.PRECOMMIT, r)))
            return

    def _proposal(self) -> Propose:
        value, valid_round = self.valid
        if not value:
            return Propose(self.round)
        pol = tuple(sorted(self._prevotes[valid_round].voters[value]))
        return Propose(self.round, value, valid_round, pol)

    def _proposal_prevote(self) -> bytes | None:
        """The prevote the current round's proposal calls for, if one can be judged yet."""
        locked_value, locked_round = self.locked
        for value, valid_round in self._proposals.get(self.round, ()):
            if valid_round == 0:
                free = locked_round == 0 or locked_value == value
            elif self._quorum_for(self._prevotes, valid_round, value):
                free = locked_round <= valid_round or locked_value == value
            else:
                continue  # its POL is not all here yet
            return value if free and self._is_acceptable(value) else NIL
        return None

    def _lockable(self) -> bytes | None:
        """A value proposed in this round with quorum prevotes in it, acceptable."""
        for value, _ in self._proposals.get(self.round, ()):
            if self._quorum_for(self._prevotes, self.round, value) and self._is_acceptable(value):
                return value
        return None

    def _update_valid(self) -> None:
        # Any round, not only the current one: a leader must learn of a POL
        # that completed after it left the round (docs/ledger.md §5.5 step 4).
        # Proposing a value with a real POL is always safe.
        for r in sorted(self._proposals, reverse=True):
            if r <= self.valid[1]:
                return
            for value, _ in self._proposals[r]:
                if self._quorum_for(self._prevotes, r, value) and self._is_acceptable(value):
                    self.valid = (value, r)
                    return

    def _start_round(self, round_: int, out: list[Action]) -> None:
        self.round = round_
        self.step = Step.PROPOSE
        out.append(Schedule(Step.PROPOSE, round_, timeout_seconds(Step.PROPOSE, round_)))

    def _prevote(self, value: bytes, out: list[Action]) -> None:
        assert self.me is not None and self.round not in self._my_prevote
        self._my_prevote[self.round] = value
        self.step = Step.PREVOTE
        out.append(Prevote(self.round, value))
        self._add_vote(self._prevotes, Step.PREVOTE, self.me, self.round, value, out)

    def _precommit(self, value: bytes, out: list[Action]) -> None:
        assert self.me is not None and self.round not in self._my_precommit
        self._my_precommit[self.round] = value
        self.step = Step.PRECOMMIT
        out.append(Precommit(self.round, value))
        self._add_vote(self._precommits, Step.PRECOMMIT, self.me, self.round, value, out)
