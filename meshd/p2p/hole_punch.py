"""Direct connection upgrade: from a relayed connection to a direct one.

When a peer reaches this node through a relay (meshd/p2p/relay_client.py),
this node, the one behind NAT, tries to replace the circuit by a direct
connection, and closes the circuit once it has one:

1. **Reversal.** It dials the peer's own addresses (from identify, or from
   the peer's DCUtR CONNECT when identify has not run yet). A peer that is
   publicly reachable answers at once: no punching needed (libp2p's
   "connection reversal").
2. **Hole punching** (DCUtR, ``/libp2p/dcutr``, the spec's messages from
   py-libp2p's ``libp2p.relay.circuit_v2.pb.dcutr_pb2``; docs/protocol.md).
   Over the relayed connection this node (B) sends CONNECT with the
   addresses it may be seen at from outside (each IP members see it at, from
   the hello, with each port it listens on: a NAT that keeps source ports maps
   the listen port to the same public port), the peer (A) answers CONNECT with
   its own, B measures the round trip, sends SYNC and waits half of it; then
   both dial each other at once, from their listen ports (TCP simultaneous
   open), A as the TCP and security client, B as the server. Up to
   PUNCH_ATTEMPTS rounds.

py-libp2p 0.8.1's DCUtR (``libp2p.relay.circuit_v2.dcutr``) is not used
(docs/py-libp2p.md#found-dcutr-binds-the-wrong-port): it binds its dials to
the first advertised address, which fails and silently falls back to a
random port (no punch); both sides start a punch; its relay-address filter
reads the wrong peer ID. What it provides and meshd uses: the swarm's
``dial_addr(source=…)`` and ``dial_addr_as_responder`` (listen port reused,
roles fixed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch

from meshd.p2p.addresses import ip_of, tcp_endpoint, usable_by
from meshd.p2p.circuit import BadMessage, is_relayed, read_message, write_message
from meshd.p2p.membership import Membership

log = logging.getLogger(__name__)

DCUTR_PROTOCOL = TProtocol("/libp2p/dcutr")
REVERSAL_TIMEOUT = 3.0
MESSAGE_TIMEOUT = 10.0
DIAL_TIMEOUT = 3.0  # a dropped SYN is sent again after 1 s: two tries
PUNCH_ATTEMPTS = 3
MAX_ADDRS = 8


@dataclass
class PunchCounters:
    """Upgrades of relayed connections since start, by outcome."""

    reversed: int = 0  # the peer was reachable: dialled directly
    punched: int = 0  # simultaneous open through the NAT(s)
    failed: int = 0  # still relayed


class HolePuncher:
    """Upgrades this node's relayed connections; answers the peer's side too."""

    def __init__(self, host: IHost, membership: Membership, listen: Sequence[str]) -> None:
        self._host = host
        self._membership = membership
        self._ports = sorted({e[1] for e in map(tcp_endpoint, listen) if e and e[1]})
        self._busy: set[str] = set()
        self.counters = PunchCounters()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        self._host.set_stream_handler(DCUTR_PROTOCOL, self._answer)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                with self._membership.admission_listener(self._admitted):
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._nursery = None
            self._host.remove_stream_handler(DCUTR_PROTOCOL)

    def _admitted(self, peer_id: str) -> None:
        relayed = self._relayed_inbound(peer_id)
        if relayed is not None and peer_id not in self._busy and self._nursery is not None:
            self._busy.add(peer_id)
            self._nursery.start_soon(self._upgrade, peer_id, relayed)

    def _relayed_inbound(self, peer_id: str) -> INetConn | None:
        """Our only connection to the peer, when it came in through a relay."""
        connections = self._host.get_network().get_connections(ID.from_base58(peer_id))
        if len(connections) != 1 or not is_relayed(connections[0]):
            return None
        outbound = getattr(connections[0], "direction", None) == Direction.OUTBOUND
        return None if outbound else connections[0]

    # --- B: the node that was reached through the relay -----------------------------

    async def _upgrade(self, peer_id: str, relayed: INetConn) -> None:
        peer = ID.from_base58(peer_id)
        try:
            outcome = await self._punch(peer)
            if outcome is None:
                self.counters.failed += 1
                log.info("connection stays relayed", extra={"peer_id": peer_id})
                return
            if outcome == "reversed":
                self.counters.reversed += 1
            else:
                self.counters.punched += 1
            log.info("relayed connection upgraded", extra={
                "peer_id": peer_id,
                "how": "dialled directly" if outcome == "reversed" else "hole punched"})
            with contextlib.suppress(Exception):
                await relayed.close()  # the direct one carries on; the relay is freed
        finally:
            self._busy.discard(peer_id)

    async def _punch(self, peer: ID) -> str | None:
        """"reversed", "punched", or None (still relayed)."""
        # The peer's own addresses: from identify, when it has run already.
        if await self._dial_any(peer, self._known_direct(peer), REVERSAL_TIMEOUT, role=None):
            return "reversed"
        tried_reversal = False
        for attempt in range(1, PUNCH_ATTEMPTS + 1):
            try:
                with trio.fail_after(MESSAGE_TIMEOUT):
                    stream = await self._host.new_stream(peer, [DCUTR_PROTOCOL])
                    started = trio.current_time()
                    await write_message(stream, HolePunch(type=HolePunch.CONNECT,
                                                          ObsAddrs=self._outside_addrs()))
                    answer = await read_message(stream, HolePunch)
                    rtt = trio.current_time() - started
                    if answer.type != HolePunch.CONNECT:
                        raise BadMessage("expected CONNECT")
                theirs = _decode(answer.ObsAddrs)
                # Identify may not have run when the first attempt came: a peer
                # that is reachable is dialled at the addresses it just gave.
                # (The peer waits for SYNC meanwhile; a punch toward a listening
                # peer would give both sides the responder's role.)
                if not tried_reversal:
                    tried_reversal = True
                    if await self._dial_any(peer, theirs, REVERSAL_TIMEOUT, role=None):
                        with contextlib.suppress(Exception):
                            await stream.reset()
                        return "reversed"
                with trio.fail_after(MESSAGE_TIMEOUT):
                    await write_message(stream, HolePunch(type=HolePunch.SYNC))
                    with contextlib.suppress(Exception):
                        await stream.close()
            except Exception as exc:  # the peer does not punch, or the relay went
                log.debug("no hole punch", extra={"peer_id": str(peer), "error": repr(exc)})
                return None
            await trio.sleep(rtt / 2)
            if await self._dial_any(peer, theirs, DIAL_TIMEOUT, role="responder"):
                return "punched"
            log.debug("hole punch failed", extra={"peer_id": str(peer), "attempt": attempt})
        return None

    def _known_direct(self, peer: ID) -> list[str]:
        """The peer's direct addresses in the peerstore that this node can use."""
        seen_at = self._membership.observed_ips()
        viewer_ip = ip_of(seen_at[0]) if seen_at else None
        try:
            known = [str(a) for a in self._host.get_peerstore().addrs(peer)]
        except Exception:
            known = []
        return [a for a in known if tcp_endpoint(a.split("/p2p/")[0]) is not None
                and usable_by(a, viewer_ip)][:MAX_ADDRS]

    # --- A: the node that dialled through the relay ----------------------------------

    async def _answer(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            if not await self._membership.admits(stream):
                return
            while True:
                with trio.fail_after(MESSAGE_TIMEOUT):
                    request = await read_message(stream, HolePunch)
                    if request.type != HolePunch.CONNECT:
                        raise BadMessage("expected CONNECT")
                    await write_message(stream, HolePunch(type=HolePunch.CONNECT,
                                                          ObsAddrs=self._outside_addrs()))
                    sync = await read_message(stream, HolePunch)
                    if sync.type != HolePunch.SYNC:
                        raise BadMessage("expected SYNC")
                if await self._dial_any(peer, _decode(request.ObsAddrs), DIAL_TIMEOUT,
                                        role="initiator"):
                    log.info("hole punched", extra={"peer_id": str(peer)})
                return
        except Exception as exc:
            log.debug("hole punch not answered", extra={"peer_id": str(peer),
                                                        "error": repr(exc)})
            with contextlib.suppress(Exception):
                await stream.reset()

    # --- both ------------------------------------------------------------------------

    def _outside_addrs(self) -> list[bytes]:
        """Where this node may be reached from outside: each IP members see it
        at, with each port it listens on; then its own advertised addresses."""
        found = [f"{ip}/tcp/{port}" for ip in self._membership.observed_ips()
                 for port in self._ports]
        found += [str(a).split("/p2p/")[0] for a in self._host.get_addrs()
                  if "/p2p-circuit" not in str(a)]
        return [multiaddr.Multiaddr(a).to_bytes() for a in dict.fromkeys(found)][:MAX_ADDRS]

    async def _dial_any(self, peer: ID, addrs: list[str], timeout: float,
                        role: str | None) -> bool:
        """Dial ``addrs`` at once; True when one direct connection is up.

        ``role`` None: an ordinary dial. "initiator" / "responder": from the
        listen port (simultaneous open), upgraded as that side."""
        network = self._host.get_network()
        if not addrs or not isinstance(network, Swarm):
            return False

        async def dial(address: str, dials: trio.CancelScope) -> None:
            source = ("0.0.0.0", self._ports[0]) if role and self._ports else None
            try:
                if role == "responder":
                    await network.dial_addr_as_responder(multiaddr.Multiaddr(address), peer,
                                                         source)
                else:
                    await network.dial_addr(multiaddr.Multiaddr(address), peer, source)
            except Exception as exc:
                log.debug("direct dial failed", extra={"address": address, "error": repr(exc)})
                return
            dials.cancel()  # one is enough

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for address in addrs[:MAX_ADDRS]:
                    nursery.start_soon(dial, address, nursery.cancel_scope)
        return any(not is_relayed(c) for c in network.get_connections(peer))


def _decode(raw: Sequence[bytes]) -> list[str]:
    found = []
    for item in raw[:MAX_ADDRS]:
        with contextlib.suppress(Exception):
            address = str(multiaddr.Multiaddr(item)).split("/p2p/")[0]
            if tcp_endpoint(address) is not None:
                found.append(address)
    return found
