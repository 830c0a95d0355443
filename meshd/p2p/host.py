"""The libp2p host of a node: TCP + Noise + Yamux, with the identity key.

Works around these py-libp2p 0.8.1 behaviours (docs/py-libp2p.md, tested in
tests/integration/test_p2p_host.py):

* docs/py-libp2p.md#trap-1: every dial waits ~250 ms unless
  ``max_connections_per_peer`` is reached, so it is 1;
* docs/py-libp2p.md#trap-10: the AutoConnector (on by default) dials every peer
  the DHT puts in the peerstore, towards the midpoint of its watermarks, even
  with a low watermark of 0; and it redials a peer right after an explicit
  disconnect. meshd stops it as soon as the swarm has started it (``stop()``
  makes every later ``maybe_connect()`` return), and keeps the pruning ceiling
  high, until meshd's own connection manager keeps the degree;
* docs/py-libp2p.md#trap-12: the default security options also offer plaintext,
  secio and TLS, so Noise is the only one offered;
* docs/py-libp2p.md#trap-16: listen addresses go both to ``new_host`` and
  ``host.run``;
* leaving ``host.run()`` only cancels the swarm's tasks: ``Swarm.close()`` is
  never called. And when the daemon is cancelled, each ``SwarmConn`` cleanup
  removes its connection from the swarm and is then cancelled before it sends
  GO_AWAY and closes the socket: the socket leaks open and the peer never
  learns that we left. So the host runs in a task shielded from outside
  cancellation, and is stopped in order: ``Swarm.close()`` first (GO_AWAY,
  sockets closed), then ``host.run()`` is left, all within STOP_TIMEOUT
  (docs/py-libp2p.md#found-swarm-not-closed).
* one stream carries about a tenth of what the same cipher does over plain
  TCP: the Noise session reads each message with two socket reads and several
  copies, and Yamux sends a window update per read, splits 64 KiB writes in
  two frames, polls a full send window every 10 ms and formats debug messages
  per frame. Noise sessions are taken over after the handshake by
  ``meshd/p2p/upstream/noise.py`` and Yamux connections are ``meshd/p2p/upstream/yamux.py``'s:
  the wire format is unchanged (tested in tests/integration/test_p2p_throughput.py;
  docs/py-libp2p.md#found-noise-throughput and the Yamux sections after it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.transport.websocket.transport import WebsocketTransport

from meshcore.addresses import AddressError, parse_peer_address
from meshcore.version import __version__
from meshd import errors
from meshd.p2p.addresses import AddressPolicy, tcp_endpoint
from meshd.p2p.autonat import AutoNat, Reachability, Verdict
from meshd.p2p.dht import Dht, open_dht
from meshd.p2p.direct import DirectMessenger
from meshd.p2p.hole_punch import HolePuncher
from meshd.p2p.membership import Membership, PeerRecord, parse_peer_id
from meshd.p2p.pubsub import Broadcast, open_broadcast, open_broadcast_services
from meshd.p2p.relay_client import RelayClient
from meshd.p2p.relay_server import RelayLimits, RelayServer
from meshd.p2p.upstream import advertised, protocol_table
from meshd.p2p.upstream.noise import BulkNoiseTransport
from meshd.p2p.upstream.yamux import MeshMuxerMultistream

log = logging.getLogger(__name__)

AGENT = f"meshd/{__version__}"
# py-libp2p's connection manager limits (docs/py-libp2p.md#trap-10): its
# AutoConnector is stopped, and it prunes only far above any degree meshd aims for.
MIN_CONNECTIONS, LOW_WATERMARK, HIGH_WATERMARK, MAX_CONNECTIONS = 0, 0, 200, 256
MAX_PINGS = 100
DEFAULT_RELAY_LIMITS = RelayLimits()
# (reachability, advertised addresses) -> None
AddressesChanged = Callable[[Reachability, tuple[str, ...]], None]
# Stopping the host (closing every connection, then its tasks) at shutdown;
# bounded so that a stuck peer or task cannot hold the daemon.
STOP_TIMEOUT = 3.0


def peer_id_of(seed: bytes) -> str:
    """The libp2p peer ID (``12D3KooW...``) of an Ed25519 identity seed."""
    from libp2p.peer.id import ID

    return str(ID.from_pubkey(create_new_key_pair(seed).public_key))


class P2PHost:
    """A running libp2p host and the Mesh protocols on it; see :func:`open_p2p_host`."""

    def __init__(self, host: IHost, membership: Membership, direct: DirectMessenger,
                 dht: Dht, broadcast: Broadcast, autonat: AutoNat, relay_server: RelayServer,
                 relay_client: RelayClient, hole_punch: HolePuncher) -> None:
        self._host = host
        self.membership = membership
        self.direct = direct
        self.dht = dht
        self.broadcast = broadcast
        self.autonat = autonat
        self.relay_server = relay_server
        self.relay_client = relay_client
        self.hole_punch = hole_punch

    @property
    def reachability(self) -> Reachability:
        """Whether members can dial this node (AutoNAT's verdict)."""
        return self.autonat.verdict.reachability

    @property
    def peer_id(self) -> str:
        return str(self._host.get_id())

    def listen_addrs(self) -> tuple[str, ...]:
        """Bound addresses, each ending in /p2p/<peer id>."""
        return tuple(str(a) for a in self._host.get_addrs())

    def peer_count(self) -> int:
        """Connected peers that passed the network handshake."""
        return self.membership.count()

    def connection_count(self) -> int:
        """Peers with an open connection, admitted or not (yet)."""
        return len(self._host.get_network().connections)

    async def connect(self, address: str) -> PeerRecord:
        """Dial ``address`` and wait for admission: a multiaddr ending in
        /p2p/<id>, or a ``tcp://`` / ``ws://`` URL (meshcore/addresses.py), whose
        peer is learnt on first contact when the URL does not name it."""
        if "://" in address:
            try:
                parsed = parse_peer_address(address)
            except AddressError as exc:
                raise errors.InvalidArgument(str(exc)) from None
            if not parsed.peer_id:
                return await self.membership.connect_unknown(parsed.dial)
            address = parsed.address
        return await self.membership.connect(address)

    async def reach(self, peer_id: str, timeout: float) -> None:
        """Be connected to member ``peer_id``: at once if it is, else dialled at the
        addresses the DHT gives, so a plugin or a validator reaches any node of the
        network (a holder a provider record named, a provider to audit), not only
        its current peers.

        Raises:
            errors.FailedPrecondition: the operator holds it off, the DHT has no
                address for it, or none answered.
            errors.DeadlineExceeded: not connected within ``timeout``.
        """
        if self.membership.is_admitted(peer_id):
            return
        if self.membership.holds_off(peer_id):
            raise errors.FailedPrecondition(f"not connected to peer {peer_id}: this node's "
                                            "operator blocked or disconnected it")
        with trio.move_on_after(timeout) as scope:
            try:
                found = await self.dht.find_peer(peer_id)
            except errors.MeshError as exc:
                raise errors.FailedPrecondition(f"not connected to peer {peer_id}, and the "
                                                f"DHT has no address for it: {exc}") from None
            failures: list[str] = []
            for addr in found.addrs:
                address = addr if "/p2p/" in addr else f"{addr}/p2p/{peer_id}"
                try:
                    await self.membership.connect(address)
                    return
                except errors.MeshError as exc:
                    failures.append(str(exc))
            raise errors.FailedPrecondition(f"not connected to peer {peer_id}, and none of its "
                                            f"{len(found.addrs)} address(es) answered: "
                                            f"{'; '.join(failures[:2])}")
        if scope.cancelled_caught:
            raise errors.DeadlineExceeded(f"could not connect to peer {peer_id} within "
                                          f"{timeout:g} s")

    def member_addrs(self, peer_id: str) -> list[str]:
        """A peer's listen addresses as identify reported them, without /p2p/<id>."""
        try:
            addrs = self._host.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # not (yet) in the peerstore
            return []
        suffix = f"/p2p/{peer_id}"
        return [str(a).removesuffix(suffix) for a in addrs]

    def remember(self, peer_id: str, addrs: list[str], ttl: float = 600.0) -> None:
        """Tell the dialler where ``peer_id`` may be (without /p2p/<id>), e.g. its
        relay addresses from the peer book, before a dial."""
        known = []
        for address in addrs:
            with contextlib.suppress(Exception):  # the book holds only valid ones
                known.append(multiaddr.Multiaddr(address))
        if known:
            self._host.get_peerstore().add_addrs(ID.from_base58(peer_id), known, int(ttl))

    async def close_connection(self, peer_id: str) -> None:
        """Close a connection without the operator's cooldown (pruning)."""
        await self.membership.close_connections(parse_peer_id(peer_id))

    async def peers(self) -> list[PeerRecord]:
        return self.membership.peers()

    async def disconnect(self, peer_id: str) -> None:
        await self.membership.disconnect(peer_id)

    async def block(self, peer_id: str) -> None:
        await self.membership.block(peer_id)

    async def unblock(self, peer_id: str) -> None:
        self.membership.unblock(peer_id)

    async def blocked(self) -> list[str]:
        return self.membership.blocked()

    async def ping(self, peer_id: str, count: int) -> list[float]:
        """``count`` round-trip times in seconds, one after the other."""
        if not 1 <= count <= MAX_PINGS:
            raise errors.InvalidArgument(f"count must be between 1 and {MAX_PINGS}")
        parse_peer_id(peer_id)
        return [await self.direct.ping(peer_id) for _ in range(count)]


class _ConnectionWatcher(INotifee):
    """Hands every connection to the membership's handshake."""

    def __init__(self, membership: Membership) -> None:
        self._membership = membership

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._membership.connection_opened(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._membership.connection_closed(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        self._membership.counters.streams_opened += 1

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        self._membership.counters.streams_closed += 1

    async def listen(self, network: INetwork, address: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, address: multiaddr.Multiaddr) -> None:
        pass


@contextlib.asynccontextmanager
async def open_p2p_host(seed: bytes, listen: Sequence[str], network_id: str,
                        on_peers_changed: Callable[[int], None] = lambda count: None,
                        on_routing_changed: Callable[[int], None] = lambda size: None,
                        on_addresses_changed: AddressesChanged = lambda r, addrs: None,
                        *, fast_streams: bool = True,
                        advertise: AddressPolicy | None = None,
                        relay: RelayLimits | None = DEFAULT_RELAY_LIMITS,
                        reachability: Reachability | None = None,
                        ) -> AsyncIterator[P2PHost]:
    """Start a host of network ``network_id`` listening on ``listen``.

    It stops when the block exits. ``on_peers_changed(count)`` is called each
    time a peer is admitted (handshake passed) or leaves;
    ``on_routing_changed(size)`` each time a member enters the DHT routing table;
    ``on_addresses_changed(reachability, addrs)`` each time AutoNAT's verdict
    or the advertised addresses (confirmed, relayed) change.
    ``fast_streams=False`` keeps py-libp2p's own Noise session and Yamux (as
    meshd before they were replaced): for comparisons and compatibility tests.
    ``advertise`` decides what the host advertises (default: its listeners,
    wildcards expanded to the interfaces' addresses; meshd/p2p/addresses.py).
    ``relay``: the limits this node relays with while AutoNAT finds it public
    (None: it never relays). While AutoNAT finds it private, it holds
    reservations with relays and advertises relay addresses. ``reachability``
    pins the verdict instead of asking AutoNAT (``p2p.reachability``).
    """
    _refuse_ports_in_use(listen)
    key_pair = create_new_key_pair(seed)
    noise_class = BulkNoiseTransport if fast_streams else NoiseTransport
    noise = noise_class(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    addresses = [multiaddr.Multiaddr(a) for a in listen]
    policy = advertise or AddressPolicy()
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        listen_addrs=addresses,
        addrs_factory=policy,
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=MIN_CONNECTIONS,
            low_watermark=LOW_WATERMARK, high_watermark=HIGH_WATERMARK,
            max_connections=MAX_CONNECTIONS),
    )
    network = host.get_network()
    if fast_streams and isinstance(network, Swarm):  # see meshd/p2p/upstream/yamux.py
        upgrader = network.upgrader
        upgrader.muxer_multistream = MeshMuxerMultistream.replacing(upgrader.muxer_multistream)
    # Every node dials /ws too (a bootstrap node's WebSocket listener), not only
    # one that listens on it (docs/py-libp2p.md#found-websocket-dial-and-write).
    if isinstance(network, Swarm) and not any(
            isinstance(t, WebsocketTransport) for t in network.transport_manager.get_transports()):
        network.transport_manager.add_transport(WebsocketTransport(network.upgrader))
    advertised.install(host, policy)  # relay addresses intact
    protocol_table.install(host)  # services add and remove their handlers as they run
    membership = Membership(host, network_id, AGENT, on_peers_changed)
    direct = DirectMessenger(host, membership, network_id)
    relay_server = RelayServer(host, membership, relay or RelayLimits())

    def addresses_changed() -> None:
        on_addresses_changed(autonat.verdict.reachability,
                             tuple(str(a) for a in host.get_addrs()))

    relay_client = RelayClient(host, membership, policy, addresses_changed)
    hole_punch = HolePuncher(host, membership, listen)

    def reachability_changed(verdict: Verdict) -> None:
        public = verdict.reachability is Reachability.PUBLIC
        relay_server.set_active(public and relay is not None)
        relay_client.set_wanted(verdict.reachability is Reachability.PRIVATE)
        addresses_changed()

    autonat = AutoNat(host, membership, policy, reachability_changed, forced=reachability)
    host.get_network().register_notifee(_ConnectionWatcher(membership))
    stop = trio.Event()

    async def run_host(task_status: trio.TaskStatus[Pubsub] = trio.TASK_STATUS_IGNORED,
                       ) -> None:
        with trio.CancelScope(shield=True) as shield:
            # Gossipsub before host.run(): the other order makes host.run()
            # raise "Nursery is closed to new arrivals" at shutdown
            # (docs/py-libp2p.md#trap-17).
            async with open_broadcast_services(host, membership, network_id) as pubsub, \
                    host.run(addresses):
                network = host.get_network()
                # started by host.run(): stop it (docs/py-libp2p.md#trap-10)
                if isinstance(network, Swarm):
                    await network.auto_connector.stop()
                task_status.started(pubsub)
                await stop.wait()
                shield.deadline = trio.current_time() + STOP_TIMEOUT
                await host.get_network().close()

    async with trio.open_nursery() as nursery:
        # Hello and PING are served before the host listens.
        await nursery.start(membership.run)
        await nursery.start(direct.run)
        pubsub = await nursery.start(run_host)
        await nursery.start(relay_client.run)
        await nursery.start(hole_punch.run)
        await nursery.start(autonat.run)
        log.info("p2p host listening", extra={"peer_id": str(host.get_id()),
                                               "addrs": [str(a) for a in host.get_addrs()]})
        try:
            async with open_dht(host, membership, network_id, on_routing_changed) as dht, \
                    open_broadcast(pubsub, network_id) as broadcast:
                yield P2PHost(host, membership, direct, dht, broadcast, autonat, relay_server,
                              relay_client, hole_punch)
        finally:
            stop.set()  # the shielded host closes in order, whatever happens next
            nursery.cancel_scope.cancel()


def _refuse_ports_in_use(listen: Sequence[str]) -> None:
    """Refuse a listen address another process holds.

    py-libp2p 0.8.1 sets SO_REUSEPORT on its TCP listeners (for hole punching:
    ``libp2p/transport/tcp/tcp.py``), so a second daemon binds the same port
    without an error and the kernel shares incoming connections between the
    two (docs/py-libp2p.md#found-reuseport-shares-the-port). A socket without
    SO_REUSEPORT cannot bind a port a listener holds that way: try one first.
    """
    for address in listen:
        endpoint = tcp_endpoint(address)
        if endpoint is None or endpoint[1] == 0:
            continue
        ip, port = endpoint
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: connections of a previous run in TIME_WAIT do not
            # count; a listening socket still does (Linux).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((str(ip), port))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror} "
                                         "(another meshd, or another program, uses the "
                                         "port; choose another with --listen)") from None
