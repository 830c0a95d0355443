"""mesh.plugins.v1.PluginsService: forwards to the node's PluginRuntime."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshd.api.convert import timestamp
from meshd.plugin_host.runtime import PluginInfo, PluginRuntime
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import unary

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

DEFAULT_CALL_TIMEOUT_MS = 10_000
_KINDS = {"in-process": plugins_pb2.PLUGIN_KIND_IN_PROCESS,
          "external": plugins_pb2.PLUGIN_KIND_EXTERNAL}


class PluginsServicer(plugins_pb2_grpc.PluginsServiceServicer):
    def __init__(self, bridge: TrioBridge, plugins: PluginRuntime) -> None:
        self._bridge = bridge
        self._plugins = plugins

    async def ListPlugins(self, request: plugins_pb2.ListPluginsRequest,
                          context: Context) -> plugins_pb2.ListPluginsResponse:
        infos = await unary(context, self._bridge, self._plugins.list)
        return plugins_pb2.ListPluginsResponse(plugins=[plugin_pb(i) for i in infos])

    async def GetPlugin(self, request: plugins_pb2.GetPluginRequest,
                        context: Context) -> plugins_pb2.GetPluginResponse:
        info = await unary(context, self._bridge, self._plugins.info, request.name)
        return plugins_pb2.GetPluginResponse(plugin=plugin_pb(info))

    async def CallPlugin(self, request: plugins_pb2.CallPluginRequest,
                         context: Context) -> plugins_pb2.CallPluginResponse:
        data = await unary(context, self._bridge, self._plugins.call, request.plugin,
                           request.event, request.data, request.peer_id,
                           (request.timeout_ms or DEFAULT_CALL_TIMEOUT_MS) / 1000)
        return plugins_pb2.CallPluginResponse(data=data)


def plugin_pb(info: PluginInfo) -> plugins_pb2.Plugin:
    c = info.counters
    return plugins_pb2.Plugin(
        name=info.name, version=info.version, kind=_KINDS[info.kind], state=info.state,
        required=info.required is not None, required_range=info.required or "",
        summary=info.summary, events=info.events, task_kinds=info.task_kinds,
        topics=info.topics, restarts=info.restarts, last_error=info.last_error,
        last_error_at=timestamp(info.last_error_at), started_at=timestamp(info.started_at),
        next_start_at=timestamp(info.next_start_at),
        pid=info.pid, counters=plugins_pb2.PluginCounters(
            events_served=c.events_served, event_errors=c.event_errors,
            events_refused_busy=c.events_refused_busy, requests_sent=c.requests_sent,
            published=c.published, publish_refused=c.publish_refused))
