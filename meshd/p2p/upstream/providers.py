"""Finding a key's providers across the network, not only in the local store.

py-libp2p 0.8.1's ``ProviderStore.find_providers``
(``libp2p/kad_dht/provider_store.py:370-376``) returns the local provider
store's records for the key whenever there are any, and asks no peer. A node
that has announced a key itself, or that received one ADD_PROVIDER for it,
so never learns of the other providers: a storage node asking for
``holders`` found only itself, and a piece's holders after a restart found
none (docs/py-libp2p.md#found-find-providers-stops-at-local-records).
This lookup starts from the local records and always walks the network, as
the spec describes (closest peers first, ALPHA at a time, following the
closer peers they name), until ``count`` providers are known.
"""

from __future__ import annotations

import logging

import trio
from libp2p.kad_dht.common import ALPHA
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

PEER_TIMEOUT = 10.0  # seconds for one peer's GET_PROVIDERS answer

log = logging.getLogger(__name__)


async def find_providers(dht: KadDHT, key: bytes, count: int) -> list[PeerInfo]:
    store = dht.provider_store
    found: dict[ID, PeerInfo] = {p.peer_id: p for p in store.get_providers(key)}
    own = dht.host.get_id()
    candidates: list[ID] = list(await dht.peer_routing.find_closest_peers_network(key))
    queried: set[ID] = {own}
    while candidates and len(found) < count:
        batch = [p for p in candidates[:ALPHA] if p not in queried]
        candidates = candidates[ALPHA:]
        queried.update(batch)
        answers: list[tuple[list[PeerInfo], list[ID]]] = []

        async def ask(peer: ID, answers: list[tuple[list[PeerInfo], list[ID]]] = answers
                      ) -> None:
            try:
                with trio.move_on_after(PEER_TIMEOUT):
                    # The upstream's own per-peer query (provider_store.py), kept as is.
                    answers.append(await store._get_providers_from_peer_with_closers(peer, key))
            except Exception as exc:  # a peer that fails is one fewer answer
                log.debug("GET_PROVIDERS failed", extra={"peer_id": str(peer),
                                                         "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in batch:
                nursery.start_soon(ask, peer)
        for providers, closer in answers:
            for provider in providers:
                found.setdefault(provider.peer_id, provider)
            candidates.extend(p for p in closer if p not in queried and p not in candidates)
        candidates = sort_peer_ids_by_distance(key, candidates)
    return list(found.values())[:count]
