"""A test bed of real hosts: network namespaces on a switch, some behind NAT routers.

Each public host is a network namespace with its own IP on one Linux bridge
(the switch, the test bed's "internet"). A NAT site is a router namespace with
a public IP on the switch and a LAN of its own: private hosts (their own
namespaces, 192.168.<site>.x) whose default route is the router, which
masquerades their traffic (nftables) and lets nothing unsolicited in:

* ``Nat.ENDPOINT_INDEPENDENT``: a private host's source port is kept where it
  can be, so one local port maps to one public port whatever the destination
  (a home router: hole punching works through it);
* ``Nat.SYMMETRIC``: every connection gets a random public port (carrier-grade
  and many corporate NATs: hole punching fails, only a relay helps).

A partition re-plugs public hosts and routers into separate switches, a heal
plugs them all back: connections across the cut stall as on a real network
(nothing is reset). Only these namespaces and their bridges carry traffic:
the bridges have no address and no uplink, and nothing is routed to the
machine's own interfaces. Needs root, iproute2 (``ip``) and, for NAT sites,
nftables (``nft``; ``make setup`` installs Debian's).

    with open_testbed(4, nat=[Nat.ENDPOINT_INDEPENDENT]) as bed:
        ip = bed.hosts[0].ip
        argv = bed.hosts[0].command(["meshd", "run", "--listen", f"/ip4/{ip}/tcp/4001"])
        behind = bed.sites[0].hosts[0]   # 192.168.1.10, reaches out via the router
        bed.partition([bed.hosts[:2], bed.hosts[2:]])
        bed.heal()
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SUBNET = "10.231.{block}.{host}"
PREFIX = 24
LAN = "192.168.{site}.{host}"
ROUTER_HOST = 200  # routers' public addresses: .200, .201, ... on the switch


class TestbedUnavailable(Exception):
    """This machine cannot make the test bed (not root, no iproute2 or nftables)."""


class Nat(enum.Enum):
    """How a site's router maps its private hosts' connections (RFC 4787 terms)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    SYMMETRIC = "symmetric"


def _run(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def _ip(*args: str) -> None:
    _run("ip", *args)


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    ip: str
    outer: str  # the veth end on the switch side (a private host's is in its router)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (exec: same PID, signals reach it)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in this host's namespace to completion (output captured)."""
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout)


@dataclass
class Site:
    """A NAT router and the private hosts of its LAN."""

    nat: Nat
    router: Host  # its ip is the site's public address
    lan_ip: str  # the router's address on the LAN: the hosts' gateway
    hosts: list[Host] = field(default_factory=list)


