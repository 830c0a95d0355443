"""The requester side of tasks: choose providers, collect, verify, record.

A submitted task (docs/tasks.md §1) goes to ``redundancy`` distinct providers
that advertise the plugin's task kind and every required capability. Each of
those executions is a *slot*: when its provider fails, times out, answers a
claim that does not match, or a result the plugin's rule rejects, the slot
retries on another provider, up to ``attempts`` providers. With several
slots, the results are compared by digest and the majority wins. Accepted
executions get a receipt in the ledger (the provider's signed claim, and the
requester's signature on the entry); a wrong result gets a verdict, and
another node is asked to confirm it, since a failed task is slashed only on
the verdicts of two eligible nodes (docs/ledger.md §7.1).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import parse_claim
from meshcore.tasks import claims, matching, verdicts
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.direct import DEFAULT_MAX_RESPONSE
from meshd.p2p.host import P2PHost
from meshd.plugin.api import TaskOptions, TaskOutcome, TaskRequest, TaskResult, check_name
from meshd.plugin_host.runtime import PluginRuntime
from meshd.tasks.provider import (
    CAPS_PROTOCOL,
    MAX_PAYLOAD,
    MAX_TASK_TIMEOUT,
    NONCE_BYTES,
    TASK_PROTOCOL,
    confirmed_by,
)
from meshd.tasks.track_record import TrackRecords

log = logging.getLogger(__name__)

HISTORY = 1000  # finished tasks kept for `meshctl tasks ls|show`
CAPS_TTL = 10.0  # seconds a peer's advertised capabilities are trusted
CAPS_TIMEOUT = 3.0
MAX_REDUNDANCY, MAX_ATTEMPTS = 16, 16
MAX_NAMED = 64  # providers a submitter may name
MAX_PRICE = 1 << 62  # base units one execution may be offered
# Epochs after the task's a lock lasts: its receipts (dated the task's epoch)
# are canonical by then, and what is left goes back (docs/ledger.md §12).
LOCK_EPOCHS = 3
CONFIRMERS = 3  # nodes asked, in turn, to confirm a wrong result
# Equally loaded providers are tried in random order (tests replace this to fix it).
shuffle_providers: Callable[[list[str]], None] = random.shuffle

# Task states; an attempt has these too, plus "wrong" and "invalid".
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
TIMED_OUT, WRONG, INVALID = "timed_out", "wrong", "invalid"


@dataclass
class Attempt:
    """One execution of a task on one provider."""

    provider: str
    state: str = RUNNING
    error: str = ""
    result_digest: str = ""  # hex
    units: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    receipt: str = ""  # the task_receipt entry's hash (hex)
    verdicts: list[str] = field(default_factory=list)  # task_verdict entries (hex)
    price: int = 0  # what its claim asks out of the task's lock (paid tasks)
    response: wire_pb2.TaskResponse | None = None

    def end(self, state: str, error: str = "") -> None:
        self.state, self.error, self.finished_at = state, error, time.time()


@dataclass
class TaskRecord:
    """A task this node submitted, as ``meshctl tasks show`` prints it."""

    task_id: str  # hex base_id
    plugin: str
    kind: str
    payload_size: int
    options: TaskOptions
    epoch: int = 0  # the epoch the providers' claims name, and the receipts'
    no_receipt: str = ""  # why no receipt can be written for this task, if so
    lock: str = ""  # a paid task: the lock entry its receipts pay from (hex)
    submitted_at: float = field(default_factory=time.time)
    state: str = RUNNING
    error: str = ""
    finished_at: float = 0.0
    result: bytes = b""
    providers: tuple[str, ...] = ()  # whose results were accepted
    attempts: list[Attempt] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    version: int = 0  # the router's change counter when this record last changed

    def finish(self, state: str, error: str = "") -> None:
        if self.done.is_set():
            return
        self.state, self.error, self.finished_at = state, error, time.time()
        self.done.set()

    def outcome(self) -> TaskOutcome:
        return TaskOutcome(self.task_id, self.kind, self.state, self.result, self.providers,
                           self.error)


@dataclass(frozen=True)
class _Caps:
    advertised: wire_pb2.TaskCapabilities
    at: float


class TaskRouter:
    """Submits tasks for this node; lives on the trio loop."""

    def __init__(self, host: P2PHost, ledger: Ledger, plugins: PluginRuntime,
                 rewarded_plugins: Iterable[str]) -> None:
        self._host = host
        self._ledger = ledger
        self._plugins = plugins
        self._rewarded = frozenset(rewarded_plugins)
        self._caps: dict[str, _Caps] = {}
        self._tasks: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self._nursery: trio.Nursery | None = None
        self._version = 0  # counts changes to any task, for watch()
        self._changed = trio.Event()  # set, and replaced, on each change
        self.last_done_at = 0.0  # trio.current_time() when a task last succeeded
        self.records = TrackRecords()  # each provider's attempts, for plugins to weigh

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- API -------------------------------------------------------------------

    async def submit(self, plugin: str, kind: str, payload: bytes,
                     options: TaskOptions, wait: bool = True) -> TaskRecord:
        """Start a task; with ``wait``, return once it has finished."""
        _check(plugin, kind, payload, options)
        if self._nursery is None:
            raise errors.Unavailable("the task router is not running yet")
        nonce = os.urandom(NONCE_BYTES)
        base = claims.base_id(self._ledger.key, plugin, kind, payload, nonce)
        record = TaskRecord(base.hex(), plugin, kind, len(payload), options)
        self._tasks[record.task_id] = record
        self._touch(record)
        self._forget_old()
        self._nursery.start_soon(self._execute, record, payload, nonce,
                                 name=f"task {record.task_id[:12]}")
        if wait:
            await record.done.wait()
        return record

    async def submit_for_plugin(self, plugin: str, kind: str, payload: bytes,
                                options: TaskOptions) -> TaskOutcome:
        """``ctx.submit_task`` of the plugin API."""
        return (await self.submit(plugin, kind, payload, options)).outcome()

    async def get(self, task_id: str) -> TaskRecord:
        task_id = task_id.lower()
        if len(task_id) < 8:
            raise errors.InvalidArgument("give at least 8 characters of the task ID")
        found = [r for key, r in self._tasks.items() if key.startswith(task_id)]
        if not found:
            raise errors.NotFound(f"no task {task_id} was submitted by this node (since "
                                  f"meshd started; the last {HISTORY} are kept)")
        if len(found) > 1:
            raise errors.InvalidArgument(f"{task_id} is the start of {len(found)} task IDs; "
                                         "give more characters")
        return found[0]

    def counts(self) -> dict[tuple[str, str, str], int]:
        """(plugin, kind, state) -> tasks this node submitted since start (metrics)."""
        found: dict[tuple[str, str, str], int] = {}
        for record in self._tasks.values():
            key = (record.plugin, record.kind, record.state)
            found[key] = found.get(key, 0) + 1
        return found

    async def recent(self) -> list[TaskRecord]:
        return list(reversed(self._tasks.values()))

    async def watch(self) -> AsyncGenerator[TaskRecord, None]:
        """Every kept task in the order they last changed, then each task again
        when it changes; forever. A slow reader gets a changed task's newest
        state once, however often it changed in the meantime."""
        seen = 0
        while True:
            changed, top = self._changed, self._version
            fresh = sorted((r for r in self._tasks.values() if r.version > seen),
                           key=lambda r: r.version)
            for record in fresh:
                yield record  # a checkpoint: records may change meanwhile
            seen = top  # what changed during the yields is newer: sent next round
            if not fresh:
                await changed.wait()

    def _touch(self, record: TaskRecord) -> None:
        self._version += 1
        record.version = self._version
        self._changed.set()
        self._changed = trio.Event()

    async def cancel(self, task_id: str) -> TaskRecord:
        record = await self.get(task_id)
        if record.done.is_set():
            raise errors.FailedPrecondition(f"task {record.task_id[:12]} already finished "
                                            f"({record.state})")
        record.cancel_scope.cancel()
        record.finish(CANCELLED, "cancelled by the operator")
        self._touch(record)
        return record

    def _forget_old(self) -> None:
        while len(self._tasks) > HISTORY:
            oldest = next(iter(self._tasks.values()))
            if not oldest.done.is_set():
                break
            self._tasks.popitem(last=False)

    # --- execution -------------------------------------------------------------

    async def _execute(self, record: TaskRecord, payload: bytes, nonce: bytes) -> None:
        options = record.options
        with record.cancel_scope:
            try:
                pool = await self._providers(record.plugin, record.kind, options.capabilities)
                if options.providers:
                    pool = _named(pool, options.providers, record)
                elif len(pool) < options.redundancy:
                    raise errors.FailedPrecondition(
                        f"{len(pool)} connected peers execute {record.plugin}/{record.kind}"
                        f"{_with(options.capabilities)}; the task needs {options.redundancy}")
                try:
                    record.epoch = self._ledger.entry_epoch()
                except errors.Unavailable as exc:
                    # The work can still be done; a receipt of it would count
                    # nothing, so none is written, and the task says why.
                    record.epoch = self._ledger.entry_epoch(strict=False)
                    record.no_receipt = str(exc)
                escrow = await self._lock(record) if options.max_price else b""
                request = wire_pb2.TaskRequest(
                    nonce=nonce, plugin=record.plugin, kind=record.kind, payload=payload,
                    epoch=record.epoch, timeout_ms=int(options.timeout * 1000),
                    escrow=escrow, max_price=options.max_price if escrow else 0,
                    lock=bytes.fromhex(record.lock) if escrow else b"")
                accepted: list[Attempt] = []
                async with trio.open_nursery() as slots:
                    for _ in range(options.redundancy):
                        slots.start_soon(self._slot, record, request, pool, accepted)
                await self._conclude(record, request, accepted)
            except errors.MeshError as exc:
                record.finish(FAILED, str(exc))
            except Exception as exc:  # a bug: the task fails, the daemon does not
                log.exception("task failed unexpectedly", extra={"task_id": record.task_id})
                record.finish(FAILED, f"internal error ({type(exc).__name__}); see meshd's log")
        if record.cancel_scope.cancelled_caught:
            record.finish(CANCELLED, "cancelled")
        for attempt in record.attempts:
            if attempt.state != RUNNING:
                self.records.note(attempt.provider, attempt.state)
        self._touch(record)

    async def _lock(self, record: TaskRecord) -> bytes:
        """Lock what the task may pay (redundancy times the price offered) before
        anyone works on it; the lock is named by the task's ID."""
        if record.no_receipt:
            raise errors.FailedPrecondition(f"a paid task pays through its receipts, and none "
                                            f"can be written now: {record.no_receipt}")
        if record.plugin not in self._rewarded:
            raise errors.FailedPrecondition(f"a paid task needs receipts, and the genesis "
                                            f"does not require the plugin {record.plugin}")
        amount = record.options.max_price * record.options.redundancy
        task = bytes.fromhex(record.task_id)
        try:
            item = await self._ledger.write(at_epoch=record.epoch, lock=ledger_pb2.EscrowLock(
                task=task, amount=amount, until=record.epoch + LOCK_EPOCHS))
        except errors.FailedPrecondition as exc:
            raise errors.FailedPrecondition(f"cannot lock {amount} to pay for the task: "
                                            f"{exc}") from None
        record.lock = item.hash.hex()
        return task

    async def _slot(self, record: TaskRecord, request: wire_pb2.TaskRequest,
                    pool: list[str], accepted: list[Attempt]) -> None:
        """One execution: providers from ``pool`` in turn until one gives a good result."""
        for _ in range(record.options.attempts):
            if not pool:
                return
            attempt = Attempt(pool.pop(0))
            record.attempts.append(attempt)
            self._touch(record)
            try:
                if await self._attempt(record, request, attempt):
                    accepted.append(attempt)
                    return
            finally:
                self._touch(record)

    async def _attempt(self, record: TaskRecord, request: wire_pb2.TaskRequest,
                       attempt: Attempt) -> bool:
        try:
            raw = await self._host.direct.request(
                attempt.provider, TASK_PROTOCOL, request.SerializeToString(),
                timeout=record.options.timeout, max_response=DEFAULT_MAX_RESPONSE)
        except errors.DeadlineExceeded:
            attempt.end(TIMED_OUT, f"no answer within {record.options.timeout:g} s")
            return False
        except errors.MeshError as exc:
            attempt.end(FAILED, str(exc))
            return False
        try:
            response = wire_pb2.TaskResponse.FromString(raw)
        except DecodeError:
            attempt.end(INVALID, "the answer is not a TaskResponse")
            return False
        provider = accounts.key_of(attempt.provider)
        task_id = claims.execution_id(bytes.fromhex(record.task_id), provider)
        problem = claims.claim_problem(
            response.claim, response.provider_signature, network_id=self._ledger.network_id,
            task_id=task_id, plugin=record.plugin,
            requester=self._ledger.key, provider=provider, epoch=request.epoch,
            units=response.units, result=response.result, escrow=request.escrow,
            max_price=request.max_price)
        if problem is not None:
            attempt.end(INVALID, problem)
            return False
        claim = parse_claim(response.claim)
        attempt.price = claim.price if claim is not None else 0
        attempt.response = response
        attempt.result_digest = claims.result_digest(response.result).hex()
        attempt.units = response.units
        kind = self._plugins.task_kind(record.plugin, record.kind)
        if kind is not None and kind.verify is not None:
            task = TaskRequest(task_id.hex(), record.kind, request.payload, self._host.peer_id,
                               max_price=request.max_price)
            try:
                passed = await kind.verify(task, TaskResult(response.result, response.proof,
                                                            response.units, attempt.price))
            except Exception as exc:
                log.warning("task verification rule failed", exc_info=exc, extra={
                    "plugin": record.plugin, "kind": record.kind})
                attempt.end(FAILED, f"the verification rule failed on this node "
                                    f"({type(exc).__name__}); the result is not judged")
                return False
            if not passed:
                attempt.end(WRONG, "the plugin's verification rule rejected the result")
                return False
        attempt.end(DONE)
        return True

    async def _conclude(self, record: TaskRecord, request: wire_pb2.TaskRequest,
                        accepted: list[Attempt]) -> None:
        """Compare redundant results, record receipts and verdicts, finish the task."""
        need = record.options.redundancy
        winner = verdicts.majority([bytes.fromhex(a.result_digest) for a in accepted], need)
        winners = [a for a in accepted if winner is not None and a.result_digest == winner.hex()]
        if winner is not None:
            for attempt in accepted:
                if attempt.result_digest != winner.hex():
                    attempt.end(WRONG, f"its result differs from the majority's "
                                       f"({len(winners)} of {need})")
        agreeing = [a.provider for a in winners]
        for attempt in record.attempts:
            if attempt.state == WRONG:  # wrong results are recorded even if the task fails
                await self._record_wrong(record, request, attempt, winner, agreeing)
        if len(accepted) < need:
            reasons = "; ".join(f"{a.provider[-8:]}: {a.state} ({a.error})"
                                for a in record.attempts if a.state != DONE)
            raise errors.Unavailable(f"{len(accepted)} of {need} executions succeeded after "
                                     f"{len(record.attempts)} attempts: {reasons}")
        if not winners:
            raise errors.PeerError(f"the providers disagree: no result has a majority of "
                                   f"the {need} executions")
        assert winners[0].response is not None
        record.result = winners[0].response.result
        record.providers = tuple(agreeing)
        await self._record_receipts(record, winners)
        self.last_done_at = trio.current_time()
        record.finish(DONE)

    async def _record_receipts(self, record: TaskRecord, accepted: list[Attempt]) -> None:
        """A receipt per accepted execution, all in one durable commit (one fsync for
        a task's k receipts, docs/tasks.md §5)."""
        if record.plugin not in self._rewarded:
            for attempt in accepted:
                attempt.error = "no receipt: the genesis does not require this plugin"
            return
        if record.no_receipt:
            for attempt in accepted:
                attempt.error = f"no receipt: {record.no_receipt}"
            return
        receipts = []
        for attempt in accepted:
            response = attempt.response
            assert response is not None
            receipts.append({"task_receipt": ledger_pb2.TaskReceipt(
                claim=response.claim, provider_signature=response.provider_signature)})
        written: list[Verified | errors.MeshError]
        try:
            # at the claims' epoch: claim_problem checked it
            written = list(await self._ledger.write_many(receipts, at_epoch=record.epoch))
        except errors.Unavailable as exc:  # the own-chain check is pending (after a restart)
            written = [exc] * len(accepted)
        for attempt, item in zip(accepted, written, strict=True):
            if isinstance(item, errors.MeshError):
                # The work was done and its result accepted: the task stays done.
                attempt.error = f"receipt not recorded: {item}"
                log.warning("task receipt not recorded", extra={
                    "task_id": record.task_id, "provider": attempt.provider,
                    "error": str(item)})
            else:
                attempt.receipt = item.hash.hex()

    async def _record_wrong(self, record: TaskRecord, request: wire_pb2.TaskRequest,
                            attempt: Attempt, winner: bytes | None,
                            agreeing: list[str]) -> None:
        """Write this node's verdict, then have another node confirm it."""
        response = attempt.response
        if response is None or record.plugin not in self._rewarded:
            return
        expected = verdicts.expected_digest(winner, bytes.fromhex(attempt.result_digest),
                                            response.claim)
        try:
            item = await self._ledger.write(task_verdict=ledger_pb2.TaskVerdict(
                claim=response.claim, provider_signature=response.provider_signature,
                expected_digest=expected))
        except errors.FailedPrecondition as exc:
            attempt.error += f"; verdict not recorded: {exc}"
            return
        attempt.verdicts.append(item.hash.hex())
        ask = wire_pb2.TaskVerdictRequest(
            task=request, requester=self._ledger.key, result=response.result,
            proof=response.proof, claim=response.claim,
            provider_signature=response.provider_signature)
        others = [p for p in await self._providers(record.plugin, record.kind, ())
                  if p not in agreeing and p != attempt.provider]
        confirmers = [p for p in agreeing if p != attempt.provider] + others
        confirmed = await confirmed_by(self._host, confirmers[:CONFIRMERS], ask, 30,
                                       task_id=record.task_id)
        if confirmed is None:
            attempt.error += "; no other node confirmed the verdict"
        else:
            attempt.verdicts.append(confirmed)

    # --- providers --------------------------------------------------------------

    async def _providers(self, plugin: str, kind: str,
                         required: Iterable[str]) -> list[str]:
        """Connected peers that execute ``plugin``/``kind`` with every capability
        in ``required``: the least loaded first, ties in random order."""
        peers = [p.peer_id for p in self._host.membership.peers()]
        for gone in set(self._caps) - set(peers):  # the cache holds connected peers only
            del self._caps[gone]
        now = trio.current_time()
        stale = [p for p in peers if p not in self._caps or now - self._caps[p].at > CAPS_TTL]
        async with trio.open_nursery() as nursery:
            for peer in stale:
                nursery.start_soon(self._fetch_caps, peer)
        order = list(peers)
        shuffle_providers(order)  # equally loaded providers in random order
        return matching.rank_providers(
            ((peer, self._caps[peer].advertised) for peer in order if peer in self._caps),
            plugin, kind, required)

    async def _fetch_caps(self, peer: str) -> None:
        with contextlib.suppress(errors.MeshError, DecodeError):
            raw = await self._host.direct.request(peer, CAPS_PROTOCOL, b"",
                                                  timeout=CAPS_TIMEOUT)
            self._caps[peer] = _Caps(wire_pb2.TaskCapabilities.FromString(raw),
                                     trio.current_time())


