"""The context one start of an in-process plugin works through.

Everything a plugin registers lives here and dies with it: when a start
fails, its handlers stop answering at once and a fresh start registers anew.
The limits keep a misbehaving plugin from starving the daemon: it can wait
(back-pressure) or be refused with an explicit error, never take the node down.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.state import Account, Settled
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.ledger.queries import account_key
from meshd.p2p.direct import DirectRequestFailed
from meshd.p2p.host import P2PHost
from meshd.plugin.api import (
    EventHandler,
    LedgerReader,
    LedgerStanding,
    Message,
    PluginDht,
    ProviderRecord,
    ReportRule,
    TaskHandler,
    TaskOptions,
    TaskOutcome,
    TaskReport,
    TaskVerifier,
    check_name,
)
from meshd.plugin_host.plugin_dht import PluginDhtView
from meshd.plugin_host.signing import PluginSigner

EVENT_PROTOCOL = "plugin-event"
BEACON_DOMAIN = b"mesh/beacon/v1\x00"  # ctx.ledger.beacon: H(domain, epoch, value, root)
MAX_EVENT_BYTES = 1 << 20  # a request; answers may be up to 4 MiB (direct.DEFAULT_MAX_RESPONSE)
MAX_EVENT_TIMEOUT = 60.0
# Per plugin: incoming events served at once (more are refused as busy), and
# outgoing requests in flight (more wait).
MAX_CONCURRENT_EVENTS = 64
MAX_REQUESTS_IN_FLIGHT = 64
# Per plugin: publishes per second (a token bucket); a burst may use the whole bucket.
PUBLISH_RATE, PUBLISH_BURST = 200.0, 400
PUBLISH_WAIT = 5.0  # a publish waits this long for the bucket, then is refused


@dataclass
class Counters:
    """A plugin's traffic, kept across its restarts (``meshctl plugins info``)."""

    events_served: int = 0
    event_errors: int = 0  # handler raised or timed out
    events_refused_busy: int = 0
    requests_sent: int = 0
    published: int = 0
    publish_refused: int = 0


@dataclass(frozen=True)
class TaskKind:
    handler: TaskHandler
    verify: TaskVerifier | None


@dataclass
class Registrations:
    events: dict[str, tuple[EventHandler, float]] = field(default_factory=dict)
    from_plugins: set[str] = field(default_factory=set)  # events other plugins may call
    tasks: dict[str, TaskKind] = field(default_factory=dict)
    reports: dict[str, ReportRule] = field(default_factory=dict)  # kind -> rule
    topics: set[str] = field(default_factory=set)


def beacon(ledger: Ledger, epoch: int) -> bytes | None:
    """``ctx.ledger.beacon``: 32 bytes every node derives alike from final ``epoch``'s
    decided value and state root; None while it is not final here. The task layer's
    receipt audits draw with it too (meshd/tasks/receipt_audits.py)."""
    decision = ledger.settlements.decision(epoch) if epoch >= 0 else None
    if decision is None:
        return None
    return hashlib.sha256(BEACON_DOMAIN + epoch.to_bytes(8, "big") + decision.value
                          + decision.root).digest()


