"""The host as a protocol service (DHT, gossipsub) sees it: members only.

py-libp2p's services take a host and register their stream handlers and open
their streams through it. Giving them this view instead keeps them inside the
network: incoming streams are served only once the peer is admitted (waiting
for a handshake in progress), and protocol IDs can be renamed (the DHT's
``/ipfs/kad/1.0.0`` → ``/mesh/<net>/kad/1.0.0``, py-libp2p trap 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshd import errors
from meshd.p2p.membership import Membership


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

    def _map(self, protocol: TProtocol) -> TProtocol:
        return self._rename.get(protocol, protocol)

    async def new_stream(self, peer_id: ID, protocol_ids: Sequence[TProtocol]) -> INetStream:
        if self._membership.in_cooldown(str(peer_id)):
            raise errors.Unavailable(f"peer {peer_id} was disconnected by the operator "
                                     "(cooling down)")
        if self._dial_members_only and not await self._membership.wait_admitted(str(peer_id)):
            raise errors.FailedPrecondition(f"peer {peer_id} is not a member")
        return await self._host.new_stream(peer_id, [self._map(p) for p in protocol_ids])

    def set_stream_handler(self, protocol_id: TProtocol,
                           handler: Callable[[INetStream], Awaitable[None]]) -> None:
        async def members_only(stream: INetStream) -> None:
            if await self._membership.wait_admitted(str(stream.muxed_conn.peer_id)):
                await handler(stream)
            else:
                with contextlib.suppress(Exception):
                    await stream.reset()

        self._host.set_stream_handler(self._map(protocol_id), members_only)

    def remove_stream_handler(self, protocol_id: TProtocol) -> None:
        self._host.remove_stream_handler(self._map(protocol_id))
