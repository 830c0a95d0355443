"""Hosts for p2p integration tests, several in one trio process."""

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


async def poll_until(condition: Callable[[], bool], timeout: float = 10,
                     interval: float = 0.02) -> None:
    """Poll ``condition`` (for py-libp2p state that has no change event), bounded."""
    with trio.fail_after(timeout):
        for _ in range(int(timeout / interval) + 1):
            if condition():
                return
            await trio.sleep(interval)
    raise AssertionError("condition never held")
