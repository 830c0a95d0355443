"""The node's status: identity, network, addresses, and its state.

The states are the whitepaper's (Appendix B.2), derived from connectivity:
Initializing until the p2p host listens, then Connecting; Connected once a
peer of the network is admitted; Active once discovery works too (a member is
in the DHT routing table); Disconnected after losing the last peer. Later
layers (tasks, validation, governance) add Participating, Validating, Voting.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import trio

from meshcore.version import __version__


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
                 routing_table_size: int = 0) -> NodeState:
    """The connectivity state from the facts it depends on."""
    if not listening:
        return NodeState.INITIALIZING
    if peer_count > 0:
        return NodeState.ACTIVE if routing_table_size > 0 else NodeState.CONNECTED
    return NodeState.DISCONNECTED if ever_connected else NodeState.CONNECTING


@dataclass(frozen=True)
class NodeFacts:
    """What the status is computed from; updated by the layers that know."""

    peer_id: str = ""
    listen_addrs: tuple[str, ...] = ()
    listening: bool = False
    peer_count: int = 0
    ever_connected: bool = False
    routing_table_size: int = 0


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


class StatusBoard:
    """Holds the node's facts and wakes watchers when they change.

    Lives on the trio loop; the API reaches it through the bridge.
    """

    def __init__(self, network_id: str, network_name: str, role: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
                               facts.routing_table_size),
            started_at=self._started_at,
            uptime_seconds=self._clock() - self._started,
            version=__version__,
            peer_count=facts.peer_count,
            role=self._role,
        )

    async def status(self) -> NodeStatus:
        return self.snapshot()

    async def watch(self) -> AsyncIterator[NodeStatus]:
        """The current status, then each changed one. Slow readers skip to the latest."""
        while True:
            changed = self._changed
            yield self.snapshot()
            await changed.wait()
