"""Keeps the node connected: degree, discovery by peer exchange, reconnection.

* **Degree.** Below ``low`` admitted peers, dial known peers until ``target``;
  above ``high``, close random unprotected connections down to ``target``.
* **Choice.** Candidates come from the peer book (bootstrap addresses,
  admitted peers' listen addresses, peer exchange, mDNS on the LAN); each round takes them at
  random, at most one per /24 (IPv4) or /48 (IPv6) network while others remain,
  so that one operator's block of addresses cannot surround a node (eclipse).
* **Reconnection.** A failed dial backs off exponentially with jitter (1 s up
  to 5 min), per peer. A node that lost every peer starts again from its book,
  which survives restarts: it rejoins even when every bootstrap node is down.
* **Peer exchange** (REQUEST_PEERS / KNOWN_PEERS, docs/protocol.md): every
  new member, and a random member every EXCHANGE_INTERVAL, is asked for peers;
  a node below its low watermark with no one left to dial asks a member at
  once (at most every HUNGRY_EXCHANGE_INTERVAL).
* **Protected peers** (bootstrap nodes, later validators) are never pruned.
* **Grace.** A peer admitted less than PRUNE_GRACE ago is not pruned (as
  go-libp2p's connection manager): DHT lookups connect to many peers at once,
  and pruning them at once made every lookup redial them, at 3.5 times the CPU
  per put/get on 30 nodes (bench/dht.py), and py-libp2p drops a peer from its
  routing table when a stream fails on a connection being closed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from google.protobuf.message import DecodeError

from mesh.wire.v1 import wire_pb2
from meshcore.addresses import AddressError, parse_peer_address
from meshd import errors
from meshd.p2p import peerbook
from meshd.p2p.addresses import usable_by
from meshd.p2p.host import P2PHost
from meshd.p2p.peerbook import BACKOFF_MAX, KnownPeer, PeerBook

log = logging.getLogger(__name__)

PEER_EXCHANGE = "peers"
MAX_EXCHANGE = 50
MAINTAIN_INTERVAL = 2.0
PRUNE_GRACE = 30.0
EXCHANGE_INTERVAL = 30.0
HUNGRY_EXCHANGE_INTERVAL = 5.0
SAVE_INTERVAL = 10.0


@dataclass(frozen=True)
class Degree:
    low: int = 4
    target: int = 8
    high: int = 16


class ConnectionManager:
    """Runs on the trio loop next to the host; see the module docstring."""

    def __init__(self, host: P2PHost, book: PeerBook, data_dir: Path | None,
                 degree: Degree, bootstrap: list[str],
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 prune_grace: float = PRUNE_GRACE) -> None:
        self._host = host
        self._book = book
        self._data_dir = data_dir
        self._degree = degree
        self._rng = rng or random.Random()
        self._clock = clock
        self._protected: set[str] = set()
        self._prune_grace = prune_grace
        self._admitted_at: dict[str, float] = {}  # peer ID -> clock()
        # Bootstrap URLs without a peer ID (tcp://, ws://): dialled until someone
        # answers, then known by the ID it proved (meshd/p2p/upstream/first_contact.py).
        self._urls: dict[str, float] = {}  # dial address -> clock() of the next try
        self._url_backoff: dict[str, float] = {}
        for address in bootstrap:
            try:
                parsed = parse_peer_address(address)
            except AddressError as exc:  # the config's are checked; a genesis' may not be
                log.warning("bootstrap address skipped", extra={"error": str(exc)})
                continue
            if not parsed.peer_id:
                self._urls[parsed.dial] = 0.0
            elif parsed.peer_id != host.peer_id:
                book.learn(parsed.peer_id, [parsed.dial], seen_at=0.0)
                self._protected.add(parsed.peer_id)
        self._exchange_now: trio.MemorySendChannel[str] | None = None
        self._asked_early_at = float("-inf")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        send, receive = trio.open_memory_channel[str](64)
        self._exchange_now = send
        try:
            with self._host.direct.serving(PEER_EXCHANGE, self._answer_exchange, max_request=64), \
                    self._host.membership.admission_listener(self._admitted):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._maintain_loop)
                    nursery.start_soon(self._exchange_loop, receive)
                    nursery.start_soon(self._save_loop)
                    task_status.started()
        finally:
            # synchronous: runs even while cancelled; members connected moments
            # ago are remembered too
            self._learn_members()
            self._save()

    def discovered(self, peer_id: str, addrs: list[str]) -> None:
        """A member heard of on the LAN (meshd/p2p/mdns.py): into the book, dialled
        by the next round while the node is below its low watermark."""
        if peer_id != self._host.peer_id:
            self._book.learn(peer_id, addrs, time.time())

    # --- degree ---------------------------------------------------------------

    async def _maintain_loop(self) -> None:
        while True:
            await self.maintain()
            with trio.move_on_after(MAINTAIN_INTERVAL):
                await self._host.membership.next_change()

    async def maintain(self) -> None:
        """One round: remember members' addresses, then dial or prune as needed."""
        self._host.membership.reconcile()
        members = self._learn_members()
        count = len(members)
        if count < self._degree.low:
            await self._dial_urls()
            picked = self._pick(self._degree.target - count, members)
            if len(picked) < self._degree.target - count:
                self._ask_early(members)
            await self._dial(picked)
        elif count > self._degree.high:
            await self._prune(members, count - self._degree.target)

    def _learn_members(self) -> set[str]:
        """Remember what identify says of each member, as far as this node can
        dial it; the members' peer IDs."""
        records = self._host.membership.peers()
        now_wall = time.time()
        for record in records:
            viewer = record.seen_at()
            self._book.learn(record.peer_id, [a for a in self._host.member_addrs(record.peer_id)
                                              if usable_by(a, viewer)], now_wall)
        return {p.peer_id for p in records}

    def _ask_early(self, members: set[str]) -> None:
        """Short of peers to dial: ask a member for more now, not at the next
        EXCHANGE_INTERVAL (at most every HUNGRY_EXCHANGE_INTERVAL). A node
        behind NAT, say, gets its relay address known only after it joined."""
        now = self._clock()
        if not members or self._exchange_now is None \
                or now - self._asked_early_at < HUNGRY_EXCHANGE_INTERVAL:
            return
        self._asked_early_at = now
        with contextlib.suppress(trio.WouldBlock):
            self._exchange_now.send_nowait(self._rng.choice(sorted(members)))

    def _pick(self, wanted: int, members: set[str]) -> list[KnownPeer]:
        exclude = members | {self._host.peer_id}
        ready = [p for p in self._book.candidates(exclude, self._clock())
                 if not self._host.membership.holds_off(p.peer_id)]
        self._rng.shuffle(ready)
        chosen: list[KnownPeer] = []
        # Networks already connected count as used: diversity across the whole degree.
        used_networks = {_network_of(self._book.peers[m].addrs[0]) for m in members
                         if m in self._book.peers and self._book.peers[m].addrs}
        for diverse_only in (True, False):  # first one per network, then any
            for peer in ready:
                if len(chosen) >= wanted:
                    return chosen
                network = _network_of(peer.addrs[0])
                if peer in chosen or (diverse_only and network in used_networks):
                    continue
                chosen.append(peer)
                used_networks.add(network)
        return chosen

    async def _dial(self, peers: list[KnownPeer]) -> None:
        async def dial(peer: KnownPeer) -> None:
            address = peer.address()
            if address is None:
                return
            # All of them: a peer behind NAT is dialled through its relays when
            # its own address does not answer (meshd/p2p/relay_client.py).
            self._host.remember(peer.peer_id, peer.addrs)
            try:
                await self._host.connect(address)
            except errors.MeshError as exc:
                self._book.dialled(peer.peer_id, False, self._clock(), self._rng)
                log.info("dial failed", extra={"peer_id": peer.peer_id, "error": str(exc),
                                               "failures": peer.failures})
            else:
                self._book.dialled(peer.peer_id, True, self._clock(), self._rng)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(dial, peer)

    async def _dial_urls(self) -> None:
        """Each bootstrap URL not answered yet, with backoff (1 s, doubling to 5 min)."""
        now = self._clock()
        for address, due in list(self._urls.items()):
            if due > now:
                continue
            try:
                record = await self._host.membership.connect_unknown(address)
            except errors.MeshError as exc:
                pause = min(self._url_backoff.get(address, 0.5) * 2, BACKOFF_MAX)
                self._url_backoff[address] = pause
                self._urls[address] = now + pause * self._rng.uniform(0.8, 1.2)
                log.info("bootstrap URL did not answer", extra={
                    "address": address, "error": str(exc), "retry_in_seconds": round(pause)})
                continue
            del self._urls[address]
            self._protected.add(record.peer_id)
            self._book.learn(record.peer_id, [address], time.time())
            log.info("bootstrap URL answered", extra={
                "address": address, "peer_id": record.peer_id,
                "hint": f"pin it: {address}/p2p/{record.peer_id}"})

    async def _prune(self, members: set[str], excess: int) -> None:
        now = self._clock()
        for gone in set(self._admitted_at) - members:
            del self._admitted_at[gone]
        prunable = sorted(p for p in members - self._protected
                          if self._admitted_at.get(p, now - self._prune_grace)
                          <= now - self._prune_grace)
        for peer_id in self._rng.sample(prunable, min(excess, len(prunable))):
            log.info("pruning connection (above the high watermark)",
                     extra={"peer_id": peer_id})
            await self._host.close_connection(peer_id)

    # --- peer exchange ------------------------------------------------------------

    def _admitted(self, peer_id: str) -> None:
        self._admitted_at[peer_id] = self._clock()
        if self._exchange_now is not None:
            with contextlib.suppress(trio.WouldBlock):
                self._exchange_now.send_nowait(peer_id)

    async def _exchange_loop(self, new_members: trio.MemoryReceiveChannel[str]) -> None:
        while True:
            peer_id: str | None = None
            with trio.move_on_after(EXCHANGE_INTERVAL * self._rng.uniform(0.8, 1.2)):
                peer_id = await new_members.receive()
            if peer_id is None:
                members = [p.peer_id for p in self._host.membership.peers()]
                peer_id = self._rng.choice(members) if members else None
            if peer_id is not None:
                await self.exchange_with(peer_id)

    async def exchange_with(self, peer_id: str) -> int:
        """Ask ``peer_id`` for its known peers; returns how many it sent."""
        request = wire_pb2.RequestPeers(max=MAX_EXCHANGE).SerializeToString()
        try:
            answer = wire_pb2.KnownPeers.FromString(
                await self._host.direct.request(peer_id, PEER_EXCHANGE, request, timeout=10))
        except (errors.MeshError, DecodeError) as exc:
            log.debug("peer exchange failed", extra={"peer_id": peer_id, "error": str(exc)})
            return 0
        now_wall = time.time()
        for known in answer.peers[:MAX_EXCHANGE]:
            if known.peer_id != self._host.peer_id:
                self._book.learn(known.peer_id, list(known.addrs)[:peerbook.MAX_ADDRS],
                                 now_wall)
        return len(answer.peers)

    async def _answer_exchange(self, peer_id: str, payload: bytes) -> bytes:
        try:
            wanted = min(wire_pb2.RequestPeers.FromString(payload).max or MAX_EXCHANGE,
                         MAX_EXCHANGE)
        except DecodeError:
            raise errors.InvalidArgument("not a RequestPeers message") from None
        # Only addresses the requester can dial: no loopback to another machine,
        # no private address to a peer that came from a public one.
        asker = self._host.membership.record(peer_id)
        viewer = asker.seen_at() if asker is not None else None
        answer = []
        for known in self._book.sample(wanted + 1, self._rng):
            addrs = [a for a in known.addrs if usable_by(a, viewer)]
            if known.peer_id != peer_id and addrs:
                answer.append(wire_pb2.KnownPeer(peer_id=known.peer_id, addrs=addrs))
        return wire_pb2.KnownPeers(peers=answer[:wanted]).SerializeToString()

    # --- persistence ------------------------------------------------------------------

    async def _save_loop(self) -> None:
        while True:
            await trio.sleep(SAVE_INTERVAL)
            self._save()

    def _save(self) -> None:
        if self._data_dir is None or not self._book.dirty:
            return
        try:
            peerbook.save(self._book, self._data_dir)
        except OSError as exc:
            log.warning("cannot save known peers", extra={"error": str(exc)})


def _network_of(address: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address is in; DNS names stand for themselves."""
    parts = address.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        with contextlib.suppress(ValueError):
            prefix = 24 if parts[1] == "ip4" else 48
            return str(ipaddress.ip_network(f"{parts[2]}/{prefix}", strict=False))
    return parts[2] if len(parts) > 2 else address


