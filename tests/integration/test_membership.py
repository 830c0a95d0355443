"""Network isolation: the hello handshake admits members and drops everyone else."""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from meshd import errors
from meshd.p2p import membership as membership_module
from meshd.p2p.framing import write_frame
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.membership import HELLO_PROTOCOL, parse_peer_id, protocol_id
from tests.integration.p2p_helpers import LOOPBACK, NET_A, NET_B, open_hosts, wait_until


def plain_libp2p_host() -> object:
    """A libp2p node that is not a Mesh node (speaks Noise, but no Mesh protocol)."""
    key_pair = create_new_key_pair(os.urandom(32))
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(key_pair=key_pair, sec_opt={NOISE_PROTOCOL_ID: noise},
                    listen_addrs=[multiaddr.Multiaddr(LOOPBACK[0])],
                    connection_config=ConnectionConfig(max_connections_per_peer=1))


async def wait_no_connection(host: P2PHost) -> None:
    await wait_until(host, lambda: host.connection_count() == 0)


async def test_members_are_admitted_both_ways() -> None:
    with trio.fail_after(20):
        async with open_hosts(NET_A, NET_A) as (a, b):
            record = await b.connect(a.listen_addrs()[0])
            assert record.peer_id == a.peer_id and record.direction == "outbound"
            assert record.agent.startswith("meshd/")
            await wait_until(a, lambda: a.membership.is_admitted(b.peer_id))
            assert [p.peer_id for p in a.membership.peers()] == [b.peer_id]
            assert a.membership.peers()[0].direction == "inbound"
            assert a.peer_count() == b.peer_count() == 1


@pytest.mark.parametrize("dialer_is_foreign", [True, False])
async def test_a_peer_of_another_network_is_refused_and_dropped(dialer_is_foreign: bool) -> None:
    with trio.fail_after(20):
        async with open_hosts(NET_A, NET_B) as (ours, foreign):
            dialer, target = (foreign, ours) if dialer_is_foreign else (ours, foreign)
            with pytest.raises(errors.FailedPrecondition) as refused:
                await dialer.connect(target.listen_addrs()[0])
            assert "on network net_" in str(refused.value)
            await wait_no_connection(ours)
            await wait_no_connection(foreign)
            assert ours.peer_count() == foreign.peer_count() == 0
            assert ours.membership.peers() == []


async def test_a_plain_libp2p_node_is_dropped() -> None:
    stranger = plain_libp2p_host()
    with trio.fail_after(20):
        async with open_hosts(NET_A) as (ours,), \
                stranger.run([multiaddr.Multiaddr(LOOPBACK[0])]):  # type: ignore[attr-defined]
            await stranger.connect(info_from_p2p_addr(  # type: ignore[attr-defined]
                multiaddr.Multiaddr(ours.listen_addrs()[0])))
            await wait_no_connection(ours)
            assert ours.peer_count() == 0
            # and our side refuses to talk to it on namespaced protocols meanwhile
            with pytest.raises(errors.FailedPrecondition):
                await ours.direct.ping(str(stranger.get_id()))  # type: ignore[attr-defined]


async def test_a_garbage_handshake_is_dropped() -> None:
    stranger = plain_libp2p_host()
    # It accepts our hello stream and never answers: only its garbage can end it
    # (a refused hello stream would get it dropped first, for another reason).
    async def never_answer(stream: object) -> None:
        await trio.sleep_forever()

    stranger.set_stream_handler(HELLO_PROTOCOL, never_answer)  # type: ignore[attr-defined]
    with trio.fail_after(20):
        async with open_hosts(NET_A) as (ours,), \
                stranger.run([multiaddr.Multiaddr(LOOPBACK[0])]):  # type: ignore[attr-defined]
            info = info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addrs()[0]))
            await stranger.connect(info)  # type: ignore[attr-defined]
            stream = await stranger.new_stream(info.peer_id,  # type: ignore[attr-defined]
                                               [HELLO_PROTOCOL])
            await write_frame(stream, b"\xff" * 40)  # not a Hello
            await wait_no_connection(ours)


