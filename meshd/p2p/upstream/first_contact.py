"""Dialling a node whose peer ID is not known yet (a bootstrap URL).

The seed's ``--bootstrap ws://bootstrap.example.com:8080`` names a host and a
port, not a peer ID, and every libp2p dial of py-libp2p 0.8.1 wants one
(``Swarm.dial_peer``, and ``TransportUpgrader.upgrade_security`` raises
"peer_id must be provided for outbound connection"). Its Noise XX handshake
itself takes ``remote_peer=None`` (``libp2p/security/noise/patterns.py:93-114``)
and then trusts whatever identity the responder proves: trust on first use.
So a first contact is the swarm's own outbound path taken by hand: the
transport's dial, multistream-select and Noise with no expected peer, the
muxer, ``add_conn``; the connection is then the node's like any other (hello,
admission). The caller learns the peer ID it reached.
"""

from __future__ import annotations

import contextlib

import multiaddr
from libp2p.abc import IHost
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID


async def dial_unknown(host: IHost, address: str) -> ID:
    """Connect to ``address`` (a multiaddr without /p2p/); the peer ID reached.

    Raises:
        SwarmException: no transport can dial it, or the dial or a handshake failed.
    """
    network = host.get_network()
    if not isinstance(network, Swarm):
        raise SwarmException("first contact needs py-libp2p's Swarm")
    target = multiaddr.Multiaddr(address)
    transport = network.transport_manager.transport_for_dialing(target)
    if transport is None:
        raise SwarmException(f"no transport can dial {address}")
    try:
        raw = await transport.dial(target)
    except Exception as exc:
        raise SwarmException(f"cannot open a connection to {address}: {exc}") from exc
    try:
        secured = await network.upgrader.security_multistream.secure_outbound(
            raw, None)  # type: ignore[arg-type]  # None: learn it (patterns.py:93)
        peer = secured.get_remote_peer()
        if peer == host.get_id():
            raise SwarmException(f"{address} is this node's own address")
        muxed = await network.upgrader.upgrade_connection(secured, peer)
        await network.add_conn(muxed, direction="outbound")
    except BaseException:
        with contextlib.suppress(Exception):
            await raw.close()
        raise
    return peer
