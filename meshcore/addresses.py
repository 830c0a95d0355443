"""Peer addresses a person writes: ``/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...``.

Checked where they are written (``--bootstrap``, ``p2p.bootstrap``), so that a
typo is a clear error at start, not a node redialling an address forever.
The seed's URL form is accepted too: ``tcp://host:port`` and ``ws://host:port``
(the bootstrap node's WebSocket listener), optionally pinned to a peer ID as
``tcp://host:port/p2p/12D3KooW...``; without one, the node trusts whoever
answers there on first contact (meshd/p2p/upstream/first_contact.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from meshcore.ledger import accounts

_PEER_MULTIADDR = re.compile(
    r"/(?P<proto>ip4|ip6|dns|dns4|dns6)/(?P<host>[^/]+)/tcp/(?P<port>[0-9]{1,5})(?P<ws>/ws)?"
    r"/p2p/(?P<peer_id>[^/]+)")
_PEER_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[^/:]+))"
    r":(?P<port>[0-9]{1,5})(?:/p2p/(?P<peer_id>[^/]+))?/?")
URL_SCHEMES = ("tcp", "ws")
_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


class AddressError(ValueError):
    """An address that cannot be dialled; the message says why."""


@dataclass(frozen=True)
class PeerAddress:
    address: str  # as given
    host: str
    port: int
    peer_id: str  # "" when a URL does not name it: learnt on first contact
    # What a node dials: the address as a multiaddr, without /p2p/.
    dial: str = ""


def parse_peer_address(address: str) -> PeerAddress:
    """A dialable TCP (or WebSocket) multiaddr of a Mesh node, ending in its
    peer ID; or a ``tcp://`` / ``ws://`` URL (see the module docstring).

    Raises:
        AddressError: not of that form, an unknown URL scheme, an unspecified or
            invalid IP, a port out of range, or a peer ID that is not an Ed25519 key's.
    """
    text = address.strip()
    if "://" in text:
        return _parse_url(text)
    match = _PEER_MULTIADDR.fullmatch(text)
    if match is None:
        raise AddressError(f"{address!r} is not a TCP multiaddr ending in /p2p/<peer id> "
                           "(e.g. /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...) or a "
                           "tcp:// or ws:// URL")
    proto, host = match["proto"], match["host"]
    _check_host(address, proto, host)
    port = _check_port(address, match["port"])
    _check_peer_id(address, match["peer_id"])
    dial = text.rsplit("/p2p/", 1)[0]
    return PeerAddress(text, host, port, match["peer_id"], dial)


def _parse_url(address: str) -> PeerAddress:
    match = _PEER_URL.fullmatch(address)
    if match is None:
        raise AddressError(f"{address!r} is not a URL like tcp://HOST:PORT or ws://HOST:PORT")
    scheme = match["scheme"].lower()
    if scheme not in URL_SCHEMES:
        raise AddressError(f"{address!r}: unknown URL scheme {scheme!r}; give tcp://HOST:PORT, "
                           "ws://HOST:PORT or a multiaddr")
    host = match["ip6"] or match["host"]
    try:
        ip = ipaddress.ip_address(host)
        proto = f"ip{ip.version}"
    except ValueError:
        proto = "dns"
    _check_host(address, proto, host)
    port = _check_port(address, match["port"])
    peer_id = match["peer_id"] or ""
    if peer_id:
        _check_peer_id(address, peer_id)
    dial = f"/{proto}/{host}/tcp/{port}" + ("/ws" if scheme == "ws" else "")
    full = f"{dial}/p2p/{peer_id}" if peer_id else address
    return PeerAddress(full, host, port, peer_id, dial)


def _check_host(address: str, proto: str, host: str) -> None:
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


def _check_port(address: str, text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise AddressError(f"{address!r}: port {port} is not 1 to 65535")
    return port


def _check_peer_id(address: str, peer_id: str) -> None:
    try:
        accounts.key_of(peer_id)
    except ValueError as exc:
        raise AddressError(f"{address!r}: bad peer ID: {exc}") from None


_OWN_MULTIADDR = re.compile(r"/(?P<proto>ip4|ip6|dns|dns4|dns6)/(?P<host>[A-Za-z0-9.:-]+)"
                            r"/tcp/(?P<port>[0-9]{1,5})")
_IPCIDR = re.compile(r"/(ip4|ip6)/([0-9A-Fa-f.:]+)/ipcidr/([0-9]{1,3})")


def parse_announce(address: str) -> str:
    """An address this node gives out (``p2p.announce``): a TCP multiaddr without /p2p/.

    Raises:
        AddressError: not of that form.
    """
    if not _OWN_MULTIADDR.fullmatch(address):
        raise AddressError(f"{address!r} is not a TCP multiaddr without /p2p/ "
                           "(e.g. /dns4/node.example.com/tcp/4001)")
    return address


def parse_no_announce(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    """What ``p2p.no_announce`` hides: a network (``/ip4/10.0.0.0/ipcidr/8``), or
    one address (returned as given).

    Raises:
        AddressError: neither.
    """
    match = _IPCIDR.fullmatch(entry)
    if match is None:
        if _OWN_MULTIADDR.fullmatch(entry):
            return entry
        raise AddressError(f"{entry!r} is neither a TCP multiaddr nor a network "
                           "(e.g. /ip4/10.0.0.0/ipcidr/8)")
    try:
        network = ipaddress.ip_network(f"{match[2]}/{match[3]}", strict=False)
    except ValueError as exc:
        raise AddressError(f"{entry!r}: {exc}") from None
    if network.version != int(match[1][-1]):
        raise AddressError(f"{entry!r}: {match[2]} is not an {match[1]} network")
    return network


def is_loopback_host(host: str) -> bool:
    """Whether a listener's host (an IP, ``[::1]`` or ``localhost``) is this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
