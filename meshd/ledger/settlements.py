"""Settled states of the final epochs, and the settlement of any proposed value.

docs/ledger.md §4-§5. This is what judging needs of the store beyond an
entry's prev and deps (:class:`rules.Surroundings`): ``Settled(fin_p)``, the
author's canonical head, and the consensus lookups (own votes, validator
sets, the state root of a proposal's settlement). A precommit is judged by
computing ``Settle(E, value)`` from the proposal's cut, so the settlement of
a value is known before any certificate for it exists; a certificate makes
it final (:meth:`Settlements.decide`).

Memory stays flat however long the node runs: the newest RECENT_STATES
settled states and decisions are kept in memory, everything older in the
:class:`~meshd.ledger.archive.SettlementArchive` on disk (decisions, which
decided cut first held each entry, and a checkpoint state every
CHECKPOINT_EVERY epochs). An older state (an entry built on an old final
epoch, ``rewards explain`` of an old epoch) is recomputed from the checkpoint
below it and a few are cached. A restarted node takes up the archive
(:meth:`Settlements.resume`), then decides again only what the store's
certificates decided after it (:meth:`Settlements.replay`). Everything here
is called from the store's writer thread (while judging) and from trio
(through threads): one lock guards it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from meshcore.genesis import Genesis
from meshcore.ledger import rules
from meshcore.ledger.consensus import Validators
from meshcore.ledger.entry import EntryError, Verified
from meshcore.ledger.rules import Derived
from meshcore.ledger.settle import Settlement, settle
from meshcore.ledger.state import Settled, genesis_state
from meshcore.ledger.stateroot import state_root
from meshd.ledger.archive import SettlementArchive

log = logging.getLogger(__name__)

# Settled states (and decisions) kept in memory behind the newest final one.
# Entries of honest writers build on the newest final epoch or one just
# before it (docs/ledger.md §3.2 rule 4), and consensus entries on E - 1.
RECENT_STATES = 16
OLD_STATES_CACHED = 4  # recomputed older states kept, newest use first


class SettlementUnknown(EntryError):
    """The entry builds on a settlement this node has not computed (yet)."""


@dataclass
class Batch:
    """Entries of the batch being judged, not written yet (they count as stored)."""

    entries: dict[bytes, Verified] = field(default_factory=dict)
    derived: dict[bytes, Derived] = field(default_factory=dict)
    # How many entries of the batch each (author, seq) has: fork checks ask
    # for every entry, and counting by scanning the batch was quadratic.
    at: dict[tuple[bytes, int], int] = field(default_factory=dict)

    def add(self, item: Verified, derived: Derived) -> None:
        self.entries[item.hash] = item
        self.derived[item.hash] = derived
        key = (item.author, item.seq)
        self.at[key] = self.at.get(key, 0) + 1


class StoreReader(Protocol):
    """The store's read side that settlements need (LedgerStore)."""

    def get(self, entry_hash: bytes) -> Verified | None: ...

    def derived(self, entry_hash: bytes) -> Derived | None: ...

    def count_at(self, author: bytes, seq: int) -> int: ...

    def votes(self, author: bytes, kind: str, epoch: int, round_: int) -> list[bytes]: ...


@dataclass(frozen=True)
class Decision:
    """Epoch ``epoch`` is final with ``value`` (first certificate seen: ``certificate``)."""

    epoch: int
    round: int
    value: bytes
    root: bytes
    certificate: bytes
    certificate_author: bytes


