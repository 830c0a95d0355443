"""A deterministic network of settlement validators, for tests (docs/ledger.md §5).

Each honest validator is one :class:`EpochConsensus` driven the way the daemon
drives it: own entries are durable once emitted and fed back, every stored
entry is kept (and re-fed after a restart, behind :meth:`~EpochConsensus.restore`),
timeouts are events of an injected clock. The network is partially synchronous
with a seeded scheduler: before GST messages are delayed, reordered, dropped
or held by a partition; from GST on, every message arrives within ``delta``
and anti-entropy hands every honest node what any honest node stores (the
"gossip" property of §5.5); honest nodes forward what a byzantine node sent
them, as the ledger stores and forwards both branches of a fork.

Byzantine validators fork their chains:

* ``SplitBrain``: one honest machine per group of peers; each copy hears only
  its group and speaks only to it. Every copy obeys the protocol; together
  they vote twice in a round (the classic attack on a weight ≥ 1/3 bound).
* ``Chaos``: on first sight of a round it sends two random halves of its
  peers different random prevotes and precommits (nil or any known value,
  unacceptable ones included) for that round and the next, and as leader a
  different proposal to each peer, re-proposing only values that have a POL
  (anything else the ledger rules refuse).

The checks every run makes on honest validators (``Result.violations``): at
most one prevote and one precommit per round, across restarts; a validator
locked on v prevotes another value only with a POL of its lock round or later;
every decision has precommits of a quorum in its round.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from meshcore.ledger.consensus import (
    NIL,
    Action,
    Conflict,
    Decided,
    EpochConsensus,
    OwnEntry,
    Prevote,
    Propose,
    Schedule,
    Step,
    Validators,
    is_quorum,
    leader,
)

EPOCH = 5
ProcId = tuple[bytes, int]  # (validator, copy): honest validators have copy 0


@dataclass(frozen=True)
class Msg:
    """A consensus entry as the machines see it."""

    step: Step
    author: bytes
    round: int
    value: bytes  # proposal: the entry's hash; vote: the value voted for
    origin: bytes = NIL
    valid_round: int = 0

    def feed(self, machine: EpochConsensus) -> list[Action]:
        if self.step is Step.PROPOSE:
            return machine.on_proposal(self.author, self.round, self.value, self.origin,
                                       self.valid_round)
        if self.step is Step.PREVOTE:
            return machine.on_prevote(self.author, self.round, self.value)
        return machine.on_precommit(self.author, self.round, self.value)


@dataclass(frozen=True)
class SplitBrain:
    """A byzantine validator running one honest copy per group of honest peers."""

    groups: tuple[frozenset[bytes], ...]


@dataclass(frozen=True)
class Chaos:
    """A byzantine validator sending random, per-peer different messages."""


# (src, dst, msg, now) -> a delay overriding the scheduler's, or None to let it choose.
DelayRule = Callable[[bytes, bytes, Msg, float], float | None]


@dataclass
class Config:
    """One run: who is who, and what the network does."""

    validators: Validators
    byzantine: dict[bytes, SplitBrain | Chaos] = field(default_factory=dict)
    gst: float = 0.0
    delta: float = 1.0  # bound on delays from GST on
    pre_gst_delay: float = 15.0  # the late ones before GST, up to this (capped at GST + delta)
    drop: float = 0.0  # chance a message sent before GST is lost
    partition: tuple[frozenset[bytes], ...] = ()  # before GST, groups hear only themselves
    slow: dict[bytes, float] = field(default_factory=dict)  # extra delay to and from
    down: frozenset[bytes] = frozenset()  # honest validators never up
    crashes: tuple[tuple[bytes, float, float], ...] = ()  # (validator, crash at, restart at)
    delay_rule: DelayRule | None = None
    closes_by: float = 3.0  # each validator sees a closes quorum before this
    max_time: float = 3000.0


@dataclass
class Result:
    decisions: dict[bytes, Decided]  # honest validator -> its decision
    decided_at: dict[bytes, float]
    round_at_gst: int  # highest round of an honest validator at GST
    # ... at GST + delta, when everything sent before GST has arrived: a leader
    # that proposes before then may still lack a lock's POL (docs/ledger.md §5.5).
    round_at_gst_delta: int
    violations: list[str]
    conflicts: int  # Conflict actions seen by honest validators
    own_votes: dict[tuple[bytes, Step, int], bytes]

    def values(self) -> set[bytes]:
        return {d.value for d in self.decisions.values()}


@dataclass
class _Proc:
    """One running machine: an honest validator, or one copy of a split-brain one."""

    id: ProcId
    machine: EpochConsensus
    talks_to: frozenset[bytes] | None = None  # None: everyone
    incarnation: int = 0
    up: bool = True
    store: dict[Msg, None] = field(default_factory=dict)  # ordered: insertion order
    own: list[OwnEntry] = field(default_factory=list)


class Sim:
    """One seeded run of one epoch's settlement."""

    def __init__(self, config: Config, seed: int) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.keys = [key for key, _ in config.validators]
        self.weights = dict(config.validators)
        self.total = sum(self.weights.values())
        self.honest = [k for k in self.keys if k not in config.byzantine]
        self.unacceptable: set[bytes] = set()
        self.procs: dict[ProcId, _Proc] = {}
        # Every vote anyone sent: (step, round) -> value -> authors.
        self.sent: dict[tuple[Step, int], dict[bytes, set[bytes]]] = {}
        self.originals: list[bytes] = []
        self._pols: dict[bytes, set[int]] = {}  # value -> rounds with quorum prevotes for it
        self._chaos_acted: set[tuple[bytes, int]] = set()
        self._proposal_count = itertools.count()
        self.result = Result({}, {}, 0, 0, [], 0, {})
        self._locks: dict[bytes, tuple[bytes, int]] = {}
        for key in self.honest:
            self.procs[(key, 0)] = _Proc((key, 0), self._machine(key))
        for key, kind in config.byzantine.items():
            if isinstance(kind, SplitBrain):
                for i, group in enumerate(kind.groups):
                    self.procs[(key, i)] = _Proc((key, i), self._machine(key), talks_to=group)

    def _machine(self, key: bytes) -> EpochConsensus:
        return EpochConsensus(EPOCH, self.config.validators, key,
                              lambda value: value not in self.unacceptable)

    # -- running --------------------------------------------------------------

    def at(self, time: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._events, (time, next(self._seq), event))

    def run(self) -> Result:
        config = self.config
        for proc in list(self.procs.values()):
            key = proc.id[0]
            if key in config.down:
                proc.up = False
                continue
            self.at(self.rng.uniform(0, 1), partial(self._start, proc))
            self.at(self.rng.uniform(0, config.closes_by), partial(self._closes, proc))
        for key, crash, restart in config.crashes:
            proc = self.procs[(key, 0)]
            self.at(crash, partial(self._crash, proc))
            self.at(restart, partial(self._restart, proc))
        self.at(config.gst, self._at_gst)
        self.at(config.gst + config.delta, self._at_gst_delta)
        while self._events and not self._all_decided():
            self.now, _, event = heapq.heappop(self._events)
            if self.now > config.max_time:
                break
            event()
        # Decided before GST (+ delta): the rounds then are the rounds at GST.
        if self.now < config.gst:
            self.result.round_at_gst = self._highest_round()
        if self.now < config.gst + config.delta:
            self._at_gst_delta()
        self._final_checks()
        return self.result

    def _all_decided(self) -> bool:
        return all(k in self.result.decisions for k in self.honest if k not in self.config.down)

    def _highest_round(self) -> int:
        return max((p.machine.round for p in self._honest_procs() if p.up), default=0)

    def _at_gst(self) -> None:
        self.result.round_at_gst = self._highest_round()
        self._sync([p for p in self._honest_procs() if p.up])

    def _at_gst_delta(self) -> None:
        self.result.round_at_gst_delta = self._highest_round()

    def _honest_procs(self) -> list[_Proc]:
        return [self.procs[(k, 0)] for k in self.honest]

    def _sync(self, receivers: list[_Proc]) -> None:
        """Anti-entropy: each receiver gets what any up honest node stores."""
        union: dict[Msg, None] = {}
        for proc in self._honest_procs():
            if proc.up:
                union.update(proc.store)
        rule = self.config.delay_rule
        for proc in receivers:
            for msg in union:
                if msg in proc.store:
                    continue
                delay = rule(msg.author, proc.id[0], msg, self.now) if rule else None
                if delay is None:
                    delay = (max(self.now, self.config.gst) - self.now
                             + self.rng.uniform(0, self.config.delta))
                self._deliver_later(proc.id[0], (msg.author, 0), msg, delay)

    def _start(self, proc: _Proc) -> None:
        if proc.up and not proc.machine.round:  # else restarted already
            self._act(proc, proc.machine.start())

    def _closes(self, proc: _Proc) -> None:
        if proc.up:
            self._act(proc, proc.machine.on_closes_quorum())

    def _crash(self, proc: _Proc) -> None:
        proc.up = False
        proc.incarnation += 1

    def _restart(self, proc: _Proc) -> None:
        proc.up = True
        proc.machine = self._machine(proc.id[0])
        self._act(proc, proc.machine.restore(proc.own))
        for msg in list(proc.store):
            self._act(proc, msg.feed(proc.machine))
        self._act(proc, proc.machine.on_closes_quorum())
        self._sync([p for p in self._honest_procs() if p.up])  # both ways: it has news too

    # -- the network ----------------------------------------------------------

    def _delay(self, src: bytes, dst: bytes, msg: Msg) -> float | None:
        config = self.config
        if config.delay_rule is not None:
            chosen = config.delay_rule(src, dst, msg, self.now)
            if chosen is not None:
                return chosen
        extra = config.slow.get(src, 0.0) + config.slow.get(dst, 0.0)
        if self.now >= config.gst:
            return self.rng.uniform(0, config.delta) + extra
        by_gst = config.gst + self.rng.uniform(0, config.delta) - self.now
        if any((src in g) != (dst in g) for g in config.partition):
            return by_gst + extra
        if self.rng.random() < config.drop:
            return None
        # Mostly prompt, sometimes very late: reorders rounds at will.
        late = self.rng.random() < 0.4
        return min(self.rng.uniform(0, config.pre_gst_delay if late else config.delta),
                   by_gst) + extra

    def _send(self, src: ProcId, msg: Msg, to: frozenset[bytes] | None = None) -> None:
        for dst in self.keys:
            if dst == src[0] or (to is not None and dst not in to):
                continue
            delay = self._delay(src[0], dst, msg)
            if delay is not None:
                self._deliver_later(dst, src, msg, delay)

    def _deliver_later(self, dst: bytes, src: ProcId, msg: Msg, delay: float) -> None:
        self.at(self.now + delay, lambda: self._deliver(dst, src, msg))

    def _deliver(self, dst: bytes, src: ProcId, msg: Msg) -> None:
        kind = self.config.byzantine.get(dst)
        if msg.author == dst:
            return  # its own entry (a fork of it, for a byzantine one): nothing to learn
        if isinstance(kind, Chaos):
            if msg.author not in self.config.byzantine:  # else two of them race up the rounds
                self._chaos(dst, msg)
            return
        if isinstance(kind, SplitBrain):
            copy = src[1] if src[0] in self.config.byzantine else next(
                (i for i, g in enumerate(kind.groups) if src[0] in g), None)
            if copy is None or (dst, copy) not in self.procs:
                return
            proc = self.procs[(dst, copy)]
        else:
            proc = self.procs[(dst, 0)]
        if not proc.up or msg in proc.store:
            return
        proc.store[msg] = None
        self._act(proc, msg.feed(proc.machine))
        if msg.author in self.config.byzantine and proc.talks_to is None:
            self._send(proc.id, msg)  # forward a byzantine entry (gossip)

    # -- a machine's actions --------------------------------------------------

    def _act(self, proc: _Proc, actions: list[Action]) -> None:
        key = proc.id[0]
        queue = list(actions)
        while queue and proc.up:
            action = queue.pop(0)
            if isinstance(action, Schedule):
                self.at(self.now + action.seconds,
                        partial(self._timeout, proc, proc.incarnation, action))
            elif isinstance(action, Decided):
                if proc.talks_to is None and key not in self.result.decisions:
                    self.result.decisions[key] = action
                    self.result.decided_at[key] = self.now
            elif isinstance(action, Conflict):
                self.result.conflicts += proc.talks_to is None
            elif isinstance(action, Propose):
                proc.own.append(action)
                value = hashlib.sha256(b"%s/%d/%d" % (key, proc.id[1],
                                                      next(self._proposal_count))).digest()
                msg = Msg(Step.PROPOSE, key, action.round, value, action.origin,
                          action.valid_round)
                if not action.origin:
                    self.originals.append(value)
                proc.store[msg] = None
                self._send(proc.id, msg, proc.talks_to)
                queue.extend(msg.feed(proc.machine))
            else:
                proc.own.append(action)
                step = Step.PREVOTE if isinstance(action, Prevote) else Step.PRECOMMIT
                if proc.talks_to is None:
                    self._check_vote(key, step, action.round, action.value)
                msg = Msg(step, key, action.round, action.value)
                self._record(msg)
                proc.store[msg] = None
                self._send(proc.id, msg, proc.talks_to)

    def _timeout(self, proc: _Proc, incarnation: int, schedule: Schedule) -> None:
        if proc.up and proc.incarnation == incarnation:
            self._act(proc, proc.machine.on_timeout(schedule.step, schedule.round))

    def _record(self, msg: Msg) -> None:
        voters = self.sent.setdefault((msg.step, msg.round), {}).setdefault(msg.value, set())
        voters.add(msg.author)
        if msg.step is Step.PREVOTE and msg.value and is_quorum(self._weight(voters), self.total):
            self._pols.setdefault(msg.value, set()).add(msg.round)

    def _weight(self, authors: set[bytes]) -> int:
        return sum(self.weights[a] for a in authors)

    def _has_pol(self, value: bytes, from_round: int, before_round: int) -> bool:
        return any(from_round <= r < before_round for r in self._pols.get(value, ()))

    # -- checks ---------------------------------------------------------------

    def _check_vote(self, key: bytes, step: Step, round_: int, value: bytes) -> None:
        violations = self.result.violations
        earlier = self.result.own_votes.setdefault((key, step, round_), value)
        if earlier != value:
            violations.append(f"{key[:1].hex()} {step} twice in round {round_}")
        lock_value, lock_round = self._locks.get(key, (NIL, 0))
        if (step is Step.PREVOTE and value and lock_round and value != lock_value
                and not self._has_pol(value, lock_round, round_)):
            violations.append(f"{key[:1].hex()} locked in round {lock_round} prevoted "
                              f"another value in round {round_} without a POL")
        if step is Step.PRECOMMIT and value:
            self._locks[key] = (value, round_)

    def _final_checks(self) -> None:
        for key, decided in self.result.decisions.items():
            voters = self.sent.get((Step.PRECOMMIT, decided.round), {}).get(decided.value, set())
            if not is_quorum(self._weight(voters), self.total):
                self.result.violations.append(f"{key[:1].hex()} decided without a quorum")

    # -- a chaotic byzantine validator ----------------------------------------

    def _chaos(self, key: bytes, msg: Msg) -> None:
        for round_ in (msg.round, msg.round + 1):
            if (key, round_) in self._chaos_acted:
                continue
            self._chaos_acted.add((key, round_))
            src = (key, 0)
            peers = [k for k in self.keys if k != key]
            if leader(EPOCH, round_, self.config.validators) == key:
                for peer in peers:
                    self._send(src, self._chaos_proposal(key, round_), frozenset({peer}))
            for step in (Step.PREVOTE, Step.PRECOMMIT):
                # Two votes per step, each to a random half: a fork, not a flood.
                self.rng.shuffle(peers)
                half = self.rng.randint(0, len(peers))
                for group in (peers[:half], peers[half:]):
                    vote = Msg(step, key, round_, self._chaos_value())
                    self._record(vote)
                    self._send(src, vote, frozenset(group))

    def _chaos_value(self) -> bytes:
        choice = self.rng.random()
        if choice < 0.3 or not self.originals:
            return NIL
        return self.rng.choice(self.originals)

    def _chaos_proposal(self, key: bytes, round_: int) -> Msg:
        value = hashlib.sha256(b"chaos/%d" % next(self._proposal_count)).digest()
        with_pol = sorted((r, v) for v, rounds in self._pols.items() for r in rounds
                          if r < round_)
        if with_pol and self.rng.random() < 0.5:
            vr, origin = self.rng.choice(with_pol)
            return Msg(Step.PROPOSE, key, round_, value, origin, vr)
        self.originals.append(value)
        if self.rng.random() < 0.3:
            self.unacceptable.add(value)
        return Msg(Step.PROPOSE, key, round_, value)
