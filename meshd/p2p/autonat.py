"""AutoNAT: is this node reachable from outside, and at which address?

The libp2p AutoNAT v1 protocol (``/libp2p/autonat/1.0.0``, wire format of
py-libp2p's ``libp2p.host.autonat.pb``; docs/protocol.md). A node asks a few
members to dial it back; each dials, on a new connection, the address the
node's connection came from with each TCP port the node listens on, and says
whether that worked. py-libp2p 0.8.1's own AutoNAT is not used: its dial-back
calls ``host.connect()``, which returns at once for the requester's existing
connection, so every node is judged public; and it has no rate limit
(docs/py-libp2p.md#found-autonat-dials-nothing). Here:

* the dial-back is a fresh TCP connection and a Noise handshake under a
  throwaway key, which proves the requester's peer ID answers at that address
  (a port forwarded to another machine does not count);
* only the IP the request came from is ever dialled (no one can aim a server
  at a third party), at most MAX_PORTS ports, over direct connections only
  (a relayed one tells nothing of the requester's address), from admitted
  members only, one request per peer per PEER_INTERVAL and at most
  MAX_CONCURRENT_DIAL_BACKS at once;
* an operator who knows may set it (``p2p.reachability``, as go-libp2p's
  ForceReachability options); the node still serves dial-backs;
* the client's verdict is ``public`` when a member reached it (the address
  that worked is confirmed and advertised: a home router's port forward, say),
  ``private`` when members tried and none could, ``unknown`` before, or once
  the last verdict is older than VERDICT_TTL.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader

from meshd.p2p.addresses import AddressPolicy, ip_of, tcp_endpoint
from meshd.p2p.circuit import direct_remote
from meshd.p2p.framing import read_frame, write_frame
from meshd.p2p.membership import Membership

log = logging.getLogger(__name__)

AUTONAT_PROTOCOL = TProtocol("/libp2p/autonat/1.0.0")
MAX_MESSAGE = 4096
MAX_PORTS = 4
PEER_INTERVAL = 10.0  # seconds between two requests a server takes from one peer
MAX_CONCURRENT_DIAL_BACKS = 4
DIAL_BACK_TIMEOUT = 5.0
REQUEST_TIMEOUT = DIAL_BACK_TIMEOUT * MAX_PORTS + 5.0
SERVERS_PER_ROUND = 3
RETRY_UNKNOWN = 15.0  # seconds between rounds while the verdict is unknown
RECHECK = 600.0  # between rounds once decided
VERDICT_TTL = 1800.0  # a verdict not confirmed for this long is unknown again

Status = Message.ResponseStatus


class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class Verdict:
    reachability: Reachability = Reachability.UNKNOWN
    # The addresses members reached this node at (public only).
    confirmed: tuple[str, ...] = ()
    decided_at: float = 0.0  # trio time


class AutoNat:
    """Serves dial-backs to members and keeps this node's own verdict.

    ``run`` serves and asks until cancelled; ``on_change(verdict)`` is called
    on the trio loop each time the verdict changes. Confirmed addresses are
    given to the address policy, which advertises them.
    """

    def __init__(self, host: IHost, membership: Membership, policy: AddressPolicy,
                 on_change: Callable[[Verdict], None] = lambda verdict: None,
                 forced: Reachability | None = None) -> None:
        self._host = host
        self._membership = membership
        self._policy = policy
        self._on_change = on_change
        self.verdict = Verdict()
        self._last_request: dict[str, float] = {}
        self.peer_interval = PEER_INTERVAL
        self._dial_backs = trio.Semaphore(MAX_CONCURRENT_DIAL_BACKS)
        self._peers_arrived = trio.Event()
        self.served = {"ok": 0, "dial_error": 0, "refused": 0}
        self._forced = forced

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        self._host.set_stream_handler(AUTONAT_PROTOCOL, self._serve)
        try:
            with self._membership.admission_listener(lambda peer: self._peers_arrived.set()):
                task_status.started()
                if self._forced is not None:  # the operator knows (p2p.reachability)
                    self._decide(Verdict(self._forced, (), trio.current_time()))
                    await trio.sleep_forever()
                await self._keep_asking()
        finally:
            self._host.remove_stream_handler(AUTONAT_PROTOCOL)

    # --- the client -------------------------------------------------------------------

    async def _keep_asking(self) -> None:
        while True:
            if self._membership.count() == 0:
                self._peers_arrived = trio.Event()
                await self._peers_arrived.wait()
            await self.check()
            pause = RETRY_UNKNOWN if self.verdict.reachability is Reachability.UNKNOWN \
                else RECHECK
            with trio.move_on_after(pause * random.uniform(0.8, 1.2)):
                await trio.sleep_forever()

    async def check(self) -> Verdict:
        """Ask up to SERVERS_PER_ROUND members to dial back; update the verdict."""
        members = [p.peer_id for p in self._membership.peers()]
        asked = random.sample(members, min(SERVERS_PER_ROUND, len(members)))
        reached: list[str] = []
        failed = 0

        async def ask(peer_id: str) -> None:
            nonlocal failed
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    status, address = await self._ask(peer_id)
            except Exception as exc:  # it does not serve AutoNAT, or went away
                log.debug("no AutoNAT answer", extra={"peer_id": peer_id, "error": repr(exc)})
                return
            if status == Status.OK and address:
                reached.append(address)
            elif status == Status.E_DIAL_ERROR:
                failed += 1

        async with trio.open_nursery() as nursery:
            for peer_id in asked:
                nursery.start_soon(ask, peer_id)
        now = trio.current_time()
        if reached:
            self._decide(Verdict(Reachability.PUBLIC, tuple(dict.fromkeys(reached)), now))
        elif failed and failed >= min(2, len(members)):
            self._decide(Verdict(Reachability.PRIVATE, (), now))
        elif now - self.verdict.decided_at > VERDICT_TTL:
            self._decide(Verdict())
        return self.verdict

    async def _ask(self, peer_id: str) -> tuple[Message.ResponseStatus.ValueType, str]:
        own = [multiaddr.Multiaddr(a).to_bytes() for a in self._dialable_own()]
        request = Message(type=Message.DIAL, dial=Message.Dial(peer=Message.PeerInfo(
            id=self._host.get_id().to_bytes(), addrs=own)))
        stream = await self._host.new_stream(ID.from_base58(peer_id), [AUTONAT_PROTOCOL])
        try:
            await write_frame(stream, request.SerializeToString())
            answer = Message.FromString(await read_frame(stream, MAX_MESSAGE))
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        response = answer.dialResponse
        address = ""
        if response.addr:
            with contextlib.suppress(Exception):
                address = str(multiaddr.Multiaddr(response.addr))
        log.debug("AutoNAT answer", extra={"peer_id": peer_id, "status": response.status,
                                           "status_text": response.statusText[:200],
                                           "address": address})
        return response.status, address

    def _dialable_own(self) -> list[str]:
        """Advertised TCP addresses (not relay addresses), without /p2p/."""
        own = (str(a).split("/p2p/")[0] for a in self._host.get_addrs())
        return [a for a in own if tcp_endpoint(a) is not None]

    def _decide(self, verdict: Verdict) -> None:
        changed = (verdict.reachability, verdict.confirmed) != \
            (self.verdict.reachability, self.verdict.confirmed)
        self.verdict = verdict
        self._policy.confirm(verdict.confirmed)
        if changed:
            log.info("reachability", extra={"reachability": verdict.reachability.value,
                                             "confirmed": list(verdict.confirmed)})
            self._on_change(verdict)

    # --- the server -------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            if not await self._membership.admits(stream):
                return
            with trio.fail_after(REQUEST_TIMEOUT):
                request = Message.FromString(await read_frame(stream, MAX_MESSAGE))
                status, text, address = await self._dial_back(stream, peer, request)
                self.served["ok" if status == Status.OK else
                            "dial_error" if status == Status.E_DIAL_ERROR else "refused"] += 1
                answer = Message(type=Message.DIAL_RESPONSE, dialResponse=Message.DialResponse(
                    status=status, statusText=text,
                    addr=multiaddr.Multiaddr(address).to_bytes() if address else b""))
                await write_frame(stream, answer.SerializeToString())
                await stream.close()
        except Exception as exc:  # FrameError, DecodeError, TooSlowError, the stream broke
            log.debug("AutoNAT request not served", extra={"peer_id": str(peer),
                                                           "error": repr(exc)})
            with contextlib.suppress(Exception):
                await stream.reset()

    async def _dial_back(self, stream: INetStream, peer: ID,
                         request: Message) -> tuple[Message.ResponseStatus.ValueType, str, str]:
        """(status, text, address reached) for one request."""
        if request.type != Message.DIAL or not request.HasField("dial"):
            return Status.E_BAD_REQUEST, "expected a DIAL message", ""
        if request.dial.peer.id and request.dial.peer.id != peer.to_bytes():
            return Status.E_BAD_REQUEST, "the peer ID is not the requester's", ""
        now = trio.current_time()
        last = self._last_request.get(str(peer))
        if last is not None and now - last < self.peer_interval:
            return Status.E_DIAL_REFUSED, f"one request per {self.peer_interval:g} s", ""
        self._last_request[str(peer)] = now
        if len(self._last_request) > 4096:
            self._last_request = {p: t for p, t in self._last_request.items()
                                  if now - t < self.peer_interval}
        remote = direct_remote(stream)
        observed = ip_of(str(remote)) if remote is not None else None
        if observed is None:
            return Status.E_DIAL_REFUSED, "the request came over a relayed connection", ""
        ports: list[int] = []
        for raw in request.dial.peer.addrs:
            with contextlib.suppress(Exception):
                endpoint = tcp_endpoint(str(multiaddr.Multiaddr(raw)).split("/p2p/")[0])
                if endpoint is not None and endpoint[1] not in ports:
                    ports.append(endpoint[1])
        if not ports:
            return Status.E_DIAL_REFUSED, "no TCP address to dial", ""
        if self._dial_backs.value == 0:
            return Status.E_DIAL_REFUSED, "busy with other dial-backs", ""
        async with self._dial_backs:
            family = "ip4" if observed.version == 4 else "ip6"
            for port in ports[:MAX_PORTS]:
                address = f"/{family}/{observed}/tcp/{port}"
                if await dial_back(address, peer):
                    return Status.OK, "", address
        return Status.E_DIAL_ERROR, f"could not reach {observed} on port(s) " \
            f"{', '.join(map(str, ports[:MAX_PORTS]))}", ""


async def dial_back(address: str, peer: ID, timeout: float = DIAL_BACK_TIMEOUT) -> bool:
    """Whether ``peer`` answers at ``address`` (a TCP multiaddr) on a new
    connection: TCP, then a Noise handshake under a throwaway key, then closed."""
    noise = NoiseTransport(create_new_key_pair(),
                           noise_privkey=create_x25519_key_pair().private_key)
    # With the muxer too: a connection dropped after the security handshake
    # makes py-libp2p log "fail to upgrade mux" at ERROR on the dialled node.
    upgrader = TransportUpgrader({NOISE_PROTOCOL_ID: noise},
                                 {TProtocol(YAMUX_PROTOCOL_ID): Yamux})
    with trio.move_on_after(timeout):
        try:
            raw = await TCP().dial(multiaddr.Multiaddr(address))
        except Exception:
            return False
        try:
            secured = await upgrader.upgrade_security(raw, True, peer)
            muxed = await upgrader.upgrade_connection(secured, peer)
            await muxed.close()
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await raw.close()
    return False