class PluginLedger:
    """The ledger as a plugin reads it: final state only, no writes."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def final_epoch(self) -> int:
        return self._ledger.final_epoch

    def clock_epoch(self) -> int:
        return self._ledger.clock_epoch()

    async def balance(self, peer_id: str = "") -> int:
        return self._account(peer_id).liquid

    async def bonded(self, peer_id: str = "") -> int:
        return self._account(peer_id).bonded

    def beacon(self, epoch: int) -> bytes | None:
        return beacon(self._ledger, epoch)

    def base_price(self) -> int:
        return self._ledger.settled.base_price

    def spot_check_rate(self) -> float:
        return self._ledger.settled.params.market.spot_check_bps / 10_000

    async def standing(self, peer_id: str) -> LedgerStanding:
        return await self._ledger.standing(peer_id)

    def validators(self, epoch: int | None = None) -> list[str]:
        settlements = self._ledger.settlements
        settled: Settled | None
        if epoch is None:
            settled = self._ledger.settled
        elif epoch in settlements.epochs_in_memory():  # never recomputed on the loop
            settled = settlements.at(epoch)
        else:
            return []
        return [] if settled is None else [accounts.peer_id_of(key)
                                           for key, _ in settled.validators]

    def _account(self, peer_id: str) -> Account:
        key = account_key(peer_id, "account") if peer_id else self._ledger.key
        return self._ledger.settled.account(key)


# (plugin, kind, payload, options) -> outcome: the task router, once it runs.
SubmitTask = Callable[[str, str, bytes, TaskOptions], Awaitable[TaskOutcome]]
# (plugin, peer, kind, detail, units, note) -> receipt hash (hex): task reports, once they run.
ReportTask = Callable[[str, str, str, bytes, int, str], Awaitable[str]]
# (plugin, report, reason) -> verdict hash (hex): a reported task that proved false.
ReportFailure = Callable[[str, TaskReport, str], Awaitable[str]]
# (plugin, report) -> None, or InvalidArgument: is the claim the provider's, of this report?
CheckReport = Callable[[str, TaskReport], None]
# (caller, plugin, event, data, timeout) -> answer: an event to another plugin on this node.
CallHere = Callable[[str, str, str, bytes, float], Awaitable[bytes]]


@dataclass(frozen=True)
class TaskServices:
    """What plugins reach of the task layer: ``ctx.submit_task`` (the task
    router) and ``ctx.report_task`` (task reports); ``None``: not on this node.

    The daemon hands it to :meth:`PluginRuntime.run`. The task layer is built
    on the plugin host (it runs the plugins' handlers), so the host takes it
    as this interface rather than importing it.
    """

    submit: SubmitTask | None = None
    report: ReportTask | None = None
    fail: ReportFailure | None = None
    check: CheckReport | None = None
    record: Callable[[str], ProviderRecord | None] | None = None


class _Bucket:
    """A token bucket on trio's clock."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = trio.current_time()

    async def take(self, wait: float) -> bool:
        deadline = trio.current_time() + wait
        while True:
            now = trio.current_time()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            pause = (1 - self._tokens) / self._rate
            if now + pause > deadline:
                return False
            await trio.sleep(pause)


class PluginContext:
    """Implements :class:`meshd.plugin.api.Context` for one start of a plugin."""

    def __init__(self, *, name: str, version: str, host: P2PHost, ledger: Ledger,
                 network_id: str, data_dir: Path, config: Mapping[str, Any],
                 counters: Counters, nursery: trio.Nursery,
                 submit: SubmitTask | None, report: ReportTask | None = None,
                 fail: ReportFailure | None = None, check: CheckReport | None = None,
                 record: Callable[[str], ProviderRecord | None] | None = None,
                 call_here: CallHere | None = None,
                 signer: PluginSigner | None = None) -> None:
        self.name = name
        self.version = version  # an external plugin's is the one it registers
        self.summary = ""  # likewise
        self.pid = 0  # an external plugin's process
        self.peer_id = host.peer_id
        self.network_id = network_id
        self.data_dir = data_dir
        self.config: Mapping[str, Any] = types.MappingProxyType(dict(config))
        self.log = logging.getLogger(f"mesh.plugin.{name}")
        self.ledger: LedgerReader = PluginLedger(ledger)
        self.dht: PluginDht = PluginDhtView(host.dht, name)
        self.registered = Registrations()
        self.counters = counters
        self._host = host
        self.nursery = nursery  # this start's: what runs in it dies with the start
        self._submit = submit
        self._report = report
        self._fail = fail
        self._check = check
        self._record = record
        self._call_here = call_here
        self._signer = signer
        self._requests = trio.CapacityLimiter(MAX_REQUESTS_IN_FLIGHT)
        self.serving = trio.CapacityLimiter(MAX_CONCURRENT_EVENTS)
        self._publish_bucket = _Bucket(PUBLISH_RATE, PUBLISH_BURST)

    # --- events -------------------------------------------------------------

    def on(self, event: str, handler: EventHandler, *, timeout: float = 10.0,
           from_plugins: bool = False) -> None:
        check_name(event, "event")
        if not callable(handler):
            raise errors.InvalidArgument(f"the handler of {event!r} is not callable")
        if not 0 < timeout <= MAX_EVENT_TIMEOUT:
            raise errors.InvalidArgument(f"an event timeout is over 0 and at most "
                                         f"{MAX_EVENT_TIMEOUT:g} s, not {timeout}")
        self.registered.events[event] = (handler, timeout)
        if from_plugins:
            self.registered.from_plugins.add(event)
        else:
            self.registered.from_plugins.discard(event)

    async def request(self, peer_id: str, event: str, data: bytes = b"", *,
                      timeout: float = 10.0) -> bytes:
        check_name(event, "event")
        if len(data) > MAX_EVENT_BYTES - 1024:
            raise errors.InvalidArgument(f"event data is {len(data)} bytes; at most "
                                         f"{MAX_EVENT_BYTES - 1024} fit in one request")
        if not 0 < timeout <= MAX_EVENT_TIMEOUT:
            raise errors.InvalidArgument(f"timeout must be over 0 and at most "
                                         f"{MAX_EVENT_TIMEOUT:g} s")
        payload = wire_pb2.PluginEvent(plugin=self.name, event=event, data=data)
        async with self._requests:
            self.counters.requests_sent += 1
            await self._host.reach(peer_id, timeout)  # any member, not only peers
            try:
                return await self._host.direct.request(
                    peer_id, EVENT_PROTOCOL, payload.SerializeToString(), timeout=timeout)
            except DirectRequestFailed as exc:
                raise errors.PeerError(str(exc)) from None

    async def call(self, plugin: str, event: str, data: bytes = b"", *,
                   timeout: float = 10.0) -> bytes:
        if plugin == self.name:
            raise errors.InvalidArgument(f"plugin {plugin!r} calls its own handlers directly, "
                                         "not through ctx.call")
        if self._call_here is None:
            raise errors.FailedPrecondition("this node's plugin host takes no calls between "
                                            "plugins")
        self.counters.requests_sent += 1
        return await self._call_here(self.name, plugin, event, data, timeout)

    # --- broadcast ----------------------------------------------------------

    def _topic(self, topic: str) -> str:
        if not isinstance(topic, str) or not topic or "/" in topic:
            raise errors.InvalidArgument(f"a plugin topic is a non-empty name without '/', "
                                         f"not {topic!r}")
        return f"plugin/{self.name}/{topic}"

    async def publish(self, topic: str, data: bytes) -> None:
        wire = self._topic(topic)
        if not await self._publish_bucket.take(PUBLISH_WAIT):
            self.counters.publish_refused += 1
            raise errors.ResourceExhausted(
                f"plugin {self.name!r} publishes more than {PUBLISH_RATE:g} messages/s; "
                f"this one waited {PUBLISH_WAIT:g} s and was refused")
        await self._host.broadcast.publish(wire, data)
        self.counters.published += 1

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[Message]]:
        wire = self._topic(topic)
        self.registered.topics.add(topic)
        async with self._host.broadcast.open_subscription(wire) as subscription:
            async def messages() -> AsyncIterator[Message]:
                async for message in subscription:
                    yield Message(topic, message.data, message.sender)

            yield messages()

    def peers(self) -> list[str]:
        return [p.peer_id for p in self._host.membership.peers()]

    # --- tasks --------------------------------------------------------------

    def handle_task(self, kind: str, handler: TaskHandler, *,
                    verify: TaskVerifier | None = None) -> None:
        check_name(kind, "task kind")
        if not callable(handler) or (verify is not None and not callable(verify)):
            raise errors.InvalidArgument(f"the handler and verifier of {kind!r} must be callable")
        self.registered.tasks[kind] = TaskKind(handler, verify)

    def provider_record(self, peer_id: str) -> ProviderRecord | None:
        return self._record(peer_id) if self._record is not None else None

    async def submit_task(self, kind: str, payload: bytes,
                          options: TaskOptions | None = None) -> TaskOutcome:
        check_name(kind, "task kind")
        if self._submit is None:
            raise errors.FailedPrecondition("this node does not run the task router")
        return await self._submit(self.name, kind, payload, options or TaskOptions())

    async def report_task(self, peer_id: str, kind: str, detail: bytes = b"", *,
                          units: int = 1, note: str = "") -> str:
        check_name(kind, "task kind")
        if self._report is None:
            raise errors.FailedPrecondition("this node does not run the task router")
        return await self._report(self.name, peer_id, kind, detail, units, note)

    def accept_reports(self, kind: str, rule: ReportRule) -> None:
        check_name(kind, "task kind")
        if not callable(rule):
            raise errors.InvalidArgument(f"the report rule of {kind!r} must be callable")
        self.registered.reports[kind] = rule

    async def report_failure(self, report: TaskReport, reason: str) -> str:
        if not isinstance(report, TaskReport):
            raise errors.InvalidArgument("report_failure takes the TaskReport a rule was given")
        if self._fail is None:
            raise errors.FailedPrecondition("this node does not run the task router")
        return await self._fail(self.name, report, reason)

    def check_report(self, report: TaskReport) -> None:
        if not isinstance(report, TaskReport):
            raise errors.InvalidArgument("check_report takes a TaskReport")
        if self._check is None:
            raise errors.FailedPrecondition("this node does not run the task router")
        self._check(self.name, report)

    def sign(self, data: bytes) -> bytes:
        if self._signer is None:
            raise errors.FailedPrecondition("this node's plugin host signs no statements")
        return self._signer.sign(self.name, data)

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        if self._signer is None:
            raise errors.FailedPrecondition("this node's plugin host checks no statements")
        return self._signer.verify(self.name, peer_id, data, signature)

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str = "") -> None:
        self.nursery.start_soon(fn, name=name or f"plugin {self.name}")
