"""Protocol handlers that may be removed while the node runs.

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
"""

from __future__ import annotations

from typing import Any

from libp2p.abc import IHost, INetStream


async def reset_stream(stream: INetStream) -> None:
    """The handler of a protocol removed during its negotiation."""
    await stream.reset()


class ProtocolTable(dict[Any, Any]):
    """The multiselect handler table, with a reset for a vanished protocol."""

    def __missing__(self, protocol: Any) -> Any:
        return reset_stream


def install(host: IHost) -> None:
    """Give ``host``'s multiselect the table (this host only)."""
    mux: Any = host.get_mux()
    mux.handlers = ProtocolTable(mux.handlers)
