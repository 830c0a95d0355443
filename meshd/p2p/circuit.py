"""Circuit relay v2 on the wire: protocol IDs, messages, relay addresses.

The libp2p spec's protocols and messages (``/libp2p/circuit/relay/0.2.0/hop``
and ``/stop``; HopMessage and StopMessage from py-libp2p's
``libp2p.relay.circuit_v2.pb``), each message framed by an unsigned varint
length (docs/protocol.md). Shared by the relay (meshd/p2p/relay_server.py) and
the nodes that use one (meshd/p2p/relay_client.py).

A relay address is the relay's own address with ``/p2p-circuit`` after it:
``/ip4/198.51.100.7/tcp/4001/p2p/<relay>/p2p-circuit``, and ``/p2p/<target>``
after that to name the node reached through it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TypeVar

import multiaddr
from google.protobuf.message import DecodeError, Message
from libp2p.abc import INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import (
    HopMessage,
    Limit,
    PeerId,
    Reservation,
    Status,
    StopMessage,
)

from meshd.p2p.framing import FrameError, read_frame, write_frame

HOP_PROTOCOL = TProtocol("/libp2p/circuit/relay/0.2.0/hop")
STOP_PROTOCOL = TProtocol("/libp2p/circuit/relay/0.2.0/stop")
MAX_MESSAGE = 4096
CIRCUIT = "/p2p-circuit"

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "BadMessage",
    "HopMessage",
    "Limit",
    "PeerId",
    "RelayAddress",
    "Reservation",
    "Status",
    "StopMessage",
    "is_relayed",
    "read_message",
    "relayed_connection",
    "write_message",
]

M = TypeVar("M", bound=Message)


class BadMessage(Exception):
    """The other side sent something that is not the expected message."""


async def read_message(stream: INetStream, kind: type[M]) -> M:
    try:
        return kind.FromString(await read_frame(stream, MAX_MESSAGE))
    except (FrameError, DecodeError) as exc:
        raise BadMessage(f"not a {kind.__name__}: {exc}") from None


async def write_message(stream: INetStream, message: Message) -> None:
    await write_frame(stream, message.SerializeToString())


@dataclass(frozen=True)
class RelayAddress:
    """A ``…/p2p/<relay>/p2p-circuit[/p2p/<target>]`` address, taken apart."""

    relay: str  # the relay's address, ending in /p2p/<relay id>
    relay_id: str
    target_id: str  # "" when the address does not name one

    @classmethod
    def parse(cls, address: str) -> RelayAddress | None:
        """None for an address that is not a relay address."""
        head, sep, tail = address.partition(CIRCUIT)
        if not sep or "/p2p/" not in head:
            return None
        relay_id = head.rsplit("/p2p/", 1)[1]
        target = tail.removeprefix("/p2p/") if tail.startswith("/p2p/") else ""
        if not relay_id or "/" in relay_id or "/" in target or (tail and not target):
            return None
        return cls(head, relay_id, target)

    def without_target(self) -> str:
        return f"{self.relay}{CIRCUIT}"


def is_relayed(conn: INetConn | None) -> bool:
    """Whether a connection runs through a relay (its address has /p2p-circuit)."""
    if conn is None:
        return False
    try:
        return any(CIRCUIT in str(a) for a in conn.get_transport_addresses())
    except Exception:  # a connection closing under us
        return False


def relayed_connection(stream: INetStream) -> bool:
    """Whether ``stream`` arrived over a relayed connection."""
    return is_relayed(getattr(stream, "swarm_conn", None))


def direct_remote(stream: INetStream) -> multiaddr.Multiaddr | None:
    """Where the stream's connection comes from (``/ip4|ip6/…/tcp/…``); None
    when it is relayed (that would be the relay) or unknown."""
    conn = getattr(stream, "swarm_conn", None)
    if conn is None or is_relayed(conn):
        return None
    with contextlib.suppress(Exception):
        addresses = conn.get_transport_addresses()
        if addresses:
            return multiaddr.Multiaddr(str(addresses[0]).split("/p2p/")[0])
    return None
