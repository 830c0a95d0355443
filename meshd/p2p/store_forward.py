"""Store-then-forward topics: what others publish goes to the topic's owner, not on.

py-libp2p 0.8.1 has one hook between "received" and "forwarded": topic
validators. A validator that says no is costly there, though:
``Pubsub.validate_msg`` builds its error with ``f"Validation failed for
msg={msg}"``, the whole message as protobuf text (0.74 ms for a 64-entry
ledger batch), on the trio loop, for every message relayed; and it leaves the
message unseen, so every further copy (another forwarder, an IWANT) is
validated again, and its cached refusal formatted again.

So a relayed topic has no validator. Each Pubsub instance's ``validate_msg``
is wrapped instead (nothing is patched process-wide): a message another node
sent on a relayed topic is marked seen (a copy is dropped at once), handed to
the topic's owner, and refused with a short error, so gossipsub neither
delivers nor forwards it. The node's own publishes pass as usual. (The
refusal still counts as an invalid message in the forwarder's gossipsub score,
as any refusal does; meshd sets no score threshold, so it changes nothing.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

log = logging.getLogger(__name__)

Take = Callable[[str, bytes], None]


class ForwardedToOwner(ValidationError):
    """Not an invalid message: one handed to its topic's owner instead of forwarded."""


class StoreForwardTopics:
    """The relayed topics of one Pubsub instance, and whom their messages go to."""

    def __init__(self, pubsub: Pubsub) -> None:
        self._takers: dict[str, Take] = {}
        self.relayed = 0  # messages handed to an owner
        upstream = pubsub.validate_msg
        me = pubsub.my_id

        async def validate_msg(forwarder: ID, msg: rpc_pb2.Message) -> None:
            if forwarder != me and self._takers:
                takers = [self._takers[t] for t in msg.topicIDs if t in self._takers]
                if takers:
                    pubsub._mark_msg_seen(msg)
                    self._hand_over(takers, forwarder, msg)
                    raise ForwardedToOwner("relayed to its owner")
            await upstream(forwarder, msg)

        pubsub.validate_msg = validate_msg  # type: ignore[method-assign,assignment]

    def add(self, wire_topic: str, take: Take) -> None:
        """Hand messages others send on ``wire_topic`` to ``take(sender, data)``;
        ``take`` must not block (one that raises is logged)."""
        self._takers[wire_topic] = take

    def __contains__(self, wire_topic: str) -> bool:
        return wire_topic in self._takers

    def _hand_over(self, takers: list[Take], forwarder: ID, msg: rpc_pb2.Message) -> None:
        sender, data = str(forwarder), bytes(msg.data)
        for take in takers:
            self.relayed += 1
            try:
                take(sender, data)
            except Exception:
                log.exception("topic relay failed", extra={"topics": list(msg.topicIDs)})
