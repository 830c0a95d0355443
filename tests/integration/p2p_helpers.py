"""Hosts for p2p integration tests, several in one trio process.

State that has no change event is polled with meshd.testing.eventually.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable

import trio

from meshd.p2p.host import P2PHost, open_p2p_host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
NET_A = "net_aaaaaaaaaaaaaaaaaaaaaaaaaa"
NET_B = "net_bbbbbbbbbbbbbbbbbbbbbbbbbb"


@contextlib.asynccontextmanager
async def open_hosts(*networks: str) -> AsyncIterator[list[P2PHost]]:
    """One host per network ID given, all on loopback."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_p2p_host(os.urandom(32), LOOPBACK, net))
               for net in networks]


async def wait_until(host: P2PHost, condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait, on the host's connection events, until ``condition()`` holds."""
    with trio.fail_after(timeout):
        while not condition():
            await host.membership.next_change()
