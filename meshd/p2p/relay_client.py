"""Reaching and being reached through circuit relays (the node's side: STOP).

A node that AutoNAT finds private (behind NAT or a firewall) reserves a slot
with RELAYS_WANTED members that relay (meshd/p2p/relay_server.py), keeps the
reservations fresh, replaces a relay that leaves, and advertises
``<relay address>/p2p-circuit`` after its direct addresses; identify-push
tells the connected members at once, peer exchange and the DHT the others.
A relay opens a STOP stream when someone connects: the node answers only its
own relays, and runs the ordinary connection (Noise, Yamux, hello) over it.

Dialling: py-libp2p 0.8.1's ``Swarm.dial_peer`` drops every ``/p2p-circuit``
address (``network/swarm.py:824``: "this node has no relay transport"), and
its ``CircuitV2Transport`` is not one meshd can use
(docs/py-libp2p.md#found-relay-trusts-the-message). So this host's
``dial_peer`` is wrapped: for a peer with relay addresses in the peerstore,
they are tried RELAY_DIAL_DELAY after its direct ones, each by a CONNECT
through the relay and the swarm's own outbound upgrade; the first connection
wins. Every dial (``peers connect``,
the connection manager, a direct request) gets it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.identity.identify_push.identify_push import push_identify_to_peer
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from meshd.p2p.addresses import AddressPolicy, shown_to
from meshd.p2p.circuit import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    HopMessage,
    PeerId,
    RelayAddress,
    Status,
    StopMessage,
    is_relayed,
    read_message,
    write_message,
)
from meshd.p2p.membership import Membership, PeerRecord

log = logging.getLogger(__name__)

RELAYS_WANTED = 2
MESSAGE_TIMEOUT = 10.0
DIAL_TIMEOUT = 15.0
NOT_A_RELAY_FOR = 300.0  # seconds before a member that refused is asked again
CHECK_EVERY = 30.0
ADDRESSES_PER_RELAY = 2
RELAY_DIAL_DELAY = 0.5  # seconds the direct addresses go first


@dataclass(frozen=True)
class HeldReservation:
    relay_id: str
    expires: float  # time.time()
    addrs: tuple[str, ...]  # ours through it: <relay address>/p2p-circuit


class RelayClient:
    """Holds reservations while this node is private; dials through relays."""

    def __init__(self, host: IHost, membership: Membership, policy: AddressPolicy,
                 on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self._host = host
        self._membership = membership
        self._policy = policy
        self._on_change = on_change
        self._clock = clock
        self._held: dict[str, HeldReservation] = {}
        self._not_relays: dict[str, float] = {}  # peer ID -> trio time to ask again
        self._wanted = False
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def relays(self) -> list[str]:
        """The relays this node holds a reservation with."""
        return sorted(self._held)

    def set_wanted(self, wanted: bool) -> None:
        """Hold reservations (this node is private) or let them go."""
        if wanted != self._wanted:
            self._wanted = wanted
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        network = self._host.get_network()
        original = network.dial_peer
        self._install_dial(network, original)
        self._host.set_stream_handler(STOP_PROTOCOL, self._stop)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await self._keep()
                    self._wake = trio.Event()
                    with trio.move_on_after(CHECK_EVERY):
                        async with trio.open_nursery() as waiting:
                            async def woken() -> None:
                                await self._wake.wait()
                                waiting.cancel_scope.cancel()

                            async def members_changed() -> None:
                                await self._membership.next_change()
                                waiting.cancel_scope.cancel()

                            waiting.start_soon(woken)
                            if self._wanted:  # a relay left, or a candidate came
                                waiting.start_soon(members_changed)
        finally:
            self._nursery = None
            self._host.remove_stream_handler(STOP_PROTOCOL)
            setattr(network, "dial_peer", original)  # noqa: B010

    # --- reservations ------------------------------------------------------------------

    async def _keep(self) -> None:
        before = self._addresses()
        if not self._wanted:
            self._held.clear()
        now = self._clock()
        for relay_id, held in list(self._held.items()):
            if not self._membership.is_admitted(relay_id) or held.expires <= now:
                log.info("relay lost", extra={"relay": relay_id})
                del self._held[relay_id]
            elif held.expires - now < 300.0:
                await self._reserve(relay_id)
        if self._wanted and len(self._held) < RELAYS_WANTED:
            for peer_id in self._candidates():
                if len(self._held) >= RELAYS_WANTED:
                    break
                await self._reserve(peer_id)
        if self._addresses() != before:  # not on a mere refresh
            self._publish()

    def _addresses(self) -> dict[str, tuple[str, ...]]:
        return {relay_id: held.addrs for relay_id, held in self._held.items()}

    def _candidates(self) -> list[str]:
        now = trio.current_time()
        network = self._host.get_network()
        found = []
        for record in self._membership.peers():
            if record.peer_id in self._held or self._not_relays.get(record.peer_id, 0) > now:
                continue
            connections = network.get_connections(ID.from_base58(record.peer_id))
            if connections and not any(is_relayed(c) for c in connections):
                found.append(record)
        # The members kept longest first: a connection a DHT lookup opened
        # (beyond the node's degree) is pruned within a minute, and a
        # reservation on it would go with it. Ties are broken at random.
        random.shuffle(found)
        found.sort(key=lambda record: record.connected_at)
        return [record.peer_id for record in found]

    async def _reserve(self, relay_id: str) -> None:
        stream: INetStream | None = None
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                stream = await self._host.new_stream(ID.from_base58(relay_id), [HOP_PROTOCOL])
                await write_message(stream, HopMessage(type=HopMessage.RESERVE))
                answer = await read_message(stream, HopMessage)
        except Exception as exc:  # not a relay (now), or it went away
            log.debug("no relay reservation", extra={"relay": relay_id, "error": repr(exc)})
            answer = None
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()
        if answer is None or answer.status != Status.OK or not answer.HasField("reservation"):
            if answer is not None:
                log.info("relay reservation refused", extra={
                    "relay": relay_id, "status": Status.Name(answer.status)})
            self._not_relays[relay_id] = trio.current_time() + NOT_A_RELAY_FOR
            self._held.pop(relay_id, None)
            return
        addrs = []
        for raw in answer.reservation.addrs:
            with contextlib.suppress(Exception):
                address = str(multiaddr.Multiaddr(raw))
                if not address.endswith(f"/p2p/{relay_id}"):
                    address += f"/p2p/{relay_id}"
                if "/p2p-circuit" not in address:
                    addrs.append(f"{address}/p2p-circuit")
        if not addrs:
            log.info("relay gave no address", extra={"relay": relay_id})
            self._not_relays[relay_id] = trio.current_time() + NOT_A_RELAY_FOR
            return
        self._held[relay_id] = HeldReservation(relay_id, float(answer.reservation.expire),
                                               tuple(addrs[:ADDRESSES_PER_RELAY]))
        log.info("relay reservation", extra={"relay": relay_id, "addrs": addrs[:2],
                                             "expires": answer.reservation.expire})

    def _publish(self) -> None:
        self._policy.relay_through([a for held in self._held.values() for a in held.addrs])
        self._on_change()
        members = self._membership.peers()
        if self._nursery is not None and members:
            self._nursery.start_soon(_push_identify, self._host, members)

    # --- being reached: STOP -----------------------------------------------------------

    async def _stop(self, stream: INetStream) -> None:
        relay_id = str(stream.muxed_conn.peer_id)
        held = self._held.get(relay_id)
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                request = await read_message(stream, StopMessage)
                if held is None:
                    await _stop_answer(stream, Status.PERMISSION_DENIED)
                    raise PermissionError(f"{relay_id} is not one of this node's relays")
                if request.type != StopMessage.CONNECT or not request.HasField("peer"):
                    await _stop_answer(stream, Status.UNEXPECTED_MESSAGE)
                    raise ValueError("expected a CONNECT")
                source = ID(request.peer.id)
                await _stop_answer(stream, Status.OK)
            address = multiaddr.Multiaddr(f"{held.addrs[0]}/p2p/{source.to_base58()}")
            muxed = await self._swarm().upgrade_inbound_raw_conn(
                _relayed(stream, False, address), address)
            log.info("relayed connection", extra={"peer_id": source.to_base58(),
                                                  "relay": relay_id, "direction": "inbound"})
            # The stream is the connection: this handler holds it until it ends.
            closed = getattr(muxed, "event_closed", None)
            if closed is not None:
                await closed.wait()
        except Exception as exc:
            log.debug("relayed connection refused", extra={"relay": relay_id,
                                                           "error": repr(exc)})
            with contextlib.suppress(Exception):
                await stream.reset()

    # --- reaching others ---------------------------------------------------------------

    def _swarm(self) -> Swarm:
        network = self._host.get_network()
        assert isinstance(network, Swarm)  # open_p2p_host's host
        return network

    def _install_dial(self, network: Any, original: Callable[..., Any]) -> None:
        async def dial_peer(peer_id: ID) -> list[INetConn]:
            circuits = self._relay_addresses_of(peer_id)
            if not circuits:
                connections: list[INetConn] = await original(peer_id)
                return connections
            return await self._dial_both(peer_id, original, circuits)

        setattr(network, "dial_peer", dial_peer)  # noqa: B010

    async def _dial_both(self, peer_id: ID, original: Callable[..., Any],
                         circuits: list[str]) -> list[INetConn]:
        """The peer's direct addresses, and RELAY_DIAL_DELAY later its relay
        addresses, at once (as go-libp2p): the first connection wins. A node
        with relay addresses is behind NAT; its direct ones (a LAN address, a
        port nobody forwards) often time out, and a relayed connection now
        beats a direct one in a minute (hole punching upgrades it)."""
        won: list[INetConn] = []
        failures: list[str] = []

        async def attempt(dial: Callable[[], Any], delay: float, how: str,
                          attempts: trio.CancelScope) -> None:
            await trio.sleep(delay)
            try:
                result = await dial()
            except Exception as exc:
                failures.append(f"{how}: {exc or type(exc).__name__}")
                return
            if not won:
                won.extend(result if isinstance(result, list) else [result])
            attempts.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, lambda: original(peer_id), 0.0, "direct",
                               nursery.cancel_scope)
            nursery.start_soon(attempt, lambda: self.dial_through(peer_id, circuits),
                               RELAY_DIAL_DELAY, "through relays", nursery.cancel_scope)
        if not won:
            raise SwarmException("; ".join(failures) or f"could not dial {peer_id}")
        return won

    def _relay_addresses_of(self, peer_id: ID) -> list[str]:
        try:
            known = [str(a) for a in self._host.get_peerstore().addrs(peer_id)]
        except Exception:
            return []
        return [a for a in known if RelayAddress.parse(a) is not None]

    async def dial_through(self, peer_id: ID, circuits: list[str]) -> INetConn:
        """A connection to ``peer_id`` through the first of its relays that works."""
        failures = []
        for address in circuits:
            parsed = RelayAddress.parse(address)
            if parsed is None or parsed.relay_id in (str(peer_id), str(self._host.get_id())):
                continue
            try:
                with trio.fail_after(DIAL_TIMEOUT):
                    return await self._connect_via(peer_id, parsed)
            except Exception as exc:
                failures.append(f"{parsed.relay_id}: {exc or type(exc).__name__}")
        raise SwarmException("; ".join(failures) or "no usable relay address")

    async def _connect_via(self, peer_id: ID, relay: RelayAddress) -> INetConn:
        relay_peer = ID.from_base58(relay.relay_id)
        direct = relay.relay.rsplit("/p2p/", 1)[0]
        await self._host.connect(PeerInfo(relay_peer, [multiaddr.Multiaddr(direct)]
                                          if direct else []))
        await self._membership.wait_admitted(relay.relay_id)
        stream = await self._host.new_stream(relay_peer, [HOP_PROTOCOL])
        try:
            await write_message(stream, HopMessage(type=HopMessage.CONNECT,
                                                   peer=PeerId(id=peer_id.to_bytes())))
            answer = await read_message(stream, HopMessage)
            if answer.status != Status.OK:
                raise SwarmException(f"the relay answered {Status.Name(answer.status)}")
            address = multiaddr.Multiaddr(f"{relay.without_target()}/p2p/{peer_id}")
            conn = await self._swarm().upgrade_outbound_raw_conn(
                _relayed(stream, True, address), peer_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await stream.reset()
            raise
        log.info("relayed connection", extra={"peer_id": str(peer_id),
                                              "relay": relay.relay_id, "direction": "outbound"})
        return conn


def _relayed(stream: INetStream, initiator: bool,
             address: multiaddr.Multiaddr) -> RawConnection:
    """A relayed stream as a raw connection, for the swarm's own upgrade."""
    return RawConnection(stream, initiator=initiator, connection_type=ConnectionType.RELAYED,
                         addresses=[address])


async def _stop_answer(stream: INetStream, status: Status.ValueType) -> None:
    await write_message(stream, StopMessage(type=StopMessage.STATUS, status=status))


async def _push_identify(host: IHost, members: list[PeerRecord]) -> None:
    """Tell the members our new addresses (identify push), each those it can
    use (addresses.shown_to), best effort."""
    async def push(member: PeerRecord) -> None:
        viewer = member.seen_at()
        with shown_to(viewer) if viewer is not None else contextlib.nullcontext():
            await push_identify_to_peer(host, ID.from_base58(member.peer_id))

    with trio.move_on_after(MESSAGE_TIMEOUT), contextlib.suppress(Exception):
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(push, member)
