"""LAN discovery: members on one home network find each other without a bootstrap node.

mDNS (DNS-SD over multicast, RFC 6762/6763) with python-zeroconf, as libp2p's
mDNS discovery does: each node registers an instance of a service whose TXT
record holds its addresses as ``dnsaddr=<multiaddr>/p2p/<id>`` strings, and
browses for the others. The service type is per network,
``_mesh-<9 characters of the Network ID>._udp.local.`` (a DNS-SD label has at
most 15 bytes), so that Mesh nodes of other networks, and IPFS nodes, are not
dialled only to fail the hello.

py-libp2p 0.8.1's ``libp2p.discovery.mdns`` is not used
(docs/py-libp2p.md, "Read, not yet relied on"): it advertises ``0.0.0.0``,
reports peers only into the peerstore from zeroconf's thread, and wipes
every address of a peer (identify's and the DHT's too) every 240 s.

Multicast goes out only on interfaces that carry one of the node's private
LAN addresses (RFC 1918, ULA, not loopback, not link-local): a node that
listens on loopback only, or only on public addresses, does not run mDNS.
``p2p.mdns = false`` turns it off.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from meshd.p2p.addresses import ip_of, is_private

log = logging.getLogger(__name__)

QUERY_TIMEOUT_MS = 3000
MAX_ADDRS = 8
MAX_PEERS_QUEUED = 256
STOP_TIMEOUT = 0.5  # seconds the stop waits for zeroconf's goodbye


def service_type(network_id: str) -> str:
    """``_mesh-<fp>._udp.local.``: the DNS-SD service of one network."""
    return f"_mesh-{network_id.removeprefix('net_')[:9]}._udp.local."


def lan_ips(addresses: list[str]) -> list[str]:
    """The private LAN IPv4 addresses among ``addresses`` (the node's own to
    announce on, or those another node announced)."""
    found = []
    for address in addresses:
        ip = ip_of(address)
        if ip is not None and ip.version == 4 and is_private(ip) and not ip.is_link_local \
                and "/p2p-circuit" not in address:
            found.append(str(ip))
    return list(dict.fromkeys(found))


def txt_record(addresses: list[str]) -> bytes:
    """The TXT record: one ``dnsaddr=<multiaddr>`` string per address."""
    record = b""
    for address in addresses[:MAX_ADDRS]:
        item = f"dnsaddr={address}".encode()
        if len(item) <= 255:
            record += bytes([len(item)]) + item
    return record


def parse_txt(text: bytes | None, own_id: str) -> tuple[str, list[str]] | None:
    """(peer ID, addresses) from another node's TXT record; None if none."""
    found: dict[str, list[str]] = {}
    index = 0
    data = text or b""
    while index < len(data):
        size = data[index]
        item = data[index + 1:index + 1 + size]
        index += 1 + size
        with contextlib.suppress(UnicodeDecodeError):
            key, _, value = item.decode().partition("=")
            head, sep, peer_id = value.rpartition("/p2p/")
            if key == "dnsaddr" and sep and head and peer_id and "/" not in peer_id:
                found.setdefault(peer_id, []).append(head)
    if len(found) != 1:
        return None
    peer_id, addrs = next(iter(found.items()))
    return (peer_id, addrs[:MAX_ADDRS]) if peer_id != own_id else None


class LanDiscovery:
    """Advertises this node on its LAN and reports the members it hears of.

    ``on_found(peer_id, addrs)`` is called on the trio loop for each node
    heard (addresses without /p2p/).
    """

    def __init__(self, peer_id: str, network_id: str, addresses: Callable[[], list[str]],
                 on_found: Callable[[str, list[str]], None]) -> None:
        self._peer_id = peer_id
        self._type = service_type(network_id)
        self._addresses = addresses
        self._on_found = on_found

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        advertised = self._addresses()
        interfaces = lan_ips(advertised)
        if not interfaces:
            log.info("mDNS off: no LAN address to announce on",
                     extra={"addrs": advertised[:4]})
            task_status.started()
            await trio.sleep_forever()
        heard_send, heard = trio.open_memory_channel[str](MAX_PEERS_QUEUED)
        token = trio.lowlevel.current_trio_token()

        def state_changed(zeroconf: Zeroconf, service_type: str, name: str,
                          state_change: ServiceStateChange) -> None:
            # zeroconf's thread: hand the name to the trio loop, drop when full
            if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
                with contextlib.suppress(trio.WouldBlock, trio.RunFinishedError):
                    trio.from_thread.run_sync(heard_send.send_nowait, name, trio_token=token)

        # Probing the name and announcing it takes zeroconf ~1.5 s (RFC 6762
        # §8): the node does not wait for it to be ready, nor for the goodbye
        # packets at the stop (bounded, then the thread is left to finish).
        task_status.started()
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only))
        try:
            info = self._service_info(advertised, interfaces)
            await trio.to_thread.run_sync(zc.register_service, info)
            browser = await trio.to_thread.run_sync(
                lambda: ServiceBrowser(zc, self._type, handlers=[state_changed]))
            log.info("mDNS announcing", extra={"service": self._type, "interfaces": interfaces})
            try:
                async for name in heard:
                    await self._resolve(zc, name)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                    await trio.to_thread.run_sync(browser.cancel, abandon_on_cancel=True)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                # close() unregisters the service (goodbye) and stops the threads
                await trio.to_thread.run_sync(zc.close, abandon_on_cancel=True)

    def _service_info(self, advertised: list[str], interfaces: list[str]) -> ServiceInfo:
        own = f"/p2p/{self._peer_id}"
        on_lan = [a if a.endswith(own) else a + own for a in advertised
                  if str(ip_of(a)) in interfaces]
        port = next((int(a.split("/tcp/")[1].split("/")[0]) for a in on_lan if "/tcp/" in a), 0)
        return ServiceInfo(
            self._type, f"{self._peer_id[-20:]}.{self._type}",
            addresses=[socket.inet_aton(ip) for ip in interfaces], port=port,
            properties=txt_record(on_lan), server=f"{self._peer_id[-20:]}.local.")

    async def _resolve(self, zc: Zeroconf, name: str) -> None:
        info = await trio.to_thread.run_sync(
            lambda: zc.get_service_info(self._type, name, timeout=QUERY_TIMEOUT_MS))
        if info is None:
            return
        found = parse_txt(info.text, self._peer_id)
        if found is None:
            return
        peer_id, addrs = found
        usable = [a for a in addrs if lan_ips([a])]
        if usable:
            log.debug("mDNS found a member", extra={"peer_id": peer_id, "addrs": usable})
            self._on_found(peer_id, usable)

