"""The namespace test bed (meshd.testing.netns): real hosts, a switch, NAT routers.

What the networking tests and benches rely on: public hosts reach each other;
a private host reaches out through its router, seen at the router's public
address; nobody reaches a private host unsolicited; an endpoint-independent
router keeps a local port's public port for every destination (hole punching
works), a symmetric one gives each connection another (it does not).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshd.testing.netns import Host, Nat, Testbed, open_testbed

PORT = 7000
# Answers each connection with the address it came from, as "ip:port".
SERVER = f"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], {PORT}))
s.listen()
print("ready", flush=True)
while True:
    c, a = s.accept()
    c.sendall(f"{{a[0]}}:{{a[1]}}".encode())
    c.close()
"""
# Connects from one local port to each target in turn; prints what each saw.
CLIENT = f"""
import socket, sys
seen = []
for target in sys.argv[2:]:
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.bind(("", int(sys.argv[1])))
    c.settimeout(3)
    c.connect((target, {PORT}))
    seen.append(c.recv(100).decode())
    c.close()
print(" ".join(seen))
"""


@pytest.fixture
def bed() -> Iterator[Testbed]:
    with open_testbed(3, nat=[Nat.ENDPOINT_INDEPENDENT, Nat.SYMMETRIC]) as testbed:
        servers = [subprocess.Popen(h.command([sys.executable, "-c", SERVER, h.ip]),
                                    stdout=subprocess.PIPE, text=True) for h in testbed.hosts]
        try:
            for server in servers:
                assert server.stdout is not None and server.stdout.readline() == "ready\n"
            yield testbed
        finally:
            for server in servers:
                server.kill()
                server.wait()


def seen_from(host: Host, local_port: int, targets: list[Host]) -> list[str]:
    done = host.run([sys.executable, "-c", CLIENT, str(local_port), *[t.ip for t in targets]])
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_public_hosts_reach_each_other_by_their_own_addresses(bed: Testbed) -> None:
    assert seen_from(bed.hosts[0], 40001, bed.hosts[1:]) == \
        [f"{bed.hosts[0].ip}:40001"] * 2


def test_an_endpoint_independent_router_keeps_the_port_for_every_destination(
        bed: Testbed) -> None:
    site = bed.sites[0]
    seen = seen_from(site.hosts[0], 40000, bed.hosts)
    assert seen == [f"{site.router.ip}:40000"] * len(bed.hosts)


def test_a_symmetric_router_maps_each_destination_to_another_port(bed: Testbed) -> None:
    site = bed.sites[1]
    seen = seen_from(site.hosts[0], 40000, bed.hosts)
    assert {s.split(":")[0] for s in seen} == {site.router.ip}
    assert len(set(seen)) > 1  # three random ports agree by chance once in 2^32


def test_nobody_reaches_a_private_host_unsolicited(bed: Testbed) -> None:
    private = bed.sites[0].hosts[0]
    done = bed.hosts[0].run([sys.executable, "-c", CLIENT, "40002", private.ip])
    assert done.returncode != 0 and "unreachable" in done.stderr
    # Nor through its router's public address: nothing is forwarded unsolicited.
    refused = bed.hosts[0].run([sys.executable, "-c", CLIENT.replace(str(PORT), "40000"),
                                "40003", bed.sites[0].router.ip])
    assert refused.returncode != 0
