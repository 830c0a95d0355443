"""The node's status: identity, network, addresses, and its state.

The states are the whitepaper's (Appendix B.2), derived from connectivity:
Initializing until the p2p host listens, then Connecting; Connected once a
peer of the network is admitted; Active once discovery works too (a member is
in the DHT routing table); Disconnected after losing the last peer. Voting
while connected and an open proposal awaits this node's vote
(docs/governance.md §7). Participating while connected and this node executed
a task for a peer, or had one executed, within the last minute (docs/tasks.md).
Validating is not shown yet.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import trio

from meshcore.version import __version__

UPGRADE_WARNING = "upgrade required"


class NodeState(enum.Enum):
    INITIALIZING = "initializing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ACTIVE = "active"
    PARTICIPATING = "participating"
    VALIDATING = "validating"
    VOTING = "voting"
    DISCONNECTED = "disconnected"


def derive_state(listening: bool, peer_count: int, ever_connected: bool,
                 routing_table_size: int = 0, unvoted_proposals: int = 0,
                 participating: bool = False) -> NodeState:
    """The state from the facts it depends on."""
    if not listening:
        return NodeState.INITIALIZING
    if peer_count > 0:
        if unvoted_proposals > 0:
            return NodeState.VOTING
        if participating:
            return NodeState.PARTICIPATING
        return NodeState.ACTIVE if routing_table_size > 0 else NodeState.CONNECTED
    return NodeState.DISCONNECTED if ever_connected else NodeState.CONNECTING


@dataclass(frozen=True)
class NodeFacts:
    """What the status is computed from; updated by the layers that know."""

    peer_id: str = ""
    listen_addrs: tuple[str, ...] = ()
    # AutoNAT's verdict (meshd/p2p/autonat.py): public, private or unknown.
    reachability: str = "unknown"
    listening: bool = False
    peer_count: int = 0
    ever_connected: bool = False
    routing_table_size: int = 0
    # Open proposals this node's account can vote on and has not (docs/governance.md).
    unvoted_proposals: int = 0
    # A task was executed for or by this node within the last minute.
    participating: bool = False
    # Set once a passed upgrade to a newer version is active: what to install.
    upgrade_required: str = ""
    # The REST/JSON gateway and dashboard, once listening (meshd/http/).
    http_url: str = ""


@dataclass(frozen=True)
class NodeStatus:
    peer_id: str
    network_id: str
    network_name: str
    listen_addrs: tuple[str, ...]
    state: NodeState
    started_at: dt.datetime
    uptime_seconds: float
    version: str
    peer_count: int
    role: str
    warnings: tuple[str, ...] = ()  # what the operator must act on
    reachability: str = "unknown"
    watermarks: tuple[int, int, int] = (0, 0, 0)  # low, target, high (p2p.*)
    http_url: str = ""

    @property
    def upgrade_required(self) -> bool:
        return any(w.startswith(UPGRADE_WARNING) for w in self.warnings)


class StatusBoard:
    """Holds the node's facts and wakes watchers when they change.

    Lives on the trio loop; the API reaches it through the bridge.
    """

    def __init__(self, network_id: str, network_name: str, role: str,
                 clock: Callable[[], float] = time.monotonic,
                 watermarks: tuple[int, int, int] = (0, 0, 0)) -> None:
        self._watermarks = watermarks
        self._network_id = network_id
        self._network_name = network_name
        self._role = role
        self._clock = clock
        self._started = clock()
        self._started_at = dt.datetime.now(dt.UTC)
        self._facts = NodeFacts()
        self._changed = trio.Event()

    def update(self, **changes: object) -> None:
        """Change some facts (see :class:`NodeFacts`); watchers see the new status."""
        facts = replace(self._facts, **changes)  # type: ignore[arg-type]
        if facts.peer_count > 0:
            facts = replace(facts, ever_connected=True)
        if facts != self._facts:
            self._facts = facts
            self._changed.set()
            self._changed = trio.Event()

    def snapshot(self) -> NodeStatus:
        facts = self._facts
        return NodeStatus(
            peer_id=facts.peer_id,
            network_id=self._network_id,
            network_name=self._network_name,
            listen_addrs=facts.listen_addrs,
            state=derive_state(facts.listening, facts.peer_count, facts.ever_connected,
                               facts.routing_table_size, facts.unvoted_proposals,
                               facts.participating),
            started_at=self._started_at,
            uptime_seconds=self._clock() - self._started,
            version=__version__,
            peer_count=facts.peer_count,
            role=self._role,
            warnings=(f"{UPGRADE_WARNING}: {facts.upgrade_required}",)
            if facts.upgrade_required else (),
            reachability=facts.reachability,
            watermarks=self._watermarks,
            http_url=facts.http_url,
        )

    async def status(self) -> NodeStatus:
        return self.snapshot()

    async def watch(self) -> AsyncIterator[NodeStatus]:
        """The current status, then each changed one. Slow readers skip to the latest."""
        while True:
            changed = self._changed
            yield self.snapshot()
            await changed.wait()