async def test_namespaced_protocols_differ_per_network() -> None:
    assert protocol_id(NET_A, "ping") == f"/mesh/{NET_A}/ping/1.0.0"
    assert protocol_id(NET_A, "ping") != protocol_id(NET_B, "ping")


async def test_connect_errors_are_clear() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A) as (a,):
            with pytest.raises(errors.InvalidArgument, match="not a multiaddr"):
                await a.connect("/ip4/127.0.0.1/tcp/1")
            with pytest.raises(errors.InvalidArgument, match="own"):
                await a.connect(a.listen_addrs()[0])
            unused = "/ip4/127.0.0.1/tcp/1/p2p/" + \
                "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"
            with pytest.raises(errors.Unavailable, match="cannot reach"):
                await a.connect(unused)
            with pytest.raises(errors.NotFound):
                await a.membership.disconnect(unused.rsplit("/", 1)[1])


async def test_disconnect_holds_during_the_cooldown() -> None:
    with trio.fail_after(20):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await b.connect(a.listen_addrs()[0])
            await wait_until(a, lambda: a.peer_count() == 1)
            await b.membership.disconnect(a.peer_id)
            # a's DHT may redial b at once; b refuses it, so both settle at 0.
            await wait_until(a, lambda: a.peer_count() == 0)
            await wait_until(b, lambda: b.peer_count() == 0)
            # a redials b (as its DHT would): b refuses it while cooling down
            with pytest.raises(errors.FailedPrecondition, match="disconnected by its operator"):
                await a.connect(b.listen_addrs()[0])
            assert b.peer_count() == 0
            # b changes its mind: an explicit connect ends the cooldown
            await b.connect(a.listen_addrs()[0])
            assert b.peer_count() == 1


@pytest.mark.parametrize("text", ["xyz", "", "12D3KooW", "QmNotAPeerIdAtAll", "0x1234"])
def test_peer_id_validation_refuses_garbage(text: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="is not a peer ID"):
        parse_peer_id(text)


def test_peer_id_validation_accepts_real_ids() -> None:
    for text in ("12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS",  # Ed25519, identity
                 "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"):  # RSA, sha2-256
        assert str(parse_peer_id(text)) == text


async def test_a_redial_racing_a_disconnect_leaves_no_phantom_peer() -> None:
    # The peer redials within py-libp2p's 0.1 s connection cleanup. Before the fix,
    # that connection skipped the handshake (its peer still looked admitted) and
    # Swarm.close_peer dropped it from the table unclosed: a counted peer with no
    # connection, a leaked socket, and a cooldown that did not hold. This checks
    # the settled state after such races; it does not hit the window every time
    # (`bench/p2p_stream.py --same-host` did: old code failed 1-2 runs in 4).
    with trio.fail_after(90):
        async with open_hosts(NET_A, NET_A) as (a, b):
            for _ in range(5):
                b.membership._cooldown_until.clear()  # each round starts fresh
                await b.connect(a.listen_addrs()[0])
                await wait_until(a, lambda: a.peer_count() == 1)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(b.membership.disconnect, a.peer_id)

                    async def redial() -> None:
                        with contextlib.suppress(errors.MeshError):
                            await a.connect(b.listen_addrs()[0])  # refused: cooldown

                    nursery.start_soon(redial)
                await wait_until(b, lambda: b.peer_count() == 0)
                await wait_until(a, lambda: a.peer_count() == 0)
                # whatever connection remains is one b still tracks (and will close)
                await wait_until(b, lambda: b.connection_count() == 0)
                assert b.peer_count() == 0 and not b.membership.peers()


