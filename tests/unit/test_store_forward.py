"""Store-then-forward topics: others' messages go to the owner once, and on no further."""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from meshd.p2p.store_forward import ForwardedToOwner, StoreForwardTopics

ME = ID.from_pubkey(create_new_key_pair(b"\x01" * 32).public_key)
OTHER = ID.from_pubkey(create_new_key_pair(b"\x02" * 32).public_key)


class FakePubsub:
    """What StoreForwardTopics uses of py-libp2p's Pubsub: my_id, validate_msg, _mark_msg_seen."""

    def __init__(self) -> None:
        self.my_id = ME
        self.validated: list[bytes] = []
        self.seen: list[bytes] = []

    async def validate_msg(self, forwarder: ID, msg: rpc_pb2.Message) -> None:
        self.validated.append(msg.data)

    def _mark_msg_seen(self, msg: rpc_pb2.Message) -> None:
        self.seen.append(msg.data)


def message(topic: str, data: bytes) -> rpc_pb2.Message:
    return rpc_pb2.Message(data=data, topicIDs=[topic], seqno=b"\x00" * 8,
                           from_id=OTHER.to_bytes())


async def test_a_message_of_another_goes_to_the_owner_is_seen_and_refused() -> None:
    pubsub = FakePubsub()
    relays = StoreForwardTopics(pubsub)  # type: ignore[arg-type]
    taken: list[tuple[str, bytes]] = []
    relays.add("/mesh/n/owned", lambda sender, data: taken.append((sender, data)))
    with pytest.raises(ForwardedToOwner) as raised:
        await pubsub.validate_msg(OTHER, message("/mesh/n/owned", b"batch"))
    assert isinstance(raised.value, ValidationError)  # what py-libp2p's push_msg catches
    assert taken == [(str(OTHER), b"batch")]
    assert pubsub.seen == [b"batch"]  # a second copy is dropped before validation
    assert pubsub.validated == []  # no topic validator ran (nor formatted the message)
    assert relays.relayed == 1 and "/mesh/n/owned" in relays


async def test_own_publishes_and_other_topics_are_validated_as_usual() -> None:
    pubsub = FakePubsub()
    relays = StoreForwardTopics(pubsub)  # type: ignore[arg-type]
    relays.add("/mesh/n/owned", lambda sender, data: pytest.fail("not for the owner"))
    await pubsub.validate_msg(ME, message("/mesh/n/owned", b"mine"))
    await pubsub.validate_msg(OTHER, message("/mesh/n/news", b"news"))
    assert pubsub.validated == [b"mine", b"news"] and pubsub.seen == []
    assert "/mesh/n/news" not in relays


async def test_an_owner_that_raises_is_logged_and_the_message_still_not_forwarded(
        caplog: pytest.LogCaptureFixture) -> None:
    pubsub = FakePubsub()
    relays = StoreForwardTopics(pubsub)  # type: ignore[arg-type]

    def broken(sender: str, data: bytes) -> None:
        raise RuntimeError("owner bug")

    relays.add("/mesh/n/owned", broken)
    with pytest.raises(ForwardedToOwner):
        await pubsub.validate_msg(OTHER, message("/mesh/n/owned", b"batch"))
    assert "topic relay failed" in caplog.text

