"""Network membership: the hello handshake that keeps networks apart.

Every connection, inbound or outbound, is on probation until our own hello
exchange with the peer shows the same Network ID (docs/protocol.md). Until then
the peer is not admitted: it is not counted, not listed, not served by any
namespaced protocol, and later layers (DHT, gossip) never see it. A peer of
another network, one that does not speak the handshake (not a Mesh node), or
one that does not answer within HELLO_TIMEOUT is disconnected, with the reason
logged and remembered for ``connect``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.rcmgr import Direction

from mesh.wire.v1 import wire_pb2
from meshd import errors
from meshd.p2p.addresses import IPAddress, ip_of
from meshd.p2p.circuit import direct_remote
from meshd.p2p.framing import FrameError, read_frame, write_frame
from meshd.p2p.upstream.first_contact import dial_unknown

log = logging.getLogger(__name__)

HELLO_PROTOCOL = TProtocol("/mesh/hello/1.0.0")
HELLO_VERSION = 1
HELLO_TIMEOUT = 5.0
# A peer of another network gets this long, unadmitted, to finish its own
# exchange and so to learn why it is dropped, before we disconnect.
MISMATCH_LINGER = 0.5
# After an explicit disconnect, the peer is refused (and not dialled) this long,
# so that discovery does not undo the operator's decision at once.
DISCONNECT_COOLDOWN = 60.0
# Seconds after this node closed a peer's connections during which a request
# does not dial it again past the closed entries (longer than py-libp2p's
# 0.1 s cleanup of a closed connection, docs/py-libp2p.md#found-new-stream-does-not-redial).
CLOSING_WINDOW = 2.0
MAX_HELLO_BYTES = 1024
DIAL_TIMEOUT = 10.0


def protocol_id(network_id: str, name: str, version: str = "1.0.0") -> TProtocol:
    """The namespaced ID of a Mesh protocol: ``/mesh/<network id>/<name>/<version>``."""
    return TProtocol(f"/mesh/{network_id}/{name}/{version}")


# Multihash codes a peer ID may use: identity (small public keys such as
# Ed25519) and sha2-256 (larger ones such as RSA).
_IDENTITY, _SHA2_256 = 0x00, 0x12


def parse_peer_id(text: str) -> ID:
    """A peer ID from its base58 form; InvalidArgument for anything else."""
    try:
        pid = ID.from_base58(text)
        raw = pid.to_bytes()
    except Exception:
        raw = b""
    if len(raw) < 3 or raw[0] not in (_IDENTITY, _SHA2_256) or raw[1] != len(raw) - 2:
        raise errors.InvalidArgument(f"{text!r} is not a peer ID (like 12D3KooW...)")
    return pid


@dataclass(frozen=True)
class PeerRecord:
    """An admitted peer."""

    peer_id: str
    addrs: tuple[str, ...]
    direction: str  # "inbound" or "outbound"
    connected_at: dt.datetime
    agent: str
    # Its clock minus ours, from its hello (ms; None: it did not say).
    clock_offset_ms: int | None = None

    def seen_at(self) -> IPAddress | None:
        """The IP its connection comes from; None when that is a relay's."""
        if not self.addrs or "/p2p-circuit" in self.addrs[0]:
            return None
        return ip_of(self.addrs[0])


@dataclass(frozen=True)
class PeerEvent:
    """A member joined (admitted) or left; ``seq`` counts them from the start."""

    seq: int
    kind: str  # "joined" or "left"
    peer_id: str
    at: dt.datetime
    record: PeerRecord | None = None  # joined: the admitted peer
    present: bool = False  # a member already there when the watch began


PEER_EVENTS_KEPT = 1024  # for watchers that read slowly


