"""This node's ledger: its own chain, the store, settled states and balances.

Own entries are written one at a time (an author's chain is linear), judged
against their causal past before they are stored, and acknowledged only once
durable (GroupCommitter). After a restart, writes wait for the own-chain check
(meshd/ledger/own_chain.py). Replication (replication.py) and settlement
(settlement_driver.py) are services of their own, started by meshd/daemon.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.genesis import Genesis
from meshcore.ledger import accounts, evidence_rules, rules
from meshcore.ledger import entry as entries
from meshcore.ledger.constants import UNBONDING_EPOCHS
from meshcore.ledger.entry import Verified
from meshcore.ledger.state import Settled
from meshd import errors
from meshd.ledger import queries
from meshd.ledger.archive import SettlementArchive
from meshd.ledger.committer import GroupCommitter
from meshd.ledger.settlements import Decision, Settlements
from meshd.ledger.standing import Standings
from meshd.ledger.store import BadEntry, LedgerStore, heads_digest
from meshd.plugin.api import LedgerStanding

log = logging.getLogger(__name__)

MAX_AMOUNT = 2**64 - 1
MAX_HISTORY = 1000
# Kinds whose effect depends on the epoch they claim: evidence counts only in
# the settlement of its own epoch, a vote only within its proposal's period.
# Dated back into an epoch the network has already settled, such an entry
# would be stored and count nothing, so it is refused instead (docs/ledger.md §11).
EPOCH_BOUND_KINDS = {"attestation": "uptime attestation", "task_receipt": "task receipt",
                     "gov_vote": "vote"}
# How soon a node that is behind has usually caught up: anti-entropy syncs
# with a random member every 10 s (meshd/ledger/replication.py SYNC_INTERVAL).
CATCH_UP_SECONDS = 10
# How long an own write waits for the start-up check of this node's chain
# against its peers' (see Ledger.own_chain_checked) before it is refused.
OWN_CHAIN_WAIT = 15.0


@dataclass(frozen=True)
class Balance:
    account: str
    settled: int
    pending_out: int
    pending_in: int
    available: int
    bonded: int


class Ledger:
    """Lives on the trio loop; the store's blocking calls go through a thread."""

    def __init__(self, store: LedgerStore, committer: GroupCommitter, seed: bytes,
                 genesis: Genesis, settlements: Settlements,
                 clock: Callable[[], float] = time.time, *,
                 check_own_chain: bool = False, standings: Standings | None = None) -> None:
        """``check_own_chain``: write nothing until :meth:`own_chain_checked`
        (the replicator calls it once a peer has shown what it knows of this
        node's chain). ``standings``: the accounts' track records, which
        standing.StandingIndexer folds in (default: in memory)."""
        self.store = store
        self.standings = standings or Standings(Path(":memory:"), genesis.network_id)
        self.committer = committer
        self._seed = seed
        self.genesis = genesis
        self.network_id = genesis.network_id  # a property that hashes the genesis
        self.settlements = settlements
        self._clock = clock
        self.key = entries.public_key(seed)
        self._head: tuple[Verified, rules.Derived] | None = None
        # Set when an own entry newer than _head was stored by another path
        # (sync brought back what a restored data directory lacked).
        self._head_stale = False
        self._appending: set[bytes] = set()  # the own entries _append is storing now
        self._writing = trio.Lock()
        self._finality = trio.Event()  # set, and replaced, when an epoch becomes final
        self._announced_final = settlements.final_epoch
        self.entries_stored = 0  # entries newly stored since start (own and peers'): metrics
        self._own_chain = trio.Event()
        self._own_chain_problem = ""
        # entry hash -> the events of stored_within's callers, set once it is stored
        self._awaited: dict[bytes, set[trio.Event]] = {}
        if not check_own_chain:
            self._own_chain.set()

    def on_stored(self, stored: list[Verified]) -> None:
        """The committer's listener (open_ledger): what a commit newly stored."""
        self.entries_stored += len(stored)
        if self._awaited:
            for item in stored:
                for arrived in self._awaited.pop(item.hash, ()):
                    arrived.set()
        if self.settlements.final_epoch != self._announced_final:
            self._announced_final = self.settlements.final_epoch
            self._finality.set()
            self._finality = trio.Event()
        head_seq = self._head[0].seq if self._head else 0
        # _append's own entry is stored before _head moves to it: not stale.
        if any(i.author == self.key and i.seq > head_seq and i.hash not in self._appending
               for i in stored):
            self._head_stale = True

    async def load_own_chain(self) -> None:
        """Find this node's newest stored entry and its running sums."""
        newest = await trio.to_thread.run_sync(self.store.latest_by_author, self.key, 1)
        if not newest:
            self._head = None
            return
        derived = await trio.to_thread.run_sync(self.store.derived, newest[0].hash)
        assert derived is not None, "the store keeps derived values of every entry"
        self._head = (newest[0], derived)

    # --- the start-up check of the own chain ------------------------------------

    def own_chain_checked(self, peers: int = 0) -> None:
        """Let own writes go on: this node holds the newest own entry that the
        ``peers`` who answered know (meshd/ledger/own_chain.py says who must).

        A data directory restored from an old copy lacks the node's newest
        entries; writing before fetching them back would sign a second entry
        for a seq its peers hold already: an equivocation, slashed 50 % and
        jailed for ever (docs/ledger.md §7, §9)."""
        if not self._own_chain.is_set():
            log.info("own chain checked against peers: writing", extra={
                "seq": self._head[0].seq if self._head else 0, "peers": peers})
        self._own_chain_problem = ""
        self._own_chain.set()

    def own_chain_behind(self, problem: str) -> None:
        """Keep own writes refused, saying why (the check found a newer own
        entry this node could not fetch yet)."""
        if not self._own_chain.is_set():
            self._own_chain_problem = problem

    @property
    def own_chain_problem(self) -> str:
        """Why own writes are still refused ("" once they go on)."""
        return self._own_chain_problem

    @property
    def writing_allowed(self) -> bool:
        return self._own_chain.is_set()

    async def own_chain_ready(self) -> None:
        """Return once own writes go on (the start-up check passed)."""
        await self._own_chain.wait()

    async def _wait_own_chain(self) -> None:
        with trio.move_on_after(OWN_CHAIN_WAIT):
            await self._own_chain.wait()
        if not self._own_chain.is_set():
            raise errors.Unavailable(
                "this node has not yet checked its own chain against its peers' "
                f"({self._own_chain_problem or 'no peer has answered since it started'}); "
                "writing before that could fork its chain if this data directory was "
                f"restored from an old copy; retry in {CATCH_UP_SECONDS} s")

    # --- writing ----------------------------------------------------------------

    async def transfer(self, to: str, amount: int, memo: str = "") -> Verified:
        recipient = _account(to, "recipient")
        if not 1 <= amount <= MAX_AMOUNT:
            raise errors.InvalidArgument(f"amount must be 1 to {MAX_AMOUNT} base units")
        if recipient == self.key:
            raise errors.InvalidArgument("a transfer to this node's own account")
        if len(memo.encode()) > rules.MEMO_MAX_BYTES:
            raise errors.InvalidArgument(f"memo over {rules.MEMO_MAX_BYTES} bytes")
        return await self._append(transfer=ledger_pb2.Transfer(to=recipient, amount=amount,
                                                               memo=memo))

    async def stake(self, amount: int) -> Verified:
        """Bond ``amount`` of this node's available balance (bonded once settled)."""
        _check_amount(amount)
        return await self._append(stake=ledger_pb2.Stake(amount=amount))

    async def unstake(self, amount: int) -> Verified:
        """Start unbonding ``amount`` of this node's stake (settled or pending)."""
        _check_amount(amount)
        try:
            return await self._append(unstake=ledger_pb2.Unstake(amount=amount))
        except errors.FailedPrecondition as exc:
            s = await self.stake_balance()
            raise errors.FailedPrecondition(
                f"{exc}; this node can unstake at most {s.unstakable} now (bonded {s.bonded} + "
                f"pending stake {s.pending_stake} - pending unstake {s.pending_unstake}); "
                "see 'meshctl ledger balance'") from None

    async def withdraw(self, amount: int) -> Verified:
        """Move ``amount`` of matured unbonded stake back to the available balance."""
        _check_amount(amount)
        try:
            return await self._append(withdraw=ledger_pb2.Withdraw(amount=amount))
        except errors.FailedPrecondition as exc:
            s = await self.stake_balance()
            raise errors.FailedPrecondition(
                f"{exc}; this node can withdraw {s.withdrawable} now ({s.unbonding} still "
                f"unbonding; an unstaked lot matures {UNBONDING_EPOCHS} epochs after the "
                "settlement that applies the unstake)") from None

    @property
    def settled(self) -> Settled:
        """The state after the newest final settlement this node knows."""
        return self.settlements.latest()

    async def write(self, deps: Iterable[bytes] = (), at_epoch: int | None = None,
                    **kind: object) -> Verified:
        """Append an own entry of ``kind`` naming ``deps`` (other authors' entries),
        once durable. The newest certificate is named too, so the entry builds on
        the newest final settlement (docs/ledger.md §3.2 rule 4). ``at_epoch``:
        the epoch the entry claims (default: the clock's, within what is allowed).

        Raises:
            errors.FailedPrecondition: the entry breaks a rule (the message says which).
        """
        return await self._append(deps, at_epoch, **kind)

    async def write_many(self, kinds: Sequence[Mapping[str, object]],
                         at_epoch: int | None = None) -> list[Verified | errors.FailedPrecondition]:
        """Append own entries of ``kinds`` (each as :meth:`write`'s keywords), chained
        in this order, in one durable commit: one fsync for all (a task's k receipts).
        Per entry: the stored entry, or why it was not stored (an entry after one
        that was not is not either)."""
        return await self._append_chain((), at_epoch, kinds)

    async def _append(self, deps: Iterable[bytes] = (), at_epoch: int | None = None,
                      **kind: object) -> Verified:
        (result,) = await self._append_chain(deps, at_epoch, [kind])
        if isinstance(result, errors.FailedPrecondition):
            raise result
        return result

    async def _append_chain(self, deps: Iterable[bytes], at_epoch: int | None,
                            kinds: Sequence[Mapping[str, object]],
                            ) -> list[Verified | errors.FailedPrecondition]:
        await self._wait_own_chain()
        async with self._writing:
            if self._head_stale:
                self._head_stale = False
                await self.load_own_chain()
            head = self._head
            named = set(deps)
            decision = self.settlements.decision(self.settlements.final_epoch)
            if decision is not None and (head is None or head[1].fin < decision.epoch) \
                    and decision.certificate_author != self.key:
                named.add(decision.certificate)
            if at_epoch is None:
                bound = [EPOCH_BOUND_KINDS[k] for kind in kinds for k in kind
                         if k in EPOCH_BOUND_KINDS]
                at_epoch = self._epoch(head, bound=bound[0] if bound else "")
            seq, prev = (head[0].seq, head[0].hash) if head else (0, b"")
            items: list[Verified] = []
            for kind in kinds:
                body = ledger_pb2.EntryBody(
                    network_id=self.network_id, author=self.key, seq=seq + 1, prev=prev,
                    deps=sorted(named) if not items else [], epoch=at_epoch,
                    **kind)  # type: ignore[arg-type]
                items.append(entries.verify(entries.sign(self._seed, body), self.network_id))
                seq, prev = items[-1].seq, items[-1].hash
            self._appending = {item.hash for item in items}
            try:
                problems = await self.committer.append_many(items)
            finally:
                self._appending = set()
            results: list[Verified | errors.FailedPrecondition] = [
                item if problem is None else errors.FailedPrecondition(str(problem))
                for item, problem in zip(items, problems, strict=True)]
            stored = [item for item, problem in zip(items, problems, strict=True)
                      if problem is None]
            if stored:
                derived = await trio.to_thread.run_sync(self.store.derived, stored[-1].hash)
                assert derived is not None, "the store keeps derived values of every entry"
                self._head = (stored[-1], derived)
            return results

    def entry_epoch(self, *, strict: bool = True) -> int:
        """The epoch an own evidence entry written now would claim (what task
        claims name). ``strict=False``: the epoch it may claim even when a
        receipt of it could not count (see :meth:`_epoch`).

        Raises:
            errors.Unavailable: (strict) this node is too far behind the
                network's settlements to date an entry with the clock's epoch.
        """
        return self._epoch(self._head, bound="task receipt" if strict else "")

    def sign_claim(self, claim: bytes) -> bytes:
        """This node's signature over a task claim, as its provider (docs/ledger.md §3.2)."""
        return evidence_rules.sign_claim(self._seed, claim)

    def clock_epoch(self) -> int:
        """The epoch the clock is in (docs/ledger.md §1: epochs from genesis_time)."""
        started = self.genesis.genesis_time.timestamp()
        return max(0, int((self._clock() - started) // self.genesis.rewards.epoch_seconds))

    def _epoch(self, head: tuple[Verified, rules.Derived] | None, *, bound: str) -> int:
        """The epoch of an own entry after ``head``: the clock's, clamped into
        what the entry's past allows (§3.2 rule 4). Its past names the newest
        certificate this node stores (see _append), so its ``fin`` is the
        newest final epoch known here.

        An entry may claim at most ``fin + MAX_EPOCH_AHEAD``. When the clock is
        further ahead (this node restarted and has not caught up with the
        settlements it missed, or the network's settlement stalled), an entry
        of a ``bound`` kind (named as in EPOCH_BOUND_KINDS; "" for others) is
        refused rather than dated back into a past epoch where it would count
        nothing.
        """
        fin = max(self.settlements.final_epoch, head[1].fin if head else -1)
        clock = self.clock_epoch()
        highest = fin + rules.MAX_EPOCH_AHEAD
        if bound and clock > highest:
            raise errors.Unavailable(
                f"settlement catching up: this node knows epochs up to {fin} as final and "
                f"the clock is in epoch {clock}, so a {bound} written now "
                f"would be dated epoch {highest} at the latest and count nothing; retry in "
                f"{CATCH_UP_SECONDS} s (if this persists, see 'meshctl status': this node may "
                "have no peers, or the validators no quorum)")
        lowest = max(fin + 1, head[1].epoch if head else 0)
        return min(max(clock, lowest), highest)

    # --- reading ----------------------------------------------------------------

    @property
    def final_epoch(self) -> int:
        """The newest epoch this node knows to be final (-1: none yet)."""
        return self.settlements.final_epoch

    async def next_final(self, after: int) -> int:
        """Wait until an epoch after ``after`` is final on this node; the newest final epoch."""
        while self.final_epoch <= after:
            await self._finality.wait()
        return self.final_epoch

    def settled_at(self, epoch: int) -> Settled | None:
        """``Settled(epoch)`` if this node knows that epoch final (-1: genesis).
        Blocks while an old state is recomputed: on trio, use :meth:`_final_settled`."""
        return self.settlements.at(epoch)

    async def _final_settled(self, epoch: int | None, what: str, *,
                             genesis_ok: bool = False) -> Settled:
        """queries.final_settled, with an old state recomputed in a thread."""
        final = self.final_epoch
        wanted = final if epoch is None else epoch
        found = await trio.to_thread.run_sync(self.settlements.at, wanted)
        return queries.final_settled(final, lambda e: found if e == wanted else None, epoch,
                                     what, genesis_ok=genesis_ok)

    async def balance(self, account: str = "") -> Balance:
        """``account``'s view: settled liquid, plus what is not canonical yet (the
        author's own debits count at once, credits once settled)."""
        key = _account(account, "account") if account else self.key
        settled = self.settled
        mine = settled.account(key)
        own = await trio.to_thread.run_sync(self.store.by_author, key, mine.canon_seq,
                                            MAX_HISTORY * 100)
        incoming = await trio.to_thread.run_sync(self.store.about, key, MAX_HISTORY * 100)
        out = sum(_amount(e) for e in own if e.kind in rules.DEBIT_KINDS)
        withdrawn = sum(_amount(e) for e in own if e.kind == "withdraw")
        pending_in = sum(e.body.transfer.amount for e in incoming
                         if e.kind == "transfer" and e.seq > settled.account(e.author).canon_seq)
        return Balance(accounts.peer_id_of(key), mine.liquid, out, pending_in,
                       mine.liquid + withdrawn - out, mine.bonded)

    async def own_unsettled(self, kind: str, settled: Settled) -> list[Verified]:
        """This node's entries of ``kind`` not canonical in ``settled``.

        The caller passes the settled state it reads the rest of its answer
        from: reading the newest one here again could skip an entry that
        became canonical in between (shown by neither)."""
        canon_seq = settled.account(self.key).canon_seq
        own = await trio.to_thread.run_sync(self.store.by_author, self.key, canon_seq,
                                            MAX_HISTORY)
        return [item for item in own if item.kind == kind]

    async def history(self, account: str = "", limit: int = 50) -> list[Verified]:
        if not 1 <= limit <= MAX_HISTORY:
            raise errors.InvalidArgument(f"limit must be 1 to {MAX_HISTORY}")
        key = _account(account, "account") if account else self.key
        own = await trio.to_thread.run_sync(self.store.latest_by_author, key, limit)
        incoming = await trio.to_thread.run_sync(self.store.about, key, limit)
        merged = own + incoming
        merged.sort(key=lambda e: e.body.epoch, reverse=True)  # stable: own first in an epoch
        return merged[:limit]

    async def verify(self) -> tuple[int, BadEntry | None]:
        return await trio.to_thread.run_sync(self.store.verify)

    async def stake_balance(self, account: str = "") -> queries.StakeBalance:
        """The stake side of ``account``'s balance (default: this node's)."""
        key = _account(account, "account") if account else self.key
        settled = self.settled
        canon_head = settled.account(key).canon_head

        def chain_sums() -> tuple[rules.Derived | None, rules.Derived | None]:
            newest = self.store.latest_by_author(key, 1)
            head = self.store.derived(newest[0].hash) if newest else None
            return head, self.store.derived(canon_head) if canon_head else None

        head, canon = await trio.to_thread.run_sync(chain_sums)
        return queries.stake_balance(settled, key, head, canon)

    async def state_root(self, epoch: int | None = None,
                         account: str = "") -> queries.StateRootInfo:
        """The state root of ``epoch`` (None: the newest final; -1 has an empty root),
        with the heads digest of the stored set and, given ``account``, how far its
        chain is canonical in that settlement and stored here (to tell whether an
        entry has taken effect, and whether nodes hold the same entries)."""
        key = _account(account, "account") if account else None
        settled = await self._final_settled(epoch, "state root", genesis_ok=True)

        def stored() -> tuple[bytes, int]:
            return heads_digest(self.store.heads()), self.store.last_seq(key) if key else 0

        digest, stored_seq = await trio.to_thread.run_sync(stored)
        info = queries.state_root_info(settled)
        return dataclasses.replace(
            info, canonical_seq=settled.account(key).canon_seq if key else 0,
            stored_seq=stored_seq, heads_digest=digest)

    async def stored_within(self, entry_hash: bytes, seconds: float) -> Verified | None:
        """The stored entry ``entry_hash``, waiting up to ``seconds`` for it to be
        stored (replication brings a peer's new entry); None if it is not by then."""
        arrived = trio.Event()
        self._awaited.setdefault(entry_hash, set()).add(arrived)  # before looking: no gap
        try:
            item = await trio.to_thread.run_sync(self.store.get, entry_hash)
            if item is None:
                with trio.move_on_after(seconds):
                    await arrived.wait()
                    item = await trio.to_thread.run_sync(self.store.get, entry_hash)
            return item
        finally:
            waiting = self._awaited.get(entry_hash)
            if waiting is not None:
                waiting.discard(arrived)
                if not waiting:
                    del self._awaited[entry_hash]

    async def entry(self, entry_hash: str) -> tuple[Verified, bool, int]:
        """The stored entry of hex hash ``entry_hash``, whether it is canonical in
        the newest final settlement, and that settlement's epoch.

        Raises:
            errors.InvalidArgument: not 64 hex digits.
            errors.NotFound: this node does not store it.
        """
        try:
            wanted = bytes.fromhex(entry_hash)
        except ValueError:
            wanted = b""
        if len(wanted) != entries.HASH_BYTES:
            raise errors.InvalidArgument(f"an entry hash is 64 hex digits, got {entry_hash!r}")
        settled = self.settled

        def look() -> tuple[Verified | None, bool]:
            item = self.store.get(wanted)
            if item is None:
                return None, False
            account = settled.account(item.author)
            if item.seq > account.canon_seq:
                return item, False
            branch, _ = self.store.chain(account.canon_head, item.seq, 1, 1)
            return item, bool(branch) and entries.decode_stored(branch[0]).hash == item.hash

        item, canonical = await trio.to_thread.run_sync(look)
        if item is None:
            raise errors.NotFound(f"this node stores no entry {entry_hash.lower()}")
        return item, canonical, settled.epoch

    async def watch_settlements(self, from_epoch: int | None = None,
                                ) -> AsyncGenerator[queries.FinalSettlement, None]:
        """Every final settlement from ``from_epoch`` (None: the newest final
        one; before any, epoch 0) in epoch order, then each new one as this
        node learns it; forever. A slow reader gets every epoch, late."""
        if from_epoch is not None and from_epoch < 0:
            raise errors.InvalidArgument(f"from_epoch must be 0 or more, got {from_epoch}")
        epoch = max(0, self.final_epoch if from_epoch is None else from_epoch)
        while True:
            finality = self._finality
            while epoch <= self.final_epoch:
                settled, decision = await trio.to_thread.run_sync(self._settled_and_decided,
                                                                  epoch)
                assert settled is not None and decision is not None, "final epochs are kept"
                yield queries.final_settlement(settled, decision.root)
                epoch += 1
            await finality.wait()

    def _settled_and_decided(self, epoch: int) -> tuple[Settled | None, Decision | None]:
        return self.settlements.at(epoch), self.settlements.decision(epoch)

    async def rewards(self, epoch: int | None = None) -> queries.Rewards:
        """What the settlement of ``epoch`` (None: the newest final) minted, per account."""
        return queries.rewards(await self._final_settled(epoch, "rewards"))

    async def explain_rewards(self, epoch: int, account: str = "",
                              short: bool = True) -> queries.Explanation:
        """``rewards explain``: the record of ``epoch``'s settlement (docs/ledger.md §6.5)."""
        if account:
            _account(account, "account")  # a bad peer ID before a missing epoch
        return queries.explanation(await self._final_settled(epoch, "rewards to explain"),
                                   account, short=short)

    async def standing(self, account: str = "") -> LedgerStanding:
        """``account``'s track record in the final settlements (standing.py)."""
        peer_id = account or accounts.peer_id_of(self.key)
        _account(peer_id, "account")
        return await trio.to_thread.run_sync(self.standings.of, peer_id)

    async def validators(self) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
        """The newest final epoch E, V(E + 1) and V(E + 2): (peer ID, weight) each."""
        settled = self.settled

        def named(validators: tuple[tuple[bytes, int], ...]) -> list[tuple[str, int]]:
            return [(accounts.peer_id_of(key), weight) for key, weight in validators]

        return settled.epoch, named(settled.validators), named(settled.validators_after)

    async def token_info(self) -> queries.TokenInfo:
        """The token as of the newest final settlement (before the first: genesis)."""
        return queries.token_info(self.genesis, self.settled)


def _check_amount(amount: int) -> None:
    if not 1 <= amount <= MAX_AMOUNT:
        raise errors.InvalidArgument(f"amount must be 1 to {MAX_AMOUNT} base units")


def _amount(item: Verified) -> int:
    if item.kind == "gov_proposal":
        return int(item.body.gov_proposal.deposit)
    return int(getattr(item.body, item.kind).amount)


def _account(peer_id: str, what: str) -> bytes:
    try:
        return accounts.key_of(peer_id)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{what}: {exc}") from None


@contextlib.asynccontextmanager
async def open_ledger(data_dir: Path, seed: bytes, genesis: Genesis, *,
                      check_own_chain: bool = False,
                      clock: Callable[[], float] = time.time) -> AsyncIterator[Ledger]:
    """Open the store in ``data_dir``, run its committer, load this node's chain.
    ``check_own_chain``: see :class:`Ledger`; ``clock``: what dates own entries
    (a faster one in soaks)."""
    archive = await trio.to_thread.run_sync(SettlementArchive.in_dir, data_dir,
                                            genesis.network_id)
    settlements = Settlements(genesis, archive)
    store = await trio.to_thread.run_sync(LedgerStore.in_dir, data_dir, genesis.network_id,
                                          settlements)
    standings = await trio.to_thread.run_sync(Standings.in_dir, data_dir, genesis.network_id)
    try:
        await trio.to_thread.run_sync(settlements.resume)
        await trio.to_thread.run_sync(lambda: settlements.replay(store.certificates()))
        committer = GroupCommitter(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            ledger = Ledger(store, committer, seed, genesis, settlements, clock,
                            check_own_chain=check_own_chain, standings=standings)
            with committer.listening(ledger.on_stored):
                await ledger.load_own_chain()
                yield ledger
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        archive.close()
        standings.close()