class Testbed:
    """``count`` public hosts on one switch, and NAT sites; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, count: int, nat: Sequence[Nat] = (), hosts_per_site: int = 1) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise TestbedUnavailable("network namespaces need root and iproute2 ('ip')")
        if nat and shutil.which("nft") is None:
            raise TestbedUnavailable("NAT sites need nftables ('nft'): apt-get install nftables")
        if count + len(nat) > ROUTER_HOST - 10 or len(nat) > 50 or not 1 <= hosts_per_site <= 200:
            raise ValueError("at most 190 hosts, 50 NAT sites and 200 hosts per site")
        # A tag per test bed: two runs on one machine never share a name or a subnet.
        self.tag = secrets.token_hex(2)
        block = int(self.tag, 16) % 250 + 1
        self.hosts = [Host(f"mesh-{self.tag}-h{i}", SUBNET.format(block=block, host=10 + i),
                           f"m{self.tag}v{i}") for i in range(count)]
        self.sites = [
            Site(kind,
                 Host(f"mesh-{self.tag}-r{k}", SUBNET.format(block=block, host=ROUTER_HOST + k),
                      f"m{self.tag}w{k}"),
                 LAN.format(site=k + 1, host=1),
                 [Host(f"mesh-{self.tag}-r{k}p{i}", LAN.format(site=k + 1, host=10 + i),
                       f"m{self.tag}r{k}p{i}") for i in range(hosts_per_site)])
            for k, kind in enumerate(nat)]
        self._switches: list[str] = []
        self._namespaces: list[str] = []

    @property
    def routers(self) -> list[Host]:
        return [site.router for site in self.sites]

    def _switch(self, index: int) -> str:
        while len(self._switches) <= index:
            name = f"m{self.tag}s{len(self._switches)}"
            _ip("link", "add", name, "type", "bridge")
            _ip("link", "set", name, "up")
            self._switches.append(name)
        return self._switches[index]

    def _namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _plug(self, host: Host, switch: str, inner: str = "eth0") -> None:
        """A namespace for ``host``, its veth's outer end on ``switch`` (root namespace)."""
        self._namespace(host.name)
        _ip("link", "add", host.outer, "type", "veth", "peer", "name", f"{host.outer}i")
        _ip("link", "set", f"{host.outer}i", "netns", host.name)
        _ip("-n", host.name, "link", "set", f"{host.outer}i", "name", inner)
        _ip("link", "set", host.outer, "master", switch)
        _ip("link", "set", host.outer, "up")
        _ip("-n", host.name, "addr", "add", f"{host.ip}/{PREFIX}", "dev", inner)
        _ip("-n", host.name, "link", "set", inner, "up")

    def create(self) -> None:
        switch = self._switch(0)
        for host in self.hosts:
            self._plug(host, switch)
        for site in self.sites:
            self._create_site(site, switch)

    def _create_site(self, site: Site, switch: str) -> None:
        router = site.router.name
        self._plug(site.router, switch, inner="wan")
        _ip("-n", router, "link", "add", "lan", "type", "bridge")
        _ip("-n", router, "addr", "add", f"{site.lan_ip}/{PREFIX}", "dev", "lan")
        _ip("-n", router, "link", "set", "lan", "up")
        for host in site.hosts:
            self._namespace(host.name)
            _ip("-n", router, "link", "add", host.outer, "type", "veth", "peer", "name", "eth0",
                "netns", host.name)
            _ip("-n", router, "link", "set", host.outer, "master", "lan")
            _ip("-n", router, "link", "set", host.outer, "up")
            _ip("-n", host.name, "addr", "add", f"{host.ip}/{PREFIX}", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "route", "add", "default", "via", site.lan_ip)
        _run("ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # Masquerade what leaves by the WAN; let in only replies to what went out,
        # and drop (as home routers do; no RST) a connection begun from outside.
        # "fully-random" gives each connection a random public port (symmetric);
        # plain masquerade keeps the source port where it is free (endpoint-
        # independent mapping, which TCP hole punching relies on).
        ports = " fully-random" if site.nat is Nat.SYMMETRIC else ""
        rules = f"""
table ip mesh_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade{ports}
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        iifname "lan" oifname "wan" accept
        iifname "wan" oifname "lan" ct state established,related accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }}
}}
"""
        _run("ip", "netns", "exec", router, "nft", "-f", "-", stdin=rules)

    def partition(self, groups: Sequence[Sequence[Host]]) -> None:
        """Each group on a switch of its own (public hosts and routers in no group
        stay on the first; a site moves with its router)."""
        for index, group in enumerate(groups):
            switch = self._switch(index)
            for host in group:
                _ip("link", "set", host.outer, "master", switch)

    def heal(self) -> None:
        """Every public host and router back on the first switch."""
        self.partition([[*self.hosts, *self.routers]])

    def close(self) -> None:
        for name in reversed(self._namespaces):
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", name)  # takes its veth pairs and bridges with it
        for switch in self._switches:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", switch)
        self._namespaces.clear()
        self._switches.clear()


@contextlib.contextmanager
def open_testbed(count: int, nat: Sequence[Nat] = (),
                 hosts_per_site: int = 1) -> Iterator[Testbed]:
    """``count`` public hosts and a NAT site per entry of ``nat`` (each with
    ``hosts_per_site`` private hosts), removed on the way out (even after an error)."""
    bed = Testbed(count, nat, hosts_per_site)
    try:
        bed.create()
        yield bed
    finally:
        bed.close()
