"""The network's Kademlia DHT: peer routing, provider records, values.

Works around these py-libp2p 0.8.1 behaviours (PY-LIBP2P-NOTES, tested in
tests/integration/test_dht.py):

* trap 2: ``KadDHT(protocol_prefix=...)`` is stored but ignored: the five DHT
  modules speak ``/ipfs/kad/1.0.0``, imported by value. Rather than patch those
  modules (process-wide: two networks in one process would share a protocol),
  the DHT gets a view of the host (meshd/p2p/hostview.py) that renames the
  protocol to ``/mesh/<network id>/kad/1.0.0`` when it opens streams and
  registers its handler, and serves admitted members only;
* trap 3: server mode, so that queriers are answered and nodes route;
* trap 4: the DHT does not learn about connections by itself, and ``add_peer``
  fails until the peer's addresses are in the peerstore (identify): meshd adds
  each admitted peer, retrying briefly. The routing table's own server-mode
  check looks for ``/ipfs/kad`` in identify's protocol list, which a namespaced
  peer never has; admission is our check, so it is skipped.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID as UPSTREAM_KAD_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service import background_trio_service

from meshd import errors
from meshd.p2p.hostview import MembersOnlyHost
from meshd.p2p.membership import Membership, parse_peer_id, protocol_id

log = logging.getLogger(__name__)

# Adding a just-admitted peer waits for identify to store its addresses.
ADD_PEER_ATTEMPTS = 20
ADD_PEER_BACKOFF = (0.05, 1.0)  # first delay, longest delay (doubling)
QUERY_TIMEOUT = 30.0
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_PROVIDERS = 100


@dataclass(frozen=True)
class PeerAddrs:
    peer_id: str
    addrs: tuple[str, ...]


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
        return PeerAddrs(str(info.peer_id), tuple(str(a) for a in info.addrs))

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
            found = await self._dht.find_providers(key, count)
        return [PeerAddrs(str(p.peer_id), tuple(str(a) for a in p.addrs)) for p in found]

    async def put(self, key: str, value: bytes) -> None:
        _check_key(key)
        if len(value) > MAX_VALUE_BYTES:
            raise errors.InvalidArgument(f"value is {len(value)} bytes; the limit is "
                                         f"{MAX_VALUE_BYTES}")
        with _bounded(f"put {key}", self.queries):
            await self._dht.put_value(key, value)

    async def get(self, key: str) -> bytes:
        _check_key(key)
        with _bounded(f"get {key}", self.queries):
            value = await self._dht.get_value(key)
        if value is None:
            raise errors.NotFound(f"no value for {key!r} in the DHT")
        return value

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
    kad = KadDHT(view, DHTMode.SERVER, enable_random_walk=True)  # type: ignore[arg-type]
    dht = Dht(kad, host, on_change)
    async with trio.open_nursery() as nursery, background_trio_service(kad):
        membership.add_admission_listener(
            lambda peer_id: nursery.start_soon(dht.add_member, peer_id))
        yield dht
        nursery.cancel_scope.cancel()
