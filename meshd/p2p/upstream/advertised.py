"""The host's advertised addresses, relay addresses intact.

py-libp2p 0.8.1's ``BasicHost.get_addrs`` (``libp2p/host/basic_host.py:528-540``)
strips "any existing /p2p/ component" from each address its ``addrs_factory``
returns before appending the host's own: ``decapsulate`` cuts everything from
that component on, so a relay address
``/ip4/R/tcp/4001/p2p/<relay>/p2p-circuit`` becomes ``/ip4/R/tcp/4001/p2p/<us>``,
the relay's own address under our peer ID
(docs/py-libp2p.md#found-get-addrs-cuts-relay-addresses). It also adds the
observed addresses identify reports before anything confirms them; meshd's
AutoNAT confirms addresses first (meshd/p2p/autonat.py). So this host's
``get_addrs`` (which identify, signed peer records, the DHT and
``meshctl status`` read) is the address policy applied to the transports'
listen addresses, with ``/p2p/<us>`` appended only where it is not the end,
and trimmed for the peer being answered, if any (``addresses.for_the_viewer``).
"""

from __future__ import annotations

import multiaddr
from libp2p.abc import IHost

from meshd.p2p.addresses import AddressPolicy, for_the_viewer


def install(host: IHost, policy: AddressPolicy) -> None:
    own = f"/p2p/{host.get_id()}"

    def get_addrs() -> list[multiaddr.Multiaddr]:
        listeners = (str(a) for a in host.get_transport_addrs())
        return [multiaddr.Multiaddr(a if a.endswith(own) else a + own)
                for a in for_the_viewer(policy.advertised(listeners))]

    setattr(host, "get_addrs", get_addrs)  # noqa: B010