class Settlements:
    """See the module docstring. Thread-safe."""

    def __init__(self, genesis: Genesis, archive: SettlementArchive | None = None) -> None:
        """``archive``: where older settlements go (None: an archive in memory)."""
        self.genesis = genesis
        self.plugins = frozenset(p.name for p in genesis.plugins)
        self._lock = threading.RLock()
        self._archive = archive or SettlementArchive(genesis.network_id)
        self._genesis_state = genesis_state(genesis)
        self._final = -1
        self._states: dict[int, Settled] = {-1: self._genesis_state}  # the newest ones
        self._decisions: dict[int, Decision] = {}  # the newest ones
        self._old: OrderedDict[int, Settled] = OrderedDict()  # recomputed, newest use last
        # (epoch, round, value) -> the settlement and its reduced cut: the new
        # part (entries no earlier decided cut holds) and the entries of
        # earlier cuts dated ahead, which decide() records.
        self._computed: dict[tuple[int, int, bytes],
                             tuple[Settlement, dict[bytes, int], frozenset[bytes]]] = {}
        self._store: StoreReader | None = None

    def attach(self, store: StoreReader) -> None:
        self._store = store

    # --- what the rest of the node reads --------------------------------------

    @property
    def final_epoch(self) -> int:
        with self._lock:
            return self._final

    def latest(self) -> Settled:
        with self._lock:
            return self._states[self._final]

    def at(self, epoch: int) -> Settled | None:
        """``Settled(epoch)`` if final here (-1: genesis); an old one may be
        recomputed, which takes up to CHECKPOINT_EVERY settlements: call it
        from a thread, not the trio loop."""
        with self._lock:
            if not -1 <= epoch <= self._final:
                return None
            return self.settled(epoch)

    def epochs_in_memory(self) -> list[int]:
        """The settled states held in memory (genesis and the newest few), ascending."""
        with self._lock:
            return sorted(self._states)

    def decision(self, epoch: int) -> Decision | None:
        with self._lock:
            found = self._decisions.get(epoch)
            if found is None and 0 <= epoch <= self._final:
                row = self._archive.decision(epoch)
                found = Decision(*row) if row else None
            return found

    # --- rules.Surroundings ----------------------------------------------------

    def settled(self, epoch: int) -> Settled:
        with self._lock:
            found = self._states.get(epoch)
            if found is not None:
                return found
            found = self._old.get(epoch)
            if found is not None:
                self._old.move_to_end(epoch)
                return found
            if not -1 <= epoch <= self._final:
                raise SettlementUnknown(f"builds on the settlement of epoch {epoch}, which "
                                        "this node has not computed")
            return self._recompute(epoch)

    def _recompute(self, epoch: int) -> Settled:
        """An old final state, from the nearest state below it that is at hand."""
        known = [e for e in (*self._old, *self._states) if e <= epoch]
        checkpoint = self._archive.checkpoint_epoch_at_or_before(epoch)
        base_epoch = max(known + ([checkpoint] if checkpoint is not None else []))
        if base_epoch == checkpoint and base_epoch not in known:
            state = self._archive.checkpoint_at_or_before(epoch)
            assert state is not None and state.epoch == checkpoint
        else:
            state = self._states.get(base_epoch) or self._old[base_epoch]
        for step in range(base_epoch + 1, epoch + 1):
            state = self._settle_decided(state, step)
        log.debug("old settled state recomputed", extra={"epoch": epoch, "from": base_epoch})
        self._old[epoch] = state
        while len(self._old) > OLD_STATES_CACHED:
            self._old.popitem(last=False)
        return state

    def judge(self, batch: Batch) -> rules.Judge:
        """A judge of every kind, seeing ``batch`` as stored; a valid certificate
        makes its epoch final here."""
        judge = rules.judge_in(_Surroundings(self, batch), self.plugins)

        def judge_entry(item: Verified, prev: Derived | None, deps: list[Derived]) -> Derived:
            derived = judge(item, prev, deps)
            if item.kind == "certificate":
                self.decide(item, batch)
            return derived
        return judge_entry

    def _settle_decided(self, prev: Settled, epoch: int) -> Settled:
        """``Settled(epoch)`` again, from ``prev`` and the recorded decision and cut."""
        decision = self.decision(epoch)
        assert decision is not None, "final epochs have a decision"
        reader = self._reader()
        cut = []
        for entry_hash in self._archive.cut_of(epoch):
            item = reader.get(entry_hash)
            if item is None:
                raise SettlementUnknown(f"an entry of the cut of epoch {epoch} is missing")
            cut.append(item)
        return settle(prev, epoch, decision.round, decision.value, cut).settled

    def resume(self) -> int:
        """At start, before :meth:`replay`: take up the archive's newest decision
        whose certificate the store holds, rebuilding the newest states from the
        checkpoint below it, so that replay settles only what came after. The
        archive is truncated to it; if the state rebuilt does not have the
        recorded root, the archive is dropped and replay settles everything.
        Returns the epoch taken up (-1: none)."""
        reader = self._reader()
        with self._lock:
            newest = self._archive.newest_epoch()
            while newest >= 0:
                row = self._archive.decision(newest)
                if row is not None and reader.get(row[4]) is not None:
                    break
                newest -= 1  # decided while judging, but its certificate was not committed
            self._archive.truncate_after(newest)
            if newest < 0:
                return -1
            self._final = newest
            first = max(0, newest - RECENT_STATES)
            try:
                state = self._recompute(first)
                self._states[first] = state
                for epoch in range(first + 1, newest + 1):
                    state = self._settle_decided(state, epoch)
                    self._states[epoch] = state
                decisions = {e: self.decision(e) for e in range(first, newest + 1)}
                recorded = decisions[newest]
                if recorded is None or state_root(state) != recorded.root:
                    raise SettlementUnknown(f"epoch {newest} rebuilt with another state root")
            except SettlementUnknown as exc:
                log.warning("settlement archive does not match the ledger: settling every "
                            "epoch again", extra={"error": str(exc)})
                self._archive.truncate_after(-1)
                self._states = {-1: self._genesis_state}
                self._decisions.clear()
                self._old.clear()
                self._final = -1
                return -1
            self._decisions.update({e: d for e, d in decisions.items() if d is not None})
            self._old.clear()
        log.info("settlements taken up from the archive", extra={"epoch": newest})
        return newest

    def replay(self, certificates: list[Verified]) -> None:
        """Decide again what the stored certificates decided (at start)."""
        for item in certificates:
            self.decide(item, Batch())

    # --- settlements -------------------------------------------------------------

    def settlement(self, epoch: int, round_: int, value: bytes, batch: Batch) -> Settlement:
        """``Settle(epoch, value)`` as if decided in ``round_`` (cached)."""
        return self._settle(epoch, round_, value, batch)[0]

    def _settle(self, epoch: int, round_: int, value: bytes, batch: Batch,
                ) -> tuple[Settlement, dict[bytes, int], frozenset[bytes]]:
        key = (epoch, round_, value)
        with self._lock:
            found = self._computed.get(key)
            if found is None:
                prev = self.settled(epoch - 1)
                new = self._new_part(value, epoch, batch)
                ahead = self._earlier_dated_ahead(epoch, batch)
                found = (settle(prev, epoch, round_, value, {**ahead, **new}.values()),
                         {h: item.body.epoch for h, item in new.items()},
                         frozenset(ahead) - frozenset(new))
                self._computed[key] = found
            return found

    def root(self, epoch: int, round_: int, value: bytes, batch: Batch | None = None) -> bytes:
        return state_root(self.settlement(epoch, round_, value, batch or Batch()).settled)

    def decide(self, certificate: Verified, batch: Batch) -> Decision:
        """The certificate's epoch is final with its value (it was judged valid)."""
        epoch, round_, value = (certificate.body.certificate.epoch,
                                certificate.body.certificate.round,
                                certificate.body.certificate.value)
        with self._lock:
            known = self.decision(epoch)
            if known is not None:
                if known.value != value:
                    log.error("two certificates for one epoch with different values: the "
                              "validators' safety assumption is broken",
                              extra={"epoch": epoch})
                return known
            result, new, ahead = self._settle(epoch, round_, value, batch)
            decision = Decision(epoch, round_, value, state_root(result.settled),
                                certificate.hash, certificate.author)
            self._archive.add((decision.epoch, decision.round, decision.value, decision.root,
                               decision.certificate, decision.certificate_author),
                              new, ahead, result.settled)
            self._states[epoch] = result.settled
            self._decisions[epoch] = decision
            self._final = max(self._final, epoch)
            for done in [k for k in self._computed if k[0] <= epoch]:
                del self._computed[done]
            self._forget_older_than(self._final - RECENT_STATES)
        log.info("epoch final", extra={"epoch": epoch, "round": round_,
                                       "root": decision.root.hex()[:16]})
        return decision

    def _forget_older_than(self, epoch: int) -> None:
        """Drop states and decisions before ``epoch`` from memory (the archive has them)."""
        for old in [e for e in self._states if -1 < e < epoch]:
            del self._states[old]
        for old in [e for e in self._decisions if e < epoch]:
            del self._decisions[old]

    def _cut_epoch(self, entry_hash: bytes, default: int) -> int:
        found = self._archive.cut_epoch(entry_hash)
        return default if found is None else found

    def _new_part(self, value: bytes, epoch: int, batch: Batch) -> dict[bytes, Verified]:
        """The causal past of proposal ``value`` outside earlier decided cuts.

        With :meth:`_earlier_dated_ahead` it makes the reduced cut, settle()'s
        ``cut`` argument."""
        proposal = _get(self._reader(), value, batch)
        if proposal is None:
            raise SettlementUnknown(f"the proposal {value.hex()[:16]} is not stored")
        found: dict[bytes, Verified] = {}
        frontier = _links(proposal)
        while frontier:
            entry_hash = frontier.pop()
            if entry_hash in found or self._cut_epoch(entry_hash, epoch) < epoch:
                continue
            item = _get(self._reader(), entry_hash, batch)
            if item is None:
                raise SettlementUnknown(f"an entry of the cut of {value.hex()[:16]} is missing")
            found[entry_hash] = item
            frontier.extend(_links(item))
        return found

    def _earlier_dated_ahead(self, epoch: int, batch: Batch) -> dict[bytes, Verified]:
        """Entries of earlier decided cuts with ``body.epoch >= epoch`` (evidence
        that became canonical before its epoch settles)."""
        found: dict[bytes, Verified] = {}
        reader = self._reader()
        # Asked of the archive, not of every stored entry dated >= epoch: at a
        # start that settles a long history again, those are nearly all of
        # them, for every epoch (replay was quadratic: 12 min for 5,000 epochs).
        for entry_hash in self._archive.cut_before_dated_from(epoch):
            item = reader.get(entry_hash)
            if item is not None:
                found[entry_hash] = item
        # The batch being judged counts as stored: an entry of an earlier cut
        # may sit in it, next to the precommit being judged (a node catching
        # up stores a cut, its certificate and the next votes in one batch).
        # Missing it here changed the settlement (seen: a catching-up node
        # refused honest precommits for their "wrong" root).
        for entry_hash, item in batch.entries.items():
            if item.body.epoch >= epoch and self._cut_epoch(entry_hash, epoch) < epoch:
                found.setdefault(entry_hash, item)
        return found

    def _reader(self) -> StoreReader:
        assert self._store is not None, "Settlements.attach(store) first"
        return self._store


