"""Direct request/response between members: answers, errors, caps, deadlines, PING."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from meshd import errors
from meshd.p2p.direct import Code, DirectRequestFailed
from meshd.p2p.membership import protocol_id
from meshd.testing import eventually
from tests.integration.p2p_helpers import NET_A, open_hosts


async def test_request_response_and_handler_errors() -> None:
    async def shout(peer_id: str, payload: bytes) -> bytes:
        if payload == b"bad":
            raise errors.InvalidArgument("no 'bad' please")
        if payload == b"bug":
            raise RuntimeError("a bug")
        if payload == b"slow":
            await trio.sleep_forever()
        return peer_id.encode() + b":" + payload.upper()

    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            with a.direct.serving("shout", shout, max_request=100, timeout=0.5):
                await b.connect(a.listen_addrs()[0])
                answer = await b.direct.request(a.peer_id, "shout", b"hello")
                assert answer == f"{b.peer_id}:HELLO".encode()
                with pytest.raises(DirectRequestFailed, match="no 'bad' please") as invalid:
                    await b.direct.request(a.peer_id, "shout", b"bad")
                assert invalid.value.code == Code.CODE_INVALID
                with pytest.raises(DirectRequestFailed, match="handler failed") as bug:
                    await b.direct.request(a.peer_id, "shout", b"bug")
                assert bug.value.code == Code.CODE_INTERNAL
                with pytest.raises(DirectRequestFailed) as slow:
                    await b.direct.request(a.peer_id, "shout", b"slow")
                assert slow.value.code == Code.CODE_TIMEOUT
                with pytest.raises(DirectRequestFailed, match="too large") as big:
                    await b.direct.request(a.peer_id, "shout", b"x" * 101)
                assert big.value.code == Code.CODE_TOO_LARGE
                # the serving side is unharmed
                assert await b.direct.request(a.peer_id, "shout", b"again") == \
                    f"{b.peer_id}:AGAIN".encode()


async def test_response_cap_and_deadline_on_the_requesting_side() -> None:
    async def big(peer_id: str, payload: bytes) -> bytes:
        return b"y" * 5000

    async def never(peer_id: str, payload: bytes) -> bytes:
        await trio.sleep_forever()
        raise AssertionError

    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            with a.direct.serving("big", big), \
                    a.direct.serving("never", never, timeout=60):
                await b.connect(a.listen_addrs()[0])
                with pytest.raises(DirectRequestFailed, match="too large"):
                    await b.direct.request(a.peer_id, "big", b"", max_response=1000)
                with pytest.raises(errors.DeadlineExceeded, match=r"within 0\.3 s"):
                    await b.direct.request(a.peer_id, "never", b"", timeout=0.3)


async def test_unknown_protocol_and_non_member() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            with pytest.raises(errors.FailedPrecondition, match="not connected"):
                await b.direct.request(a.peer_id, "ping", b"12345678")
            await b.connect(a.listen_addrs()[0])
            with pytest.raises(errors.Unavailable):
                await b.direct.request(a.peer_id, "no-such-protocol", b"")


async def test_ping_measures_rtt() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await b.connect(a.listen_addrs()[0])
            rtts = [await b.direct.ping(a.peer_id) for _ in range(5)]
    assert all(0 < rtt < 1 for rtt in rtts)


async def test_a_protocol_is_served_for_the_block_only_and_an_override_is_undone() -> None:
    async def first(peer_id: str, payload: bytes) -> bytes:
        return b"first"

    async def second(peer_id: str, payload: bytes) -> bytes:
        return b"second"

    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await b.connect(a.listen_addrs()[0])
            with a.direct.serving("echo", first):
                assert await b.direct.request(a.peer_id, "echo", b"") == b"first"
                with a.direct.serving("echo", second):
                    assert await b.direct.request(a.peer_id, "echo", b"") == b"second"
                assert await b.direct.request(a.peer_id, "echo", b"") == b"first"
            with pytest.raises(errors.Unavailable):
                await b.direct.request(a.peer_id, "echo", b"")



async def test_a_stream_is_dialled_when_only_closed_connections_are_left() -> None:
    async def echo(peer_id: str, payload: bytes) -> bytes:
        return payload

    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            with a.direct.serving("echo", echo):
                await b.connect(a.listen_addrs()[0])
                swarm = b.direct._host.get_network()
                peer, back = ID.from_base58(a.peer_id), ID.from_base58(b.peer_id)
                (dropped,) = swarm.connections[peer]
                await dropped.close()
                await eventually(lambda: not a.direct._host.get_network().get_connections(back),
                                 timeout=10, what="a to drop its side")
                # The window before py-libp2p's cleanup: only a closed entry is left.
                swarm.connections[peer] = [dropped]
                protocol = protocol_id(NET_A, "echo")
                with pytest.raises(Exception, match="No valid connections available"):
                    await b.direct._host.new_stream(peer, [protocol])  # the upstream trap
                stream = await b.direct._open(peer, protocol)  # meshd's way: dial first
                await stream.close()
                assert any(not c.is_closed for c in swarm.get_connections(peer))
