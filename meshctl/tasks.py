"""meshctl tasks: submit tasks to the network and follow them."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_ERROR, EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, emit_stream, fields, table, timestamp_text

MAX_TIMEOUT = 300.0



def task_to_dict(task: tasks_pb2.Task) -> dict[str, Any]:
    """The stable JSON shape of a task."""
    return {
        "task_id": task.task_id, "plugin": task.plugin, "kind": task.kind,
        "state": task.state, "error": task.error, "payload_size": task.payload_size,
        "redundancy": task.redundancy, "capabilities": list(task.capabilities),
        "submitted_at": timestamp_text(task.submitted_at),
        "finished_at": timestamp_text(task.finished_at),
        "result_base64": base64.b64encode(task.result).decode("ascii"),
        "providers": list(task.providers),
        "max_price": task.max_price or "0", "lock": task.lock,
        "attempts": [{"provider": a.provider, "state": a.state, "error": a.error,
                      "result_digest": a.result_digest, "units": a.units,
                      "started_at": timestamp_text(a.started_at),
                      "finished_at": timestamp_text(a.finished_at),
                      "receipt": a.receipt, "verdicts": list(a.verdicts),
                      "price": a.price or "0"}
                     for a in task.attempts],
    }


def _result_text(t: dict[str, Any]) -> str:
    data = base64.b64decode(t["result_base64"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{len(data)} bytes (binary; -o FILE writes them)"
    return text if text.isprintable() else f"{len(data)} bytes (-o FILE writes them)"


def _details(t: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = [
        ("Task", t["task_id"]), ("Kind", f"{t['plugin']}/{t['kind']}"),
        ("State", t["state"] + (f": {t['error']}" if t["error"] else "")),
        ("Payload", f"{t['payload_size']} bytes"),
        ("Redundancy", t["redundancy"]), ("Capabilities", t["capabilities"] or "-"),
        ("Submitted", t["submitted_at"]), ("Finished", t["finished_at"] or "-"),
        ("Providers", t["providers"] or "-"),
    ]
    if t["lock"]:
        rows.append(("Paid", f"at most {t['max_price']} per execution, out of lock "
                             f"{t['lock'][:16]}"))
    if t["state"] == "done":
        rows.append(("Result", _result_text(t)))
    return fields(rows) + attempts_table(t["attempts"])


def attempts_table(attempts: list[dict[str, Any]]) -> str:
    """A task's attempts as ``tasks show`` prints them ("" when it has none)."""
    if not attempts:
        return ""
    lines = [("PROVIDER", "STATE", "UNITS", "PRICE", "RECEIPT", "VERDICTS", "ERROR")]
    lines += [(a["provider"], a["state"], str(a["units"]), a["price"],
               a["receipt"][:16] or "-", str(len(a["verdicts"])), a["error"] or "-")
              for a in attempts]
    return "\n\n" + table(lines)


