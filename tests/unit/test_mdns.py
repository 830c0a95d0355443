"""What LAN discovery announces and accepts (meshd/p2p/mdns.py)."""

from __future__ import annotations

from meshd.p2p.mdns import MAX_ADDRS, lan_ips, parse_txt, service_type, txt_record

ME = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
PI = "12D3KooWRR5eKAzy45xvZeJXJUZtZxocBkzoa7HodmPyNrDRt8eY"


def test_the_service_is_per_network_and_fits_a_dns_sd_label() -> None:
    kind = service_type("net_vwa2wjpjkzpoy5d6kjjwpkj66q")
    assert kind == "_mesh-vwa2wjpjk._udp.local."
    assert len(kind.split(".")[0]) <= 15
    assert service_type("net_aaaaaaaaaaaaaaaaaaaaaaaaaa") != kind


def test_only_private_lan_addresses_are_announced_on() -> None:
    advertised = [f"/ip4/192.168.1.10/tcp/4001/p2p/{ME}", f"/ip4/8.8.8.8/tcp/4001/p2p/{ME}",
                  f"/ip4/127.0.0.1/tcp/4001/p2p/{ME}", f"/ip4/169.254.1.1/tcp/4001/p2p/{ME}",
                  f"/ip4/10.0.0.5/tcp/4001/p2p/{PI}/p2p-circuit/p2p/{ME}",
                  f"/ip4/192.168.1.10/tcp/4002/p2p/{ME}"]
    assert lan_ips(advertised) == ["192.168.1.10"]
    assert lan_ips([f"/ip4/127.0.0.1/tcp/4001/p2p/{ME}"]) == []  # loopback only: off


def test_a_record_round_trips_and_names_one_peer() -> None:
    addrs = [f"/ip4/192.168.1.11/tcp/4001/p2p/{PI}", f"/ip4/10.0.0.7/tcp/4001/p2p/{PI}"]
    assert parse_txt(txt_record(addrs), ME) == (PI, ["/ip4/192.168.1.11/tcp/4001",
                                                     "/ip4/10.0.0.7/tcp/4001"])


def test_records_that_are_not_one_other_peers_are_ignored() -> None:
    assert parse_txt(txt_record([f"/ip4/192.168.1.10/tcp/4001/p2p/{ME}"]), ME) is None
    two = txt_record([f"/ip4/192.168.1.11/tcp/1/p2p/{PI}", f"/ip4/192.168.1.12/tcp/1/p2p/{ME}"])
    assert parse_txt(two, ME) is None
    assert parse_txt(None, ME) is None
    assert parse_txt(b"", ME) is None
    assert parse_txt(b"\xff\xfe\x00garbage", ME) is None
    assert parse_txt(b"\x05other", ME) is None
    assert parse_txt(b"\x20dnsaddr=/ip4/1.2.3.4/tcp/1/p2p/", ME) is None  # truncated
    many = txt_record([f"/ip4/192.168.1.{i}/tcp/1/p2p/{PI}" for i in range(1, 40)])
    found = parse_txt(many, ME)
    assert found is not None and len(found[1]) <= MAX_ADDRS
