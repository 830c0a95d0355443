"""Signed peer records in pubsub RPCs: consumed once per record, refused as upstream does."""

from __future__ import annotations

import os

import pytest
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.pb import rpc_pb2

from meshd.p2p.upstream import peer_records


def host() -> object:
    return new_host(key_pair=create_new_key_pair(os.urandom(32)))


def rpc_with_record_of(sender: object) -> rpc_pb2.RPC:
    envelope, _ = env_to_send_in_RPC(sender)  # type: ignore[arg-type]
    return rpc_pb2.RPC(senderRecord=envelope)


@pytest.fixture
def upstream_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    real = peer_records._upstream

    def counted(msg: rpc_pb2.RPC, host: object, peer_id: object) -> bool:
        calls.append(peer_id)
        return bool(real(msg, host, peer_id))  # type: ignore[arg-type]

    monkeypatch.setattr(peer_records, "_upstream", counted)
    return calls


def test_the_same_record_is_verified_once_per_receiving_host(
        upstream_calls: list[object]) -> None:
    sender, receiver, other_receiver = host(), host(), host()
    rpc = rpc_with_record_of(sender)
    sender_id = sender.get_id()  # type: ignore[attr-defined]
    for _ in range(5):
        assert peer_records.consume_once(rpc, receiver, sender_id)  # type: ignore[arg-type]
    assert len(upstream_calls) == 1
    assert peer_records.consume_once(rpc, other_receiver, sender_id)  # type: ignore[arg-type]
    assert len(upstream_calls) == 2  # another peerstore: consumed there too


def test_a_record_upstream_refuses_still_drops_the_rpc_every_time(
        upstream_calls: list[object]) -> None:
    sender, impostor, receiver = host(), host(), host()
    rpc = rpc_with_record_of(impostor)  # a record of another peer than the sender
    sender_id = sender.get_id()  # type: ignore[attr-defined]
    assert not peer_records.consume_once(rpc, receiver, sender_id)  # type: ignore[arg-type]
    assert not peer_records.consume_once(rpc, receiver, sender_id)  # type: ignore[arg-type]
    assert len(upstream_calls) == 2
    garbage = rpc_pb2.RPC(senderRecord=b"\x01not an envelope")
    assert not peer_records.consume_once(garbage, receiver, sender_id)  # type: ignore[arg-type]


def test_an_rpc_without_a_record_passes() -> None:
    assert peer_records.consume_once(rpc_pb2.RPC(), host(), host().get_id())  # type: ignore[arg-type,attr-defined]


def test_install_replaces_the_function_pubsub_calls() -> None:
    import libp2p.pubsub.pubsub as upstream_pubsub
    peer_records.install()
    assert upstream_pubsub.maybe_consume_signed_record is peer_records.consume_once
