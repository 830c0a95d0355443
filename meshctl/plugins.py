"""meshctl plugins: the business-logic plugins the node runs."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import click

from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_INVALID, fail, json_option, with_client
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
        "next_start_at": timestamp_text(p.next_start_at), "pid": p.pid,
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
        *((("Process", p["pid"]),) if p["kind"] == "external" else ()),
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


MAX_CALL_TIMEOUT = 60.0


@plugins.command()
@click.argument("plugin")
@click.argument("event")
@click.argument("data", required=False)
@click.option("--file", "data_file", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              help="Read the event's data from FILE.")
@click.option("--peer", "peer_id", default="", metavar="PEER_ID",
              help="Ask this peer's copy of the plugin (default: this node's).")
@click.option("--call-timeout", type=click.FloatRange(0.001, MAX_CALL_TIMEOUT), default=10.0,
              show_default=True, help="Seconds to wait for the answer.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the answer's bytes to FILE.")
@json_option
@with_client
def call(client: MeshClient, plugin: str, event: str, data: str | None, data_file: Path | None,
         peer_id: str, call_timeout: float, output: Path | None, as_json: bool) -> None:
    """Send EVENT with DATA (text) or --file to PLUGIN, and print its answer.

    The plugin's handler sees the call as a request from this node, exactly
    as from a peer's copy of the plugin: a way to script and test plugins.

    \b
    Example:
      meshctl plugins call js-hash ECHO hello --peer 12D3KooW...
    """
    if data is not None and data_file is not None:
        fail("give the data either as DATA or with --file, not both", EXIT_INVALID)
    payload = data_file.read_bytes() if data_file is not None else (data or "").encode()
    request = plugins_pb2.CallPluginRequest(plugin=plugin, event=event, data=payload,
                                            peer_id=peer_id,
                                            timeout_ms=int(call_timeout * 1000))
    answer = client.unary(_stub(client).CallPlugin, request, timeout=call_timeout + 5).data
    if output is not None:
        output.write_bytes(answer)
    if as_json:
        emit({"plugin": plugin, "event": event, "peer_id": peer_id,
              "answer_base64": base64.b64encode(answer).decode()}, True, str)
    elif output is None:
        try:
            text = answer.decode("utf-8")
        except UnicodeDecodeError:
            text = f"{len(answer)} bytes (binary; -o FILE writes them)"
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the package. Default: ./NAME.")
@click.option("--lang", type=click.Choice(["python", "js"]), default="python", show_default=True,
              help="python: an entry-point plugin in meshd's process; js: an external "
                   "plugin in JavaScript (Node 18+), which meshd runs as a process.")
@json_option
def new(name: str, directory: Path | None, lang: str, as_json: bool) -> None:
    """Write a plugin package to start from, with a test that its work earns.

    \b
    meshctl plugins new weather
    cd weather && pip install -e . && python -m pytest tests
    meshctl plugins new weather --lang js
    cd weather && npm ci && python -m pytest tests

    The plugin has an event handler, a task kind with its verify rule, and a
    report/accept pair; its test starts a minting local network (meshd.testing)
    and checks that a task earns its provider a share of the tasks pool.
    """
    from meshctl import scaffold, scaffold_javascript

    if not scaffold.NAME.fullmatch(name):
        fail(f"{name!r} is not a plugin name: a lowercase letter, then up to 40 lowercase "
             "letters, digits or '-'", EXIT_INVALID)
    if lang == "js" and (missing := scaffold_javascript.kit_missing()):
        fail("--lang js copies Mesh's JavaScript plugin client from its source tree, and "
             f"{', '.join(map(str, missing))} is missing: run meshctl from a clone of Mesh "
             "(make setup)")
    target = directory or Path(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        fail(f"{target} exists and is not an empty directory; choose another --dir",
             EXIT_INVALID)
    try:
        written = scaffold.write(name, target, lang)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}")
    install = "npm ci" if lang == "js" else "pip install -e ."
    emit({"name": name, "directory": str(target), "files": [str(p) for p in written],
          "language": lang}, as_json,
         lambda r: "\n".join([f"Wrote the {name} plugin in {r['directory']}:",
                              *(f"  {p}" for p in r["files"]), "",
                              f"Next: cd {r['directory']} && {install} && "
                              "python -m pytest tests"]))
