"""Shapes of answers that scripts and other implementations read
(docs/protocol.md, docs/cli.md): one form per field, whatever produced it."""

from __future__ import annotations

import dataclasses
import json

from mesh.pubsub.v1 import pubsub_pb2
from meshcore import genesis as g
from meshctl.pubsub import message_to_dict
from meshd.api.network_servicer import genesis_to_pb
from meshd.p2p.dht import _peer_addrs
from tests.unit.test_genesis import DOC

PEER = "12D3KooWKCWSgyLv9QfiTbHNxqgmdaoEQwKdf5snKrvxQL9rTBVS"


def test_dht_addresses_never_carry_the_peer_id() -> None:
    # Provider records carry /p2p/<id>, routing-table entries do not.
    found = _peer_addrs(PEER, [f"/ip4/10.0.0.1/tcp/4001/p2p/{PEER}", "/ip4/10.0.0.1/tcp/4001",
                               "/ip4/10.0.0.2/tcp/4001"])
    assert found.addrs == ("/ip4/10.0.0.1/tcp/4001", "/ip4/10.0.0.2/tcp/4001")


def test_a_seqno_beyond_json_numbers_is_a_decimal_string() -> None:
    seqno = 1_765_000_000_000_000_123  # gossipsub counts from the clock in nanoseconds
    line = json.dumps(message_to_dict(pubsub_pb2.Message(topic="t", data=b"x", seqno=seqno)))
    assert json.loads(line)["seqno"] == str(seqno)


def test_the_network_api_shows_the_community_pool() -> None:
    genesis = g.loads(DOC)
    assert genesis_to_pb(genesis).token.community_pool == "0"
    pooled = dataclasses.replace(genesis, token=dataclasses.replace(genesis.token,
                                                                    community_pool=5))
    assert genesis_to_pb(pooled).token.community_pool == "5"
