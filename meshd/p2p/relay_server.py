"""A circuit relay v2 for members behind NAT (the relay's side: HOP).

A member that AutoNAT finds publicly reachable relays for members that are
not (``p2p.relay.serve = "auto"``, the default; "off" never). A node behind
NAT reserves a slot (RESERVE), advertises ``<relay address>/p2p-circuit``, and
anyone who wants it asks the relay to CONNECT; the relay opens a STOP stream
to the reserved node and splices the two streams. Over that circuit the two
run an ordinary libp2p connection (Noise, Yamux, the hello): the relay sees
only ciphertext.

py-libp2p 0.8.1's relay (``libp2p.relay.circuit_v2.protocol``) is not used
(docs/py-libp2p.md#found-relay-trusts-the-message): it reserves in the name of
whatever peer ID the RESERVE message carries, never applies its per-IP or
global limits, and lets an idle circuit live forever. Here a reservation is
always the requester's own, over a direct connection, from an admitted
member; every limit of :class:`RelayLimits` is enforced, and a circuit ends
when either of its limits (duration, bytes each way) is reached. A request
beyond a limit is answered with the spec's status (RESERVATION_REFUSED,
RESOURCE_LIMIT_EXCEEDED, NO_RESERVATION, PERMISSION_DENIED) and changes
nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from meshd.p2p.circuit import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    BadMessage,
    HopMessage,
    Limit,
    PeerId,
    Reservation,
    Status,
    StopMessage,
    read_message,
    relayed_connection,
    write_message,
)
from meshd.p2p.membership import Membership

log = logging.getLogger(__name__)

MESSAGE_TIMEOUT = 10.0
SPLICE_CHUNK = 64 << 10


@dataclass(frozen=True)
class RelayLimits:
    """What one relay gives; the defaults suit a home server relaying for a
    network's NAT'd members (config ``[p2p.relay]``, docs/operations.md)."""

    max_reservations: int = 128
    max_reservations_per_ip: int = 8
    reservation_ttl: float = 3600.0  # seconds; the holder refreshes before
    max_circuits: int = 64
    max_circuits_per_peer: int = 8  # ending at one reserved node
    circuit_duration: float = 1800.0  # seconds; then the two reconnect
    circuit_bytes: int = 64 << 20  # each way; then the two reconnect


@dataclass
class RelayCounters:
    reservations_accepted: int = 0
    reservations_refused: int = 0
    circuits_opened: int = 0
    circuits_refused: int = 0
    bytes_relayed: int = 0


@dataclass
class _Slot:
    expires: float  # time.time()
    ip: str


@dataclass
class _Circuits:
    total: int = 0
    per_target: Counter[str] = field(default_factory=Counter)


class RelayServer:
    """Serves HOP while this node relays; see the module docstring."""

    def __init__(self, host: IHost, membership: Membership, limits: RelayLimits,
                 clock: Callable[[], float] = time.time) -> None:
        self._host = host
        self._membership = membership
        self.limits = limits
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._circuits = _Circuits()
        self.counters = RelayCounters()
        self.active = False

    def set_active(self, active: bool) -> None:
        """Relay (serve HOP) or not; reservations end when it stops."""
        if active == self.active:
            return
        self.active = active
        if active:
            self._host.set_stream_handler(HOP_PROTOCOL, self._serve)
        else:
            self._host.remove_stream_handler(HOP_PROTOCOL)
            self._slots.clear()
        log.info("relay " + ("serving" if active else "stopped"),
                 extra={"max_reservations": self.limits.max_reservations})

    def reservations(self) -> int:
        self._expire()
        return len(self._slots)

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            if not await self._membership.admits(stream):
                return
            with trio.fail_after(MESSAGE_TIMEOUT):
                request = await read_message(stream, HopMessage)
            if request.type == HopMessage.RESERVE:
                await self._reserve(stream, str(peer))
            elif request.type == HopMessage.CONNECT:
                await self._connect(stream, str(peer), request)
            else:
                await _answer(stream, Status.UNEXPECTED_MESSAGE)
        except (BadMessage, trio.TooSlowError) as exc:
            log.debug("relay request not read", extra={"peer_id": str(peer), "error": str(exc)})
            with contextlib.suppress(Exception):
                await _answer(stream, Status.MALFORMED_MESSAGE)
        except Exception as exc:  # the stream broke
            log.debug("relay request failed", extra={"peer_id": str(peer), "error": repr(exc)})
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        with contextlib.suppress(Exception):  # answered: the requester closes its side
            await stream.close()

    # --- RESERVE -------------------------------------------------------------------------

    async def _reserve(self, stream: INetStream, peer_id: str) -> None:
        refusal = self._refuse_reservation(stream, peer_id)
        if refusal is not None:
            status, why = refusal
            self.counters.reservations_refused += 1
            log.info("relay reservation refused", extra={"peer_id": peer_id, "reason": why})
            await _answer(stream, status)
            return
        remote = stream.get_remote_address()
        expires = self._clock() + self.limits.reservation_ttl
        self._slots[peer_id] = _Slot(expires, remote[0] if remote else "")
        self.counters.reservations_accepted += 1
        own = [multiaddr.Multiaddr(str(a)).to_bytes() for a in self._host.get_addrs()
               if "/p2p-circuit" not in str(a)]
        await write_message(stream, HopMessage(
            type=HopMessage.STATUS, status=Status.OK, limit=self._limit(),
            reservation=Reservation(expire=int(expires), addrs=own)))
        log.info("relay reservation", extra={"peer_id": peer_id,
                                             "reservations": len(self._slots)})

    def _refuse_reservation(self, stream: INetStream,
                            peer_id: str) -> tuple[Status.ValueType, str] | None:
        if relayed_connection(stream):
            return Status.PERMISSION_DENIED, "asked over a relayed connection"
        self._expire()
        if peer_id in self._slots:
            return None  # a refresh
        if len(self._slots) >= self.limits.max_reservations:
            return Status.RESERVATION_REFUSED, \
                f"all {self.limits.max_reservations} reservations are taken"
        remote = stream.get_remote_address()
        ip = remote[0] if remote else ""
        if sum(1 for s in self._slots.values() if s.ip == ip) \
                >= self.limits.max_reservations_per_ip:
            return Status.RESERVATION_REFUSED, \
                f"{self.limits.max_reservations_per_ip} reservations from {ip} already"
        return None

    def _expire(self) -> None:
        now = self._clock()
        for peer_id in [p for p, slot in self._slots.items() if slot.expires <= now]:
            del self._slots[peer_id]

    # --- CONNECT -------------------------------------------------------------------------

    async def _connect(self, source: INetStream, source_id: str, request: HopMessage) -> None:
        try:
            target = ID(request.peer.id)
            target_id = target.to_base58()
        except Exception:
            await _answer(source, Status.MALFORMED_MESSAGE)
            return
        refusal = self._refuse_circuit(source, target_id)
        if refusal is not None:
            self.counters.circuits_refused += 1
            log.info("relay circuit refused", extra={
                "peer_id": source_id, "target": target_id, "reason": refusal[1]})
            await _answer(source, refusal[0])
            return
        self._circuits.total += 1
        self._circuits.per_target[target_id] += 1
        try:
            destination = await self._open_stop(target, source_id)
            if destination is None:
                self.counters.circuits_refused += 1
                await _answer(source, Status.CONNECTION_FAILED)
                return
            await write_message(source, HopMessage(type=HopMessage.STATUS, status=Status.OK,
                                                   limit=self._limit()))
            self.counters.circuits_opened += 1
            log.debug("relay circuit", extra={"peer_id": source_id, "target": target_id})
            try:
                await self._splice(source, destination)
            finally:
                with contextlib.suppress(Exception):
                    await destination.reset()
        finally:
            self._circuits.total -= 1
            self._circuits.per_target[target_id] -= 1
            if self._circuits.per_target[target_id] <= 0:
                del self._circuits.per_target[target_id]

    def _refuse_circuit(self, source: INetStream,
                        target_id: str) -> tuple[Status.ValueType, str] | None:
        if relayed_connection(source):
            return Status.PERMISSION_DENIED, "asked over a relayed connection"
        self._expire()
        if target_id not in self._slots or not self._membership.is_admitted(target_id):
            return Status.NO_RESERVATION, "the target holds no reservation here"
        if self._circuits.total >= self.limits.max_circuits:
            return Status.RESOURCE_LIMIT_EXCEEDED, \
                f"all {self.limits.max_circuits} circuits are in use"
        if self._circuits.per_target[target_id] >= self.limits.max_circuits_per_peer:
            return Status.RESOURCE_LIMIT_EXCEEDED, \
                f"{self.limits.max_circuits_per_peer} circuits to the target already"
        return None

    async def _open_stop(self, target: ID, source_id: str) -> INetStream | None:
        stream: INetStream | None = None
        try:
            with trio.fail_after(MESSAGE_TIMEOUT):
                stream = await self._host.new_stream(target, [STOP_PROTOCOL])
                await write_message(stream, StopMessage(
                    type=StopMessage.CONNECT, peer=PeerId(id=ID.from_base58(source_id).to_bytes()),
                    limit=self._limit()))
                answer = await read_message(stream, StopMessage)
            if answer.type == StopMessage.STATUS and answer.status == Status.OK:
                return stream
            log.debug("relay target refused the circuit", extra={
                "target": target.to_base58(), "status": answer.status})
        except Exception as exc:
            log.debug("relay target unreachable", extra={"target": target.to_base58(),
                                                         "error": repr(exc)})
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.reset()
        return None

    async def _splice(self, a: INetStream, b: INetStream) -> None:
        """Copy both ways until both ends close or a limit is reached."""
        with trio.move_on_after(self.limits.circuit_duration):
            async with trio.open_nursery() as nursery:
                async def copy(source: INetStream, sink: INetStream) -> None:
                    budget = self.limits.circuit_bytes
                    while True:
                        try:
                            data = await source.read(SPLICE_CHUNK)
                        except StreamEOF:
                            data = b""
                        if not data:
                            with contextlib.suppress(Exception):
                                await sink.close()  # half-close: the other way goes on
                            return
                        if len(data) > budget:
                            log.debug("relay circuit reached its byte limit")
                            nursery.cancel_scope.cancel()
                            return
                        budget -= len(data)
                        self.counters.bytes_relayed += len(data)
                        await sink.write(data)

                async def guarded(source: INetStream, sink: INetStream) -> None:
                    try:
                        await copy(source, sink)
                    except Exception:  # one side reset: the circuit is over
                        nursery.cancel_scope.cancel()

                nursery.start_soon(guarded, a, b)
                nursery.start_soon(guarded, b, a)

    def _limit(self) -> Limit:
        return Limit(duration=int(self.limits.circuit_duration), data=self.limits.circuit_bytes)


async def _answer(stream: INetStream, status: Status.ValueType) -> None:
    await write_message(stream, HopMessage(type=HopMessage.STATUS, status=status))

