"""Gossipsub as meshd runs it: py-libp2p's router with flood publishing.

py-libp2p 0.8.1 sends a node's own message only to its mesh peers for the
topic (``GossipSub._get_peers_to_send``). Gossipsub v1.1 recommends flood
publishing (own messages to every peer in the topic; go-libp2p does it by
default) precisely so a publisher whose mesh is empty or stale is still heard.
Without it, a node restarted within the prune backoff (60 s) is refused every
GRAFT ("GRAFT: ignoring request ... back off until"), has an empty mesh, and
publishes to no one for a minute: a restarted validator's closes and votes
reached the others only by anti-entropy sync, too late to count (issue 14).
Forwarded messages still go to mesh peers only, as the spec says
(docs/py-libp2p.md#found-no-flood-publish).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub


class FloodPublishGossipSub(GossipSub):
    """GossipSub that flood-publishes the node's own messages."""

    def _get_peers_to_send(self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID,
                           msg_id: bytes | None = None) -> Iterator[ID]:
        topics = list(topic_ids)
        peers = set(super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id))
        if self.pubsub is not None and origin == self.pubsub.my_id:
            for topic in topics:
                peers.update(p for p in self.pubsub.peer_topics.get(topic, ())
                             if p in self.peer_protocol)
            peers.discard(origin)
        yield from peers
