"""The plugin API: what a plugin implements and what the daemon hands it.

A plugin is a Python package that declares an entry point in the group
``mesh.plugins`` naming a :class:`Plugin` subclass (or any callable returning
a Plugin). meshd makes a fresh instance for each start, calls ``init`` (which
registers handlers), then ``run`` in the daemon's nursery, and ``stop`` when
the daemon stops. docs/plugins.md is the guide; this module is the contract.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from meshd import errors

ENTRY_POINT_GROUP = "mesh.plugins"
# Event and task-kind names: the seed's style is STORE_FILE; dots group them.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def check_name(name: str, what: str) -> str:
    """``name`` if it is a valid event or task-kind name, else InvalidArgument."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise errors.InvalidArgument(f"{what} {name!r} is not a name: a letter, then up to 63 "
                                     "letters, digits, '_', '.' or '-'")
    return name


@dataclass(frozen=True)
class Event:
    """A direct request from a peer to this plugin (``ctx.on``)."""

    peer: str  # the sender's peer ID (authenticated by the connection)
    name: str  # e.g. "RETRIEVE_FILE"
    data: bytes
    # The plugin on this node that sent it (ctx.call; then ``peer`` is this node),
    # "" for a peer's request or the operator's `meshctl plugins call`.
    caller: str = ""


