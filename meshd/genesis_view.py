"""The network this node belongs to, as fixed by its genesis (not libp2p's network)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshcore.genesis import Genesis


@dataclass(frozen=True)
class NetworkInfo:
    network_id: str
    genesis: Genesis
    genesis_toml: str
    peer_count: int
    routing_table_size: int


class GenesisView:
    """Answers questions about the network; lives on the trio loop."""

    def __init__(self, genesis: Genesis, genesis_toml: str, peer_count: Callable[[], int],
                 routing_table_size: Callable[[], int]) -> None:
        self._genesis = genesis
        self._toml = genesis_toml
        self._peer_count = peer_count
        self._routing_table_size = routing_table_size

    async def info(self) -> NetworkInfo:
        return NetworkInfo(self._genesis.network_id, self._genesis, self._toml,
                           self._peer_count(), self._routing_table_size())
