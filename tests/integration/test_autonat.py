"""AutoNAT on loopback (meshd/p2p/autonat.py): members dial a node back on a
new connection and say whether it answered. Behind NAT: tests/e2e/test_nat.py."""

from __future__ import annotations

import logging

import multiaddr
import pytest
import trio
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID

from meshd.p2p.addresses import tcp_endpoint
from meshd.p2p.autonat import AUTONAT_PROTOCOL, MAX_MESSAGE, Reachability, dial_back
from meshd.p2p.framing import read_frame, write_frame
from meshd.p2p.host import P2PHost
from meshd.testing import eventually
from tests.integration.p2p_helpers import NET_A, open_hosts, wait_until


async def _connect(a: P2PHost, b: P2PHost) -> None:
    await a.connect(b.listen_addrs()[0])
    await wait_until(a, lambda: a.membership.is_admitted(b.peer_id))
    await wait_until(b, lambda: b.membership.is_admitted(a.peer_id))


async def test_a_node_members_can_dial_is_public_at_the_address_they_reached() -> None:
    async with open_hosts(NET_A, NET_A) as (a, b):
        await _connect(a, b)
        # a asks on its own once it has a member to ask.
        verdict = await eventually(lambda: a.autonat.verdict,
                                   lambda v: v.reachability is not Reachability.UNKNOWN)
        own = a.listen_addrs()[0].split("/p2p/")[0]
        assert verdict.reachability is Reachability.PUBLIC
        assert verdict.confirmed == (own,)
        assert a.reachability is Reachability.PUBLIC
        assert b.autonat.served["ok"] >= 1


async def test_a_dial_back_leaves_no_warning_on_the_dialled_node(
        caplog: pytest.LogCaptureFixture) -> None:
    async with open_hosts(NET_A) as (a,):
        caplog.set_level(logging.DEBUG, logger="meshd")
        assert await dial_back(a.listen_addrs()[0].split("/p2p/")[0], ID.from_base58(a.peer_id))
        await eventually(lambda: "peer left during the handshake" in caplog.text)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith(("meshd", "libp2p"))]


async def test_a_node_that_stops_answering_is_not_reached() -> None:
    async with open_hosts(NET_A) as (a,):
        address = a.listen_addrs()[0].split("/p2p/")[0]
        assert await dial_back(address, ID.from_base58(a.peer_id))
        # Someone else's peer ID at that address: the Noise handshake fails.
        async with open_hosts(NET_A) as (other,):
            assert not await dial_back(address, ID.from_base58(other.peer_id))
        # Nothing listens on the port any more.
        port = tcp_endpoint(address)[1]  # type: ignore[index]
    assert not await dial_back(f"/ip4/127.0.0.1/tcp/{port}", ID.from_base58(a.peer_id), 2)


async def _ask_raw(asker: P2PHost, server: P2PHost, request: Message) -> Message:
    stream = await asker._host.new_stream(ID.from_base58(server.peer_id), [AUTONAT_PROTOCOL])
    await write_frame(stream, request.SerializeToString())
    answer = Message.FromString(await read_frame(stream, MAX_MESSAGE))
    await stream.close()
    return answer


async def test_a_server_dials_only_the_requesters_own_ip_and_refuses_bad_requests() -> None:
    async with open_hosts(NET_A, NET_A) as (a, b):
        await _connect(a, b)
        # a asks b on its own as soon as it is admitted: a second request at
        # once is refused (one per peer per interval).
        await eventually(lambda: a.reachability is Reachability.PUBLIC)
        request = Message(type=Message.DIAL, dial=Message.Dial(peer=Message.PeerInfo(
            addrs=[multiaddr.Multiaddr(a.listen_addrs()[0]).to_bytes()])))
        answer = await _ask_raw(a, b, request)
        assert answer.dialResponse.status == Message.E_DIAL_REFUSED
        assert "one request per" in answer.dialResponse.statusText
        b.autonat.peer_interval = 0.0
        # Asked to dial a third party's address: b dials a's observed IP
        # (127.0.0.1) on that port only, where nobody answers as a.
        third = multiaddr.Multiaddr("/ip4/8.8.8.8/tcp/9").to_bytes()
        answer = await _ask_raw(a, b, Message(type=Message.DIAL, dial=Message.Dial(
            peer=Message.PeerInfo(id=ID.from_base58(a.peer_id).to_bytes(), addrs=[third]))))
        assert answer.dialResponse.status == Message.E_DIAL_ERROR
        assert "127.0.0.1" in answer.dialResponse.statusText
        # No TCP address at all.
        answer = await _ask_raw(a, b, Message(type=Message.DIAL, dial=Message.Dial(
            peer=Message.PeerInfo(addrs=[b"\x00garbage"]))))
        assert answer.dialResponse.status == Message.E_DIAL_REFUSED
        # Not a DIAL.
        answer = await _ask_raw(a, b, Message(type=Message.DIAL_RESPONSE))
        assert answer.dialResponse.status == Message.E_BAD_REQUEST
        # Another peer's ID in the request.
        async with open_hosts(NET_A) as (c,):
            await _connect(c, b)
            answer = await _ask_raw(c, b, Message(type=Message.DIAL, dial=Message.Dial(
                peer=Message.PeerInfo(id=ID.from_base58(a.peer_id).to_bytes(), addrs=[third]))))
            assert answer.dialResponse.status == Message.E_BAD_REQUEST


async def test_garbage_gets_the_stream_reset_and_the_server_keeps_serving() -> None:
    async with open_hosts(NET_A, NET_A) as (a, b):
        await _connect(a, b)
        stream = await a._host.new_stream(ID.from_base58(b.peer_id), [AUTONAT_PROTOCOL])
        await stream.write(b"\x05\xff\xff\xff\xff\xff")
        with trio.fail_after(5):
            try:
                data = await stream.read(100)
            except Exception:
                data = b""
        assert data == b""
        b.autonat.peer_interval = 0.0
        assert (await a.autonat.check()).reachability is Reachability.PUBLIC
