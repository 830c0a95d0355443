"""Join by Network ID: a node that knows only the ID fetches the genesis from a peer.

The seed's ``mesh join --network-id net_… --bootstrap …`` (Appendix A.1). The
joiner says hello with the requested ID, so a node of that network admits it,
asks for the genesis on ``/mesh/<network id>/genesis/1.0.0`` (docs/protocol.md),
and keeps it only if it hashes to that ID: the ID is the hash of the genesis'
canonical encoding, so no peer can hand over another network's rules, or
forged ones, under it. Every node serves its genesis for its lifetime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import trio

from meshcore import genesis as genesis_doc
from meshcore.errors import FieldError
from meshcore.genesis import Genesis
from meshd import errors
from meshd.p2p.host import P2PHost, open_p2p_host

log = logging.getLogger(__name__)

GENESIS = "genesis"
MAX_GENESIS_BYTES = 256 << 10  # a genesis with 1,000 allocations is ~100 KiB
FETCH_TIMEOUT = 10.0
RETRY_FIRST, RETRY_MAX = 2.0, 60.0  # seconds between rounds over the bootstrap peers


class GenesisRefused(Exception):
    """A peer's genesis was not the one asked for; the message says why."""


class GenesisServer:
    """Serves this node's genesis (its TOML text, as stored) to members."""

    def __init__(self, host: P2PHost, genesis_toml: str) -> None:
        self._host = host
        self._text = genesis_toml.encode("utf-8")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        with self._host.direct.serving(GENESIS, self._serve, max_request=16):
            task_status.started()
            await trio.sleep_forever()

    async def _serve(self, peer_id: str, payload: bytes) -> bytes:
        return self._text


def check_offered(offered: bytes, network_id: str, peer_id: str) -> tuple[Genesis, str]:
    """The genesis a peer offered, if it is the network ``network_id``'s.

    Raises:
        GenesisRefused: too large, not UTF-8, not a valid genesis, or another network's.
    """
    if len(offered) > MAX_GENESIS_BYTES:
        raise GenesisRefused(f"peer {peer_id} offered a genesis of {len(offered)} bytes "
                             f"(at most {MAX_GENESIS_BYTES})")
    try:
        text = offered.decode("utf-8")
        genesis = genesis_doc.loads(text)
    except UnicodeDecodeError:
        raise GenesisRefused(f"peer {peer_id} offered a genesis that is not UTF-8") from None
    except FieldError as exc:
        raise GenesisRefused(f"peer {peer_id} offered an invalid genesis: {exc}") from None
    if genesis.network_id != network_id:
        raise GenesisRefused(f"peer {peer_id} offered the genesis of {genesis.network_id} "
                             f"({genesis.name!r}), not of {network_id}: refused")
    return genesis, text


async def fetch_genesis(seed: bytes, network_id: str, bootstrap: Sequence[str], *,
                        listen: Sequence[str] = ("/ip4/0.0.0.0/tcp/0",)) -> tuple[Genesis, str]:
    """The genesis of ``network_id``, from the first bootstrap peer that gives
    the right one; tries them all in rounds, with growing pauses, until one
    does (or the caller cancels). Every refusal is logged with its reason."""
    if not bootstrap:
        raise errors.InvalidArgument("joining by Network ID needs a --bootstrap peer to ask")
    pause = RETRY_FIRST
    async with open_p2p_host(seed, listen, network_id) as host:
        while True:
            for address in bootstrap:
                try:
                    return await _ask(host, address, network_id)
                except (GenesisRefused, errors.MeshError) as exc:
                    log.warning("no genesis from a bootstrap peer", extra={
                        "address": address, "error": str(exc)})
                except trio.TooSlowError:
                    log.warning("no genesis from a bootstrap peer", extra={
                        "address": address, "error": f"no answer within {FETCH_TIMEOUT:g} s"})
            log.info("asking the bootstrap peers for the genesis again",
                     extra={"network_id": network_id, "in_seconds": round(pause, 1)})
            await trio.sleep(pause * (0.8 + 0.4 * int.from_bytes(os.urandom(1)) / 255))
            pause = min(pause * 2, RETRY_MAX)


async def _ask(host: P2PHost, address: str, network_id: str) -> tuple[Genesis, str]:
    with trio.fail_after(FETCH_TIMEOUT):
        peer_id = (await host.connect(address)).peer_id  # a URL: whoever answers there
        offered = await host.direct.request(peer_id, GENESIS, b"", timeout=FETCH_TIMEOUT,
                                            max_response=MAX_GENESIS_BYTES)
    genesis, text = check_offered(offered, network_id, peer_id)
    log.info("genesis fetched", extra={"network_id": network_id, "network_name": genesis.name,
                                       "peer_id": peer_id})
    return genesis, text
