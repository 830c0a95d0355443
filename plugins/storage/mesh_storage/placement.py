"""Choosing the holders of a stripe's pieces: n distinct nodes, spread over subnets.

Pure (no meshd). Two pieces of one stripe on one node, or on two nodes behind
one home router, would make one failure cost two pieces. So holders are
chosen one per subnet (an IPv4 /24 or an IPv6 /48, from the addresses the
DHT gives for them) while distinct subnets last, and only then from subnets
already used; the result says how many subnets it spans, so a caller can warn.
The uploader never holds its own pieces. Holders the caller shuns (a proven
audit failure lately, reputation.py) come last: chosen only when no other
node can take a piece.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class NotEnoughHolders(Exception):
    """Fewer candidate holders than pieces to place."""


@dataclass(frozen=True)
class Candidate:
    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    holders: tuple[str, ...]  # peer IDs, in piece-index order
    subnets: int  # distinct subnets among them


def subnet(addrs: Iterable[str], peer_id: str) -> str:
    """The subnet a node is in, from its multiaddrs; its own ID when none has an IP."""
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            continue
        try:
            ip = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        if ip.is_unspecified:
            continue
        prefix = 24 if ip.version == 4 else 48
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    return peer_id


def place(candidates: Sequence[Candidate], count: int, *, uploader: str,
          preferred: Sequence[str] = (), avoid: Iterable[str] = (),
          shunned: Iterable[str] = (), rng: random.Random | None = None) -> Placement:
    """``count`` distinct holders among ``candidates``.

    ``preferred[i]``, when it is a candidate and not avoided, holds piece i (a
    file's stripes keep their pieces on the same nodes, so a reader finds the
    next stripe's pieces where it found this one's). The other places go to
    random candidates, new subnets first.
    """
    avoided = set(avoid) | {uploader}
    usable = {c.peer_id: c for c in candidates if c.peer_id not in avoided}
    if len(usable) < count:
        raise NotEnoughHolders(f"{count} holders are needed and {len(usable)} other "
                               f"storage node(s) are known{_avoided(avoided, uploader)}")
    chosen: list[str | None] = [None] * count
    used_subnets: set[str] = set()

    def take(slot: int, peer_id: str) -> None:
        chosen[slot] = peer_id
        used_subnets.add(subnet(usable[peer_id].addrs, peer_id))
        del usable[peer_id]

    last = set(shunned)
    for slot, peer_id in enumerate(preferred[:count]):
        if peer_id in usable and peer_id not in last:
            take(slot, peer_id)
    rest = list(usable)
    (rng or random.Random()).shuffle(rest)
    rest.sort(key=lambda p: p in last)  # stable: still random within each group
    for slot in range(count):  # new subnets first, then whatever is left; the shunned last
        if chosen[slot] is None:
            fresh = next((p for p in rest if p in usable and p not in last
                          and subnet(usable[p].addrs, p) not in used_subnets), None)
            take(slot, fresh if fresh is not None else next(p for p in rest if p in usable))
    holders = tuple(p for p in chosen if p is not None)
    subnets = {subnet(c.addrs, c.peer_id) for c in candidates if c.peer_id in holders}
    return Placement(holders, len(subnets))


def _avoided(avoided: set[str], uploader: str) -> str:
    others = len(avoided - {uploader})
    return f" (besides this node and {others} that failed)" if others else " (besides this node)"