# (event) -> the answer's bytes (None answers empty). Raise errors.InvalidArgument
# to refuse with a message the sender sees.
EventHandler = Callable[[Event], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Message:
    """A message on one of the plugin's topics."""

    topic: str  # as the plugin named it (without the plugin's namespace)
    data: bytes
    sender: str  # the author's peer ID (signed)


@dataclass(frozen=True)
class TaskRequest:
    """A task handed to this node to execute (a TASK_REQUEST)."""

    task_id: str  # hex; unique per execution
    kind: str
    payload: bytes
    requester: str  # peer ID
    # A paid task: the most the requester pays this execution (base units;
    # TaskResult.price asks for what it cost, up to this). 0: unpaid.
    max_price: int = 0


@dataclass(frozen=True)
class TaskResult:
    """A provider's answer to a task (the body of a TASK_RESPONSE).

    ``units`` is the work done, in the plugin's own unit (bytes stored, items
    computed); it is what the receipt credits, so the verification rule
    should check it. ``price``: what the provider asks for a paid task, in
    base units (capped at the request's ``max_price``; 0 works for free).
    """

    result: bytes
    proof: bytes = b""
    units: int = 1
    price: int = 0


# (request) -> result. Raise errors.InvalidArgument to refuse the task.
TaskHandler = Callable[[TaskRequest], Awaitable[TaskResult]]
# (request, result) -> does the result pass? Runs on the requester's node.
TaskVerifier = Callable[[TaskRequest, TaskResult], Awaitable[bool]]


@dataclass(frozen=True)
class TaskReport:
    """Work a peer says it did for this node (``ctx.report_task`` on its side).

    The report's signature is checked before a rule sees it; the rule decides
    whether the work happened as described, and each piece of work should be
    accepted once (the same kind and detail from the same peer earn once
    anyway).
    """

    provider: str  # the reporting peer's ID (authenticated by the connection)
    kind: str
    detail: bytes  # what the work was, in the plugin's terms
    units: int  # what the receipt would credit
    # The provider's signed TaskClaim for it, opaque to the plugin: keep it
    # with the report to call ``ctx.report_failure`` should the work prove false.
    claim: bytes = b""
    signature: bytes = b""


# (report) -> countersign it? Runs on the node the work was for.
ReportRule = Callable[[TaskReport], Awaitable[bool]]
MAX_REPORT_DETAIL = 4096


@dataclass(frozen=True)
class TaskOutcome:
    """What a submitted task came to; see docs/tasks.md for the states."""

    task_id: str
    kind: str
    state: str  # "done", "failed", "timed_out", "cancelled"
    result: bytes = b""
    providers: tuple[str, ...] = ()  # whose results were accepted
    error: str = ""


@dataclass(frozen=True)
class TaskOptions:
    """How a task is to be run (``ctx.submit_task``, ``meshctl tasks submit``)."""

    redundancy: int = 1  # executions on distinct providers, compared by digest
    capabilities: tuple[str, ...] = ()  # every one must be advertised by a provider
    timeout: float = 30.0  # per attempt
    attempts: int = 3  # providers tried in turn when one fails or times out
    # Only these peers, in this order (a plugin's own choice: by price, measured
    # capabilities or reputation); empty: any that advertises the kind.
    providers: tuple[str, ...] = ()
    # A paid task (docs/ledger.md §12): the most one execution is paid, in base
    # units; redundancy times this is locked from this node's balance first.
    max_price: int = 0


@dataclass(frozen=True)
class ProviderRecord:
    """What this node has seen of a provider's executions of its tasks since meshd
    started (``ctx.provider_record``): attempts done, failed (refused, broke, timed
    out, a claim that did not match) and wrong (outvoted or rejected by a rule)."""

    peer_id: str
    first_seen: float  # Unix time of its first attempt for this node
    done: int = 0
    failed: int = 0
    wrong: int = 0


@dataclass(frozen=True)
class LedgerStanding:
    """An account's track record as the final settlements show it
    (``ctx.ledger.standing``, docs/ledger.md §12.5): every node that has folded the
    same final epochs gives the same figures, unlike :class:`ProviderRecord`, which
    is this node's own experience."""

    peer_id: str
    through_epoch: int = -1  # the newest final epoch folded in; -1: none yet
    since_epoch: int = -1  # the first final epoch whose settlement named it; -1: never
    receipts: int = 0  # task receipts counted for it as a provider (every plugin's)
    units: int = 0  # their units of work
    uptime_epochs: int = 0  # epochs in which its uptime earned a share
    offences: int = 0  # offences it was slashed for: failed tasks, equivocation, disputes
    failed_tasks: int = 0  # of which failed tasks (two verdicts on one of its claims)
    last_offence_epoch: int = -1
    slashed: int = 0  # base units taken from its stake
    earned: int = 0  # base units paid to it from requesters' locks (base fee burned off)
    paid: int = 0  # base units it paid providers from its locks
    refunded: int = 0  # base units of its locks that came back to it unpaid


class LedgerReader(Protocol):
    """Read access to the ledger state (docs/plugins.md §5)."""

    def final_epoch(self) -> int:
        """The newest epoch whose settlement is final."""

    def clock_epoch(self) -> int:
        """The epoch the clock is in now."""

    async def balance(self, peer_id: str = "") -> int:
        """Liquid base units of an account as of the newest final settlement
        (default: this node's)."""

    async def bonded(self, peer_id: str = "") -> int:
        """Staked (bonded) base units of an account as of the newest final settlement."""

    def spot_check_rate(self) -> float:
        """The share of accepted results a verifying node runs again itself, 0 to 1:
        the network's ``market.spot_check_bps``, which governance may change
        (docs/compute.md §5)."""

    def base_price(self) -> int:
        """The base price of paid tasks in the next epoch, base units per 1000 units of
        work (docs/ledger.md §12.4): what a receipt's units burn of its payment."""

    def beacon(self, epoch: int) -> bytes | None:
        """32 bytes every node derives alike from epoch ``epoch``'s decision (its
        decided value and state root); None while that epoch is not final here.

        Nobody knows it before the epoch is decided, so work assigned by it
        (which validators audit a file, say) cannot be arranged in advance by
        whoever it falls on. The leader that proposed the decided value could
        bias it a little by choosing its cut: use it to spread duties, not as a
        lottery for large sums.
        """

    async def standing(self, peer_id: str) -> LedgerStanding:
        """``peer_id``'s track record in every final settlement so far: receipts,
        uptime, offences and slashes, what it earned and paid in the market. The same
        on every node (up to how far each has folded, ``through_epoch``): a
        network-wide reputation (docs/ledger.md §12.5)."""

    def validators(self, epoch: int | None = None) -> list[str]:
        """Peer IDs of the validators of the epoch after ``epoch`` (default: the newest
        final one), as that epoch's settlement made them; [] when ``epoch`` is not
        final here or too old to be held in memory. Draw from the beacon and the
        validators of one epoch, and every node draws alike."""


@dataclass(frozen=True)
class Provider:
    """A peer that announced a key (``ctx.dht.provide``), and where to dial it."""

    peer_id: str
    addrs: tuple[str, ...]


class PluginDht(Protocol):
    """The network's Kademlia DHT, in the plugin's own key space.

    Keys are text (1 to 184 bytes), stored as ``plugin/<name>/<key>``: one
    plugin cannot read, overwrite or announce another's records. Every call is
    bounded in time. Errors: InvalidArgument (a bad key, a value over 64 KiB),
    NotFound (``get``: nobody holds a value), Unavailable (no peer took the
    record: is the node connected?), DeadlineExceeded.
    """

    async def provide(self, key: str) -> None:
        """Announce that this node holds ``key`` (a provider record, as IPFS does)."""

    async def find_providers(self, key: str, count: int = 20) -> list[Provider]:
        """Up to ``count`` (1-100) peers that announced ``key``, anywhere in the network."""
        ...

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` (at most 64 KiB) under ``key`` on the closest peers."""

    async def get(self, key: str) -> bytes:
        """The value stored under ``key``."""
        ...


class Context(Protocol):
    """What a plugin can do; one per start of the plugin.

    Handlers must be registered in ``init``: events and task kinds are what
    ``meshctl plugins info`` shows and what peers can call.
    """

    name: str
    version: str
    peer_id: str  # this node's
    network_id: str
    data_dir: Path  # private to the plugin: <data dir>/plugins/<name>/
    config: Mapping[str, Any]  # [plugins.settings.<name>] of meshd's config
    log: logging.Logger
    ledger: LedgerReader
    dht: PluginDht  # the network's DHT, in this plugin's own key space

    def on(self, event: str, handler: EventHandler, *, timeout: float = 10.0,
           from_plugins: bool = False) -> None:
        """Answer direct requests named ``event`` from peers (see :meth:`request`) and
        from this node's operator; with ``from_plugins``, also from the other plugins
        on this node (:meth:`call`; ``Event.caller`` names the plugin)."""

    async def request(self, peer_id: str, event: str, data: bytes = b"", *,
                      timeout: float = 10.0) -> bytes:
        """Send ``event`` to the same plugin on ``peer_id`` and return its answer.

        A member this node is not connected to is dialled first, at the
        addresses the DHT has for it (a provider record's holder, say).

        Raises:
            errors.FailedPrecondition: not connected to the peer, and it could
                not be reached.
            errors.DeadlineExceeded: no answer in time.
            errors.PeerError: the peer's plugin refused or failed (message says why).
        """

    async def call(self, plugin: str, event: str, data: bytes = b"", *,
                   timeout: float = 10.0) -> bytes:
        """Send ``event`` to another plugin on this node (``plugin``, by name) and
        return its answer: the compute plugin reads a module from the storage
        plugin so. Only events that plugin registered ``from_plugins=True``
        are taken; the handler sees this node as the event's peer and this
        plugin as ``Event.caller``.

        Raises:
            errors.NotFound: this node has no such plugin.
            errors.Unavailable: the plugin is not running now, is busy or failed.
            errors.InvalidArgument: it refused the event (message says why), does
                not take it from plugins, or ``plugin`` is the caller itself.
            errors.DeadlineExceeded: no answer in time (at most 60 s).
        """

    async def publish(self, topic: str, data: bytes) -> None:
        """Broadcast ``data`` to the plugin's ``topic`` on every node of the network."""

    def subscribe(self, topic: str) -> AbstractAsyncContextManager[AsyncIterator[Message]]:
        """``async with ctx.subscribe(topic) as messages: async for m in messages: ...``"""

    def peers(self) -> list[str]:
        """Peer IDs of the connected members of the network."""

    def handle_task(self, kind: str, handler: TaskHandler, *,
                    verify: TaskVerifier | None = None) -> None:
        """Execute tasks of ``kind`` for peers; ``verify`` is the rule a requester
        applies to a result (without one, results are compared across redundant
        executions)."""

    async def submit_task(self, kind: str, payload: bytes,
                          options: TaskOptions | None = None) -> TaskOutcome:
        """Have the network run a task of ``kind`` and wait for its outcome."""

    def provider_record(self, peer_id: str) -> ProviderRecord | None:
        """What this node has seen of ``peer_id`` executing tasks for it (any plugin's)
        since meshd started; None if it never asked it."""

    async def report_task(self, peer_id: str, kind: str, detail: bytes = b"", *,
                          units: int = 1, note: str = "") -> str:
        """Report work done for ``peer_id`` outside the task router (in an event
        handler, say), for the tasks share of rewards: the peer's plugin judges
        the report with its rule (:meth:`accept_reports`) and, if it agrees,
        records a receipt signed by both. Returns the receipt entry's hash (hex).

        ``note``, one line of text (at most 500 characters), is kept on this
        node with the receipt and printed under it by ``meshctl rewards
        explain``: what the work was, in words (the ledger has only the
        detail's hash).

        Raises:
            errors.InvalidArgument: a bad kind, detail over 4 KiB, units out of range,
                a note of more than one line or 500 characters.
            errors.FailedPrecondition: not connected to the peer.
            errors.PeerError: the peer refused the report (message says why).
        """

    def accept_reports(self, kind: str, rule: ReportRule) -> None:
        """Countersign peers' reports of ``kind`` when ``rule`` accepts them."""

    def check_report(self, report: TaskReport) -> None:
        """Raise errors.InvalidArgument unless ``report``'s claim is its provider's
        signature over exactly this plugin, its kind and detail (for any
        requester, any epoch): a report handed over by a third node (a holder's
        promise, say) can be trusted as the provider's word.
        """

    async def report_failure(self, report: TaskReport, reason: str) -> str:
        """Record that work a peer reported has proved false: a failure verdict
        on the report's signed claim (``report`` as a rule of this plugin saw
        it, on this node or another). A storage node that said it keeps a
        piece and then fails an audit of it is the use.

        Verdicts of VERIFY_QUORUM (2) distinct eligible nodes on one claim
        slash the provider ``penalties.failed_task_bps`` of its stake (a
        genesis parameter governance can change; 10 % by default), once per claim,
        and its receipt of that claim earns nothing (docs/ledger.md §7). So a
        plugin has a second node check for itself before it reports too.
        Returns the verdict entry's hash (hex); the same one when this node
        already reported that claim.

        Raises:
            errors.InvalidArgument: the claim is not the provider's signed claim
                of this plugin, kind and detail; this node is its provider; a
                reason empty or over 200 characters.
            errors.FailedPrecondition: the plugin earns no receipts here.
        """

    def sign(self, data: bytes) -> bytes:
        """This node's signature (Ed25519, 64 bytes, by the key its peer ID names)
        over ``data`` as a statement of this plugin on this network: any node's
        ``verify`` checks it without asking this node. Statements of another
        plugin or network, ledger entries and task claims are signed over other
        messages, so a plugin may sign whatever its peers send (docs/plugins.md,
        "Signed statements")."""

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``peer_id``'s node's :meth:`sign` of ``data`` by
        this plugin on this network.

        Raises:
            errors.InvalidArgument: ``peer_id`` is not a peer ID of this network
                (an Ed25519 key's).
        """

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str = "") -> None:
        """Run ``fn`` in the background for as long as this start of the plugin lives."""


class Plugin:
    """Base class of in-process plugins. Override what you need.

    Exceptions from ``init`` or ``run`` stop this start of the plugin: meshd
    logs them and starts a fresh instance after a backoff. Exceptions from a
    handler answer that one request with an error.
    """

    async def init(self, ctx: Context) -> None:
        """Register handlers (``ctx.on``, ``ctx.handle_task``). Must return promptly."""

    async def run(self, ctx: Context) -> None:
        """Background work for the plugin's lifetime; the default waits forever."""
        await trio.sleep_forever()

    async def stop(self, ctx: Context) -> None:
        """Release resources; called once when the daemon stops, bounded in time."""
