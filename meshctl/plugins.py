"""meshctl plugins: the business-logic plugins the node runs."""

from __future__ import annotations

from typing import Any

import click

from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import json_option, with_client
from meshctl.output import emit, fields, table, timestamp_text


def plugin_to_dict(p: plugins_pb2.Plugin) -> dict[str, Any]:
    """The stable JSON shape of a plugin."""
    c = p.counters
    return {
        "name": p.name, "version": p.version,
        "kind": plugins_pb2.PluginKind.Name(p.kind).removeprefix("PLUGIN_KIND_")
        .lower().replace("_", "-"),
        "state": p.state, "required": p.required, "required_range": p.required_range,
        "summary": p.summary, "events": list(p.events), "task_kinds": list(p.task_kinds),
        "topics": list(p.topics), "restarts": p.restarts, "last_error": p.last_error,
        "last_error_at": timestamp_text(p.last_error_at),
        "started_at": timestamp_text(p.started_at),
        "next_start_at": timestamp_text(p.next_start_at),
        "counters": {"events_served": c.events_served, "event_errors": c.event_errors,
                     "events_refused_busy": c.events_refused_busy,
                     "requests_sent": c.requests_sent, "published": c.published,
                     "publish_refused": c.publish_refused},
    }


def _required(p: dict[str, Any]) -> str:
    if not p["required"]:
        return "no"
    return f"yes ({p['required_range']})" if p["required_range"] else "yes"


def _table(plugins: list[dict[str, Any]]) -> str:
    if not plugins:
        return ("no plugins run on this node (the genesis requires none; enable installed "
                "ones with plugins.enable in meshd's config)")
    rows = [("NAME", "VERSION", "KIND", "STATE", "REQUIRED", "RESTARTS", "HANDLES")]
    rows += [(p["name"], p["version"], p["kind"], p["state"], _required(p),
              str(p["restarts"]), ", ".join(p["events"] + p["task_kinds"]) or "-")
             for p in plugins]
    return table(rows)


def _details(p: dict[str, Any]) -> str:
    c = p["counters"]
    rows: list[tuple[str, Any]] = [
        ("Plugin", f"{p['name']} {p['version']} ({p['kind']})"),
        ("Summary", p["summary"] or "-"),
        ("State", p["state"] + (f" (next start {p['next_start_at']})"
                                if p["next_start_at"] else "")),
        ("Required", _required(p)),
        ("Running since", p["started_at"] or "-"),
        ("Events", p["events"] or "-"),
        ("Task kinds", p["task_kinds"] or "-"),
        ("Topics", p["topics"] or "-"),
        ("Restarts", p["restarts"]),
        ("Last error", f"{p['last_error']} ({p['last_error_at']})" if p["last_error"] else "-"),
        ("Events served", f"{c['events_served']} ({c['event_errors']} failed, "
                          f"{c['events_refused_busy']} refused busy)"),
        ("Requests sent", c["requests_sent"]),
        ("Published", f"{c['published']} ({c['publish_refused']} refused over rate)"),
    ]
    return fields(rows)


def _stub(client: MeshClient) -> plugins_pb2_grpc.PluginsServiceStub:
    return plugins_pb2_grpc.PluginsServiceStub(client.channel())


@click.group()
def plugins() -> None:
    """Show the business-logic plugins this node runs."""


@plugins.command("ls")
@json_option
@with_client
def list_plugins(client: MeshClient, as_json: bool) -> None:
    """List the plugins this node runs: version, state, what they handle."""
    response = client.unary(_stub(client).ListPlugins, plugins_pb2.ListPluginsRequest())
    emit([plugin_to_dict(p) for p in response.plugins], as_json, _table)


@plugins.command()
@click.argument("name")
@json_option
@with_client
def info(client: MeshClient, name: str, as_json: bool) -> None:
    """Show plugin NAME: its events, task kinds, restarts and traffic."""
    response = client.unary(_stub(client).GetPlugin, plugins_pb2.GetPluginRequest(name=name))
    emit(plugin_to_dict(response.plugin), as_json, _details)
