"""A connection closed during its handshake refuses the peer only if no other connection to
it is left: a hole punch closes the relayed connection once the direct one is up."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.peer.id import ID

from meshd.p2p.membership import Membership

PEER = ID.from_base58("12D3KooWGjdoeFa2JTkAERcs1rdtCknPYocQ5b24PYzXLfmLbpBM")


class Conn:
    def __init__(self, closed: bool) -> None:
        self.is_closed = closed
        self.muxed_conn = type("Muxed", (), {"peer_id": PEER})()


class Host:
    """What Membership._verify touches: new_stream fails (the connection went away)."""

    def __init__(self, connections: list[Conn]) -> None:
        self.connections = connections

    def get_network(self) -> Any:
        return self

    def get_connections(self, peer: ID) -> list[Conn]:
        return self.connections

    async def new_stream(self, peer: ID, protocols: list[str]) -> Any:
        raise RuntimeError("the connection is closed")


async def verdict_after_a_closed_handshake(others: list[Conn]) -> str | bool | None:
    relayed = Conn(closed=True)
    membership = Membership(Host([relayed, *others]), "net", "test")  # type: ignore[arg-type]
    verdict = membership._verdict(str(PEER))
    await membership._verify(relayed)  # type: ignore[arg-type]
    return verdict.reason if verdict.decided.is_set() else False


async def test_a_closed_connection_with_a_live_one_beside_it_leaves_the_verdict_open() -> None:
    with trio.fail_after(10):
        assert await verdict_after_a_closed_handshake([Conn(closed=False)]) is False


async def test_a_closed_connection_alone_refuses_the_peer_saying_why() -> None:
    with trio.fail_after(10):
        reason = await verdict_after_a_closed_handshake([Conn(closed=True)])
    assert reason == "it closed the connection during the handshake"
