"""Gossipsub's signed peer records: verified once per record, not once per RPC.

py-libp2p 0.8.1 attaches the sender's signed peer record (an Envelope) to
every pubsub RPC, and ``Pubsub.continuously_read_stream`` decodes and verifies
it (``libp2p.pubsub.utils.maybe_consume_signed_record``: an Ed25519 verify and
an address-book update) for every RPC it reads. During a ledger partition heal
that was 6 % of a node's CPU (py-spy, bench/ledger_partition.py --py-spy). A
peer's record changes only when its addresses do, so the record a peer last
sent, once consumed, is not consumed again while it is the same bytes, for up
to REFRESH_SECONDS (so its addresses' TTL, 2 h upstream, stays fresh).
Anything else (a new record, an older one again, a bad one) goes through
upstream's check as before, and a record it refuses still drops the RPC
(docs/py-libp2p.md#found-peer-record-per-rpc).

The function is looked up as a global of ``libp2p.pubsub.pubsub`` on every
RPC, so it is replaced there, once per process; what it remembers is kept per
peerstore (so per host), forgotten with it.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.pubsub.pubsub as upstream_pubsub
from libp2p.abc import IHost, IPeerStore
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

REFRESH_SECONDS = 600.0

_upstream = upstream_pubsub.maybe_consume_signed_record  # type: ignore[attr-defined]
# per peerstore: peer -> (the record it last sent, when it was consumed)
_consumed: weakref.WeakKeyDictionary[IPeerStore, dict[ID, tuple[bytes, float]]] = \
    weakref.WeakKeyDictionary()


def consume_once(msg: rpc_pb2.RPC, host: IHost, peer_id: ID) -> bool:
    """``maybe_consume_signed_record``, skipped for the record ``peer_id`` sent last."""
    if not msg.HasField("senderRecord"):
        return True
    record = msg.senderRecord
    known = _consumed.setdefault(host.get_peerstore(), {})
    last = known.get(peer_id)
    now = time.monotonic()
    if last is not None and last[0] == record and now - last[1] < REFRESH_SECONDS:
        return True
    accepted = bool(_upstream(msg, host, peer_id))
    if accepted:
        known[peer_id] = (record, now)
    else:
        known.pop(peer_id, None)
    return accepted


def install() -> None:
    """Replace py-libp2p's per-RPC record check by :func:`consume_once` (idempotent)."""
    module: Any = upstream_pubsub
    module.maybe_consume_signed_record = consume_once
