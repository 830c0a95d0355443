"""Ledger replication: gossip of new entries and anti-entropy sync (docs/ledger.md §8).

This is the asking side; meshd/ledger/sync_server.py answers other nodes'
syncs.

Gossip is store-then-forward: an entry another node sends is verified and
judged against the stored past, stored durably, and only then published by
this node (in batches, on ``ledger/entries/1``). So this node never forwards
an invalid entry, and the peer that sent one is scored down (meshd/ledger/
sender_scores.py). What this node writes or stores from gossip is published once;
what it fetched by sync is not. Republishing fetched entries turned every
catch-up into a flood: after a partition, each node pushed the other side's
entries to peers that were fetching the same entries by their own sync, and
each copy was verified again (a node joining after a 10,000-entry heal
received 20,000 entries by gossip beside the 10,000 it synced). A peer that
lacks them learns it anyway: the next gossiped entry whose past it lacks
makes it sync with the sender (:meth:`Replicator.admit`), as does its timer.

Anti-entropy runs with every newly admitted member and with a random member
every SYNC_INTERVAL: compare heads digests; when they differ, fetch the
ranges of the chains the peer is ahead on and the missing deps by hash, then
append everything in causal order. Entries whose past is still missing wait
in the :class:`WaitingRoom` and are retried when it is stored.

Syncs after a start are also the start-up check of this node's own chain
(docs/ledger.md §9): until every connected peer has answered (or failed to),
none knows an own entry this node lacks, and either an epoch that ended
after the start is final here or peers holding a quorum of validator weight
have answered (the rules are in meshd/ledger/own_chain.py), the ledger writes
nothing (``Ledger.own_chain_checked``). While it waits, it syncs with every
member that has not answered yet, validators first. A node with nobody to ask
(``own_chain_grace`` seconds without a member, and no answer ever; 0 for a
lone founder's node) writes after a warning.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import sync_pb2
from meshcore.ledger import entry as entries
from meshcore.ledger.entry import HASH_BYTES, KEY_BYTES, EntryError, Verified
from meshcore.ledger.rules import Unsupported
from meshcore.ledger.state import ValidatorSet
from meshd import errors
from meshd.ledger.awaiting_past import WaitingRoom
from meshd.ledger.intake import GossipIntake
from meshd.ledger.ledger import Ledger
from meshd.ledger.own_chain import OwnChainCheck
from meshd.ledger.sender_scores import (
    BLOCK_SECONDS,
    INVALID_ENTRY_COST,
    PROTOCOL_BREACH_COST,
    SenderScores,
)
from meshd.ledger.settlements import SettlementUnknown
from meshd.ledger.store import Head, PastMissing, heads_digest
from meshd.ledger.sync_server import GET, GET_HASHES, HEADS, HEADS_PAGE, RANGE
from meshd.p2p.host import P2PHost
from meshd.p2p.pubsub import Subscription

log = logging.getLogger(__name__)

TOPIC = "ledger/entries/1"
MAX_RESPONSE = 4 << 20
REQUEST_TIMEOUT = 10.0
GOSSIP_BATCH_ENTRIES = 64  # entries per gossip message ...
GOSSIP_BATCH_BYTES = 256 << 10  # ... and bytes (the gossip limit is 1 MiB)
SYNC_INTERVAL = 10.0  # with a random member, +-20 %
OWN_CHAIN_GRACE = 10.0  # without any member to ask, own writes start after this
OWN_CHAIN_ASK_EVERY = 2.0  # while the own-chain check waits: sync with unanswered members
SYNC_MAX_ENTRIES = 50_000  # fetched per sync; the rest comes with the next one
SYNC_GET_ROUNDS = 16  # rounds of fetching missing deps by hash per sync
APPEND_CHUNK = 2048  # entries handed to the committer at once during a sync
INTAKE_QUEUE = 1024  # gossip messages waiting to be checked; beyond it they are dropped
PUBLISH_QUEUE = 65536  # stored entries waiting to be published
RECENT = 65536  # hashes remembered as stored, to skip gossip duplicates cheaply


@dataclass
class ReplicationCounters:
    received: int = 0  # entries from gossip and sync
    stored: int = 0  # newly stored, from anywhere
    invalid: int = 0
    unsupported: int = 0
    waiting: int = 0  # entries that went to wait for their past
    intake_dropped: int = 0  # gossip messages dropped: the intake queue was full
    published: int = 0
    publish_dropped: int = 0
    syncs: int = 0
    syncs_failed: int = 0
    synced: int = 0  # entries fetched by sync
    blocked: int = 0  # peers blocked for their score


class Replicator:
    """Replicates ``ledger`` over ``p2p``; lives on the trio loop, see :meth:`run`."""

    def __init__(self, ledger: Ledger, p2p: P2PHost, *,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 sync_interval: float = SYNC_INTERVAL, gossip: bool = True,
                 own_chain_grace: float = OWN_CHAIN_GRACE) -> None:
        """``gossip=False`` replicates by sync alone (tests of sync use it).
        ``own_chain_grace``: see the module docstring."""
        self._ledger = ledger
        self._store = ledger.store
        self._p2p = p2p
        self._clock = clock
        self._rng = rng or random.Random()
        self._sync_interval = sync_interval
        self._gossip = gossip
        self._own_chain_grace = own_chain_grace
        self._own_chain = OwnChainCheck(ledger.key, start_epoch=ledger.clock_epoch(),
                                        fresh=not ledger.store.heads(limit=1))
        self._own_chain_said = ""  # the last reason logged, numbers masked
        self.scores = SenderScores()
        self.waiting = WaitingRoom()
        self.counters = ReplicationCounters()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._intake_send, self._intake_receive = trio.open_memory_channel[
            tuple[str, bytes]](INTAKE_QUEUE)
        self._publish_send, self._publish_receive = trio.open_memory_channel[
            Verified](PUBLISH_QUEUE)
        self._sync_send, self._sync_receive = trio.open_memory_channel[str](256)
        self._sync_queued: set[str] = set()
        self._fetched: set[bytes] = set()  # being appended by a sync: not to publish
        self._network_id = ledger.genesis.network_id  # a property that hashes the genesis
        self._nursery: trio.Nursery | None = None
        self.intake = GossipIntake(
            ledger.committer, self._network_id, stored_lately=self._recent,
            penalise=lambda sender, why: self._penalise(sender, INVALID_ENTRY_COST, why),
            admitted=self._admitted, counters=self.counters)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        with self._ledger.committer.listening(self._on_stored):
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        broadcast, membership = self._p2p.broadcast, self._p2p.membership
        async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
            self._nursery = nursery
            if self._gossip:
                own_echoes = await stack.enter_async_context(
                    broadcast.open_subscription(TOPIC))
                broadcast.set_relay(TOPIC, self._on_gossip)
                nursery.start_soon(self._drain, own_echoes)
                nursery.start_soon(self.intake.run, self._intake_receive)
                nursery.start_soon(self._publisher)
            nursery.start_soon(self._sync_worker)
            nursery.start_soon(self._sync_timer)
            nursery.start_soon(self._own_chain_watch)
            with membership.admission_listener(self.request_sync):
                for peer in membership.peers():
                    self.request_sync(peer.peer_id)
                task_status.started()
                await trio.sleep_forever()

    def request_sync(self, peer_id: str) -> None:
        """Sync with ``peer_id`` soon; once, however often asked before it starts."""
        if peer_id in self._sync_queued:
            return
        with contextlib.suppress(trio.WouldBlock):
            self._sync_send.send_nowait(peer_id)
            self._sync_queued.add(peer_id)

    # --- gossip in --------------------------------------------------------------

    def _on_gossip(self, sender: str, data: bytes) -> None:
        try:
            self._intake_send.send_nowait((sender, data))
        except trio.WouldBlock:
            self.counters.intake_dropped += 1  # anti-entropy brings them back

    async def _check(self, raw: bytes, sender: str) -> Verified | None:
        """``raw`` verified by itself, or None (the sender pays if it is bad)."""
        self.counters.received += 1
        try:
            return entries.verify(raw, self._network_id)
        except EntryError as exc:
            self.counters.invalid += 1
            await self._penalise(sender, INVALID_ENTRY_COST, f"sent an invalid entry: {exc}")
            return None

    async def admit(self, items: list[Verified], sender: str) -> None:
        """Append verified ``items`` (in causal order where they depend on each
        other); those missing their past wait; invalid ones cost ``sender``."""
        await self._admitted(items, await self._ledger.committer.append_many(items), sender)

    async def _admitted(self, items: list[Verified], results: list[EntryError | None],
                        sender: str) -> None:
        """What the store said of ``items``: those missing their past wait;
        invalid ones cost ``sender``."""
        missing: set[bytes] = set()
        for item, error in zip(items, results, strict=True):
            if error is None:
                continue
            if isinstance(error, PastMissing):
                self.counters.waiting += 1
                self.waiting.add(item, sender, error.hashes, self._clock())
                missing.update(error.hashes)
                # The sender has the past: one sync brings all of it in causal
                # order (fetching by hash per entry stormed after a partition).
                self.request_sync(sender)
            elif isinstance(error, (Unsupported, SettlementUnknown)):
                # A newer node's kind, or a settlement not computed here yet:
                # not the sender's fault; anti-entropy offers it again.
                self.counters.unsupported += 1
            else:
                self.counters.invalid += 1
                await self._penalise(sender, INVALID_ENTRY_COST,
                                     f"sent an entry that breaks a rule: {error}")
        if missing:
            # A past stored by a commit that was told to the listeners before
            # these results were read (the intake has many messages in flight)
            # would otherwise leave them waiting: retry them now.
            stored = await trio.to_thread.run_sync(self._store.known, sorted(missing))
            retry = [w for entry_hash in stored for w in self.waiting.ready(entry_hash)]
            if retry and self._nursery is not None:
                self._retry(retry)

    def _retry(self, waited: list[tuple[Verified, str]]) -> None:
        """Admit again entries whose past is stored now, grouped by sender."""
        assert self._nursery is not None
        by_sender: dict[str, list[Verified]] = {}
        for item, sender in waited:
            by_sender.setdefault(sender, []).append(item)
        for sender, items in by_sender.items():
            try:
                self._nursery.start_soon(self.admit, items, sender)
            except RuntimeError:  # stopping: the nursery is closed
                return

    def _on_stored(self, stored: list[Verified]) -> None:
        """Committer listener: publish what is new, retry what waited for it."""
        self.counters.stored += len(stored)
        if not self._ledger.writing_allowed and stored:
            self._own_chain.saw_epoch(max(item.body.epoch for item in stored),
                                      trio.current_time())
        retry: list[tuple[Verified, str]] = []
        for item in stored:
            self._remember(item.hash)
            if self._gossip and item.hash not in self._fetched:
                try:
                    self._publish_send.send_nowait(item)
                except trio.WouldBlock:
                    self.counters.publish_dropped += 1
            retry.extend(self.waiting.ready(item.hash))
        if retry and self._nursery is not None:
            self._retry(retry)

    def _remember(self, entry_hash: bytes) -> None:
        self._recent[entry_hash] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    # --- gossip out -------------------------------------------------------------

    async def _publisher(self) -> None:
        broadcast = self._p2p.broadcast
        while True:
            batch = [await self._publish_receive.receive()]
            size = len(batch[0].raw)
            while len(batch) < GOSSIP_BATCH_ENTRIES:
                try:
                    item = self._publish_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                size += len(item.raw)
                if size > GOSSIP_BATCH_BYTES:
                    break
            message = sync_pb2.LedgerEntries(entries=[i.raw for i in batch])
            try:
                await broadcast.publish_relayed(TOPIC, message.SerializeToString())
                self.counters.published += len(batch)
            except errors.MeshError as exc:
                self.counters.publish_dropped += len(batch)  # sync repairs it
                log.warning("ledger entries not gossiped", extra={"error": str(exc)})

    @staticmethod
    async def _drain(subscription: Subscription) -> None:
        # The topic must be subscribed to be in its mesh; the only messages
        # delivered here are this node's own publishes.
        async for _ in subscription:
            pass

    # --- anti-entropy: asking -----------------------------------------------

    async def _sync_timer(self) -> None:
        while True:
            await trio.sleep(self._sync_interval * self._rng.uniform(0.8, 1.2))
            members = self._p2p.membership.peers()
            if members:
                self.request_sync(self._rng.choice(members).peer_id)
            self.waiting.expire(self._clock())
            self.scores.forget_recovered(self._clock())

    async def _own_chain_watch(self) -> None:
        """Until own writes go on: sync with the members that have not answered
        (validators first), judge again (waits may have passed), and let a node
        that has had no member to ask for the grace period write."""
        check = self._own_chain
        while not self._ledger.writing_allowed:
            now = trio.current_time()
            members = {p.peer_id for p in self._p2p.membership.peers()}
            check.members_now(len(members), now)
            if check.may_write_alone(now, self._own_chain_grace):
                break
            for peer_id in check.to_ask(self._validators(), members, now):
                self.request_sync(peer_id)
            await self._judge_own_chain()
            with trio.move_on_after(OWN_CHAIN_ASK_EVERY):
                await self._p2p.membership.next_change()
        if self._ledger.writing_allowed:
            return
        if self._own_chain_grace:
            log.warning("no peer answered within %g s to check this node's own chain "
                        "against: writing anyway. If this data directory was restored "
                        "from an old copy, stop meshd until peers are reachable: its next "
                        "entries could fork its chain, which is slashed",
                        self._own_chain_grace)
        self._ledger.own_chain_checked()

    def _validators(self) -> ValidatorSet:
        """V of the first epoch not final, as far as this node knows by now."""
        settled = self._ledger.settled
        return settled.validators_of(settled.epoch + 1)

    async def _check_own_chain(self, peer_id: str, theirs: list[Head] | None) -> None:
        """``peer_id`` showed its heads (None: the same as this node's): record
        whether this node stores every own entry among them, and judge."""
        if self._ledger.writing_allowed:
            return
        own = [h for h in theirs or () if h.author == self._ledger.key]
        stored = await trio.to_thread.run_sync(self._store.known, [h.hash for h in own])
        missing = max(((h.seq, h.hash) for h in own if h.hash not in stored), default=None)
        if missing is not None and self._own_chain.behind.get(peer_id) != missing:
            log.error("own chain behind a peer's copy: not writing until it is fetched",
                      extra={"peer_id": peer_id, "seq": missing[0]})
        self._own_chain.answer(peer_id, missing, trio.current_time())
        await self._judge_own_chain()

    async def _judge_own_chain(self) -> None:
        if self._ledger.writing_allowed:
            return
        check = self._own_chain
        if check.behind:  # fetched since, from this peer or another?
            stored = await trio.to_thread.run_sync(self._store.known, check.missing_hashes())
            check.stored(stored)
        members = {p.peer_id for p in self._p2p.membership.peers()}
        problem = check.verdict(self._validators(), self._ledger.final_epoch,
                                trio.current_time(), members)
        if problem is None:
            self._ledger.own_chain_checked(len(check.answered))
            return
        said = re.sub(r"\d+(\.\d+)?", "#", problem)
        if said != self._own_chain_said:
            self._own_chain_said = said
            log.info("own chain check: not writing yet", extra={"reason": problem})
        self._ledger.own_chain_behind(problem)

    async def _sync_worker(self) -> None:
        async for peer_id in self._sync_receive:
            self._sync_queued.discard(peer_id)
            if not self._p2p.membership.is_admitted(peer_id):
                continue
            self.counters.syncs += 1
            try:
                with trio.fail_after(REQUEST_TIMEOUT * 30):
                    await self.sync_with(peer_id)
            except SyncBreach as exc:
                self.counters.syncs_failed += 1
                self._own_chain.failed(peer_id, trio.current_time())
                await self._penalise(peer_id, PROTOCOL_BREACH_COST, str(exc))
            except (errors.MeshError, trio.TooSlowError) as exc:
                self.counters.syncs_failed += 1
                self._own_chain.failed(peer_id, trio.current_time())
                log.info("ledger sync failed", extra={"peer_id": peer_id, "error": str(exc)})
                self._sync_another(peer_id)

    def _sync_another(self, failed: str) -> None:
        """After a failed sync, try another member now rather than at the timer."""
        others = [p.peer_id for p in self._p2p.membership.peers() if p.peer_id != failed]
        if others:
            self.request_sync(self._rng.choice(others))

    async def sync_with(self, peer_id: str) -> int:
        """Fetch what ``peer_id`` stores and this node does not; return how many
        entries were fetched.

        Raises:
            SyncBreach: the peer's answers break the protocol.
            errors.MeshError: a request failed.
        """
        mine = await trio.to_thread.run_sync(self._store.heads)
        theirs = await self._remote_heads(peer_id, heads_digest(mine))
        if theirs is None:
            await self._check_own_chain(peer_id, None)
            return 0
        # Recorded before fetching: a sync that fails while fetching this node's
        # own newest entries must keep its writes held.
        await self._check_own_chain(peer_id, theirs)
        known = await trio.to_thread.run_sync(self._store.known, [h.hash for h in theirs])
        fetched: dict[bytes, Verified] = {}
        for head in theirs:
            if head.hash in known or len(fetched) >= SYNC_MAX_ENTRIES:
                continue
            last = await trio.to_thread.run_sync(self._store.last_seq, head.author)
            await self._fetch_range(peer_id, head, min(last + 1, head.seq), fetched)
        await self._fetch_missing_links(peer_id, fetched)
        self.counters.synced += len(fetched)
        order = _causal_order(fetched)
        self._fetched.update(fetched)
        try:
            for start in range(0, len(order), APPEND_CHUNK):
                await self.admit(order[start:start + APPEND_CHUNK], peer_id)
        finally:
            self._fetched.difference_update(fetched)
        await self._check_own_chain(peer_id, theirs)
        return len(fetched)

    async def _remote_heads(self, peer_id: str, digest: bytes) -> list[Head] | None:
        heads: list[Head] = []
        after = b""
        while True:
            request = sync_pb2.LedgerHeadsRequest(after_author=after, limit=HEADS_PAGE,
                                                  digest=digest)
            answer = _parse_answer(sync_pb2.LedgerHeads, await self._request(
                peer_id, HEADS, request.SerializeToString()), HEADS)
            if answer.same:
                return None
            page = [Head(h.author, h.seq, h.hash) for h in answer.heads]
            for head in page:
                ordered = head.author > after and (not heads or (head.author, head.hash)
                                                   > (heads[-1].author, heads[-1].hash))
                if len(head.author) != KEY_BYTES or len(head.hash) != HASH_BYTES \
                        or head.seq < 1 or not ordered:
                    raise SyncBreach(f"peer {peer_id} sent malformed or unordered heads")
                heads.append(head)
            if not answer.more or not page:
                return heads
            after = page[-1].author
            digest = b""

    async def _fetch_range(self, peer_id: str, head: Head, from_seq: int,
                           fetched: dict[bytes, Verified]) -> None:
        expected = from_seq
        while len(fetched) < SYNC_MAX_ENTRIES:
            request = sync_pb2.LedgerRangeRequest(head=head.hash, from_seq=expected)
            answer = _parse_answer(sync_pb2.LedgerEntries, await self._request(
                peer_id, RANGE, request.SerializeToString()), RANGE)
            if not answer.entries:
                return  # the peer no longer has it (cannot happen) or nothing to send
            previous: Verified | None = None
            for raw in answer.entries:
                item = await self._check(raw, peer_id)
                if item is None:
                    raise SyncBreach(f"peer {peer_id} sent an invalid entry in a range")
                if item.author != head.author or item.seq != expected or (
                        previous is not None and item.body.prev != previous.hash):
                    raise SyncBreach(f"peer {peer_id} sent a range that is not one chain "
                                     f"from seq {from_seq}")
                fetched[item.hash] = item
                previous, expected = item, expected + 1
            if previous is not None and previous.seq >= head.seq:
                if previous.hash != head.hash:
                    raise SyncBreach(f"peer {peer_id} sent a range that misses its head")
                return
            if not answer.more:
                return

    async def _fetch_missing_links(self, peer_id: str, fetched: dict[bytes, Verified],
                                   ) -> None:
        """Fetch by hash whatever prev or dep of the fetched entries is neither
        fetched nor stored, for a bounded number of rounds."""
        for _ in range(SYNC_GET_ROUNDS):
            wanted = await self._missing_links(fetched)
            if not wanted:
                return
            for start in range(0, len(wanted), GET_HASHES):
                chunk = wanted[start:start + GET_HASHES]
                request = sync_pb2.LedgerGetRequest(hashes=chunk)
                answer = _parse_answer(sync_pb2.LedgerEntries, await self._request(
                    peer_id, GET, request.SerializeToString()), GET)
                asked = set(chunk)
                for raw in answer.entries:
                    item = await self._check(raw, peer_id)
                    if item is None:
                        raise SyncBreach(f"peer {peer_id} sent an invalid entry")
                    if item.hash not in asked:
                        raise SyncBreach(f"peer {peer_id} sent an entry it was not asked for")
                    fetched[item.hash] = item

    async def _missing_links(self, fetched: dict[bytes, Verified]) -> list[bytes]:
        links = {h for item in fetched.values()
                 for h in ([item.body.prev] if item.body.prev else []) + list(item.body.deps)
                 if h not in fetched}
        if not links:
            return []
        known = await trio.to_thread.run_sync(self._store.known, list(links))
        return sorted(links - known)

    async def _request(self, peer_id: str, name: str, payload: bytes) -> bytes:
        return await self._p2p.direct.request(peer_id, name, payload, timeout=REQUEST_TIMEOUT,
                                              max_response=MAX_RESPONSE)

    # --- scores -----------------------------------------------------------------

    async def _penalise(self, peer_id: str, cost: int, why: str) -> None:
        log.warning("ledger peer penalised", extra={"peer_id": peer_id, "cost": cost,
                                                     "reason": why[:300]})
        if not self.scores.penalise(peer_id, cost, self._clock()):
            return
        membership = self._p2p.membership
        if peer_id in membership.blocked():
            return
        self.counters.blocked += 1
        try:
            await membership.block(peer_id, reason=f"for {BLOCK_SECONDS:g} s: its ledger "
                                   "score fell too low")
        except errors.MeshError:
            return
        assert self._nursery is not None
        self._nursery.start_soon(self._unblock_later, peer_id)

    async def _unblock_later(self, peer_id: str) -> None:
        await trio.sleep(BLOCK_SECONDS)
        if peer_id in self._p2p.membership.blocked():
            self._p2p.membership.unblock(peer_id)


class SyncBreach(Exception):
    """A peer's sync answer breaks the protocol (docs/ledger.md §8.4: costs 50)."""


def _causal_order(fetched: dict[bytes, Verified]) -> list[Verified]:
    """``fetched`` with every entry after its prev and deps among them (DFS)."""
    order: list[Verified] = []
    placed: set[bytes] = set()
    for root in sorted(fetched):
        if root in placed:
            continue
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            entry_hash, expanded = stack.pop()
            if entry_hash in placed:
                continue
            item = fetched[entry_hash]
            if expanded:
                placed.add(entry_hash)
                order.append(item)
                continue
            stack.append((entry_hash, True))
            links = ([item.body.prev] if item.body.prev else []) + list(item.body.deps)
            stack.extend((h, False) for h in links if h in fetched and h not in placed)
    return order


Answer = TypeVar("Answer", sync_pb2.LedgerHeads, sync_pb2.LedgerEntries)


def _parse_answer(kind: type[Answer], payload: bytes, name: str) -> Answer:
    message = kind()
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise SyncBreach(f"the answer to {name} is not a {kind.__name__}") from None
    return message