class Membership:
    """Admits peers of our network, disconnects the others.

    Lives on the trio loop. ``run`` must be running (it owns the handshake
    tasks); the host's notifee calls ``connection_opened`` / ``connection_closed``.
    """

    def __init__(self, host: IHost, network_id: str, agent: str,
                 on_change: Callable[[int], None] = lambda count: None) -> None:
        self._host = host
        self._network_id = network_id
        self._hello = wire_pb2.Hello(network_id=network_id, hello_version=HELLO_VERSION,
                                     agent=agent)
        self._on_change = on_change
        self._admitted: dict[str, PeerRecord] = {}
        # Handshakes in progress; removed when decided, so strangers leave no trace.
        self._pending: dict[str, _Verdict] = {}
        self._changed = trio.Event()
        self._admission_listeners: list[Callable[[str], None]] = []
        self._events: collections.deque[PeerEvent] = collections.deque(maxlen=PEER_EVENTS_KEPT)
        self._events_seq = 0
        self._clock_offsets: dict[str, int] = {}  # peer -> its clock minus ours (ms)
        self._event_added = trio.Event()
        self._cooldown_until: dict[str, float] = {}  # peer ID -> trio time
        self._closing: dict[str, float] = {}  # peer ID -> trio time this node closed it
        self._blocked: set[str] = set()  # until unblocked (not kept across restarts)
        self._observed: dict[str, str] = {}  # peer ID -> /ip4/<ip> it sees us at (hello)
        self.counters = MembershipCounters()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Answer hellos and run handshakes until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._host.set_stream_handler(HELLO_PROTOCOL, self._answer_hello)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._host.remove_stream_handler(HELLO_PROTOCOL)
                # Stopping: the nursery takes no new handshake tasks now. A
                # connection opened meanwhile is left to the closing swarm (it
                # raised "Nursery is closed to new arrivals" in the notifee).
                self._nursery = None

    # --- what other layers ask ----------------------------------------------

    def is_admitted(self, peer_id: str) -> bool:
        return peer_id in self._admitted

    def record(self, peer_id: str) -> PeerRecord | None:
        """The admitted peer ``peer_id``, or None."""
        return self._admitted.get(peer_id)

    def peers(self) -> list[PeerRecord]:
        return sorted(self._admitted.values(), key=lambda p: p.peer_id)

    def count(self) -> int:
        return len(self._admitted)

    async def watch_events(self) -> AsyncIterator[tuple[PeerEvent, int]]:
        """The members now (as ``present`` joins), then each member joining or
        leaving, with how many events this reader lost before it (more than
        PEER_EVENTS_KEPT behind); forever."""
        seen = self._events_seq
        for record in self.peers():
            yield PeerEvent(0, "joined", record.peer_id, record.connected_at, record,
                            present=True), 0
        while True:
            added = self._event_added
            fresh = [e for e in self._events if e.seq > seen]
            if not fresh:
                await added.wait()
                continue
            for event in fresh:
                yield event, event.seq - seen - 1
                seen = event.seq

    def _record_event(self, kind: str, peer_id: str, record: PeerRecord | None = None) -> None:
        self._events_seq += 1
        self._events.append(PeerEvent(self._events_seq, kind, peer_id,
                                      dt.datetime.now(dt.UTC), record))
        self._event_added.set()
        self._event_added = trio.Event()

    @contextlib.contextmanager
    def admission_listener(self, listener: Callable[[str], None]) -> Iterator[None]:
        """Call ``listener(peer_id)`` each time a peer is admitted, inside the block.

        A listener that outlived its owner would be called at shutdown with its
        nursery closed or its channel gone (a peer admitted while the node stops;
        docs/py-libp2p.md#found-admission-listener-after-close).
        """
        self._admission_listeners.append(listener)
        try:
            yield
        finally:
            self._admission_listeners.remove(listener)

    def holds_off(self, peer_id: str) -> bool:
        """Whether the operator keeps ``peer_id`` out: blocked, or disconnected moments ago."""
        if peer_id in self._blocked:
            return True
        until = self._cooldown_until.get(peer_id)
        if until is not None and trio.current_time() >= until:
            del self._cooldown_until[peer_id]
            until = None
        return until is not None

    def blocked(self) -> list[str]:
        return sorted(self._blocked)

    async def next_change(self) -> None:
        """Return at the next connection opened or closed, admission or refusal."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_admitted(self, peer_id: str) -> bool:
        """Whether ``peer_id`` is admitted, waiting for a handshake in progress."""
        verdict = self._pending.get(peer_id)
        if verdict is not None:
            with trio.move_on_after(HELLO_TIMEOUT + 1):
                await verdict.decided.wait()
        return peer_id in self._admitted

    async def admits(self, stream: INetStream) -> bool:
        """Whether the peer of an incoming stream is a member (waiting for a
        handshake in progress); the stream is reset when it is not: every
        protocol Mesh serves is for members only."""
        if await self.wait_admitted(str(stream.muxed_conn.peer_id)):
            return True
        with contextlib.suppress(Exception):  # it may be gone already
            await stream.reset()
        return False

    async def connect(self, address: str) -> PeerRecord:
        """Dial ``address`` and wait for the handshake's verdict.

        Raises:
            errors.InvalidArgument: not a multiaddr with /p2p/<id>.
            errors.Unavailable: the peer cannot be reached.
            errors.FailedPrecondition: the peer is not of our network.
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:  # multiaddr raises several kinds for bad input
            raise errors.InvalidArgument(f"{address!r} is not a multiaddr ending in "
                                         f"/p2p/<peer id>: {exc}") from None
        peer_id = str(info.peer_id)
        if peer_id == str(self._host.get_id()):
            raise errors.InvalidArgument("that address is this node's own")
        self.reconcile()
        if peer_id in self._admitted:
            return self._admitted[peer_id]
        if peer_id in self._blocked:
            raise errors.FailedPrecondition(
                f"peer {peer_id} is blocked (meshctl peers unblock {peer_id})")
        self._cooldown_until.pop(peer_id, None)  # the operator changed their mind
        verdict = self._verdict(peer_id)
        # After a peer restarts, py-libp2p refuses to redial it for 60 s
        # (negative dial cache, docs/py-libp2p.md#trap-9): an explicit connect
        # is a request to try now.
        network = self._host.get_network()
        if isinstance(network, Swarm):
            network.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await self._host.connect(info)
        except Exception as exc:
            raise errors.Unavailable(f"cannot reach {address}: {exc or type(exc).__name__}"
                                     ) from None
        with trio.move_on_after(HELLO_TIMEOUT + 1):
            await verdict.decided.wait()
        if peer_id in self._admitted:
            return self._admitted[peer_id]
        reason = verdict.reason or "the handshake did not finish"
        raise errors.FailedPrecondition(f"peer {peer_id} was refused: {reason}")

    async def connect_unknown(self, address: str) -> PeerRecord:
        """Dial ``address`` (no /p2p/: a bootstrap URL), learn who answers, and
        wait for the handshake's verdict; errors as :meth:`connect`."""
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                peer = await dial_unknown(self._host, address)
        except Exception as exc:
            raise errors.Unavailable(f"cannot reach {address}: {exc or type(exc).__name__}"
                                     ) from None
        peer_id = str(peer)
        verdict = None
        if peer_id not in self._admitted:
            verdict = self._verdict(peer_id)
            with trio.move_on_after(HELLO_TIMEOUT + 1):
                await verdict.decided.wait()
        if peer_id in self._admitted:
            return self._admitted[peer_id]
        reason = (verdict.reason if verdict else None) or "the handshake did not finish"
        raise errors.FailedPrecondition(f"peer {peer_id} at {address} was refused: {reason}")

    async def disconnect(self, peer_id: str) -> None:
        """Close every connection to ``peer_id`` and refuse it for DISCONNECT_COOLDOWN."""
        pid = parse_peer_id(peer_id)
        if not self._host.get_network().get_connections(pid):
            raise errors.NotFound(f"not connected to {peer_id}")
        self._cooldown_until[peer_id] = trio.current_time() + DISCONNECT_COOLDOWN
        await self.close_connections(pid)

    async def block(self, peer_id: str, reason: str = "by the operator") -> None:
        """Refuse ``peer_id`` until :meth:`unblock`, closing its connections now."""
        pid = parse_peer_id(peer_id)
        if peer_id == str(self._host.get_id()):
            raise errors.InvalidArgument("that is this node's own peer ID")
        self._blocked.add(peer_id)
        log.warning(f"peer blocked {reason}", extra={"peer_id": peer_id})
        await self.close_connections(pid)

    def unblock(self, peer_id: str) -> None:
        parse_peer_id(peer_id)
        if peer_id not in self._blocked:
            raise errors.NotFound(f"peer {peer_id} is not blocked")
        self._blocked.discard(peer_id)
        log.info("peer unblocked", extra={"peer_id": peer_id})

    async def close_connections(self, peer: ID) -> None:
        """Close every connection to ``peer``, one by one.

        Not ``Swarm.close_peer``: it pops the peer's whole entry from the
        connection table first, so a connection the peer opens meanwhile (it
        redials within py-libp2p's 0.1 s cleanup) is dropped from the table
        without being closed: a leaked socket, and a peer meshd would count
        as connected with no connection (docs/py-libp2p.md#found-redial-race).
        """
        now = trio.current_time()
        self._closing = {p: at for p, at in self._closing.items() if now - at <= CLOSING_WINDOW}
        self._closing[str(peer)] = now
        await _close(list(self._host.get_network().get_connections(peer)))

    def closed_here(self, peer_id: str) -> bool:
        """Whether this node closed its connections to ``peer_id`` (pruned, disconnected,
        blocked) in the last CLOSING_WINDOW seconds: a request racing with that close
        must not dial it again (meshd/p2p/direct.py)."""
        at = self._closing.get(peer_id)
        if at is not None and trio.current_time() - at > CLOSING_WINDOW:
            del self._closing[peer_id]
            return False
        return at is not None

    def reconcile(self) -> None:
        """Forget admitted peers that have no connection left (missed notifications)."""
        network = self._host.get_network()
        gone = [p for p in self._admitted if not network.get_connections(ID.from_base58(p))]
        for peer_id in gone:
            del self._admitted[peer_id]
            log.info("peer left", extra={"peer_id": peer_id})
            self._record_event("left", peer_id)
        if gone:
            self._on_change(len(self._admitted))
            self._notify()

    # --- connection events (from the host's notifee) ---------------------------

    def connection_opened(self, conn: INetConn) -> None:
        peer_id = str(conn.muxed_conn.peer_id)
        self.counters.opened[_direction(conn)] += 1
        self._notify()
        if self._nursery is None:
            return
        # Every connection is verified, even one to a peer already admitted: it
        # may be a redial racing the close of the old one, during a cooldown
        # (docs/py-libp2p.md#found-redial-race).
        if peer_id not in self._admitted:
            self._verdict(peer_id)
        self._nursery.start_soon(self._verify, conn)

    def connection_closed(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        self.counters.closed[_direction(conn)] += 1
        self._notify()
        if self._host.get_network().get_connections(peer):
            return  # another connection to the peer remains
        self._observed.pop(str(peer), None)
        self._clock_offsets.pop(str(peer), None)
        if self._admitted.pop(str(peer), None) is not None:
            log.info("peer left", extra={"peer_id": str(peer)})
            self._record_event("left", str(peer))
            self._on_change(len(self._admitted))

    # --- the handshake ----------------------------------------------------------

    async def _verify(self, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                stream = await self._host.new_stream(peer, [HELLO_PROTOCOL])
                try:
                    await write_frame(stream, self._hello_for(str(peer), stream))
                    reply = await self._read_hello(stream)
                    self._note_observed(str(peer), reply, stream)
                finally:
                    with contextlib.suppress(Exception):  # already reset by the peer
                        await stream.close()
            reason = self._mismatch(reply) or self._refusal(str(peer))
            if reason is not None:
                await self._reject(peer, reason, linger=MISMATCH_LINGER)
                return
        except trio.TooSlowError:
            reason = f"no Mesh handshake within {HELLO_TIMEOUT:g} s"
        except _BadHello as exc:
            reason = str(exc)
        except Exception as exc:  # negotiation refused, stream reset, connection lost
            if getattr(conn, "is_closed", False):
                log.debug("peer left during the handshake", extra={"peer_id": str(peer)})
                if any(other is not conn and not getattr(other, "is_closed", False)
                       for other in self._host.get_network().get_connections(peer)):
                    # Replaced while its handshake ran: a hole punch closes the
                    # relayed connection once the direct one is up (hole_punch.py),
                    # and the direct one's handshake decides. Deciding here refused
                    # a `peers connect` that succeeded (fresh-clone run 50, test_nat).
                    return
                # It hung up first: an AutoNAT dial-back (meshd/p2p/autonat.py)
                # proves its point with the security handshake and leaves.
                self._decide(str(peer), "it closed the connection during the handshake")
                return
            reason = f"does not speak the Mesh handshake ({type(exc).__name__}: {exc})"
        if reason is None:
            self._admit(conn, reply.agent)
        else:
            await self._reject(peer, reason)

    async def _answer_hello(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(HELLO_TIMEOUT):
                hello = await self._read_hello(stream)
                self._note_observed(str(peer), hello, stream)
                # Answer even a stranger, so that it learns why it is dropped.
                await write_frame(stream, self._hello_for(str(peer), stream))
                await stream.close()
        except Exception as exc:  # too slow, malformed, or the stream broke
            with contextlib.suppress(Exception):
                await stream.reset()
            await self._reject(peer, f"bad handshake from the peer ({exc or type(exc).__name__})")
            return
        reason = self._mismatch(hello) or self._refusal(str(peer))
        if reason is not None:
            await self._reject(peer, reason, linger=MISMATCH_LINGER)

    async def _read_hello(self, stream: INetStream) -> wire_pb2.Hello:
        try:
            return wire_pb2.Hello.FromString(await read_frame(stream, MAX_HELLO_BYTES))
        except (FrameError, DecodeError) as exc:
            raise _BadHello(f"sent an invalid handshake: {exc}") from None

    def _hello_for(self, peer_id: str, stream: INetStream) -> bytes:
        hello = wire_pb2.Hello()
        hello.CopyFrom(self._hello)
        hello.refused = self._refusal(peer_id) or ""
        hello.sent_at_ms = int(time.time() * 1000)
        remote = direct_remote(stream)
        if remote is not None:
            hello.observed_addr = remote.to_bytes()
        return hello.SerializeToString()

    def _note_observed(self, peer_id: str, hello: wire_pb2.Hello, stream: INetStream) -> None:
        """Remember the IP a peer sees us at (from a direct connection only), and
        how far its clock is from ours."""
        if hello.sent_at_ms:
            self._clock_offsets[peer_id] = hello.sent_at_ms - int(time.time() * 1000)
        if not hello.observed_addr or direct_remote(stream) is None:
            return
        with contextlib.suppress(Exception):
            address = str(multiaddr.Multiaddr(hello.observed_addr))
            parts = address.split("/")
            if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
                self._observed[peer_id] = f"/{parts[1]}/{parts[2]}"

    def observed_ips(self) -> list[str]:
        """``/ip4/<ip>`` (or ip6) admitted peers see this node at, most seen first."""
        seen = Counter(ip for peer, ip in self._observed.items() if peer in self._admitted)
        return [ip for ip, _ in seen.most_common()]

    def _refusal(self, peer_id: str) -> str | None:
        """Why we refuse a peer of our own network, if we do."""
        if peer_id in self._blocked:
            return "its operator blocked this node"
        if self.holds_off(peer_id):
            return "it was disconnected by its operator moments ago (cooling down)"
        return None

    def _mismatch(self, hello: wire_pb2.Hello) -> str | None:
        if hello.network_id != self._network_id:
            return (f"it is on network {hello.network_id or '(none)'}, "
                    f"this node on {self._network_id}")
        if hello.hello_version < 1:
            return f"unsupported handshake version {hello.hello_version}"
        if hello.refused:
            return f"it refused the connection: {hello.refused[:200]}"
        return None

    def _admit(self, conn: INetConn, agent: str) -> None:
        peer_id = str(conn.muxed_conn.peer_id)
        if not self._host.get_network().get_connections(conn.muxed_conn.peer_id):
            return  # it left while we were talking
        self._admitted[peer_id] = PeerRecord(
            peer_id=peer_id,
            addrs=tuple(str(a) for a in conn.get_transport_addresses()),
            direction=_direction(conn),
            connected_at=dt.datetime.now(dt.UTC),
            agent=agent[:128],
            clock_offset_ms=self._clock_offsets.get(peer_id),
        )
        self.counters.admitted += 1
        log.info("peer admitted", extra={"peer_id": peer_id, "agent": agent[:128]})
        self._record_event("joined", peer_id, self._admitted[peer_id])
        self._on_change(len(self._admitted))
        for listener in self._admission_listeners:
            listener(peer_id)
        self._decide(peer_id, None)
        self._notify()

    async def _reject(self, peer: ID, reason: str, linger: float = 0.0) -> None:
        peer_id = str(peer)
        was_admitted = self._admitted.pop(peer_id, None) is not None
        self.counters.refused += 1
        log.warning("peer refused", extra={"peer_id": peer_id, "reason": reason})
        self._decide(peer_id, reason)
        if was_admitted:
            self._record_event("left", peer_id)
            self._on_change(len(self._admitted))
        self._notify()
        # Only the connections refused now: one the peer opens during the
        # linger (say, just after an unblock) gets its own handshake, and
        # closing it here would fail that handshake for no reason.
        refused = list(self._host.get_network().get_connections(peer))
        await trio.sleep(linger)
        with trio.move_on_after(HELLO_TIMEOUT):
            await _close(refused)

    def _verdict(self, peer_id: str) -> _Verdict:
        verdict = self._pending.get(peer_id)
        if verdict is None:
            verdict = self._pending[peer_id] = _Verdict()
        return verdict

    def _decide(self, peer_id: str, reason: str | None) -> None:
        verdict = self._pending.pop(peer_id, None)
        if verdict is not None:
            verdict.reason = reason
            verdict.decided.set()


@dataclass
class MembershipCounters:
    """Connection and admission counts since start (exported as metrics)."""

    opened: dict[str, int] = field(default_factory=lambda: {"inbound": 0, "outbound": 0})
    closed: dict[str, int] = field(default_factory=lambda: {"inbound": 0, "outbound": 0})
    admitted: int = 0
    refused: int = 0
    streams_opened: int = 0
    streams_closed: int = 0
    protocol_errors: int = 0  # a service's handler failed on a peer's stream


def _direction(conn: INetConn) -> str:
    outbound = getattr(conn, "direction", None) == Direction.OUTBOUND
    return "outbound" if outbound else "inbound"


class _Verdict:
    """The outcome of one handshake: admitted (reason None) or refused, and why."""

    def __init__(self) -> None:
        self.decided = trio.Event()
        self.reason: str | None = None


class _BadHello(Exception):
    pass


async def _close(connections: list[INetConn]) -> None:
    for conn in connections:
        with contextlib.suppress(Exception):  # already closing
            await conn.close()
