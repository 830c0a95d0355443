"""Known peers of the network, kept across restarts.

The book remembers members this node has seen (admitted, or heard of by peer
exchange) with their dialable addresses, when it last saw them, and how its
dials went: so that a restarted node rejoins even when every bootstrap node is
down, and so that failing peers are retried with exponential backoff and
jitter. It is bounded (the least recently seen are forgotten) and saved as
JSON in the data directory (``peers.json``), atomically.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from meshd.datadir import write_atomically
from meshd.p2p.circuit import RelayAddress

log = logging.getLogger(__name__)

PEERS_FILE = "peers.json"
MAX_PEERS = 1000
MAX_ADDRS = 8
BACKOFF_BASE = 1.0  # seconds after the first failed dial
BACKOFF_MAX = 300.0


@dataclass
class KnownPeer:
    peer_id: str
    addrs: list[str]
    last_seen: float = 0.0  # wall clock, seconds
    failures: int = 0
    retry_at: float = 0.0  # monotonic-like time before which not to dial

    def address(self) -> str | None:
        """A full multiaddr to dial (first known address + /p2p/<id>)."""
        return f"{self.addrs[0]}/p2p/{self.peer_id}" if self.addrs else None


@dataclass
class PeerBook:
    peers: dict[str, KnownPeer] = field(default_factory=dict)
    dirty: bool = False

    def learn(self, peer_id: str, addrs: list[str], seen_at: float) -> None:
        """Remember a peer's dialable addresses (newest first)."""
        addrs = [a for a in addrs if _dialable(a)][:MAX_ADDRS]
        if not addrs:
            return
        known = self.peers.get(peer_id)
        if known is None:
            self.peers[peer_id] = KnownPeer(peer_id, addrs, seen_at)
            self._trim()
        else:
            known.addrs = list(dict.fromkeys(addrs + known.addrs))[:MAX_ADDRS]
            known.last_seen = max(known.last_seen, seen_at)
        self.dirty = True

    def dialled(self, peer_id: str, ok: bool, now: float, rng: random.Random) -> None:
        """Record a dial's outcome: success resets the backoff, failure doubles it."""
        known = self.peers.get(peer_id)
        if known is None:
            return
        if ok:
            known.failures, known.retry_at = 0, 0.0
        else:
            known.failures += 1
            delay = min(BACKOFF_BASE * 2 ** (known.failures - 1), BACKOFF_MAX)
            known.retry_at = now + delay * rng.uniform(0.5, 1.5)  # jitter
        self.dirty = True

    def candidates(self, exclude: set[str], now: float) -> list[KnownPeer]:
        """Peers worth dialling now, most recently seen first."""
        ready = [p for p in self.peers.values()
                 if p.peer_id not in exclude and p.retry_at <= now and p.addrs]
        return sorted(ready, key=lambda p: p.last_seen, reverse=True)

    def sample(self, limit: int, rng: random.Random) -> list[KnownPeer]:
        """Up to ``limit`` peers at random, for peer exchange."""
        peers = list(self.peers.values())
        return rng.sample(peers, min(limit, len(peers)))

    def _trim(self) -> None:
        if len(self.peers) > MAX_PEERS:
            oldest = sorted(self.peers.values(), key=lambda p: p.last_seen)
            for peer in oldest[: len(self.peers) - MAX_PEERS]:
                del self.peers[peer.peer_id]


def _dialable(addr: str) -> bool:
    """A TCP multiaddr without /p2p/ that is not a wildcard address, or a relay
    address (``<relay address>/p2p/<relay>/p2p-circuit``: meshd/p2p/circuit.py)."""
    relayed = RelayAddress.parse(addr)
    if relayed is not None:
        return not relayed.target_id and _dialable(relayed.relay.rsplit("/p2p/", 1)[0])
    return (addr.startswith(("/ip4/", "/ip6/", "/dns4/", "/dns6/", "/dns/"))
            and "/tcp/" in addr and "/p2p/" not in addr
            and not addr.startswith(("/ip4/0.0.0.0/", "/ip6/::/")))


def load(data_dir: Path) -> PeerBook:
    """The saved book; an unreadable file is logged and replaced, never fatal."""
    path = data_dir / PEERS_FILE
    book = PeerBook()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["peers"]
        for entry in entries[:MAX_PEERS]:
            book.peers[str(entry["peer_id"])] = KnownPeer(
                str(entry["peer_id"]), [str(a) for a in entry["addrs"]][:MAX_ADDRS],
                float(entry.get("last_seen", 0.0)))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable known-peers file", extra={"path": str(path),
                                                                    "error": str(exc)})
    return book


def save(book: PeerBook, data_dir: Path) -> None:
    """Write the book atomically (temp file, fsync, rename)."""
    path = data_dir / PEERS_FILE
    entries = [{"peer_id": p.peer_id, "addrs": p.addrs, "last_seen": p.last_seen}
               for p in sorted(book.peers.values(), key=lambda p: p.peer_id)]
    write_atomically(path, json.dumps({"format": 1, "peers": entries}, indent=1).encode("utf-8"))
    book.dirty = False
