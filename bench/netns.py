"""Hosts of a test bed in network namespaces: each its own IP, all on one switch.

Each host is a network namespace with a veth pair whose outer end is plugged
into a Linux bridge (the switch). A partition re-plugs hosts into separate
bridges, a heal plugs them all back: TCP connections across the cut stall as
they would on a real network (nothing is reset), and resume or time out after
the heal. Only these namespaces and their bridges carry the traffic: the
bridges have no address and no uplink. Needs root and iproute2 (``ip``).

    with open_testbed(4) as bed:
        argv = bed.hosts[0].command(["meshd", "run", "--listen", f"/ip4/{ip}/tcp/4001"])
        bed.partition([bed.hosts[:2], bed.hosts[2:]])
        bed.heal()
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

SUBNET = "10.231.{block}.{host}"
PREFIX = 24


class TestbedUnavailable(Exception):
    """This machine cannot make network namespaces (not root, no iproute2)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    ip: str
    outer: str  # the veth end on the switch side

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace (exec: same PID, signals reach it)."""
        return ["ip", "netns", "exec", self.name, *argv]


class Testbed:
    """``count`` hosts on one switch; see the module docstring."""

    def __init__(self, count: int) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise TestbedUnavailable("network namespaces need root and iproute2 ('ip')")
        # A tag per test bed: two runs on one machine never share a name or a subnet.
        self.tag = secrets.token_hex(2)
        block = int(self.tag, 16) % 250 + 1
        self.hosts = [Host(f"mesh-{self.tag}-h{i}", SUBNET.format(block=block, host=10 + i),
                           f"m{self.tag}v{i}") for i in range(count)]
        self._switches: list[str] = []
        self._created: list[Host] = []

    def _switch(self, index: int) -> str:
        while len(self._switches) <= index:
            name = f"m{self.tag}s{len(self._switches)}"
            _ip("link", "add", name, "type", "bridge")
            _ip("link", "set", name, "up")
            self._switches.append(name)
        return self._switches[index]

    def create(self) -> None:
        switch = self._switch(0)
        for host in self.hosts:
            _ip("netns", "add", host.name)
            self._created.append(host)
            inner = f"{host.outer}i"
            _ip("link", "add", host.outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", host.name)
            _ip("link", "set", host.outer, "master", switch)
            _ip("link", "set", host.outer, "up")
            _ip("-n", host.name, "addr", "add", f"{host.ip}/{PREFIX}", "dev", inner)
            _ip("-n", host.name, "link", "set", inner, "up")
            _ip("-n", host.name, "link", "set", "lo", "up")

    def partition(self, groups: Sequence[Sequence[Host]]) -> None:
        """Each group on a switch of its own (hosts in no group stay on the first)."""
        for index, group in enumerate(groups):
            switch = self._switch(index)
            for host in group:
                _ip("link", "set", host.outer, "master", switch)

    def heal(self) -> None:
        """Every host back on the first switch."""
        self.partition([self.hosts])

    def close(self) -> None:
        for host in self._created:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", host.name)  # takes its veth pair with it
        for switch in self._switches:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", switch)
        self._created.clear()
        self._switches.clear()


@contextlib.contextmanager
def open_testbed(count: int) -> Iterator[Testbed]:
    """``count`` hosts on one switch, removed on the way out (even after an error)."""
    bed = Testbed(count)
    try:
        bed.create()
        yield bed
    finally:
        bed.close()
