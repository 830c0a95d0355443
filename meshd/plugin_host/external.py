"""External plugins: a process in any gRPC language, hosted like an in-process plugin.

An :class:`ExternalPlugin` is, to the runtime, a plugin like any other: each
start gets a :class:`PluginContext`, restarts with backoff, and shows in
``meshctl plugins``. One start:

1. serves ``mesh.pluginhost.v1.PluginHost`` on a Unix socket of its own;
2. launches the configured command (:mod:`meshd.plugin_host.process`) with the
   socket's address in ``MESH_PLUGIN_ADDRESS``;
3. waits for the plugin's ``Register`` (within ``plugins.init_timeout``),
   checks its name and version, and registers forwarding handlers for its
   events and task kinds on the context;
4. pings it; a start ends when the process exits, its stream ends, or it
   misses health checks for ``plugins.health_timeout`` seconds.

Everything the plugin asks for (requests to peers, publish, subscribe, task
submission and reports, ledger reads) goes through the same context, with the same limits,
as for an in-process plugin.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio

from mesh.pluginhost.v1 import pluginhost_pb2
from meshcore.genesis import RequiredPlugin
from meshd import errors
from meshd.config import ExternalCommand
from meshd.ledger.standing import wire_fields
from meshd.p2p.dht import DEFAULT_PROVIDERS
from meshd.plugin.api import (
    Context,
    Event,
    Plugin,
    TaskOptions,
    TaskOutcome,
    TaskReport,
    TaskRequest,
    TaskResult,
    TaskVerifier,
    check_name,
)
from meshd.plugin_host.context import MAX_EVENT_TIMEOUT, PluginContext
from meshd.plugin_host.grpc_server import serve_plugin_host
from meshd.plugin_host.loader import Selected, version_in_range
from meshd.plugin_host.process import PluginProcess
from meshd.rpc.status import status_for

log = logging.getLogger(__name__)

OUTBOX = 256  # messages to the plugin not yet written to its stream
MAX_CALLS_IN_FLIGHT = 64  # the plugin's own calls served at once; more wait
DEFAULT_EVENT_TIMEOUT_MS = 10_000
DEFAULT_TASK_TIMEOUT_MS, DEFAULT_ATTEMPTS = 30_000, 3
PINGS_PER_TIMEOUT = 3  # health checks sent within one plugins.health_timeout
EXIT_REPORT_WAIT = 1.0  # after the stream ends, wait this long to report the exit status


class PluginGone(Exception):
    """The plugin's stream ended or it stopped answering health checks."""


