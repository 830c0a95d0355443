"""Peer addresses a person writes: ``/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...``.

Checked where they are written (``--bootstrap``, ``p2p.bootstrap``), so that a
typo is a clear error at start, not a node redialling an address forever.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from meshcore.ledger import accounts

_PEER_MULTIADDR = re.compile(
    r"/(?P<proto>ip4|ip6|dns|dns4|dns6)/(?P<host>[^/]+)/tcp/(?P<port>[0-9]{1,5})"
    r"/p2p/(?P<peer_id>[^/]+)")
_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class AddressError(ValueError):
    """An address that cannot be dialled; the message says why."""


@dataclass(frozen=True)
class PeerAddress:
    address: str  # as given
    host: str
    port: int
    peer_id: str


def parse_peer_address(address: str) -> PeerAddress:
    """A dialable TCP multiaddr of a Mesh node, ending in its peer ID.

    Raises:
        AddressError: not of that form, an unspecified or invalid IP, a port
            out of range, or a peer ID that is not an Ed25519 key's.
    """
    match = _PEER_MULTIADDR.fullmatch(address.strip())
    if match is None:
        if "://" in address:
            raise AddressError(f"{address!r}: give a multiaddr, e.g. "
                               "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW... (URLs are not "
                               "accepted here)")
        raise AddressError(f"{address!r} is not a TCP multiaddr ending in /p2p/<peer id> "
                           "(e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...)")
    proto, host = match["proto"], match["host"]
    if proto in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise AddressError(f"{address!r}: {host!r} is not an {proto} address") from None
        if ip.version != int(proto[-1]):
            raise AddressError(f"{address!r}: {host!r} is not an {proto} address")
        if ip.is_unspecified:
            raise AddressError(f"{address!r}: {host} is a listen-on-everything address, not "
                               "one a node can dial; give the host's own address")
    elif not _DNS_NAME.fullmatch(host):
        raise AddressError(f"{address!r}: {host!r} is not a DNS name")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise AddressError(f"{address!r}: port {port} is not 1 to 65535")
    try:
        accounts.key_of(match["peer_id"])
    except ValueError as exc:
        raise AddressError(f"{address!r}: bad peer ID: {exc}") from None
    return PeerAddress(address.strip(), host, port, match["peer_id"])