async def test_a_blocked_peer_is_refused_both_ways_until_unblocked() -> None:
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await b.connect(a.listen_addrs()[0])
            await wait_until(a, lambda: a.peer_count() == 1)
            await a.block(b.peer_id)
            assert await a.blocked() == [b.peer_id]
            await wait_until(a, lambda: a.peer_count() == 0)
            await wait_until(b, lambda: b.peer_count() == 0)
            with pytest.raises(errors.FailedPrecondition, match="blocked this node"):
                await b.connect(a.listen_addrs()[0])
            with pytest.raises(errors.FailedPrecondition, match="peers unblock"):
                await a.connect(b.listen_addrs()[0])
            # A block outlasts the disconnect cooldown: it is not a timer.
            assert a.membership.holds_off(b.peer_id)
            with pytest.raises(errors.InvalidArgument, match="own"):
                await a.block(a.peer_id)
            await a.unblock(b.peer_id)
            with pytest.raises(errors.NotFound, match="not blocked"):
                await a.unblock(b.peer_id)
            # the refused connections linger briefly (so the peer reads why)
            await wait_until(b, lambda: b.connection_count() == 0)
            await b.connect(a.listen_addrs()[0])
            await wait_until(a, lambda: a.peer_count() == 1)


async def test_a_connection_opened_after_an_unblock_survives_the_old_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A refusal lingers (so the peer reads why) and then closes the refused
    # connections. It used to close every connection to the peer, including
    # one opened just after an unblock: seen in CI as "bad handshake from the
    # peer (stream ended after 0 of 1 bytes)".
    linger = 1.0
    monkeypatch.setattr(membership_module, "MISMATCH_LINGER", linger)
    with trio.fail_after(30):
        async with open_hosts(NET_A, NET_A) as (a, b):
            await a.block(b.peer_id)
            with pytest.raises(errors.FailedPrecondition, match="blocked this node"):
                await b.connect(a.listen_addrs()[0])
            await a.unblock(b.peer_id)
            await b.membership.close_connections(parse_peer_id(a.peer_id))
            await wait_no_connection(b)
            await b.connect(a.listen_addrs()[0])  # while a's refusal still lingers
            await wait_until(a, lambda: a.peer_count() == 1)
            await trio.sleep(linger + 0.5)  # asserting an absence: past the linger
            assert a.peer_count() == 1 and b.peer_count() == 1


async def test_a_restarted_peer_can_be_redialled_at_once() -> None:
    # py-libp2p refuses to redial a peer for 60 s after a failed dial (negative
    # dial cache, docs/py-libp2p.md#trap-9): without `unblock_peer` in
    # Membership.connect, the last connect below fails with "cannot reach".
    seed = os.urandom(32)
    with trio.fail_after(30):
        async with open_hosts(NET_A) as (a,):
            async with open_p2p_host(seed, LOOPBACK, NET_A) as b:
                address = b.listen_addrs()[0]
                await a.connect(address)
            await wait_until(a, lambda: a.peer_count() == 0)
            with pytest.raises(errors.Unavailable, match="cannot reach"):
                await a.connect(address)  # b is down: the dial fails, and is cached
            port = multiaddr.Multiaddr(address).value_for_protocol("tcp")
            async with open_p2p_host(seed, [f"/ip4/127.0.0.1/tcp/{port}"], NET_A) as b2:
                record = await a.connect(b2.listen_addrs()[0])
                assert record.peer_id == b2.peer_id


async def test_a_connection_opened_while_the_node_stops_is_left_alone() -> None:
    # The swarm's notifee can report a connection after membership stopped
    # taking handshake tasks; it raised "Nursery is closed to new arrivals"
    # out of the notifee (seen in meshd's log at shutdown).
    class Host:
        def set_stream_handler(self, *args: object) -> None:
            pass

        def remove_stream_handler(self, *args: object) -> None:
            pass

    membership = membership_module.Membership(Host(), NET_A, "test")  # type: ignore[arg-type]
    with trio.CancelScope() as stopping:
        async with trio.open_nursery() as nursery:
            await nursery.start(membership.run)
            stopping.cancel()
    conn = SimpleNamespace(muxed_conn=SimpleNamespace(peer_id="12D3KooWlate"))
    membership.connection_opened(conn)  # type: ignore[arg-type]
    assert membership.counters.opened["inbound"] == 1 and not membership.is_admitted(
        "12D3KooWlate")
