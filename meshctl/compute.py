"""meshctl compute: WebAssembly modules run by the network's providers (plugins/compute).

``run`` checks the module here (wasmtime compiles it: a malformed module, or
one that imports anything, is refused before anything is sent), asks its
node which connected providers meet the requirements (the plugin's
``PLAN`` event, through PluginsService.CallPlugin), then submits a task of
kind RUN to those providers (TasksService.SubmitTask with ``providers``)
and prints the output. ``ls``, ``show`` and ``cancel`` are ``meshctl
tasks`` for this plugin's tasks, with their results read (docs/compute.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
from mesh_compute.runs import (
    DEFAULT_FUEL,
    FILE_CID,
    MAX_PAYLOAD,
    RunFormatError,
    RunRequest,
    parse_result,
)

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshctl.client import MeshClient
from meshctl.context import EXIT_ERROR, EXIT_INVALID, fail, json_option, with_client
from meshctl.output import emit, fields, table
from meshctl.tasks import MAX_TIMEOUT, attempts_table, task_to_dict

PLUGIN, KIND = "compute", "RUN"
PLAN_TIMEOUT = 20.0
MAX_PRICE = 1 << 62  # what `providers` offers, to list every provider whatever its price
SIZE = re.compile(r"(\d+)\s*(|k|kib|m|mib|g|gib)", re.IGNORECASE)
UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
         "gib": 1 << 30}


class ByteSize(click.ParamType[int]):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        matched = SIZE.fullmatch(str(value).strip())
        if matched is None:
            self.fail(f"{value!r} is not a size such as 512MiB, 2GiB or 1048576", param, ctx)
        return int(matched.group(1)) * UNITS[matched.group(2).lower()]


def _plan(client: MeshClient, required: dict[str, Any]) -> dict[str, Any]:
    stub = plugins_pb2_grpc.PluginsServiceStub(client.channel())
    request = plugins_pb2.CallPluginRequest(plugin=PLUGIN, event="PLAN",
                                            data=json.dumps(required).encode(),
                                            timeout_ms=int(PLAN_TIMEOUT * 1000))
    answer = client.unary(stub.CallPlugin, request, timeout=PLAN_TIMEOUT + 5).data
    plan: dict[str, Any] = json.loads(answer)
    return plan


def _tasks(client: MeshClient) -> tasks_pb2_grpc.TasksServiceStub:
    return tasks_pb2_grpc.TasksServiceStub(client.channel())


def run_to_dict(task: tasks_pb2.Task) -> dict[str, Any]:
    """A compute task: the task's JSON shape (``meshctl tasks``) plus what the run gave."""
    shown = task_to_dict(task)
    del shown["result_base64"]
    shown["run"] = None
    if task.state == "done":
        try:
            run = parse_result(task.result)
        except RunFormatError:
            pass
        else:
            shown["run"] = {"fuel": run.fuel, "error": run.error, "message": run.message,
                            "output_hex": run.output.hex(), "output_bytes": len(run.output)}
    return shown


@click.group()
def compute() -> None:
    """Run WebAssembly modules on the network's providers (plugins/compute)."""


@compute.command()
@click.argument("module", metavar="MODULE")
@click.option("-i", "--input", "input_file", required=True, metavar="FILE",
              type=click.File("rb"), help="The module's input ('-': standard input).")
@click.option("--fn", default="run", show_default=True, help="The exported function to run.")
@click.option("--fuel", type=click.IntRange(1), default=DEFAULT_FUEL, show_default=True,
              help="Fuel the run may spend (about one per instruction).")
