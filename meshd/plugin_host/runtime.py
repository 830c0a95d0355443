"""Runs the node's in-process plugins and routes peers' events to them.

Each plugin runs under its own supervisor (restart with backoff); one direct
protocol, ``plugin-event``, carries every plugin's events, and the runtime
hands each to the handler of the plugin's current start. ``meshctl plugins``
reads :meth:`PluginRuntime.list`.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from google.protobuf.message import DecodeError

from mesh.wire.v1 import wire_pb2
from meshcore.genesis import RequiredPlugin
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.direct import DirectRequestFailed
from meshd.p2p.host import P2PHost
from meshd.plugin.api import Event, Plugin, ReportRule, check_name
from meshd.plugin_host.context import (
    EVENT_PROTOCOL,
    MAX_EVENT_BYTES,
    MAX_EVENT_TIMEOUT,
    Counters,
    PluginContext,
    TaskKind,
    TaskServices,
)
from meshd.plugin_host.loader import Selected
from meshd.plugin_host.signing import PluginSigner
from meshd.plugin_host.supervisor import BACKOFF, RUNNING, Backoff, Health, supervise

log = logging.getLogger(__name__)

INIT_TIMEOUT = 10.0  # a plugin's init must return within this
STOP_TIMEOUT = 5.0  # and its stop


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``meshctl plugins ls|info`` shows it."""

    name: str
    version: str
    kind: str  # "in-process" or "external"
    state: str
    required: str | None  # the genesis range, None when not required
    summary: str
    events: tuple[str, ...]
    task_kinds: tuple[str, ...]
    topics: tuple[str, ...]
    restarts: int
    last_error: str
    last_error_at: float
    started_at: float
    next_start_at: float
    counters: Counters
    pid: int = 0


@dataclass
class HostedPlugin:
    selected: Selected
    health: Health = field(default_factory=Health)
    counters: Counters = field(default_factory=Counters)
    context: PluginContext | None = None  # the running start, once its init returned
    # As the latest start reported them (an external plugin registers its own).
    version: str = ""
    summary: str = ""
    pid: int = 0  # an external plugin's process, while it runs


