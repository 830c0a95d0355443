"""The host as a protocol service (DHT, gossipsub) sees it: members only.

py-libp2p's services take a host and register their stream handlers and open
their streams through it. Giving them this view instead keeps them inside the
network: incoming streams are served only once the peer is admitted (waiting
for a handshake in progress), and protocol IDs can be renamed (the DHT's
``/ipfs/kad/1.0.0`` → ``/mesh/<net>/kad/1.0.0``, docs/py-libp2p.md#trap-2).

Each peer's addresses it reads from the peerstore are trimmed for the peer
being answered, if any (``addresses.for_the_viewer``): the DHT's answers give
a peer on the internet no one's LAN or loopback addresses. (The signed peer
records beside them are each peer's own and cannot be trimmed.)

It also contains the services' failures. In py-libp2p 0.8.1 an exception
raised by a stream handler is not caught: it leaves
``SwarmConn._handle_muxed_stream`` through the swarm's task group and ends the
whole process. Gossipsub's ``Pubsub.continuously_read_stream`` raises
``DecodeError`` on an RPC frame that is not protobuf, so one garbage frame
from any member took the daemon down. Here a handler's exception resets the
stream and closes the connection to the peer that caused it (a member that
breaks a protocol is broken or hostile), counted in ``protocol_errors``
(docs/py-libp2p.md#found-handler-exception).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshd import errors
from meshd.p2p.addresses import for_the_viewer
from meshd.p2p.membership import Membership

log = logging.getLogger(__name__)


class MembersOnlyHost:
    """A view of ``host`` for one service.

    Args:
        rename: protocol IDs the service uses → the IDs spoken on the wire.
        dial_members_only: open streams only to admitted peers (gossipsub). If
            False, any peer may be dialled (the DHT dials peers it has just
            learned of; the handshake runs on that connection), except peers
            the operator disconnected moments ago.
    """

    def __init__(self, host: IHost, membership: Membership, *,
                 rename: Mapping[TProtocol, TProtocol] | None = None,
                 dial_members_only: bool = False) -> None:
        self._host = host
        self._membership = membership
        self._rename = dict(rename or {})
        self._dial_members_only = dial_members_only

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    def get_peerstore(self) -> Any:
        return _AddressesForTheViewer(self._host.get_peerstore())

    def _map(self, protocol: TProtocol) -> TProtocol:
        return self._rename.get(protocol, protocol)

    async def new_stream(self, peer_id: ID, protocol_ids: Sequence[TProtocol]) -> INetStream:
        if self._membership.holds_off(str(peer_id)):
            raise errors.Unavailable(f"peer {peer_id} is held off by the operator "
                                     "(blocked, or disconnected moments ago)")
        if self._dial_members_only and not await self._membership.wait_admitted(str(peer_id)):
            raise errors.FailedPrecondition(f"peer {peer_id} is not a member")
        return await self._host.new_stream(peer_id, [self._map(p) for p in protocol_ids])

    def set_stream_handler(self, protocol_id: TProtocol,
                           handler: Callable[[INetStream], Awaitable[None]]) -> None:
        async def members_only(stream: INetStream) -> None:
            peer = stream.muxed_conn.peer_id
            if not await self._membership.admits(stream):
                return
            try:
                await handler(stream)
            except Exception as exc:  # see the module docstring: never let it out
                self._membership.counters.protocol_errors += 1
                log.warning("peer broke a protocol; disconnecting it",
                            extra={"peer_id": str(peer), "protocol": protocol_id,
                                   "error": f"{type(exc).__name__}: {exc}"[:300]})
                with contextlib.suppress(Exception):
                    await stream.reset()
                await self._membership.close_connections(peer)

        self._host.set_stream_handler(self._map(protocol_id), members_only)

    def remove_stream_handler(self, protocol_id: TProtocol) -> None:
        self._host.remove_stream_handler(self._map(protocol_id))


class _AddressesForTheViewer:
    """The host's peerstore, each peer's addresses trimmed for the peer being answered."""

    def __init__(self, peerstore: Any) -> None:
        self._peerstore = peerstore

    def __getattr__(self, name: str) -> Any:
        return getattr(self._peerstore, name)

    def addrs(self, peer_id: ID) -> list[Any]:
        found = self._peerstore.addrs(peer_id)
        usable = set(for_the_viewer(str(a) for a in found))
        return [a for a in found if str(a) in usable]
