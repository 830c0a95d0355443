"""A direct request's stream that fails in multistream negotiation is opened once more;
a protocol the peer does not serve is not asked twice."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from meshd.p2p.direct import DirectMessenger

PEER = ID.from_base58("12D3KooWGjdoeFa2JTkAERcs1rdtCknPYocQ5b24PYzXLfmLbpBM")


class Host:
    def __init__(self, *failures: str) -> None:
        self.failures = list(failures)
        self.asked = 0

    def get_network(self) -> Any:
        return self

    def get_connections(self, peer: ID) -> list[Any]:
        return []  # nothing to redial over

    async def new_stream(self, peer: ID, protocols: list[str]) -> str:
        self.asked += 1
        if self.failures:
            cause = MultiselectClientError(self.failures.pop(0))
            raise StreamFailure(f"failed to open a stream to peer {peer}") from cause
        return "a stream"


async def open_with(host: Host) -> Any:
    messenger = DirectMessenger(host, None, "net")  # type: ignore[arg-type]
    with trio.fail_after(10):
        return await messenger._open(PEER, "/mesh/net/x/1.0.0")  # type: ignore[arg-type]


async def test_a_stream_that_died_in_negotiation_is_opened_once_more() -> None:
    host = Host("handshake read failed: fail to read from multiselect communicator")
    assert await open_with(host) == "a stream" and host.asked == 2


async def test_a_second_failure_or_an_unserved_protocol_is_the_caller_s_error() -> None:
    twice = Host(*["handshake write failed: fail to write to multiselect communicator"] * 2)
    with pytest.raises(StreamFailure):
        await open_with(twice)
    assert twice.asked == 2
    unserved = Host("protocols not supported: ['/mesh/net/x/1.0.0']")
    with pytest.raises(StreamFailure):
        await open_with(unserved)
    assert unserved.asked == 1


class Closed:
    is_closed = True


class ClosedHost(Host):
    """Only closed connections to the peer, not cleaned up yet."""

    def __init__(self) -> None:
        super().__init__()
        self.dialled = 0

    def get_connections(self, peer: ID) -> list[Any]:
        return [Closed()]

    async def dial_peer(self, peer: ID) -> None:
        self.dialled += 1


class Membership:
    def __init__(self, closed_here: bool) -> None:
        self._closed_here = closed_here

    def closed_here(self, peer_id: str) -> bool:
        return self._closed_here


@pytest.mark.parametrize(("closed_here", "dials"), [(False, 1), (True, 0)])
async def test_a_connection_closed_here_a_moment_ago_is_not_dialled_again(
        closed_here: bool, dials: int) -> None:
    # Past a closed connection py-libp2p would not dial; meshd does, unless this
    # node closed it itself (pruned it): a request in flight must not undo that.
    host = ClosedHost()
    messenger = DirectMessenger(host, Membership(closed_here), "net")  # type: ignore[arg-type]
    with trio.fail_after(10):
        await messenger._open(PEER, "/mesh/net/x/1.0.0")  # type: ignore[arg-type]
    assert host.dialled == dials
