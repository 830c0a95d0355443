"""Peer addresses a person writes (--bootstrap, p2p.bootstrap): dialable or a clear error."""

from __future__ import annotations

import pytest

from meshcore.addresses import AddressError, parse_peer_address

PEER = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"


@pytest.mark.parametrize("address", [
    f"/ip4/203.0.113.7/tcp/4001/p2p/{PEER}",
    f"/ip6/2001:db8::7/tcp/4001/p2p/{PEER}",
    f"/dns4/boot.example.com/tcp/4001/p2p/{PEER}",
    f"/dns/boot-1.example.com./tcp/1/p2p/{PEER}",
    f"/ip4/127.0.0.1/tcp/65535/p2p/{PEER}",
])
def test_dialable_addresses_are_accepted(address: str) -> None:
    parsed = parse_peer_address(address)
    assert parsed.peer_id == PEER and 1 <= parsed.port <= 65535


@pytest.mark.parametrize(("address", "why"), [
    ("/ip4/127.0.0.1/tcp/4001/p2p/0", "bad peer ID"),
    ("/ip4/127.0.0.1/tcp/4001/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
     "Ed25519"),
    ("/ip4/127.0.0.1/tcp/4001", "ending in /p2p/"),
    (f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER}", "listen-on-everything"),
    (f"/ip6/::/tcp/4001/p2p/{PEER}", "listen-on-everything"),
    (f"/ip4/1.2.3/tcp/4001/p2p/{PEER}", "not an ip4 address"),
    (f"/ip4/::1/tcp/4001/p2p/{PEER}", "not an ip4 address"),
    (f"/ip4/1.2.3.4/tcp/0/p2p/{PEER}", "port 0"),
    (f"/ip4/1.2.3.4/tcp/70000/p2p/{PEER}", "port 70000"),
    (f"/dns4/bad_name!/tcp/4001/p2p/{PEER}", "not a DNS name"),
    (f"/ip4/1.2.3.4/udp/4001/quic/p2p/{PEER}", "TCP multiaddr"),
    ("http://boot.example.com:4001", "unknown URL scheme 'http'"),
    ("udp://boot.example.com:4001", "unknown URL scheme"),
    ("ws://boot.example.com", "not a URL like"),
    ("ws://0.0.0.0:8080", "listen-on-everything"),
    ("tcp://boot.example.com:0", "port 0"),
    ("tcp://bad_name!:4001", "not a DNS name"),
    ("tcp://boot.example.com:4001/p2p/0", "bad peer ID"),
    ("", "TCP multiaddr"),
])
def test_addresses_nobody_can_dial_are_refused_saying_why(address: str, why: str) -> None:
    with pytest.raises(AddressError, match=why):
        parse_peer_address(address)


@pytest.mark.parametrize(("url", "dial", "peer_id"), [
    ("ws://bootstrap.example.com:8080", "/dns/bootstrap.example.com/tcp/8080/ws", ""),
    ("tcp://203.0.113.7:4001", "/ip4/203.0.113.7/tcp/4001", ""),
    ("ws://[2001:db8::1]:8080/", "/ip6/2001:db8::1/tcp/8080/ws", ""),
    (f"tcp://203.0.113.7:4001/p2p/{PEER}", "/ip4/203.0.113.7/tcp/4001", PEER),
    (f"/ip4/203.0.113.7/tcp/8080/ws/p2p/{PEER}", "/ip4/203.0.113.7/tcp/8080/ws", PEER),
])
def test_the_seeds_url_form_names_what_to_dial(url: str, dial: str, peer_id: str) -> None:
    parsed = parse_peer_address(url)
    assert (parsed.dial, parsed.peer_id) == (dial, peer_id)
    if peer_id:  # pinned: dialled as a full multiaddr
        assert parsed.address == f"{dial}/p2p/{peer_id}"
