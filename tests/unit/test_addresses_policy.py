"""What a node advertises (meshd/p2p/addresses.py), and which addresses a peer can use."""

from __future__ import annotations

import ipaddress

import multiaddr
import pytest

from meshd.p2p.addresses import AddressPolicy, IPAddress, usable_by

IPS = [ipaddress.ip_address(a) for a in
       ("127.0.0.1", "::1", "192.168.1.10", "8.8.8.8", "fe80::1", "2606:4700::1111")]


def policy(**options: object) -> AddressPolicy:
    return AddressPolicy(interfaces=lambda: IPS, **options)  # type: ignore[arg-type]


def test_a_wildcard_listener_becomes_the_interfaces_addresses_public_first() -> None:
    assert policy().advertised(["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]) == [
        "/ip4/8.8.8.8/tcp/4001", "/ip6/2606:4700::1111/tcp/4001", "/ip4/192.168.1.10/tcp/4001"]


def test_loopback_is_advertised_only_when_it_is_all_there_is() -> None:
    assert policy().advertised(["/ip4/127.0.0.1/tcp/4001"]) == ["/ip4/127.0.0.1/tcp/4001"]
    only_loopback = AddressPolicy(interfaces=lambda: [ipaddress.ip_address("127.0.0.1")])
    assert only_loopback.advertised(["/ip4/0.0.0.0/tcp/1"]) == ["/ip4/127.0.0.1/tcp/1"]


def test_no_announce_removes_addresses_and_networks() -> None:
    hidden = policy(no_announce=["/ip4/192.168.0.0/ipcidr/16", "/ip6/2606:4700::1111/tcp/4001"])
    assert hidden.advertised(["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]) == \
        ["/ip4/8.8.8.8/tcp/4001"]


def test_announce_replaces_everything() -> None:
    forward = policy(announce=["/dns4/node.example.com/tcp/4001"])
    assert [str(a) for a in forward([multiaddr.Multiaddr("/ip4/0.0.0.0/tcp/1")])] == \
        ["/dns4/node.example.com/tcp/4001"]


def test_interfaces_are_looked_up_again_after_a_while() -> None:
    now = [0.0]
    seen: list[list[IPAddress]] = [[ipaddress.ip_address("10.0.0.1")],
                                   [ipaddress.ip_address("10.0.0.2")]]
    moving = AddressPolicy(interfaces=lambda: seen.pop(0), clock=lambda: now[0])
    assert moving.advertised(["/ip4/0.0.0.0/tcp/1"]) == ["/ip4/10.0.0.1/tcp/1"]
    assert moving.advertised(["/ip4/0.0.0.0/tcp/1"]) == ["/ip4/10.0.0.1/tcp/1"]
    now[0] = 31.0
    assert moving.advertised(["/ip4/0.0.0.0/tcp/1"]) == ["/ip4/10.0.0.2/tcp/1"]


@pytest.mark.parametrize(("address", "viewer", "usable"), [
    ("/ip4/0.0.0.0/tcp/1", "127.0.0.1", False),
    ("/ip4/127.0.0.1/tcp/1", "127.0.0.1", True),
    ("/ip4/127.0.0.1/tcp/1", "10.0.0.5", False),
    ("/ip4/10.0.0.9/tcp/1", "10.0.0.5", True),
    ("/ip4/10.0.0.9/tcp/1", "1.1.1.1", False),
    ("/ip4/100.64.1.1/tcp/1", "1.1.1.1", False),  # carrier-grade NAT space
    ("/ip4/8.8.8.8/tcp/1", "1.1.1.1", True),
    ("/ip4/8.8.8.8/tcp/1", "10.0.0.5", True),
    ("/ip6/fe80::1/tcp/1", "10.0.0.5", False),
    ("/dns4/node.example.com/tcp/1", "10.0.0.5", True),
    ("/ip4/10.0.0.9/tcp/1", None, True),
])
def test_a_peer_gets_only_addresses_it_can_dial(address: str, viewer: str | None,
                                                usable: bool) -> None:
    seen = ipaddress.ip_address(viewer) if viewer else None
    assert usable_by(address, seen) is usable


PEER = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
RELAY = "12D3KooWRR5eKAzy45xvZeJXJUZtZxocBkzoa7HodmPyNrDRt8eY"


class _Host:
    """What advertised.install and protocol_table.install touch of a host."""

    def __init__(self, listeners: list[str]) -> None:
        self._listeners = [multiaddr.Multiaddr(a) for a in listeners]
        self.mux = type("Mux", (), {"handlers": {}})()

    def get_id(self) -> str:
        return PEER

    def get_transport_addrs(self) -> list[multiaddr.Multiaddr]:
        return self._listeners

    def get_mux(self) -> object:
        return self.mux


class _Stream:
    def __init__(self, remote: str) -> None:
        conn = type("Conn", (), {"get_transport_addresses": lambda _self: [remote]})()
        self.swarm_conn = conn


def _answering_host() -> tuple[_Host, list[list[str]]]:
    """A host on a LAN address and a public one, relayed too, whose one
    protocol handler records the addresses it would tell the peer."""
    from meshd.p2p.upstream import advertised, protocol_table

    host = _Host(["/ip4/0.0.0.0/tcp/4001"])
    own = policy()
    own.relay_through([f"/ip4/8.8.4.4/tcp/4001/p2p/{RELAY}/p2p-circuit"])
    advertised.install(host, own)  # type: ignore[arg-type]
    told: list[list[str]] = []

    async def handler(stream: object) -> None:
        told.append([str(a) for a in host.get_addrs()])  # type: ignore[attr-defined]

    host.mux.handlers["/test/1"] = handler  # type: ignore[attr-defined]
    protocol_table.install(host)  # type: ignore[arg-type]
    return host, told


@pytest.mark.parametrize(("remote", "expected_ips"), [
    ("/ip4/203.0.114.9/tcp/5555", ["8.8.8.8", "8.8.4.4"]),             # on the internet
    ("/ip4/192.168.1.20/tcp/5555", ["8.8.8.8", "192.168.1.10", "8.8.4.4"]),  # on the LAN
    ("/ip4/127.0.0.1/tcp/5555", ["8.8.8.8", "192.168.1.10", "8.8.4.4"]),     # this machine
    (f"/ip4/8.8.4.4/tcp/4001/p2p/{RELAY}/p2p-circuit",                  # relayed: anywhere
     ["8.8.8.8", "192.168.1.10", "8.8.4.4"]),
])
def test_a_node_tells_a_peer_only_the_addresses_it_can_use(remote: str,
                                                           expected_ips: list[str]) -> None:
    import trio

    host, told = _answering_host()
    trio.run(host.mux.handlers["/test/1"], _Stream(remote))  # type: ignore[attr-defined]
    assert [a.split("/")[2] for a in told[0]] == expected_ips
    assert all(a.startswith("/ip4/") and f"/p2p/{PEER}" in a for a in told[0])
    # The node itself, outside any answer, sees every address.
    assert len(host.get_addrs()) == 3  # type: ignore[attr-defined]


def test_the_viewer_ends_with_the_answer() -> None:
    from meshd.p2p.addresses import for_the_viewer, shown_to

    addrs = ["/ip4/192.168.1.10/tcp/1", "/ip4/8.8.8.8/tcp/1", "/ip4/127.0.0.1/tcp/1"]
    with shown_to(ipaddress.ip_address("9.9.9.9")):
        assert for_the_viewer(addrs) == ["/ip4/8.8.8.8/tcp/1"]
        with shown_to(ipaddress.ip_address("10.0.0.2")):
            assert for_the_viewer(addrs) == addrs[:2]
        assert for_the_viewer(addrs) == ["/ip4/8.8.8.8/tcp/1"]
    assert for_the_viewer(addrs) == addrs
