"""Circuit relay v2 on loopback (meshd/p2p/relay_server.py, relay_client.py):
reachability is pinned, so that a loopback node can play one behind NAT.
Through real NATs: tests/e2e/test_nat.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import trio
from libp2p.peer.id import ID

from meshd.p2p.addresses import AddressPolicy
from meshd.p2p.autonat import Reachability
from meshd.p2p.circuit import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    HopMessage,
    PeerId,
    RelayAddress,
    Status,
    StopMessage,
    read_message,
    write_message,
)
from meshd.p2p.host import DEFAULT_RELAY_LIMITS, P2PHost, open_p2p_host
from meshd.p2p.relay_server import RelayLimits
from meshd.testing import eventually
from tests.integration.p2p_helpers import LOOPBACK, NET_A, wait_until

PUBLIC, PRIVATE = Reachability.PUBLIC, Reachability.PRIVATE


@contextlib.asynccontextmanager
async def node(reachability: Reachability, relay: RelayLimits | None = DEFAULT_RELAY_LIMITS,
               *, unreachable: bool = False) -> AsyncIterator[P2PHost]:
    """``unreachable``: it advertises an address where nobody listens (and
    relay addresses), so that a relayed connection to it cannot become direct."""
    policy = AddressPolicy(announce=["/ip4/127.0.0.1/tcp/1"]) if unreachable else None
    async with open_p2p_host(os.urandom(32), LOOPBACK, NET_A, relay=relay,
                             reachability=reachability, advertise=policy) as host:
        yield host


async def admitted(a: P2PHost, b: P2PHost) -> None:
    await wait_until(a, lambda: a.membership.is_admitted(b.peer_id))
    await wait_until(b, lambda: b.membership.is_admitted(a.peer_id))


def relay_addresses(host: P2PHost) -> list[str]:
    return [a for a in host.listen_addrs() if "/p2p-circuit" in a]


async def test_a_private_node_is_reached_through_its_relay() -> None:
    async with node(PUBLIC) as relay, node(PRIVATE, unreachable=True) as private, \
            node(PUBLIC, unreachable=True) as dialer:
        await private.connect(relay.listen_addrs()[0])
        addrs = await eventually(lambda: relay_addresses(private), what="a relay address")
        parsed = RelayAddress.parse(addrs[0])
        assert parsed is not None and parsed.relay_id == relay.peer_id
        assert parsed.target_id == private.peer_id
        assert private.relay_client.relays == [relay.peer_id]
        assert relay.relay_server.reservations() == 1

        # The dialer knows only the relay address.
        await dialer.connect(addrs[0])
        await admitted(dialer, private)
        record = dialer.membership.record(private.peer_id)
        assert record is not None and "/p2p-circuit" in record.addrs[0]
        assert await dialer.ping(private.peer_id, 3)
        assert await private.ping(dialer.peer_id, 1)  # both ways over the circuit
        assert relay.relay_server.counters.circuits_opened == 1
        assert relay.relay_server.counters.bytes_relayed > 0
        # Neither can dial the other: the circuit stays.
        await eventually(lambda: private.hole_punch.counters.failed == 1)
        assert dialer.membership.is_admitted(private.peer_id)


async def test_a_relayed_connection_to_a_reachable_peer_becomes_direct() -> None:
    async with node(PUBLIC) as relay, node(PRIVATE) as private, node(PUBLIC) as dialer:
        await private.connect(relay.listen_addrs()[0])
        addrs = await eventually(lambda: relay_addresses(private), what="a relay address")
        await dialer.connect(addrs[0])
        # The private node dials the dialer back and drops the circuit.
        await eventually(lambda: private.hole_punch.counters.reversed == 1)
        record = await eventually(lambda: dialer.membership.record(private.peer_id),
                                  lambda r: r is not None and "/p2p-circuit" not in r.addrs[0],
                                  what="a direct connection")
        assert record is not None
        assert await dialer.ping(private.peer_id, 1)


async def test_a_relay_that_leaves_is_replaced() -> None:
    async with node(PUBLIC) as spare, node(PRIVATE) as private:
        await private.connect(spare.listen_addrs()[0])
        await eventually(lambda: private.relay_client.relays == [spare.peer_id])
        async with node(PUBLIC) as first:
            await private.connect(first.listen_addrs()[0])
            await eventually(lambda: len(private.relay_client.relays) == 2)
        # first is gone: its address goes, spare's stays.
        await eventually(lambda: private.relay_client.relays == [spare.peer_id])
        assert all(spare.peer_id in a for a in relay_addresses(private))


async def test_reservations_beyond_the_relays_limit_are_refused() -> None:
    async with node(PUBLIC, RelayLimits(max_reservations=1)) as relay, \
            node(PRIVATE) as one, node(PRIVATE) as two:
        await one.connect(relay.listen_addrs()[0])
        await eventually(lambda: one.relay_client.relays == [relay.peer_id])
        await two.connect(relay.listen_addrs()[0])
        await admitted(two, relay)
        await eventually(lambda: relay.relay_server.counters.reservations_refused >= 1)
        assert two.relay_client.relays == [] and relay_addresses(two) == []
        assert relay.relay_server.reservations() == 1
        # The refused node stays up and connected; the holder keeps its slot.
        assert two.membership.is_admitted(relay.peer_id)
        assert one.relay_client.relays == [relay.peer_id]


async def test_a_circuit_ends_at_its_byte_limit() -> None:
    async def echo(peer_id: str, payload: bytes) -> bytes:
        return payload

    limit = 64 << 10
    async with node(PUBLIC, RelayLimits(circuit_bytes=limit)) as relay, \
            node(PRIVATE, unreachable=True) as private, node(PUBLIC, unreachable=True) as dialer:
        await private.connect(relay.listen_addrs()[0])
        addrs = await eventually(lambda: relay_addresses(private))
        await dialer.connect(addrs[0])
        await admitted(dialer, private)
        with private.direct.serving("echo", echo), trio.fail_after(20):
            for _ in range(2 * limit // (8 << 10)):
                if not dialer.membership.is_admitted(private.peer_id):
                    break
                with contextlib.suppress(Exception):
                    await dialer.direct.request(private.peer_id, "echo", os.urandom(8 << 10))
            await wait_until(dialer, lambda: not dialer.membership.is_admitted(private.peer_id))
        # Each way stopped at the limit (plus the chunk that crossed it, not sent).
        assert relay.relay_server.counters.bytes_relayed <= 2 * limit
        # The reservation outlives the circuit: the dialer can come back.
        assert private.relay_client.relays == [relay.peer_id]


async def _hop(asker: P2PHost, relay: P2PHost, message: HopMessage) -> HopMessage:
    stream = await asker._host.new_stream(ID.from_base58(relay.peer_id), [HOP_PROTOCOL])
    await write_message(stream, message)
    answer = await read_message(stream, HopMessage)
    await stream.close()
    return answer


async def test_bad_relay_requests_get_the_specs_status_and_change_nothing() -> None:
    async with node(PUBLIC) as relay, node(PUBLIC) as asker, node(PUBLIC) as stranger:
        await asker.connect(relay.listen_addrs()[0])
        await admitted(asker, relay)
        # CONNECT to a node that holds no reservation.
        answer = await _hop(asker, relay, HopMessage(
            type=HopMessage.CONNECT, peer=PeerId(id=ID.from_base58(stranger.peer_id).to_bytes())))
        assert answer.status == Status.NO_RESERVATION
        # A peer ID that is none.
        answer = await _hop(asker, relay, HopMessage(type=HopMessage.CONNECT,
                                                     peer=PeerId(id=b"\x01\x02")))
        assert answer.status in (Status.MALFORMED_MESSAGE, Status.NO_RESERVATION)
        # STATUS is not a request.
        answer = await _hop(asker, relay, HopMessage(type=HopMessage.STATUS))
        assert answer.status == Status.UNEXPECTED_MESSAGE
        # Garbage.
        stream = await asker._host.new_stream(ID.from_base58(relay.peer_id), [HOP_PROTOCOL])
        await stream.write(b"\x03\xff\xff\xff")
        answer = await read_message(stream, HopMessage)
        assert answer.status == Status.MALFORMED_MESSAGE
        # A STOP from a node that is not our relay.
        stream = await relay._host.new_stream(ID.from_base58(asker.peer_id), [STOP_PROTOCOL])
        await write_message(stream, StopMessage(type=StopMessage.CONNECT, peer=PeerId(
            id=ID.from_base58(stranger.peer_id).to_bytes())))
        stop = await read_message(stream, StopMessage)
        assert stop.status == Status.PERMISSION_DENIED
        assert relay.relay_server.reservations() == 0
        assert relay.relay_server.counters.circuits_opened == 0
        assert await asker.ping(relay.peer_id, 1)  # all still up


async def test_a_node_told_not_to_relay_refuses_to() -> None:
    async with node(PUBLIC, relay=None) as relay, node(PRIVATE) as private:
        await private.connect(relay.listen_addrs()[0])
        await admitted(private, relay)
        assert not relay.relay_server.active
        await eventually(lambda: relay.relay_server.counters.reservations_accepted == 0
                         and private.relay_client.relays == [])
        assert relay_addresses(private) == []
