"""The host's protocol handler table: handlers that may be removed while the
node runs, and each run for the peer it answers.

py-libp2p 0.8.1's ``Multiselect.negotiate`` (``libp2p.protocol_muxer.multiselect``)
checks that a protocol has a handler, awaits the write of its acknowledgement,
and only then reads ``self.handlers[protocol]``. A handler removed during that
write raises KeyError out of ``SwarmConn._handle_muxed_stream`` into the
swarm's task group (seen in ``make test``: a PING arriving while a node
stopped; docs/py-libp2p.md#found-handler-removal-race). meshd's services
serve their protocols for their own lifetime only
(``DirectMessenger.serving``), so the host's table answers a protocol that
vanished that way with a handler that resets the stream: the peer sees the
stream fail, as from a node that does not serve the protocol. Membership
tests (``in``) and ``get`` are unchanged.

The handler read there runs in the task that serves the stream, and on a
direct connection it runs :func:`meshd.p2p.addresses.shown_to` the peer's IP:
whatever it answers of this node's addresses (identify and its signed peer
record, the relay's reservation, the DHT's peer entries) is trimmed to those
the peer can use (py-libp2p's identify sends ``get_addrs()`` to everyone,
LAN and loopback addresses included).
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost, INetStream

from meshd.p2p.addresses import ip_of, shown_to
from meshd.p2p.circuit import direct_remote


async def reset_stream(stream: INetStream) -> None:
    """The handler of a protocol removed during its negotiation."""
    await stream.reset()


def _for_the_peer(handler: Any) -> Any:
    if handler is None:
        return None

    async def answer(stream: INetStream) -> None:
        remote = direct_remote(stream)
        viewer = ip_of(str(remote)) if remote is not None else None
        if viewer is None:  # relayed, or unknown: the peer may be anywhere
            await handler(stream)
            return
        with shown_to(viewer):
            await handler(stream)

    return answer


class ProtocolTable(dict[Any, Any]):
    """The multiselect handler table: a reset for a vanished protocol, and
    each handler run for the peer it answers."""

    def __getitem__(self, protocol: Any) -> Any:
        handler = super().__getitem__(protocol)
        return handler if handler is reset_stream else _for_the_peer(handler)

    def __missing__(self, protocol: Any) -> Any:
        return reset_stream


def install(host: IHost) -> None:
    """Give ``host``'s multiselect the table (this host only)."""
    mux: Any = host.get_mux()
    mux.handlers = ProtocolTable(mux.handlers)
