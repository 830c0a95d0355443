"""The addresses this node tells others, and which of a peer's addresses are usable.

A wildcard listener (``/ip4/0.0.0.0/tcp/4001``, meshd's default) is bound to
every interface, but ``0.0.0.0`` is no address anyone can dial: py-libp2p
advertises it as is (``BasicHost.get_addrs``). :class:`AddressPolicy` is the
host's ``addrs_factory`` (py-libp2p's go-style hook, so identify, the DHT and
``meshctl status`` all see the same list). Like Kubo's ``Addresses``:

* ``announce`` (``p2p.announce``, ``--announce``), when given, replaces
  every direct address: the operator knows it (a port forward, a DNS name);
* addresses members reached the node at (AutoNAT, meshd/p2p/autonat.py) are
  added, and relay addresses (``…/p2p-circuit``, meshd/p2p/relay_client.py)
  come after every direct one;
* otherwise each wildcard listener becomes one address per interface address
  of its family; loopback addresses are left out when there is any other
  (a remote peer that dials 127.0.0.1 reaches itself); link-local ones always;
* ``no_announce`` (``p2p.no_announce``) removes addresses: an exact multiaddr,
  or a network as ``/ip4/10.0.0.0/ipcidr/8``.

Addresses go to peers that may not be able to use them. :func:`usable_by`
says which a peer can: a loopback address only on the same machine, a private
one (RFC 1918, CGNAT, ULA) only from a private or loopback address, never an
unspecified one. The peer book keeps, and peer exchange sends, only those.
What the node says of itself follows the same rule: while it answers a peer
(the handler of a stream on a direct connection runs :func:`shown_to` the
peer's IP, meshd/p2p/upstream/protocol_table.py), :func:`for_the_viewer` trims its
advertised addresses, so identify and the signed peer record in it show a
peer on the internet no LAN or loopback address. The node's own reads
(``meshctl status``, its AutoNAT and relay requests) see every address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import TypeAlias

import ifaddr
import multiaddr

from meshcore.addresses import parse_no_announce

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

INTERFACES_TTL = 30.0  # seconds the interface addresses are reused before a new look
_IP_TCP = re.compile(r"/(?P<family>ip4|ip6)/(?P<ip>[^/]+)(?P<rest>/tcp/[0-9]+.*)?")
# Carrier-grade NAT space: not "private" to ipaddress, but not reachable from outside.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def interface_ips() -> list[IPAddress]:
    """Every address of this host's interfaces (this network namespace's)."""
    found: list[IPAddress] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                found.append(ipaddress.ip_address(text))
            except ValueError:
                continue
    return found


def ip_of(address: str) -> IPAddress | None:
    """The IP of an ``/ip4/…`` or ``/ip6/…`` multiaddr; None for any other."""
    match = _IP_TCP.match(address)
    if match is None:
        return None
    try:
        return ipaddress.ip_address(match["ip"])
    except ValueError:
        return None


def tcp_endpoint(address: str) -> tuple[IPAddress, int] | None:
    """The IP and TCP port of an ``/ip4|ip6/<ip>/tcp/<port>`` multiaddr; None for any other."""
    match = _IP_TCP.fullmatch(address)
    ip = ip_of(address)
    if match is None or ip is None or not match["rest"]:
        return None
    return ip, int(match["rest"].split("/")[2])


def is_private(ip: IPAddress) -> bool:
    """Reachable only inside its own network: RFC 1918, CGNAT, ULA, link-local."""
    return (ip.is_private or ip in _SHARED) and not ip.is_loopback


def usable_by(address: str, viewer: IPAddress | None) -> bool:
    """Whether a peer seen at ``viewer`` (None: unknown) can dial ``address``."""
    ip = ip_of(address)
    if ip is None:
        return "/tcp/" in address and not address.startswith(("/ip4/", "/ip6/"))  # DNS names
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return False
    if ip.is_loopback:
        return viewer is not None and viewer.is_loopback
    if is_private(ip):
        return viewer is None or viewer.is_loopback or is_private(viewer)
    return True


# The IP of the peer being answered in this task. Unset: no one in
# particular (the node itself, or a peer behind a relay, which may be anywhere).
_VIEWER: ContextVar[IPAddress] = ContextVar("mesh_address_viewer")


@contextlib.contextmanager
def shown_to(viewer: IPAddress) -> Iterator[None]:
    """Within this block, :func:`for_the_viewer` trims addresses for ``viewer``."""
    token = _VIEWER.set(viewer)
    try:
        yield
    finally:
        _VIEWER.reset(token)


def for_the_viewer(addresses: Iterable[str]) -> list[str]:
    """``addresses`` the peer being answered can use; all when no one is."""
    try:
        viewer = _VIEWER.get()
    except LookupError:
        return list(addresses)
    return [a for a in addresses if usable_by(a, viewer)]


class AddressPolicy:
    """``addrs_factory`` of the host: candidates (listeners, confirmed observed
    addresses) in, the addresses to advertise out; see the module docstring."""

    def __init__(self, announce: Sequence[str] = (), no_announce: Sequence[str] = (),
                 interfaces: Callable[[], list[IPAddress]] = interface_ips,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._announce = [multiaddr.Multiaddr(a) for a in announce]
        self._exact: set[str] = set()
        self._networks: list[IPNetwork] = []
        for entry in no_announce:  # checked by the config (meshcore/addresses.py)
            hidden = parse_no_announce(entry)
            if isinstance(hidden, str):
                self._exact.add(hidden)
            else:
                self._networks.append(hidden)
        self._interfaces = interfaces
        self._clock = clock
        self._cached: tuple[float, list[IPAddress]] | None = None
        self._confirmed: tuple[str, ...] = ()
        self._relayed: tuple[str, ...] = ()

    def confirm(self, addresses: Sequence[str]) -> None:
        """Addresses members reached this node at (AutoNAT): advertised too."""
        self._confirmed = tuple(addresses)

    def relay_through(self, addresses: Sequence[str]) -> None:
        """``/p2p-circuit`` addresses of the relays this node holds a slot
        with: advertised after every direct address."""
        self._relayed = tuple(addresses)

    def __call__(self, candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr(a) for a in self.advertised(str(c) for c in candidates)]

    def advertised(self, candidates: Iterable[str]) -> list[str]:
        """The addresses to advertise for ``candidates`` (listeners, without /p2p/<us>)."""
        if self._announce:  # the operator knows; relay addresses still follow
            return [*(str(a) for a in self._announce), *self._relayed]
        expanded: list[str] = []
        for address in (*self._confirmed, *candidates, *self._relayed):
            expanded += self._expand(address)
        kept = [a for a in dict.fromkeys(expanded) if not self._excluded(a)]
        if any(not _loopback(a) for a in kept):
            kept = [a for a in kept if not _loopback(a)]
        return sorted(kept, key=_preference)

    def _expand(self, address: str) -> list[str]:
        match = _IP_TCP.fullmatch(address)
        ip = ip_of(address)
        if match is None or ip is None or not ip.is_unspecified:
            return [address]
        rest = match["rest"] or ""
        return [f"/{match['family']}/{own}{rest}" for own in self._own_ips()
                if own.version == ip.version and not own.is_link_local]

    def _own_ips(self) -> list[IPAddress]:
        now = self._clock()
        if self._cached is None or now - self._cached[0] > INTERFACES_TTL:
            self._cached = (now, self._interfaces())
        return self._cached[1]

    def _excluded(self, address: str) -> bool:
        if address in self._exact:
            return True
        ip = ip_of(address)
        if ip is None:
            return False
        return ip.is_unspecified or any(ip.version == net.version and ip in net
                                        for net in self._networks)


def _loopback(address: str) -> bool:
    ip = ip_of(address)
    return ip is not None and ip.is_loopback


def _preference(address: str) -> tuple[int, bool]:
    """Public addresses first, then private ones, then loopback; DNS names first
    of all, relay addresses last; plain TCP before WebSocket on each."""
    websocket = "/ws" in address
    if "/p2p-circuit" in address:
        return 4, websocket
    ip = ip_of(address)
    if ip is None:
        return 0, websocket
    return (3 if ip.is_loopback else 2 if is_private(ip) else 1), websocket