@click.option("-k", "--redundancy", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Providers that run it; their results are compared.")
@click.option("--cores", type=click.IntRange(0), default=0,
              help="Only providers that run at least this many tasks at once.")
@click.option("--min-memory", type=ByteSize(), default="0",
              help="Only providers that give a run this much memory (e.g. 256MiB).")
@click.option("--arch", default="", help="Only providers of this architecture (x86_64, "
                                          "aarch64).")
@click.option("--max-price", type=click.IntRange(0), default=0,
              help="Pay each provider at most this (base units); K times it is locked from "
                   "this node's balance first. 0: only providers that run modules for free.")
@click.option("--task-timeout", type=click.FloatRange(0.001, MAX_TIMEOUT), default=30.0,
              show_default=True, help="Seconds per attempt.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the output to FILE (default: standard output).")
@json_option
@with_client
def run(client: MeshClient, module: str, input_file: Any, fn: str, fuel: int,
        redundancy: int, cores: int, min_memory: int, arch: str, max_price: int,
        task_timeout: float, output: Path | None, as_json: bool) -> None:
    """Run MODULE (.wasm, or WebAssembly text .wat) on --input with the network's providers.

    MODULE is a file, or the CID of one stored with `meshctl storage put`:
    then the task carries only its CID, and each provider reads the module
    from its storage plugin (checked against the CID) and keeps it compiled.

    The output goes to standard output (or -o FILE), what ran where and the
    fuel it spent to standard error. Exit 1 if no provider could run it or
    the module trapped or ran out of fuel (its providers still earn receipts
    for the fuel spent); exit 2 if the module is refused here (malformed,
    imports anything, or module and input over 1 MiB).

    \b
    meshctl compute run plugins/compute/examples/fnv1a.wat --input photo.jpg -k 3
    meshctl compute run bafkrei... --input photo.jpg
    """
    # wasmtime loads in 40 ms: only for this command, not every meshctl start
    from mesh_compute.sandbox import Sandbox, SandboxError

    path, stored = Path(module), FILE_CID.fullmatch(module) is not None
    if stored and not path.exists():
        request = RunRequest(b"", input_file.read(), fn, fuel, module_cid=module)
    elif not path.is_file():
        fail(f"{module}: no such file, and not the CID of a stored module (bafy..., as "
             "`meshctl storage put` prints it)", EXIT_INVALID)
    else:
        code, stored = path.read_bytes(), False
        try:
            Sandbox().compile(code)
        except SandboxError as exc:
            fail(f"{module}: {exc}", EXIT_INVALID)
        request = RunRequest(code, input_file.read(), fn, fuel)
    payload = request.encode()
    if len(payload) > MAX_PAYLOAD:
        what = "the input" if stored else "the module and its input"
        fail(f"{what} are {len(payload)} bytes with their header; a task carries at most "
             f"{MAX_PAYLOAD}", EXIT_INVALID)
    plan = _plan(client, {"cores": cores, "memory_bytes": min_memory, "fuel": fuel,
                          "arch": arch, "max_price": max_price, "stored_module": stored})
    providers = [p["peer_id"] for p in plan["providers"]]
    if len(providers) < redundancy:
        why = "; ".join(f"{peer[-8:]} {reason}" for peer, reason in
                        sorted(plan["excluded"].items())) or "no connected peers"
        fail(f"{len(providers)} connected providers can run this and {redundancy} are "
             f"needed: {why}")
    submit = tasks_pb2.SubmitTaskRequest(
        plugin=PLUGIN, kind=KIND, payload=payload, redundancy=redundancy,
        timeout_ms=int(task_timeout * 1000), providers=providers, wait=True,
        max_price=str(max_price) if max_price else "")
    task = client.unary(_tasks(client).SubmitTask, submit,
                        timeout=task_timeout * 3 * 2 + 30).task
    shown = run_to_dict(task)
    ran = shown["run"]
    if as_json:
        emit(shown, True, str)
    elif ran is not None and not ran["error"]:
        if output is not None:
            output.write_bytes(bytes.fromhex(ran["output_hex"]))
        else:
            sys.stdout.buffer.write(bytes.fromhex(ran["output_hex"]))
            sys.stdout.flush()
    if task.state != "done":
        fail(f"the task failed: {task.error}")
    assert ran is not None
    print(_summary(shown), file=sys.stderr)
    if ran["error"]:
        sys.exit(EXIT_ERROR)


def _summary(t: dict[str, Any]) -> str:
    ran = t["run"]
    where = ", ".join(p[-8:] for p in t["providers"])
    prices = [int(a["price"]) for a in t["attempts"] if a["state"] == "done"]
    paid = (f"; paying {' + '.join(map(str, prices))} = {sum(prices)} out of the lock of "
            f"{int(t['max_price']) * t['redundancy']} when the receipts settle (the rest "
            f"comes back)" if t["lock"] else "")
    if ran["error"]:
        return (f"task {t['task_id'][:16]}: {ran['message']} on {len(t['providers'])} "
                f"providers ({where}); {ran['fuel']} fuel spent{paid}")
    return (f"task {t['task_id'][:16]}: {ran['output_bytes']} bytes out, {ran['fuel']} fuel, "
            f"on {len(t['providers'])} providers ({where}){paid}")


@compute.command()
@json_option
@with_client
def providers(client: MeshClient, as_json: bool) -> None:
    """List the connected peers that run modules: what each offers, measured at its start,
    and its price."""
    plan = _plan(client, {"max_price": MAX_PRICE})
    emit(plan, as_json, _providers_text)


def _providers_text(plan: dict[str, Any]) -> str:
    rows = [("PEER", "CORES", "MEMORY/RUN", "MAX FUEL", "ARCH", "SCORE (Mfuel/s)", "BUSY",
             "PRICE/Mfuel", "START FEE", "RECORD (done/failed/wrong)",
             "LEDGER (receipts/failed)")]
    rows += [(p["peer_id"], str(p["cores"]), f"{p['memory_bytes'] >> 20} MiB",
              str(p["max_fuel"]), p["arch"], f"{p['score'] / 1e6:.0f}", str(p["busy"]),
              str(p["price_per_mfuel"]), str(p["start_fee"]), _record_text(p["record"]),
              _standing_text(p.get("standing")))
             for p in plan["providers"]]
    text = table(rows) if plan["providers"] else "no connected peer runs modules"
    if plan["excluded"]:
        text += "\n\n" + fields(sorted(plan["excluded"].items()))
    return text


def _record_text(record: dict[str, Any]) -> str:
    if record["first_seen"] is None:
        return f"never asked ({record['success']:.2f})"
    return f"{record['done']}/{record['failed']}/{record['wrong']} ({record['success']:.2f})"


def _standing_text(standing: dict[str, Any] | None) -> str:
    if standing is None:  # a node from before the ledger's standing
        return "-"
    since = standing["since_epoch"]
    return (f"{standing['receipts']}/{standing['failed_tasks']}"
            + (f" since epoch {since}" if since >= 0 else ""))


@compute.command()
@json_option
@with_client
def price(client: MeshClient, as_json: bool) -> None:
    """Show the network's base price per million fuel for the next epoch (docs/ledger.md §12.4).

    A paid run's provider takes its start fee plus the fuel spent at the base
    price plus its own price per million fuel; the base fee is burned, the
    rest is the provider's. The base price moves each epoch toward the
    genesis' target use, by at most its max_change_bps.
    """
    info = client.unary(ledger_pb2_grpc.LedgerServiceStub(client.channel()).GetTokenInfo,
                        ledger_pb2.GetTokenInfoRequest())
    shown = {"base_price_per_mfuel": int(info.base_price or 0),
             "final_epoch": info.final_epoch, "symbol": info.symbol,
             "market_burned_total": info.market_burned_total or "0",
             "escrowed": info.escrowed or "0", "spot_check_bps": info.spot_check_bps}
    emit(shown, as_json, lambda d: (
        f"base price {d['base_price_per_mfuel']} base units per million fuel for epoch "
        f"{d['final_epoch'] + 1}" + (" (no base fee)" if not d["base_price_per_mfuel"] else "")
        + f"; burned so far {d['market_burned_total']}, locked now {d['escrowed']}; "
        f"{d['spot_check_bps'] / 100:g} % of results are run again by their requesters"))


@compute.command("ls")
@click.option("-n", "--count", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="The newest this many.")
@json_option
@with_client
def list_runs(client: MeshClient, count: int, as_json: bool) -> None:
    """List the modules this node had run since meshd started, newest first."""
    stub = _tasks(client)
    listed = client.unary(stub.ListTasks, tasks_pb2.ListTasksRequest()).tasks
    runs = []
    for task in [t for t in listed if t.plugin == PLUGIN and t.kind == KIND][:count]:
        if task.state == "done":  # the list leaves results out: a run's outcome is in it
            task = client.unary(stub.GetTask, tasks_pb2.GetTaskRequest(task_id=task.task_id)).task
        runs.append(run_to_dict(task))
    emit(runs, as_json, _runs_table)


def _runs_table(runs: list[dict[str, Any]]) -> str:
    rows = [("TASK", "STATE", "K", "FUEL", "OUTCOME", "SUBMITTED")]
    for t in runs:
        ran = t["run"]
        outcome = t["error"] or "-" if ran is None else \
            (ran["error"] or f"{ran['output_bytes']} bytes out")
        rows.append((t["task_id"][:16], t["state"], str(t["redundancy"]),
                     str(ran["fuel"]) if ran else "-", outcome[:60], t["submitted_at"]))
    return table(rows) if runs else "no compute tasks since meshd started"


@compute.command()
@click.argument("task_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's output to FILE.")
@json_option
@with_client
def show(client: MeshClient, task_id: str, output: Path | None, as_json: bool) -> None:
    """Show compute task TASK_ID (8 or more characters): the run's outcome, each attempt."""
    task = client.unary(_tasks(client).GetTask, tasks_pb2.GetTaskRequest(task_id=task_id)).task
    shown = run_to_dict(task)
    if task.plugin != PLUGIN:
        fail(f"task {task_id} is a {task.plugin}/{task.kind} task, not a compute run "
             f"(meshctl tasks show {task_id})", EXIT_INVALID)
    if output is not None and shown["run"] is not None:
        output.write_bytes(bytes.fromhex(shown["run"]["output_hex"]))
    emit(shown, as_json, _run_details)


def _run_details(t: dict[str, Any]) -> str:
    ran = t["run"]
    rows: list[tuple[str, Any]] = [
        ("Task", t["task_id"]), ("State", t["state"] + (f": {t['error']}" if t["error"] else "")),
        ("Redundancy", t["redundancy"]), ("Providers", t["providers"] or "-"),
        ("Submitted", t["submitted_at"]), ("Finished", t["finished_at"] or "-")]
    if t["lock"]:
        rows.append(("Paid", f"at most {t['max_price']} per provider, out of lock "
                             f"{t['lock'][:16]}"))
    if ran is not None:
        rows += [("Fuel", ran["fuel"]), ("Outcome", ran["message"] or
                                         f"{ran['output_bytes']} bytes out")]
    return fields(rows) + attempts_table(t["attempts"])


@compute.command()
@click.argument("task_id")
@json_option
@with_client
def cancel(client: MeshClient, task_id: str, as_json: bool) -> None:
    """Stop running compute task TASK_ID; exit 1 if it already finished."""
    task = client.unary(_tasks(client).CancelTask,
                        tasks_pb2.CancelTaskRequest(task_id=task_id)).task
    emit(run_to_dict(task), as_json, lambda t: f"task {t['task_id'][:16]} cancelled")