def _table(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "no tasks submitted from this node since meshd started (meshctl tasks submit)"
    rows = [("TASK", "KIND", "STATE", "PROVIDERS", "SUBMITTED")]
    rows += [(t["task_id"][:16], f"{t['plugin']}/{t['kind']}", t["state"],
              str(len(t["providers"])), t["submitted_at"]) for t in tasks]
    return table(rows)


def _stub(client: MeshClient) -> tasks_pb2_grpc.TasksServiceStub:
    return tasks_pb2_grpc.TasksServiceStub(client.channel())


@click.group()
def tasks() -> None:
    """Submit tasks to the network's providers and follow them."""


@tasks.command()
@click.argument("plugin")
@click.argument("kind")
@click.argument("payload", required=False)
@click.option("--file", "payload_file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="Read the payload from FILE ('-' is not accepted: give a path).")
@click.option("-k", "--redundancy", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Executions on distinct providers; results are compared.")
@click.option("-c", "--capability", "capabilities", multiple=True,
              help="A capability every provider must advertise (repeatable).")
@click.option("--task-timeout", type=click.FloatRange(0.001, MAX_TIMEOUT), default=30.0,
              show_default=True, help="Seconds per attempt.")
@click.option("--attempts", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Providers tried in turn per execution.")
@click.option("-p", "--provider", "providers", multiple=True, metavar="PEER_ID",
              help="Only this peer (repeatable; tried in the order given).")
@click.option("--max-price", type=click.IntRange(0), default=0,
              help="A paid task: pay each execution at most this (base units), locked first.")
@click.option("--no-wait", is_flag=True, help="Return at once with the task ID.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result's bytes to FILE.")
@json_option
@with_client
def submit(client: MeshClient, plugin: str, kind: str, payload: str | None,
           payload_file: Path | None, redundancy: int, capabilities: tuple[str, ...],
           task_timeout: float, attempts: int, providers: tuple[str, ...], max_price: int,
           no_wait: bool, output: Path | None, as_json: bool) -> None:
    """Run a task of PLUGIN's KIND on the network, with PAYLOAD (text) or --file.

    Providers that execute KIND (and advertise every --capability) are chosen
    by load; each result is verified by the plugin's rule or compared across
    --redundancy executions, and every accepted execution earns its provider a
    receipt in the ledger. Exit 1 if the task failed.
    """
    if (payload is None) == (payload_file is None):
        fail("give the payload either as PAYLOAD or with --file", EXIT_INVALID)
    data = payload_file.read_bytes() if payload_file is not None else \
        (payload or "").encode("utf-8")
    request = tasks_pb2.SubmitTaskRequest(
        plugin=plugin, kind=kind, payload=data, redundancy=redundancy,
        capabilities=capabilities, timeout_ms=int(task_timeout * 1000), attempts=attempts,
        providers=providers, wait=not no_wait, max_price=str(max_price) if max_price else "")
    wait_for = None if no_wait else task_timeout * attempts * 2 + 30
    task = client.unary(_stub(client).SubmitTask, request, timeout=wait_for).task
    if output is not None and task.state == "done":
        output.write_bytes(task.result)
    emit(task_to_dict(task), as_json, _details)
    if task.state not in ("done", "running"):
        sys.exit(EXIT_ERROR)


@tasks.command()
@click.option("-n", "--count", type=click.IntRange(min=1),
              help="Stop after this many lines (default: until interrupted).")
@json_option
@with_client
def watch(client: MeshClient, count: int | None, as_json: bool) -> None:
    """Print every task this node keeps, then each task again when it changes.

    One line per change (--json: one object per line, as 'tasks show --json'):
    submitted, an attempt started or ended, finished. A slow reader sees a
    task's newest state, not every step.
    """
    emit_stream(task_stream(client), count, as_json, task_change_line)


def task_stream(client: MeshClient) -> Iterator[dict[str, Any]]:
    """``WatchTasks`` as the JSON shape ``tasks watch`` prints (also ``events``)."""
    stream = client.stream(_stub(client).WatchTasks, tasks_pb2.WatchTasksRequest())
    return (task_to_dict(r.task) for r in stream)


def task_change_line(t: dict[str, Any]) -> str:
    attempts = ", ".join(f"{a['provider'][-8:]} {a['state']}" for a in t["attempts"])
    return (f"{t['task_id'][:16]} {t['plugin']}/{t['kind']} {t['state']}"
            + (f": {t['error']}" if t["error"] else "")
            + (f" (attempts: {attempts})" if attempts else ""))


@tasks.command("ls")
@json_option
@with_client
def list_tasks(client: MeshClient, as_json: bool) -> None:
    """List the tasks this node submitted since meshd started, newest first."""
    response = client.unary(_stub(client).ListTasks, tasks_pb2.ListTasksRequest())
    emit([task_to_dict(t) for t in response.tasks], as_json, _table)


@tasks.command()
@json_option
@with_client
def audits(client: MeshClient, as_json: bool) -> None:
    """List the receipts this node audited as a validator since meshd started.

    After each final epoch, the validators the beacon draws run the plugin's
    rule on a share of its receipts (the network's spot-check rate), whoever
    the requester was; a wrong result gets verdicts that slash its provider,
    and so does an execution its provider does not show while it answers
    (docs/tasks.md §5d). Newest first, with how many came to each outcome;
    "pending" audits are asked again at the next final epoch.
    """
    response = client.unary(_stub(client).ListReceiptAudits,
                            tasks_pb2.ListReceiptAuditsRequest())
    emit(audits_to_dict(response), as_json, _audits_table)


AUDIT_OUTCOMES = ("drawn", "passed", "failed", "unshown", "reported", "unchecked")


def audits_to_dict(response: tasks_pb2.ListReceiptAuditsResponse) -> dict[str, Any]:
    """The stable JSON shape of `tasks audits`."""
    return {"counts": {name: getattr(response, name) for name in AUDIT_OUTCOMES},
            "audits": [{"epoch": a.epoch, "receipt": a.receipt, "plugin": a.plugin,
                        "provider": a.provider, "requester": a.requester,
                        "outcome": a.outcome, "detail": a.detail,
                        "verdicts": list(a.verdicts),
                        "audited_at": timestamp_text(a.audited_at)}
                       for a in response.audits]}


def _audits_table(shown: dict[str, Any]) -> str:
    counts = ", ".join(f"{name} {shown['counts'][name]}" for name in AUDIT_OUTCOMES)
    if not shown["audits"]:
        return (f"no receipts audited by this node since meshd started ({counts}): the "
                "beacon draws validators only, at the network's spot-check rate")
    rows = [("EPOCH", "RECEIPT", "PLUGIN", "PROVIDER", "OUTCOME", "DETAIL")]
    rows += [(str(a["epoch"]), a["receipt"][:16], a["plugin"], a["provider"][-12:],
              a["outcome"], a["detail"] + (f" (verdicts {len(a['verdicts'])})"
                                           if a["verdicts"] else ""))
             for a in shown["audits"]]
    return table(rows) + f"\n{counts}"


@tasks.command()
@click.argument("task_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the result's bytes to FILE.")
@json_option
@with_client
def show(client: MeshClient, task_id: str, output: Path | None, as_json: bool) -> None:
    """Show task TASK_ID (8 or more characters): state, result, each attempt."""
    task = client.unary(_stub(client).GetTask, tasks_pb2.GetTaskRequest(task_id=task_id)).task
    if output is not None and task.state == "done":
        output.write_bytes(task.result)
    emit(task_to_dict(task), as_json, _details)


@tasks.command()
@click.argument("task_id")
@json_option
@with_client
def cancel(client: MeshClient, task_id: str, as_json: bool) -> None:
    """Stop running task TASK_ID; exit 1 if it already finished."""
    task = client.unary(_stub(client).CancelTask,
                        tasks_pb2.CancelTaskRequest(task_id=task_id)).task
    emit(task_to_dict(task), as_json, lambda t: f"task {t['task_id'][:16]} cancelled")
