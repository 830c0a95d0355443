"""A plugin's view of the network's DHT: the same Kademlia DHT, in its own key space.

Every key a plugin uses is stored as ``plugin/<name>/<key>``: plugins cannot
read, overwrite or announce each other's records, and a plugin's keys cannot
collide with meshd's own. The limits and errors are the DHT's (meshd/p2p/dht.py):
keys of 1 to ``MAX_PLUGIN_KEY_BYTES`` bytes, values up to 64 KiB, every query
bounded in time.
"""

from __future__ import annotations

from meshd import errors
from meshd.p2p.dht import DEFAULT_PROVIDERS, MAX_KEY_BYTES, Dht
from meshd.plugin.api import Provider

PREFIX = "plugin/{name}/"
# The longest plugin name (64) leaves this much of the DHT's key limit.
MAX_PLUGIN_KEY_BYTES = MAX_KEY_BYTES - len(PREFIX.format(name="x" * 64).encode())


class PluginDhtView:
    """Implements :class:`meshd.plugin.api.PluginDht` for one plugin."""

    def __init__(self, dht: Dht, plugin: str) -> None:
        self._dht = dht
        self._prefix = PREFIX.format(name=plugin)

    def _key(self, key: str) -> str:
        if not isinstance(key, str) or not 1 <= len(key.encode()) <= MAX_PLUGIN_KEY_BYTES:
            raise errors.InvalidArgument(f"a plugin's DHT key is 1 to {MAX_PLUGIN_KEY_BYTES} "
                                         "bytes of text")
        return self._prefix + key

    async def provide(self, key: str) -> None:
        await self._dht.provide(self._key(key))

    async def find_providers(self, key: str, count: int = DEFAULT_PROVIDERS) -> list[Provider]:
        found = await self._dht.find_providers(self._key(key), count)
        return [Provider(p.peer_id, p.addrs) for p in found]

    async def put(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise errors.InvalidArgument("a DHT value is bytes")
        await self._dht.put(self._key(key), value)

    async def get(self, key: str) -> bytes:
        return (await self._dht.get(self._key(key))).value