class Session:
    """The trio side of one accepted Connect stream."""

    def __init__(self, name: str, register: pluginhost_pb2.Register) -> None:
        self.name = name
        self.register = register
        self._outbox_send, self._outbox = trio.open_memory_channel[
            pluginhost_pb2.HostMessage](OUTBOX)
        self._pending: dict[int, trio.MemorySendChannel[pluginhost_pb2.PluginMessage]] = {}
        self._ids = itertools.count(1)
        self._calls = trio.Semaphore(MAX_CALLS_IN_FLIGHT)
        self._nursery: trio.Nursery | None = None
        self._context: Context | None = None
        self.last_pong = trio.current_time()
        self.ended = trio.Event()
        self.end_reason = ""

    def attach(self, context: Context, nursery: trio.Nursery) -> None:
        """Start serving the plugin's calls through ``context``."""
        self._context = context
        self._nursery = nursery

    # --- the stream (called through the bridge) ----------------------------

    async def outgoing(self) -> AsyncIterator[pluginhost_pb2.HostMessage]:
        try:
            async for message in self._outbox:
                yield message
        finally:
            await self.close("the stream to the plugin closed")

    async def deliver(self, message: pluginhost_pb2.PluginMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind in ("event_answer", "task_answer", "verify_answer", "report_answer"):
            answer = getattr(message, kind)
            waiting = self._pending.pop(answer.call_id, None)
            if waiting is not None:  # else: the call timed out meanwhile
                waiting.send_nowait(message)
        elif kind == "pong":
            self.last_pong = trio.current_time()
        elif kind == "call":
            if self._nursery is None or self._context is None:
                raise errors.FailedPrecondition("wait for Welcome before making calls")
            await self._calls.acquire()
            self._nursery.start_soon(self._serve_call, message.call)
        else:
            await self.close(f"the plugin sent {kind or 'an empty message'} after Register")
            raise errors.InvalidArgument(f"unexpected {kind or 'empty message'} after Register")

    async def close(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._outbox_send.close()
        for waiting in self._pending.values():
            waiting.close()
        self._pending.clear()

    # --- meshd → plugin ----------------------------------------------------

    async def send(self, message: pluginhost_pb2.HostMessage) -> None:
        try:
            await self._outbox_send.send(message)
        except trio.ClosedResourceError:
            raise errors.Unavailable(f"plugin {self.name!r} is not connected: "
                                     f"{self.end_reason}") from None

    def ping(self, nonce: int) -> None:
        # A full outbox means the plugin is not reading: the health timeout tells.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._outbox_send.send_nowait(pluginhost_pb2.HostMessage(ping=pluginhost_pb2.Ping(nonce=nonce)))

    async def call(self, build: Any) -> pluginhost_pb2.PluginMessage:
        """Send ``build(call_id)`` and wait for the plugin's answer to it."""
        call_id = next(self._ids)
        answer_send, answer_receive = trio.open_memory_channel[pluginhost_pb2.PluginMessage](1)
        self._pending[call_id] = answer_send
        try:
            await self.send(build(call_id))
            try:
                return await answer_receive.receive()
            except trio.EndOfChannel:
                raise errors.Unavailable(f"plugin {self.name!r} went away: "
                                         f"{self.end_reason}") from None
        finally:
            self._pending.pop(call_id, None)

    async def event(self, event: Event) -> bytes:
        answer = (await self.call(lambda call_id: pluginhost_pb2.HostMessage(
            event=pluginhost_pb2.EventCall(call_id=call_id, peer_id=event.peer,
                                           event=event.name, data=event.data,
                                           caller=event.caller)))
        ).event_answer
        if answer.error:
            raise errors.InvalidArgument(answer.error)
        return answer.data

    async def task(self, request: TaskRequest) -> TaskResult:
        answer = (await self.call(lambda call_id: pluginhost_pb2.HostMessage(
            task=pluginhost_pb2.TaskCall(call_id=call_id, task_id=request.task_id,
                                         kind=request.kind, payload=request.payload,
                                         requester=request.requester)))).task_answer
        if answer.error:
            raise errors.InvalidArgument(answer.error)
        return TaskResult(answer.result, answer.proof, answer.units or 1)

    async def verify(self, request: TaskRequest, result: TaskResult) -> bool:
        answer = (await self.call(lambda call_id: pluginhost_pb2.HostMessage(
            verify=pluginhost_pb2.VerifyCall(
                call_id=call_id, task_id=request.task_id, kind=request.kind,
                payload=request.payload, requester=request.requester, result=result.result,
                proof=result.proof, units=result.units)))).verify_answer
        return answer.valid

    async def judge_report(self, report: TaskReport) -> bool:
        answer = (await self.call(lambda call_id: pluginhost_pb2.HostMessage(
            report=pluginhost_pb2.ReportCall(
                call_id=call_id, provider=report.provider, kind=report.kind,
                detail=report.detail, units=report.units, claim=report.claim,
                signature=report.signature)))).report_answer
        return answer.accept

    # --- plugin → meshd ----------------------------------------------------

    async def _serve_call(self, call: pluginhost_pb2.Call) -> None:
        result = pluginhost_pb2.Result(call_id=call.call_id)
        try:
            await self._perform(call, result)
        except Exception as exc:  # every failure is the plugin's answer, not meshd's
            if not isinstance(exc, errors.MeshError):  # a bug here: the message says see the log
                log.exception("a plugin's call failed inside meshd", extra={
                    "plugin": self.name, "call": call.WhichOneof("kind")})
            code, message = status_for(exc)
            result = pluginhost_pb2.Result(call_id=call.call_id,
                                     error=pluginhost_pb2.Error(code=code.name, message=message))
        finally:
            self._calls.release()
        if call.WhichOneof("kind") != "subscribe" or result.HasField("error"):
            await self._answer(result)

    async def _answer(self, result: pluginhost_pb2.Result) -> None:
        with contextlib.suppress(errors.Unavailable):  # the stream ended: nobody waits
            await self.send(pluginhost_pb2.HostMessage(result=result))

    async def _perform(self, call: pluginhost_pb2.Call, result: pluginhost_pb2.Result) -> None:
        ctx = self._context
        assert ctx is not None
        kind = call.WhichOneof("kind")
        if kind == "request":
            r = call.request
            timeout = _seconds(r.timeout_ms, DEFAULT_EVENT_TIMEOUT_MS)
            result.data = await ctx.request(r.peer_id, r.event, r.data, timeout=timeout)
        elif kind == "publish":
            await ctx.publish(call.publish.topic, call.publish.data)
        elif kind == "subscribe":
            assert self._nursery is not None
            await self._nursery.start(self._subscription, call.call_id, call.subscribe.topic)
        elif kind == "submit_task":
            s = call.submit_task
            outcome = await ctx.submit_task(s.kind, s.payload, TaskOptions(
                redundancy=s.redundancy or 1, capabilities=tuple(s.capabilities),
                timeout=_seconds(s.timeout_ms, DEFAULT_TASK_TIMEOUT_MS),
                attempts=s.attempts or DEFAULT_ATTEMPTS, providers=tuple(s.providers),
                max_price=s.max_price))
            result.outcome.CopyFrom(_outcome_pb(outcome))
        elif kind == "report_task":
            report = call.report_task
            receipt = await ctx.report_task(report.peer_id, report.kind, report.detail,
                                            units=report.units or 1, note=report.note)
            result.data = bytes.fromhex(receipt)
        elif kind == "report_failure":
            failure = call.report_failure
            verdict = await ctx.report_failure(TaskReport(
                failure.provider, failure.kind, failure.detail, failure.units, failure.claim,
                failure.signature), failure.reason)
            result.data = bytes.fromhex(verdict)
        elif kind == "list_peers":
            result.peers.peer_ids.extend(ctx.peers())
        elif kind == "read_ledger":
            peer_id = call.read_ledger.peer_id
            result.ledger.CopyFrom(pluginhost_pb2.LedgerState(
                final_epoch=ctx.ledger.final_epoch(), clock_epoch=ctx.ledger.clock_epoch(),
                balance=await ctx.ledger.balance(peer_id),
                bonded=await ctx.ledger.bonded(peer_id), base_price=ctx.ledger.base_price(),
                spot_check_bps=round(ctx.ledger.spot_check_rate() * 10_000)))
        elif kind == "call_plugin":
            c = call.call_plugin
            result.data = await ctx.call(c.plugin, c.event, c.data,
                                         timeout=_seconds(c.timeout_ms, DEFAULT_EVENT_TIMEOUT_MS))
        elif kind == "provider_record":
            record = ctx.provider_record(call.provider_record.peer_id)
            result.record.CopyFrom(pluginhost_pb2.ProviderRecord() if record is None else
                                   pluginhost_pb2.ProviderRecord(
                                       known=True, first_seen=record.first_seen,
                                       done=record.done, failed=record.failed,
                                       wrong=record.wrong))
        elif kind == "standing":
            standing = await ctx.ledger.standing(call.standing.peer_id)
            result.standing.CopyFrom(pluginhost_pb2.LedgerStanding(**wire_fields(standing)))
        elif kind == "sign":
            result.data = ctx.sign(call.sign.data)
        elif kind == "verify":
            v = call.verify
            result.verified = ctx.verify(v.peer_id, v.data, v.signature)
        elif kind == "dht_provide":
            await ctx.dht.provide(call.dht_provide.key)
        elif kind == "dht_find_providers":
            find = call.dht_find_providers
            found = await ctx.dht.find_providers(find.key, find.count or DEFAULT_PROVIDERS)
            result.providers.providers.extend(
                pluginhost_pb2.Provider(peer_id=p.peer_id, addrs=p.addrs) for p in found)
        elif kind == "dht_put":
            await ctx.dht.put(call.dht_put.key, call.dht_put.value)
        elif kind == "dht_get":
            result.data = await ctx.dht.get(call.dht_get.key)
        else:
            raise errors.InvalidArgument(f"unknown call {kind or '(empty)'}")

    async def _subscription(self, call_id: int, topic: str, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
        """Forward ``topic`` to the plugin for as long as this start lives."""
        assert self._context is not None
        async with self._context.subscribe(topic) as messages:
            task_status.started()
            await self._answer(pluginhost_pb2.Result(call_id=call_id))
            try:
                async for message in messages:
                    await self.send(pluginhost_pb2.HostMessage(message=pluginhost_pb2.TopicMessage(
                        topic=message.topic, data=message.data, sender=message.sender)))
            except errors.Unavailable:
                pass  # the stream ended; so does this start


class Hub:
    """The trio side of one start's socket: accepts the plugin's registration."""

    def __init__(self, name: str, required: str | None) -> None:
        self._name = name
        self._required = required
        self._session: Session | None = None
        self._accepted_send, self._accepted = trio.open_memory_channel[Session | str](1)

    async def open_session(self, register: pluginhost_pb2.Register) -> Session:
        if self._session is not None and not self._session.ended.is_set():
            raise errors.FailedPrecondition(f"plugin {self._name!r} already has a stream open")
        problem = self._registration_problem(register)
        if problem:
            self._report(problem)
            if "genesis" in problem:
                raise errors.FailedPrecondition(problem)
            raise errors.InvalidArgument(problem)
        self._session = Session(self._name, register)
        self._report(self._session)
        return self._session

    def _report(self, accepted: Session | str) -> None:
        with contextlib.suppress(trio.WouldBlock):  # only the first one is waited for
            self._accepted_send.send_nowait(accepted)

    async def wait_session(self) -> Session:
        """The accepted session; raises PluginRefused when the registration was refused."""
        accepted = await self._accepted.receive()
        if isinstance(accepted, str):
            raise PluginRefused(accepted)
        return accepted

    def _registration_problem(self, register: pluginhost_pb2.Register) -> str:
        if register.name != self._name:
            return (f"the plugin registered as {register.name!r}, but meshd started it as "
                    f"{self._name!r} (MESH_PLUGIN_NAME)")
        if not version_in_range(register.version, self._required):
            return (f"plugin {self._name!r} registered version {register.version or '(none)'}, "
                    f"but the genesis requires {self._name}{self._required}")
        try:
            for event in register.events:
                check_name(event.name, "event")
                if event.timeout_ms > MAX_EVENT_TIMEOUT * 1000:
                    return f"event {event.name!r}: timeout_ms is at most {MAX_EVENT_TIMEOUT:g} s"
            for kind in register.task_kinds:
                check_name(kind.name, "task kind")
            for name in register.report_kinds:
                check_name(name, "report kind")
        except errors.InvalidArgument as exc:
            return str(exc)
        return ""


class PluginRefused(Exception):
    """meshd refused the plugin's registration."""


class ExternalPlugin(Plugin):
    """The runtime's handle on one configured external plugin (one instance per start)."""

    def __init__(self, command: ExternalCommand, required: str | None, *,
                 data_dir: Path, ping_interval: float, health_timeout: float) -> None:
        self._command = command
        self._required = required
        self._socket = data_dir / "plugins" / f"{command.name}.sock"
        self._ping_interval = ping_interval
        self._health_timeout = health_timeout
        self._process: PluginProcess | None = None
        self._session: Session | None = None

    async def init(self, ctx: Context) -> None:
        assert isinstance(ctx, PluginContext)  # the runtime's own, with its nursery
        name = self._command.name
        hub = Hub(name, self._required)
        nursery = ctx.nursery
        await nursery.start(serve_plugin_host, self._socket, hub)
        env = {**os.environ, **self._command.env, "MESH_PLUGIN_ADDRESS": f"unix:{self._socket}",
               "MESH_PLUGIN_NAME": name, "MESH_PLUGIN_DATA_DIR": str(ctx.data_dir)}
        self._process = PluginProcess(name, self._command.command, env, self._command.cwd)
        await nursery.start(self._process.run)
        ctx.pid = self._process.pid
        with trio.CancelScope() as waiting:
            nursery.start_soon(_cancel_when, self._process.exited, waiting)
            session = await hub.wait_session()
        if waiting.cancelled_caught:  # the process died before it registered
            await trio.sleep_forever()  # its run() raises PluginExited into this start
        register = session.register
        ctx.version, ctx.summary = register.version, register.summary
        for event in register.events:
            ctx.on(event.name, session.event,
                   timeout=_seconds(event.timeout_ms, DEFAULT_EVENT_TIMEOUT_MS),
                   from_plugins=event.from_plugins)
        for kind in register.task_kinds:
            verify: TaskVerifier | None = session.verify if kind.verifies else None
            ctx.handle_task(kind.name, session.task, verify=verify)
        for report_kind in register.report_kinds:
            ctx.accept_reports(report_kind, session.judge_report)
        session.attach(ctx, nursery)
        await session.send(pluginhost_pb2.HostMessage(welcome=pluginhost_pb2.Welcome(
            peer_id=ctx.peer_id, network_id=ctx.network_id, data_dir=str(ctx.data_dir),
            config_json=json.dumps(dict(ctx.config), default=str),
            ping_interval_ms=int(self._ping_interval * 1000),
            health_timeout_ms=int(self._health_timeout * 1000))))
        self._session = session

    async def run(self, ctx: Context) -> None:
        session, process = self._session, self._process
        assert session is not None and process is not None
        for nonce in itertools.count(1):
            with trio.move_on_after(self._ping_interval):
                await session.ended.wait()
                with trio.move_on_after(EXIT_REPORT_WAIT):
                    await process.exited.wait()
                    # Its run() raises PluginExited, which says how it ended:
                    # one error for this start, not two.
                    await trio.sleep_forever()
                raise PluginGone(session.end_reason)
            silent = trio.current_time() - session.last_pong
            if silent > self._health_timeout:
                raise PluginGone(f"the plugin answered no health check for {silent:.0f} s")
            session.ping(nonce)

    async def stop(self, ctx: Context) -> None:
        if self._session is not None:
            await self._session.close("meshd is stopping")


def select_external(commands: Sequence[ExternalCommand], required: Sequence[RequiredPlugin],
                    data_dir: Path, health_timeout: float) -> list[Selected]:
    """The configured external plugins, as the runtime runs them."""
    ranges = {r.name: r.version for r in required}
    return [Selected(name=c.name, version="", distribution="", summary=" ".join(c.command),
                     factory=functools.partial(
                         ExternalPlugin, c, ranges.get(c.name), data_dir=data_dir,
                         ping_interval=health_timeout / PINGS_PER_TIMEOUT,
                         health_timeout=health_timeout),
                     required=ranges.get(c.name), kind="external")
            for c in commands]


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _seconds(ms: int, default_ms: int) -> float:
    return (ms or default_ms) / 1000


def _outcome_pb(outcome: TaskOutcome) -> pluginhost_pb2.TaskOutcome:
    return pluginhost_pb2.TaskOutcome(task_id=outcome.task_id, kind=outcome.kind,
                                      state=outcome.state, result=outcome.result,
                                      providers=list(outcome.providers), error=outcome.error)