class _Surroundings:
    """rules.Surroundings for one batch."""

    def __init__(self, settlements: Settlements, batch: Batch) -> None:
        self._settlements = settlements
        self._batch = batch

    def settled(self, epoch: int) -> Settled:
        return self._settlements.settled(epoch)

    def canon_base(self, item: Verified, settled: Settled) -> Derived | None:
        account = settled.account(item.author)
        if account.canon_seq < 1:
            return None
        reader = self._settlements._reader()
        if not _on_prev_chain(reader, item, account.canon_head, account.canon_seq, self._batch):
            raise EntryError("builds on a branch of its author's chain that lost (its "
                             f"canonical entry at seq {account.canon_seq} is not in its past)",
                             item.hash)
        found = self._batch.derived.get(account.canon_head) \
            or reader.derived(account.canon_head)
        assert found is not None, "a canonical entry is stored"
        return found

    def consensus_past(self, item: Verified, prev: Derived | None) -> _StoredPast:
        return _StoredPast(self._settlements, item, prev, self._batch)


class _StoredPast:
    """meshcore.ledger.consensus_rules.ConsensusPast over the store, for one entry."""

    def __init__(self, settlements: Settlements, item: Verified, prev: Derived | None,
                 batch: Batch) -> None:
        self._settlements = settlements
        self._item = item
        self._prev = prev
        self._batch = batch

    def get(self, entry_hash: bytes) -> Verified | None:
        return _get(self._settlements._reader(), entry_hash, self._batch)

    def own_entry(self, item: Verified, kind: str, epoch: int, round_: int) -> Verified | None:
        reader = self._settlements._reader()
        hashes = reader.votes(item.author, kind, epoch, round_) + [
            h for h, e in self._batch.entries.items()
            if e.author == item.author and _vote_key(e) == (kind, epoch, round_)]
        for entry_hash in hashes:
            found = self.get(entry_hash)
            if found is not None and found.seq < item.seq and _on_prev_chain(
                    reader, item, found.hash, found.seq, self._batch):
                return found
        return None

    def last_round(self, item: Verified, kind: str) -> tuple[int, int] | None:
        return self._prev.last_round(kind) if self._prev is not None else None

    def validators(self, epoch: int) -> Validators:
        # Asked only for epoch <= fin_p + 1, and Settled(fin_p) holds V(fin_p + 1).
        return self._settlements.settled(epoch - 1).validators_of(epoch)

    def state_root_of(self, epoch: int, value: bytes) -> bytes:
        # The root encodes the decided round: the precommit's own round is the
        # one its quorum would decide in.
        round_ = self._item.body.precommit.round
        return self._settlements.root(epoch, round_, value, self._batch)


