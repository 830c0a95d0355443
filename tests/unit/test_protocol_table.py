"""A handler removed while its protocol is negotiated: the stream is reset, nothing raises.

docs/py-libp2p.md#found-handler-removal-race: py-libp2p 0.8.1's
``Multiselect.negotiate`` acknowledges the protocol, then looks its handler up
again; a service that stopped in between made that lookup raise KeyError.
"""

from __future__ import annotations

import pytest
from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID, Multiselect

from meshd.p2p.upstream.protocol_table import ProtocolTable, reset_stream

PROTOCOL = "/mesh/net_x/ping/1.0.0"


class StoppingWhileAcknowledging:
    """A peer asking for PROTOCOL; the service stops while the answer is written."""

    def __init__(self, muxer: Multiselect) -> None:
        self._muxer = muxer
        self._incoming = [MULTISELECT_PROTOCOL_ID, PROTOCOL]

    async def read(self) -> str:
        return self._incoming.pop(0)

    async def write(self, message: str) -> None:
        if message == PROTOCOL:
            self._muxer.remove_handler(PROTOCOL)  # type: ignore[arg-type]


async def handler(stream: object) -> None:
    raise AssertionError("not called")


async def test_upstream_raises_when_a_handler_goes_during_negotiation() -> None:
    muxer = Multiselect({PROTOCOL: handler})  # type: ignore[dict-item]
    with pytest.raises(KeyError):  # the upstream behaviour this works around
        await muxer.negotiate(StoppingWhileAcknowledging(muxer))  # type: ignore[arg-type]


async def test_the_table_answers_a_vanished_protocol_with_a_reset() -> None:
    muxer = Multiselect(ProtocolTable({PROTOCOL: handler}))
    protocol, chosen = await muxer.negotiate(
        StoppingWhileAcknowledging(muxer))  # type: ignore[arg-type]
    assert (protocol, chosen) == (PROTOCOL, reset_stream)
    assert PROTOCOL not in muxer.handlers and muxer.handlers.get(PROTOCOL) is None
