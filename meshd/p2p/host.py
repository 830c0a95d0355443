"""The libp2p host of a node: TCP + Noise + Yamux, with the identity key.

Works around these py-libp2p 0.8.1 behaviours (PY-LIBP2P-NOTES, tested in
tests/integration/test_p2p_host.py):

* trap 1: every dial waits ~250 ms unless ``max_connections_per_peer`` is
  reached, so it is 1;
* trap 12: the default security options also offer plaintext, secio and TLS,
  so Noise is the only one offered;
* trap 16: listen addresses go both to ``new_host`` and ``host.run``;
* leaving ``host.run()`` only cancels the swarm's tasks: ``Swarm.close()`` is
  never called. And when the daemon is cancelled, each ``SwarmConn`` cleanup
  removes its connection from the swarm and is then cancelled before it sends
  GO_AWAY and closes the socket: the socket leaks open and the peer never
  learns that we left. So the host runs in a task shielded from outside
  cancellation, and is stopped in order: ``Swarm.close()`` first (GO_AWAY,
  sockets closed), then ``host.run()`` is left, all within STOP_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
# Stopping the host (closing every connection, then its tasks) at shutdown;
# bounded so that a stuck peer or task cannot hold the daemon.
STOP_TIMEOUT = 3.0


def peer_id_of(seed: bytes) -> str:
    """The libp2p peer ID (``12D3KooW...``) of an Ed25519 identity seed."""
    from libp2p.peer.id import ID

    return str(ID.from_pubkey(create_new_key_pair(seed).public_key))


class P2PHost:
    """A running libp2p host; created by :func:`open_p2p_host`."""

    def __init__(self, host: IHost) -> None:
        self._host = host

    @property
    def peer_id(self) -> str:
        return str(self._host.get_id())

    def listen_addrs(self) -> tuple[str, ...]:
        """Bound addresses, each ending in /p2p/<peer id>."""
        return tuple(str(a) for a in self._host.get_addrs())

    def peer_count(self) -> int:
        # One entry per peer with at least one connection (emptied entries are deleted).
        return len(self._host.get_network().connections)

    async def connect(self, address: str) -> str:
        """Dial ``address`` (a multiaddr ending in /p2p/<id>); return the peer ID."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        with trio.fail_after(DIAL_TIMEOUT):
            await self._host.connect(info)
        return str(info.peer_id)


class _ConnectionWatcher(INotifee):
    """Calls ``on_change(peer_count)`` after each connection opens or closes."""

    def __init__(self, on_change: Callable[[int], None]) -> None:
        self._on_change = on_change

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(len(network.connections))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_change(len(network.connections))

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, address: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, address: multiaddr.Multiaddr) -> None:
        pass


@contextlib.asynccontextmanager
async def open_p2p_host(seed: bytes, listen: Sequence[str],
                        on_connections_changed: Callable[[int], None] = lambda count: None,
                        ) -> AsyncIterator[P2PHost]:
    """Start a host listening on ``listen``; it stops when the block exits.

    ``on_connections_changed(peer_count)`` is called after each connection
    opens or closes.
    """
    key_pair = create_new_key_pair(seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    addresses = [multiaddr.Multiaddr(a) for a in listen]
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        listen_addrs=addresses,
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    host.get_network().register_notifee(_ConnectionWatcher(on_connections_changed))
    stop = trio.Event()

    async def run_host(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope(shield=True) as shield:
            async with host.run(addresses):
                task_status.started()
                await stop.wait()
                shield.deadline = trio.current_time() + STOP_TIMEOUT
                await host.get_network().close()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_host)
        log.info("p2p host listening", extra={"peer_id": str(host.get_id()),
                                               "addrs": [str(a) for a in host.get_addrs()]})
        try:
            yield P2PHost(host)
        finally:
            stop.set()
