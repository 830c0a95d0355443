"""Join by Network ID: the genesis is fetched from a peer and kept only if it
hashes to the ID (meshd/p2p/genesis_exchange.py)."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
import trio

from meshcore import genesis as genesis_doc
from meshcore.genesis import Genesis
from meshd.p2p.genesis_exchange import (
    GENESIS,
    MAX_GENESIS_BYTES,
    GenesisRefused,
    GenesisServer,
    check_offered,
    fetch_genesis,
)
from meshd.p2p.host import open_p2p_host
from tests.integration.p2p_helpers import LOOPBACK
from tests.unit.test_genesis import DOC

PEER = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"


def networks() -> tuple[Genesis, Genesis]:
    real = genesis_doc.loads(DOC)
    forged = dataclasses.replace(real, token=dataclasses.replace(real.token, symbol="FAKE"))
    return real, forged


@pytest.mark.parametrize(("offered", "why"), [
    (b"x" * (MAX_GENESIS_BYTES + 1), "bytes"),
    (b"\xff\xfe", "not UTF-8"),
    (b"not = [toml", "invalid genesis"),
    (b'format = "mesh-genesis/1"\n', "invalid genesis"),
])
def test_a_genesis_that_is_none_is_refused_saying_why(offered: bytes, why: str) -> None:
    real, _ = networks()
    with pytest.raises(GenesisRefused, match=why):
        check_offered(offered, real.network_id, PEER)


def test_another_networks_genesis_is_refused() -> None:
    real, forged = networks()
    with pytest.raises(GenesisRefused, match=f"the genesis of {forged.network_id}"):
        check_offered(genesis_doc.dumps(forged).encode(), real.network_id, PEER)
    accepted, text = check_offered(genesis_doc.dumps(real).encode(), real.network_id, PEER)
    assert accepted.network_id == real.network_id and text == genesis_doc.dumps(real)


async def test_a_forged_genesis_is_refused_and_the_honest_peer_is_asked_next(
        caplog: pytest.LogCaptureFixture) -> None:
    """The forger says hello with the right Network ID (so it is admitted) but
    serves other rules under it; the joiner logs why and takes the honest one."""
    real, forged = networks()
    caplog.set_level(logging.WARNING, "meshd.p2p.genesis_exchange")
    with trio.fail_after(30):
        async with open_p2p_host(os.urandom(32), LOOPBACK, real.network_id) as forger, \
                open_p2p_host(os.urandom(32), LOOPBACK, real.network_id) as honest, \
                trio.open_nursery() as nursery:
            await nursery.start(GenesisServer(honest, genesis_doc.dumps(real)).run)

            async def lie(peer_id: str, payload: bytes) -> bytes:
                return genesis_doc.dumps(forged).encode()

            with forger.direct.serving(GENESIS, lie):
                fetched, text = await fetch_genesis(
                    os.urandom(32), real.network_id,
                    [forger.listen_addrs()[0], honest.listen_addrs()[0]], listen=LOOPBACK)
            nursery.cancel_scope.cancel()
    assert fetched.network_id == real.network_id and genesis_doc.loads(text) == real
    refusals = [str(getattr(r, "error", "")) for r in caplog.records
                if r.name == "meshd.p2p.genesis_exchange"]
    assert any(forged.network_id in r and "refused" in r for r in refusals), refusals


async def test_a_peer_of_another_network_gives_no_genesis(
        caplog: pytest.LogCaptureFixture) -> None:
    real, forged = networks()
    caplog.set_level(logging.WARNING, "meshd.p2p.genesis_exchange")
    with trio.fail_after(30):
        async with open_p2p_host(os.urandom(32), LOOPBACK, forged.network_id) as other, \
                trio.open_nursery() as nursery:
            await nursery.start(GenesisServer(other, genesis_doc.dumps(forged)).run)
            with trio.move_on_after(3):  # it keeps asking, in rounds, until cancelled
                await fetch_genesis(os.urandom(32), real.network_id, [other.listen_addrs()[0]],
                                    listen=LOOPBACK)
                raise AssertionError("a genesis came from another network's node")
            nursery.cancel_scope.cancel()
    errors = [str(getattr(r, "error", "")) for r in caplog.records
              if r.name == "meshd.p2p.genesis_exchange" and r.levelno == logging.WARNING]
    assert errors and all("network" in e for e in errors), errors