def _vote_key(item: Verified) -> tuple[str, int, int] | None:
    """(kind, epoch, round) of a proposal, vote or close (round 0)."""
    kind = item.kind
    if kind in ("proposal", "prevote", "precommit"):
        vote = getattr(item.body, kind)
        return kind, vote.epoch, vote.round
    if kind == "close":
        return kind, item.body.close.epoch, 0
    return None


def _links(item: Verified) -> list[bytes]:
    return ([item.body.prev] if item.body.prev else []) + list(item.body.deps)


def _get(reader: StoreReader, entry_hash: bytes, batch: Batch) -> Verified | None:
    return batch.entries.get(entry_hash) or reader.get(entry_hash)


def _on_prev_chain(reader: StoreReader, item: Verified, ancestor: bytes, seq: int,
                   batch: Batch) -> bool:
    """Whether ``ancestor`` (of ``item``'s author, at ``seq``) is on ``item``'s prev-chain."""
    if seq >= item.seq:
        return False
    in_batch = batch.at.get((item.author, seq), 0)
    if reader.count_at(item.author, seq) + in_batch == 1:
        # No fork at that seq: the chain passes through the one entry there.
        return _get(reader, ancestor, batch) is not None
    cursor: Verified | None = item
    while cursor is not None and cursor.seq > seq:
        cursor = _get(reader, cursor.body.prev, batch) if cursor.body.prev else None
    return cursor is not None and cursor.hash == ancestor