def plugin_settings(required: Iterable[RequiredPlugin],
                    node: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each plugin's ``ctx.config``: the genesis settings of a required plugin
    (the network's), overridden key by key by the node's own
    ``[plugins.settings.NAME]``."""
    merged = {p.name: p.settings for p in required}
    for name, own in node.items():
        merged[name] = {**merged.get(name, {}), **own}
    return merged


class PluginRuntime:
    """The node's in-process plugins; lives on the trio loop."""

    def __init__(self, selected: Sequence[Selected], host: P2PHost, ledger: Ledger,
                 network_id: str, data_dir: Path, settings: dict[str, dict[str, Any]],
                 backoff: Backoff | None = None, init_timeout: float = INIT_TIMEOUT,
                 signer: PluginSigner | None = None) -> None:
        self._plugins = {s.name: HostedPlugin(s) for s in selected}
        self._host = host
        self._ledger = ledger
        self._network_id = network_id
        self._data_dir = data_dir
        self._settings = settings
        self._backoff = backoff or Backoff()
        self._init_timeout = init_timeout
        self._tasks = TaskServices()
        self._signer = signer  # ctx.sign and ctx.verify (None: refused)

    async def run(self, tasks: TaskServices | None = None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every plugin and serve plugin events until cancelled; started
        once each plugin has finished its first init (or failed it).

        ``tasks``: what the plugins' ``submit_task`` and ``report_task`` reach.
        """
        self._tasks = tasks or TaskServices()
        with self._host.direct.serving(EVENT_PROTOCOL, self._serve_event,
                                       max_request=MAX_EVENT_BYTES,
                                       timeout=MAX_EVENT_TIMEOUT + 1):
            await self._run_plugins(task_status)

    async def _run_plugins(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            for hosted in self._plugins.values():
                nursery.start_soon(supervise, hosted.selected.name,
                                   functools.partial(self._start, hosted), hosted.health,
                                   self._backoff)
            with trio.move_on_after(self._init_timeout + 1):
                for hosted in self._plugins.values():
                    while hosted.health.state not in (RUNNING, BACKOFF):
                        await hosted.health.changed.wait()
            task_status.started()
            # Events keep being answered ("does not run plugin …") with no plugin left.
            await trio.sleep_forever()

    async def _start(self, hosted: HostedPlugin, health: Health) -> None:
        name = hosted.selected.name
        plugin: Plugin = hosted.selected.factory()
        data_dir = self._data_dir / "plugins" / name
        await trio.to_thread.run_sync(_make_private_dir, data_dir)
        ctx: PluginContext | None = None
        try:
            async with trio.open_nursery() as nursery:
                ctx = PluginContext(
                    name=name, version=hosted.selected.version, host=self._host,
                    ledger=self._ledger, network_id=self._network_id, data_dir=data_dir,
                    config=self._settings.get(name, {}), counters=hosted.counters,
                    nursery=nursery, submit=self._tasks.submit,
                    report=self._tasks.report, fail=self._tasks.fail, check=self._tasks.check,
                    record=self._tasks.record, call_here=self._call_here,
                    signer=self._signer)
                try:
                    with trio.fail_after(self._init_timeout):
                        await plugin.init(ctx)
                except trio.TooSlowError:
                    raise PluginHung(f"init did not return within {self._init_timeout:g} s"
                                     ) from None
                hosted.context = ctx
                hosted.version, hosted.summary = ctx.version, ctx.summary
                hosted.pid = ctx.pid
                health.set(RUNNING, started_at=time.time())
                log.info("plugin running", extra={
                    "plugin": name, "version": ctx.version, "kind": hosted.selected.kind,
                    "events": sorted(ctx.registered.events),
                    "task_kinds": sorted(ctx.registered.tasks)})
                nursery.start_soon(plugin.run, ctx, name=f"plugin {name}")
                await trio.sleep_forever()
        finally:
            hosted.context = None
            with trio.CancelScope(shield=True):
                await self._stop(name, plugin, ctx)

    async def _stop(self, name: str, plugin: Plugin, ctx: PluginContext | None) -> None:
        if ctx is None:
            return
        try:
            with trio.fail_after(STOP_TIMEOUT):
                await plugin.stop(ctx)
        except trio.TooSlowError:
            log.warning("plugin stop did not return in time; abandoned", extra={
                "plugin": name, "timeout_seconds": STOP_TIMEOUT})
        except Exception as exc:
            log.warning("plugin stop failed", exc_info=exc, extra={"plugin": name})

    # --- events from peers ---------------------------------------------------

    async def _serve_event(self, peer_id: str, payload: bytes) -> bytes:
        try:
            request = wire_pb2.PluginEvent.FromString(payload)
        except DecodeError:
            raise errors.InvalidArgument("not a PluginEvent") from None
        return await self._deliver(peer_id, request)

    async def call(self, plugin: str, event: str, data: bytes, peer_id: str = "",
                   timeout: float = 10.0, *, caller: str = "") -> bytes:
        """``meshctl plugins call``: an event to this node's plugin or a peer's
        (``caller``: the plugin on this node that sends it, for ``ctx.call``)."""
        check_name(event, "event")
        if not 0 < timeout <= MAX_EVENT_TIMEOUT:
            raise errors.InvalidArgument(f"timeout must be over 0 and at most "
                                         f"{MAX_EVENT_TIMEOUT:g} s")
        request = wire_pb2.PluginEvent(plugin=plugin, event=event, data=data)
        if not peer_id or peer_id == self._host.peer_id:
            if plugin not in self._plugins:
                await self.info(plugin)  # raises NotFound naming the plugins that run
            with trio.move_on_after(timeout):
                return await self._deliver(self._host.peer_id, request, caller)
            raise errors.DeadlineExceeded(f"plugin {plugin!r} did not answer {event!r} "
                                          f"within {timeout:g} s")
        if len(data) > MAX_EVENT_BYTES - 1024:
            raise errors.InvalidArgument(f"event data is {len(data)} bytes; at most "
                                         f"{MAX_EVENT_BYTES - 1024} fit in one request")
        try:
            return await self._host.direct.request(
                peer_id, EVENT_PROTOCOL, request.SerializeToString(), timeout=timeout)
        except DirectRequestFailed as exc:
            raise errors.PeerError(str(exc)) from None

    async def _call_here(self, caller: str, plugin: str, event: str, data: bytes,
                         timeout: float) -> bytes:
        """``ctx.call``: one plugin's event to another on this node, if that one takes
        it from plugins (``ctx.on(..., from_plugins=True)``): the event's peer is this
        node, so an event for the operator alone must not be open to every plugin
        (an external one relays what its peers send). The answer may be as large as
        the handler makes it (no stream in between)."""
        hosted = self._plugins.get(plugin)
        ctx = hosted.context if hosted is not None else None
        if ctx is not None and event in ctx.registered.events \
                and event not in ctx.registered.from_plugins:
            raise errors.InvalidArgument(f"plugin {plugin!r} does not take {event!r} from "
                                         "other plugins (only from peers or its operator)")
        return await self.call(plugin, event, data, "", timeout, caller=caller)

    async def _deliver(self, peer_id: str, request: wire_pb2.PluginEvent,
                       caller: str = "") -> bytes:
        hosted = self._plugins.get(request.plugin)
        if hosted is None:
            raise errors.Unavailable(f"this node does not run plugin {request.plugin!r}")
        ctx = hosted.context
        if ctx is None:
            raise errors.Unavailable(f"plugin {request.plugin!r} is not running on this node "
                                     f"now ({hosted.health.state}); try again later")
        registered = ctx.registered.events.get(request.event)
        if registered is None:
            raise errors.InvalidArgument(f"plugin {request.plugin!r} does not handle event "
                                         f"{request.event!r} (it handles: "
                                         f"{', '.join(sorted(ctx.registered.events)) or 'none'})")
        handler, timeout = registered
        try:
            ctx.serving.acquire_nowait()
        except trio.WouldBlock:
            hosted.counters.events_refused_busy += 1
            raise errors.Unavailable(f"plugin {request.plugin!r} is busy; try again "
                                     "later") from None
        try:
            with trio.fail_after(timeout):
                answer = await handler(Event(peer_id, request.event, request.data, caller))
        except errors.InvalidArgument:
            hosted.counters.event_errors += 1
            raise
        except trio.TooSlowError:
            hosted.counters.event_errors += 1
            raise errors.Unavailable(f"plugin {request.plugin!r} did not answer "
                                     f"{request.event!r} within {timeout:g} s") from None
        except Exception:
            hosted.counters.event_errors += 1
            ctx.log.exception("event handler failed", extra={
                "plugin": request.plugin, "event": request.event, "peer_id": peer_id})
            raise errors.Unavailable(f"plugin {request.plugin!r} failed on "
                                     f"{request.event!r} (see that node's log)") from None
        finally:
            ctx.serving.release()
        if answer is not None and not isinstance(answer, bytes | bytearray | memoryview):
            hosted.counters.event_errors += 1
            ctx.log.error("event handler returned %s, not bytes", type(answer).__name__)
            raise errors.Unavailable(f"plugin {request.plugin!r} answered {request.event!r} "
                                     "with something other than bytes (a bug in the plugin)")
        hosted.counters.events_served += 1
        return bytes(answer or b"")

    # --- views -----------------------------------------------------------------

    def health(self) -> list[tuple[str, str, int, bool]]:
        """(name, state, restarts, external) of each plugin (metrics)."""
        return [(name, hosted.health.state, hosted.health.restarts,
                 hosted.selected.kind == "external")
                for name, hosted in sorted(self._plugins.items())]

    def task_kind(self, plugin: str, kind: str) -> TaskKind | None:
        """The running handler of ``plugin``'s task ``kind`` on this node."""
        hosted = self._plugins.get(plugin)
        ctx = hosted.context if hosted is not None else None
        return ctx.registered.tasks.get(kind) if ctx is not None else None

    def report_rule(self, plugin: str, kind: str) -> ReportRule | None:
        """The running rule by which ``plugin`` judges peers' reports of ``kind``."""
        hosted = self._plugins.get(plugin)
        ctx = hosted.context if hosted is not None else None
        return ctx.registered.reports.get(kind) if ctx is not None else None

    def task_kinds(self) -> list[tuple[str, str]]:
        """(plugin, kind) of every task kind this node executes now."""
        return sorted((h.selected.name, kind) for h in self._plugins.values()
                      if h.context is not None for kind in h.context.registered.tasks)

    async def list(self) -> list[PluginInfo]:
        return [_info(h) for _, h in sorted(self._plugins.items())]

    async def info(self, name: str) -> PluginInfo:
        hosted = self._plugins.get(name)
        if hosted is None:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise errors.NotFound(f"no plugin {name!r} runs on this node (running: {known})")
        return _info(hosted)


class PluginHung(Exception):
    """A plugin did not return from a call that must return promptly."""


def _info(hosted: HostedPlugin) -> PluginInfo:
    ctx = hosted.context
    health = hosted.health
    selected = hosted.selected
    return PluginInfo(
        name=selected.name, version=hosted.version or selected.version, kind=selected.kind,
        state=health.state, required=selected.required,
        summary=hosted.summary or selected.summary,
        events=tuple(sorted(ctx.registered.events)) if ctx else (),
        task_kinds=tuple(sorted(ctx.registered.tasks)) if ctx else (),
        topics=tuple(sorted(ctx.registered.topics)) if ctx else (),
        restarts=health.restarts, last_error=health.last_error,
        last_error_at=health.last_error_at,
        started_at=health.started_at if health.state == RUNNING else 0.0,
        next_start_at=health.next_start_at if health.state == BACKOFF else 0.0,
        counters=hosted.counters, pid=hosted.pid if health.state == RUNNING else 0)


def _make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
