"""The network's Kademlia DHT: peer routing, provider records, values.

Works around these py-libp2p 0.8.1 behaviours (docs/py-libp2p.md, tested in
tests/integration/test_dht.py):

* docs/py-libp2p.md#trap-2: ``KadDHT(protocol_prefix=...)`` is stored but
  ignored: the five DHT modules speak ``/ipfs/kad/1.0.0``, imported by value.
  Rather than patch those modules (process-wide: two networks in one process
  would share a protocol), the DHT gets a view of the host
  (meshd/p2p/upstream/hostview.py) that renames the protocol to
  ``/mesh/<network id>/kad/1.0.0`` when it opens streams and registers its
  handler, and serves admitted members only;
* docs/py-libp2p.md#trap-3: server mode, so that queriers are answered and
  nodes route;
* docs/py-libp2p.md#trap-4: the DHT does not learn about connections by itself,
  and ``add_peer`` fails until the peer's addresses are in the peerstore
  (identify): meshd adds each admitted peer, retrying briefly. The routing
  table's own server-mode check looks for ``/ipfs/kad`` in identify's protocol
  list, which a namespaced peer never has; admission is our check, so it is
  skipped;
* docs/py-libp2p.md#found-random-walk-every-two-minutes: the random walk that
  keeps the routing table fresh runs every 120 s on every node, and each walk
  connects to peers outside the node's degree (gossipsub takes each one on as
  a peer, the connection manager prunes them 30 s later). On 30 daemons
  started together that was a burst of ~140 connections every two minutes,
  both cores saturated and the gossip p99 tripled. meshd walks every
  RANDOM_WALK_INTERVAL (Kubo refreshes its routing table every 10 min), each
  node at its own jittered pace.

py-libp2p reports no hop count. ``get`` measures one (see ``LookupTrace``)
through a subclass of ``KadDHT`` whose peer routing and value store note, for
the lookup running in the current task only, whom they ask and whom the
answers name.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID as UPSTREAM_KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import (
    DHTMode,
    KadDHT,
    _encode_key,  # the same key bytes provide() uses
)
from libp2p.kad_dht.peer_routing import PeerRouting
from libp2p.kad_dht.value_store import ValueStore
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from meshd import errors
from meshd.p2p.membership import Membership, parse_peer_id, protocol_id
from meshd.p2p.upstream import providers as upstream_providers
from meshd.p2p.upstream.hostview import MembersOnlyHost

log = logging.getLogger(__name__)

# Adding a just-admitted peer waits for identify to store its addresses.
ADD_PEER_ATTEMPTS = 20
ADD_PEER_BACKOFF = (0.05, 1.0)  # first delay, longest delay (doubling)
QUERY_TIMEOUT = 30.0
RANDOM_WALK_INTERVAL = 600.0  # seconds, +-20 % per node (upstream: 120 s for all)
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_PROVIDERS = 100
DEFAULT_PROVIDERS = 20  # a find-providers that names no count


@dataclass(frozen=True)
class PeerAddrs:
    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class FoundValue:
    """A value and how far the lookup had to go for it.

    Attributes:
        hops: 0 if this node had the value; else the length of the shortest
            chain of referrals from this node to a peer that returned it (see
            ``LookupTrace``): 1 = a peer this node already knew.
        queried_peers: peers this node sent a DHT request to during the lookup
            (FIND_NODE or GET_VALUE), counting those that did not answer.
        peers_with_value: how many of them returned the value.
    """

    value: bytes
    hops: int
    queried_peers: int
    peers_with_value: int


class LookupTrace:
    """Whom one lookup asked and who named whom, to count its hops afterwards.

    Hop count of a peer P that answered: 1 if this node knew P when the lookup
    started (in its routing table, connected, or asked before any answer named
    it: upstream also starts from the peerstore when the routing table is
    small); otherwise 1 + the hop count of the shallowest peer whose answer
    named P. It is the length of the referral chain, independent of how
    upstream schedules its requests (up to ALPHA=10 in flight, FIND_NODE rounds
    first, then GET_VALUE to the closest peers found, all of them when quorum
    is 0 as in meshd), and of how many times it asks the same peer.
    """

    def __init__(self, known: Collection[ID]) -> None:
        self._roots: set[ID] = set(known)
        self._named: set[ID] = set()
        self._referrals: dict[ID, set[ID]] = collections.defaultdict(set)
        self.queried: set[ID] = set()
        self.holders: set[ID] = set()

    def asking(self, peer: ID) -> None:
        self.queried.add(peer)
        if peer not in self._named:
            self._roots.add(peer)  # not learned from this lookup: known before it

    def answered(self, peer: ID, named: Iterable[ID], has_value: bool) -> None:
        peers = set(named)
        self._referrals[peer] |= peers
        self._named |= peers
        if has_value:
            self.holders.add(peer)

    def hops(self) -> int | None:
        """Shortest referral chain to a peer that returned the value; None if none did."""
        frontier = self._roots & self.queried
        seen = set(frontier)
        depth = 1
        while frontier:
            if frontier & self.holders:
                return depth
            frontier = {n for p in frontier for n in self._referrals.get(p, ())
                        if n in self.queried and n not in seen}
            seen |= frontier
            depth += 1
        return None


# The trace of the lookup running in this task. trio copies the context into
# the tasks a lookup spawns (its concurrent requests), and every gRPC call runs
# in its own task, so concurrent lookups never see each other's trace; the
# DHT's own lookups (random walk, refresh) run with none.
_TRACE: contextvars.ContextVar[LookupTrace | None] = contextvars.ContextVar(
    "meshd_dht_trace", default=None)


class _TracedPeerRouting(PeerRouting):
    """Notes each FIND_NODE request of a traced lookup and the peers its answer names.

    Hooks ``_query_peer_for_closest``, the one request of upstream's iterative
    ``find_closest_peers_network`` (py-libp2p 0.8.1); it returns [] when the
    peer fails to answer.
    """

    async def _query_peer_for_closest(self, peer: ID, target_key: bytes) -> list[ID]:
        trace = _TRACE.get()
        if trace is not None:
            trace.asking(peer)
        named = await super()._query_peer_for_closest(peer, target_key)
        if trace is not None:
            trace.answered(peer, named, has_value=False)
        return named


class _TracedValueStore(ValueStore):
    """Notes each GET_VALUE request of a traced lookup, its closer peers and its record.

    Hooks ``_get_from_peer``, which upstream's ``KadDHT.get_value`` calls with
    ``return_record=True, return_closer_peers=True`` (py-libp2p 0.8.1). A record
    counts as the value here even if upstream's validator later rejects it
    (meshd registers no validator that could).
    """

    async def _get_from_peer(self, peer_id: ID, key: bytes, return_record: bool = False,
                             return_closer_peers: bool = False) -> Any:
        trace = _TRACE.get()
        if trace is not None:
            trace.asking(peer_id)
        result = await super()._get_from_peer(peer_id, key, return_record, return_closer_peers)
        if trace is not None and isinstance(result, tuple):
            record, closer = result
            trace.answered(peer_id, closer, has_value=record is not None)
        return result


class _TracedKadDHT(KadDHT):
    """KadDHT whose peer routing and value store report to the current ``LookupTrace``.

    Subclasses on this instance only, rather than patching py-libp2p's classes
    process-wide. Upstream creates both in ``__init__`` and refers to them
    through ``self.peer_routing`` / ``self.value_store`` (and the provider
    store's ``peer_routing``) at call time, so replacing them before the
    service runs replaces them everywhere.
    """

    def __init__(self, host: IHost, mode: DHTMode, **kwargs: Any) -> None:
        super().__init__(host, mode, **kwargs)
        self.peer_routing = _TracedPeerRouting(host, self.routing_table)
        self.provider_store.peer_routing = self.peer_routing
        self.value_store = _TracedValueStore(host=host, local_peer_id=self.local_peer_id)


class Dht:
    """The DHT operations meshd offers; lives on the trio loop."""

    def __init__(self, dht: KadDHT, host: IHost,
                 on_change: Callable[[int], None] = lambda size: None) -> None:
        self._dht = dht
        self._host = host
        self._on_change = on_change
        self._changed = trio.Event()
        # (operation, "ok" | "not_found" | "timeout" | "error") -> count
        self.queries: collections.Counter[tuple[str, str]] = collections.Counter()

    def routing_table_size(self) -> int:
        return self._dht.get_routing_table_size()

    async def next_change(self) -> None:
        """Return when meshd next puts a peer in the routing table."""
        await self._changed.wait()

    async def find_peer(self, peer_id: str) -> PeerAddrs:
        pid = parse_peer_id(peer_id)
        with _bounded(f"find-peer {peer_id}", self.queries):
            info = await self._dht.find_peer(pid)
        if info is None or not info.addrs:
            raise errors.NotFound(f"peer {peer_id} was not found in the DHT")
        return _peer_addrs(str(info.peer_id), info.addrs)

    async def provide(self, key: str) -> None:
        _check_key(key)
        with _bounded(f"provide {key}", self.queries):
            announced = await self._dht.provide(key)
        if not announced:
            raise errors.Unavailable(f"could not announce {key!r}: no DHT peer accepted it "
                                     "(is the node connected?)")

    async def find_providers(self, key: str, count: int) -> list[PeerAddrs]:
        _check_key(key)
        if not 1 <= count <= MAX_PROVIDERS:
            raise errors.InvalidArgument(f"count must be between 1 and {MAX_PROVIDERS}")
        with _bounded(f"find-providers {key}", self.queries):
            # Not KadDHT.find_providers: it stops at any local record
            # (docs/py-libp2p.md#found-find-providers-stops-at-local-records).
            found = await upstream_providers.find_providers(self._dht, _encode_key(key), count)
        return [_peer_addrs(str(p.peer_id), p.addrs) for p in found]

    async def put(self, key: str, value: bytes) -> None:
        _check_key(key)
        if len(value) > MAX_VALUE_BYTES:
            raise errors.InvalidArgument(f"value is {len(value)} bytes; the limit is "
                                         f"{MAX_VALUE_BYTES}")
        with _bounded(f"put {key}", self.queries):
            await self._dht.put_value(key, value)

    async def get(self, key: str) -> FoundValue:
        _check_key(key)
        # Known now: upstream starts from the routing table (and connections
        # or the peerstore when it is small; LookupTrace covers those).
        known = [*self._dht.routing_table.get_peer_ids(), *self._host.get_connected_peers()]
        trace = LookupTrace(known)
        token = _TRACE.set(trace)
        try:
            with _bounded(f"get {key}", self.queries):
                value = await self._dht.get_value(key)
        finally:
            _TRACE.reset(token)
        if value is None:
            raise errors.NotFound(f"no value for {key!r} in the DHT")
        hops = trace.hops()
        if hops is None:
            if trace.queried:  # a value from the network, yet no peer seen returning it
                log.warning("DHT hop count unknown: the lookup hooks saw no peer return "
                            "the value (py-libp2p changed?)", extra={"key": key})
            hops = 0  # no request at all: upstream answered from the local store
        return FoundValue(value, hops, len(trace.queried), len(trace.holders))

    async def add_member(self, peer_id: str) -> None:
        """Put an admitted peer in the routing table, once identify knows its addresses."""
        pid = ID.from_base58(peer_id)
        delay, longest = ADD_PEER_BACKOFF
        for _ in range(ADD_PEER_ATTEMPTS):
            if not self._host.get_network().get_connections(pid):
                return  # it left meanwhile
            if await self._dht.add_peer(pid, skip_server_mode_check=True):
                self._on_change(self.routing_table_size())
                self._changed.set()
                self._changed = trio.Event()
                return
            await trio.sleep(delay)
            delay = min(delay * 2, longest)
        log.warning("peer not added to the DHT routing table", extra={"peer_id": peer_id})


def _peer_addrs(peer_id: str, addrs: Iterable[object]) -> PeerAddrs:
    """A peer and its addresses, each without a trailing ``/p2p/<peer_id>``
    (provider records carry it, routing-table entries do not): the peer ID is
    its own field, so every answer has the same shape."""
    suffix = f"/p2p/{peer_id}"
    bare = (str(a).removesuffix(suffix) for a in addrs)
    return PeerAddrs(peer_id, tuple(dict.fromkeys(bare)))


def _check_key(key: str) -> None:
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise errors.InvalidArgument(f"a DHT key must be 1 to {MAX_KEY_BYTES} bytes")


@contextlib.contextmanager
def _bounded(what: str, queries: collections.Counter[tuple[str, str]]) -> Any:
    """Bound a DHT query in time and count it by outcome."""
    operation = what.split(" ")[0]
    try:
        with trio.fail_after(QUERY_TIMEOUT):
            yield
    except trio.TooSlowError:
        queries[operation, "timeout"] += 1
        raise errors.DeadlineExceeded(f"DHT {what} did not finish within "
                                      f"{QUERY_TIMEOUT:g} s") from None
    except Exception:
        queries[operation, "error"] += 1
        raise
    queries[operation, "ok"] += 1


@contextlib.asynccontextmanager
async def open_dht(host: IHost, membership: Membership, network_id: str,
                   on_change: Callable[[int], None] = lambda size: None,
                   ) -> AsyncIterator[Dht]:
    """Run the network's DHT (server mode, random walk) while the block runs.

    ``on_change(routing_table_size)`` is called when meshd adds a member to it.
    """
    view = MembersOnlyHost(host, membership,
                           rename={UPSTREAM_KAD_PROTOCOL: protocol_id(network_id, "kad")})
    kad = _TracedKadDHT(view, DHTMode.SERVER, enable_random_walk=True)  # type: ignore[arg-type]
    if kad.rt_refresh_manager is not None:  # read by its periodic task (see the docstring)
        kad.rt_refresh_manager.refresh_interval = \
            RANDOM_WALK_INTERVAL * random.uniform(0.8, 1.2)
    dht = Dht(kad, host, on_change)
    async with trio.open_nursery() as nursery, background_trio_service(kad):
        with membership.admission_listener(
                lambda peer_id: nursery.start_soon(dht.add_member, peer_id)):
            yield dht
        nursery.cancel_scope.cancel()