def _check(plugin: str, kind: str, payload: bytes, options: TaskOptions) -> None:
    check_name(kind, "task kind")
    if not plugin:
        raise errors.InvalidArgument("name the plugin whose task this is")
    if len(payload) > MAX_PAYLOAD:
        raise errors.InvalidArgument(f"a task payload is at most {MAX_PAYLOAD} bytes, "
                                     f"not {len(payload)}")
    if not 1 <= options.redundancy <= MAX_REDUNDANCY:
        raise errors.InvalidArgument(f"redundancy must be 1 to {MAX_REDUNDANCY}")
    if not 1 <= options.attempts <= MAX_ATTEMPTS:
        raise errors.InvalidArgument(f"attempts must be 1 to {MAX_ATTEMPTS}")
    if len(options.providers) > MAX_NAMED:
        raise errors.InvalidArgument(f"name at most {MAX_NAMED} providers, not "
                                     f"{len(options.providers)}")
    if not 0 <= options.max_price <= MAX_PRICE:
        raise errors.InvalidArgument(f"max_price must be 0 (unpaid) to {MAX_PRICE}")
    if not 0 < options.timeout <= MAX_TASK_TIMEOUT:
        raise errors.InvalidArgument(f"timeout must be over 0 and at most "
                                     f"{MAX_TASK_TIMEOUT:g} s")


def _named(pool: list[str], named: tuple[str, ...], record: TaskRecord) -> list[str]:
    """The providers the submitter named that are in ``pool``, in its order."""
    usable = [p for p in dict.fromkeys(named) if p in pool]
    if len(usable) < record.options.redundancy:
        raise errors.FailedPrecondition(
            f"{len(usable)} of the {len(set(named))} providers named are connected and "
            f"execute {record.plugin}/{record.kind}{_with(record.options.capabilities)}; "
            f"the task needs {record.options.redundancy}")
    return usable


def _with(capabilities: Iterable[str]) -> str:
    listed = ", ".join(capabilities)
    return f" with {listed}" if listed else ""
