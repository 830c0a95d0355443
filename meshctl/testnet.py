"""meshctl testnet: a local network of meshd processes that mints, for trying Mesh and for CI.

``up`` writes a genesis in which every node is a validator with tokens (so
epochs settle and rewards are minted from the first minute), starts one
``meshd run`` per node on 127.0.0.1 (node-0 first; the others bootstrap from
it), and waits until every node has a peer. The directory keeps the genesis,
each node's data dir, log and socket, and ``testnet.json`` (what runs where):
``up`` again on it restarts the same network with its data; ``down`` stops it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshcore import genesis as genesis_doc
from meshcore.genesis import (
    MUTABLE_PATHS,
    Allocation,
    Genesis,
    GenesisError,
    GovernanceParams,
    RewardPolicy,
    Token,
    Validator,
)
from meshctl.client import ClientError, MeshClient, Target
from meshctl.context import EXIT_INVALID, fail, json_option
from meshctl.local import LocalError, finish_identity, meshd_binary, start_identity
from meshctl.network import GENESIS_FILE, build_genesis, write_genesis
from meshctl.output import emit

DEFAULT_DIR = Path(".mesh/testnet")
STATE_FILE = "testnet.json"
MAX_NODES = 50
TOKENS_PER_NODE = 1_000_000  # whole tokens allocated to each node
DECIMALS = 6
START_TIMEOUT = 30.0  # seconds for one node's API to answer
PEERS_TIMEOUT = 60.0  # seconds for every node to have a peer, after the last start
STOP_TIMEOUT = 20.0  # seconds from SIGTERM to SIGKILL
POLL = 0.2


@dataclass
class NodeEntry:
    """One node of the testnet, as testnet.json keeps it."""

    name: str
    peer_id: str
    data_dir: str
    socket: str
    log: str
    port: int = 0  # its TCP port on 127.0.0.1, kept across restarts (peers remember it)
    pid: int = 0
    http_port: int = 0  # its REST gateway and dashboard on 127.0.0.1, kept too


@dataclass
class TestnetState:
    network_id: str
    genesis: str
    nodes: list[NodeEntry]
    plugins: list[str]
    epoch_seconds: int

    @staticmethod
    def load(directory: Path) -> TestnetState | None:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return TestnetState(data["network_id"], data["genesis"],
                                [NodeEntry(**n) for n in data["nodes"]],
                                list(data["plugins"]), int(data["epoch_seconds"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"{path} is not a testnet state file ({exc}); remove the directory to "
                 "start afresh")

    def save(self, directory: Path) -> None:
        path = directory / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)


@click.group()
def testnet() -> None:
    """Run a local network of meshd processes that mints (for trying Mesh, and CI)."""


def _dir_option(fn: Any) -> Any:
    return click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_DIR, show_default=True,
                        help="Where the testnet keeps its genesis, data and logs.")(fn)


@testnet.command()
@click.option("-n", "--nodes", "count", type=click.IntRange(1, MAX_NODES), default=4,
              show_default=True, help=f"Nodes (meshd processes), 1 to {MAX_NODES}.")
@_dir_option
@click.option("--plugin", "plugins", multiple=True, metavar="NAME[RANGE]",
              help="A plugin every node must run, e.g. storage (repeat for more).")
@click.option("--epoch-seconds", type=click.IntRange(2, 3600), default=10, show_default=True,
              help="Epoch length: rewards are minted once per epoch.")
@click.option("--foreground", is_flag=True,
              help="Stay attached: Ctrl-C stops every node (what `make run` does).")
@json_option
def up(count: int, directory: Path, plugins: tuple[str, ...], epoch_seconds: int,
       foreground: bool, as_json: bool) -> None:
    """Start a testnet of N nodes, or restart the one in --dir with its data.

    \b
    meshctl testnet up -n 4 --plugin storage
    meshctl testnet status
    meshctl testnet down
    """
    try:
        meshd = meshd_binary()
    except LocalError as exc:
        fail(str(exc))
    state = TestnetState.load(directory)
    if state is not None:
        running = [n.name for n in state.nodes if _alive(n.pid)]
        if running:
            fail(f"the testnet in {directory} is running ({', '.join(running)}); "
                 f"stop it first: meshctl testnet down --dir {directory}", EXIT_INVALID)
        if (len(state.nodes), sorted(plugins), epoch_seconds) != \
                (count, sorted(state.plugins), state.epoch_seconds):
            _note(f"restarting the testnet in {directory} as it was created "
                           f"({len(state.nodes)} nodes); -n, --plugin and --epoch-seconds "
                           "apply to a new one (meshctl testnet down --purge first)")
    else:
        state = _create(directory, count, plugins, epoch_seconds)
    _start_all(state, directory, meshd)
    summary = _summary(state, directory)
    emit(summary, as_json, _human_summary)
    if foreground:
        _stay_attached(state)


@testnet.command()
@_dir_option
@json_option
def status(directory: Path, as_json: bool) -> None:
    """Each node: process, state, peers, final epoch and token supply."""
    state = _require(directory)
    rows = [_node_status(n) for n in state.nodes]
    emit({"network_id": state.network_id, "directory": str(directory), "nodes": rows},
         as_json, _human_status)
    if not all(r["running"] for r in rows):
        raise click.exceptions.Exit(1)


@testnet.command()
@_dir_option
@click.option("--purge", is_flag=True, help="Also delete the directory: genesis, data, logs.")
@json_option
def down(directory: Path, purge: bool, as_json: bool) -> None:
    """Stop every node of the testnet (SIGTERM, then SIGKILL after 20 s)."""
    state = TestnetState.load(directory)
    stopped = _stop_all(state) if state is not None else {}
    if purge and directory.exists():
        if state is None and any(directory.iterdir()):
            fail(f"{directory} holds no testnet ({STATE_FILE} is missing): not deleting it",
                 EXIT_INVALID)
        shutil.rmtree(directory)
    emit({"directory": str(directory), "stopped": stopped, "purged": purge}, as_json,
         lambda r: (("Stopped: " + ", ".join(f"{k} ({v})" for k, v in r["stopped"].items()))
                    if r["stopped"] else "Nothing was running.")
         + (f"\nDeleted {r['directory']}." if r["purged"] else ""))


# --- creating and starting ----------------------------------------------------------------

def _create(directory: Path, count: int, plugins: tuple[str, ...],
            epoch_seconds: int) -> TestnetState:
    if directory.exists() and (directory / GENESIS_FILE).exists():
        fail(f"{directory} has a genesis but no {STATE_FILE}: not a testnet directory; "
             "choose another --dir", EXIT_INVALID)
    _note(f"creating {count} node identities in {directory}")
    nodes = [_entry(directory, i) for i in range(count)]
    for node, peer_id in zip(nodes, _identities([Path(n.data_dir) for n in nodes]),
                             strict=True):
        node.peer_id = peer_id
    unit = 10 ** DECIMALS
    try:
        genesis = build_genesis(Genesis(
            name="Testnet", genesis_time=dt.datetime.now(dt.UTC),
            token=Token("Test Token", "TEST", DECIMALS),
            rewards=RewardPolicy(epoch_seconds=epoch_seconds),
            # Proposals decided within minutes, for a stake each node can afford.
            governance=GovernanceParams(voting_period_seconds=max(60, 6 * epoch_seconds),
                                        proposal_stake=1_000 * unit, mutable=MUTABLE_PATHS),
            plugins=tuple(genesis_doc.parse_plugin(p) for p in plugins),
            validators=tuple(Validator(n.peer_id) for n in nodes)),
            tuple(Allocation(n.peer_id, TOKENS_PER_NODE * unit) for n in nodes))
    except GenesisError as exc:
        fail(f"invalid --plugin: {exc}" if exc.field.startswith("plugins") else str(exc),
             EXIT_INVALID)
    path = write_genesis(genesis, directory, force=False)
    state = TestnetState(genesis.network_id, str(path), nodes, list(plugins), epoch_seconds)
    state.save(directory)
    return state


def _entry(directory: Path, index: int) -> NodeEntry:
    data_dir = directory / f"node-{index}"
    return NodeEntry(f"node-{index}", "", str(data_dir), str(data_dir / "meshd.sock"),
                     str(data_dir / "meshd.log"))


def _identities(data_dirs: list[Path]) -> list[str]:
    """Each data dir's peer ID, its identity key created by ``meshd identity``."""
    width = max(2, (os.cpu_count() or 2) * 2)
    peer_ids: list[str] = []
    try:
        for first in range(0, len(data_dirs), width):
            batch = [start_identity(d) for d in data_dirs[first:first + width]]
            peer_ids += [finish_identity(process) for process in batch]
    except LocalError as exc:
        fail(str(exc))
    return peer_ids


def _start_all(state: TestnetState, directory: Path, meshd: str) -> None:
    first, *others = state.nodes
    _note(f"starting {len(state.nodes)} nodes of {state.network_id}")
    try:
        _start(first, state, meshd, bootstrap=None)
        state.save(directory)
        bootstrap = _wait_api(first)["listen_addrs"][0]
        for node in others:
            _start(node, state, meshd, bootstrap)
        state.save(directory)
        for node in others:
            _wait_api(node)
        _wait_peers(state.nodes)
    except BaseException:
        _stop_all(state)
        raise


def _start(node: NodeEntry, state: TestnetState, meshd: str, bootstrap: str | None) -> None:
    data_dir = Path(node.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        Path(node.socket).unlink()  # left by a node that was killed
    _assign_ports(node, state)
    argv = [meshd, "run", "--genesis", state.genesis, "--data-dir", node.data_dir,
            "--socket", node.socket, "--listen", f"/ip4/127.0.0.1/tcp/{node.port}",
            "--http-listen", f"127.0.0.1:{node.http_port}"]
    if bootstrap is not None:
        argv += ["--bootstrap", bootstrap]
    with open(node.log, "ab") as log:
        # A session of its own: a Ctrl-C in the terminal reaches meshctl, which
        # stops the nodes in order, not every process at once.
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    node.pid = process.pid
    _CHILDREN[process.pid] = process


def _assign_ports(node: NodeEntry, state: TestnetState) -> None:
    """Keeps the node's ports where they are free, else picks new ones.

    A port is never one another node of the testnet was given, nor the node's
    other port: two probes of port 0 in a row may get the same port back, and
    a node whose gateway asks for its own p2p port exits at start.
    """
    taken = {port for other in state.nodes if other is not node
             for port in (other.port, other.http_port)}
    if node.port in taken or not _port_free(node.port):
        node.port = _free_port(taken)
    taken.add(node.port)
    if node.http_port in taken or not _port_free(node.http_port):
        node.http_port = _free_port(taken)


def _port_free(port: int) -> bool:
    if port <= 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            return port


def _wait_api(node: NodeEntry) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not _alive(node.pid):
            fail(f"{node.name} exited while starting; its log ({node.log}) ends with:\n"
                 + _tail(Path(node.log)))
        if Path(node.socket).exists():
            try:
                return _status(node)
            except ClientError as exc:
                last_error = str(exc)
        time.sleep(POLL)
    fail(f"{node.name} did not answer on {node.socket} within {START_TIMEOUT:g} s "
         f"({last_error}); see {node.log}")


def _wait_peers(nodes: list[NodeEntry]) -> None:
    if len(nodes) < 2:
        return
    deadline = time.monotonic() + PEERS_TIMEOUT
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {n.name: _status(n)["peer_count"] for n in nodes}
        if all(c >= 1 for c in counts.values()):
            return
        time.sleep(POLL)
    alone = [name for name, c in counts.items() if c < 1]
    fail(f"{', '.join(alone)} found no peer within {PEERS_TIMEOUT:g} s; see their logs "
         f"(meshd.log in each data dir)")


def _stay_attached(state: TestnetState) -> None:
    _note("Ctrl-C stops every node.")
    try:
        while all(_alive(n.pid) for n in state.nodes):
            time.sleep(1.0)
        gone = [n.name for n in state.nodes if not _alive(n.pid)]
        _note(f"{', '.join(gone)} exited; stopping the others (see their logs)")
        _stop_all(state)
        raise click.exceptions.Exit(1)
    except KeyboardInterrupt:
        _note("stopping...")
        stopped = _stop_all(state)
        _note("stopped: " + ", ".join(f"{k} ({v})" for k, v in stopped.items()))


# --- stopping -------------------------------------------------------------------------------

def _stop_all(state: TestnetState) -> dict[str, str]:
    """SIGTERM to every running node, SIGKILL to those not gone in STOP_TIMEOUT;
    node name -> "exited" | "killed" for each that was running."""
    running = [n for n in state.nodes if _alive(n.pid)]
    for node in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(_alive(n.pid) for n in running):
        time.sleep(POLL)
    result: dict[str, str] = {}
    for node in running:
        if _alive(node.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGKILL)
            result[node.name] = "killed"
        else:
            result[node.name] = "exited"
    return result


# The nodes this meshctl started: asked directly (between fork and exec, a
# child's /proc entry still shows meshctl).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running meshd (not a zombie, not a recycled PID)."""
    if pid <= 0:
        return False
    if pid in _CHILDREN:
        return _CHILDREN[pid].poll() is None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return b"meshd" in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


# --- reading nodes --------------------------------------------------------------------------

def _client(node: NodeEntry) -> MeshClient:
    return MeshClient(Target(Path(node.socket), None, None, None, 5.0))


def _status(node: NodeEntry) -> dict[str, Any]:
    from meshctl.node import status_to_dict

    with contextlib.closing(_client(node)) as client:
        stub = node_pb2_grpc.NodeServiceStub(client.channel())
        return status_to_dict(client.unary(stub.GetStatus, node_pb2.GetStatusRequest()).status)


def _node_status(node: NodeEntry) -> dict[str, Any]:
    row: dict[str, Any] = {"name": node.name, "peer_id": node.peer_id, "pid": node.pid,
                           "socket": node.socket, "log": node.log, "dashboard": _dashboard(node),
                           "running": _alive(node.pid)}
    if not row["running"]:
        return row
    try:
        row.update({k: v for k, v in _status(node).items()
                    if k in ("state", "peer_count", "listen_addrs")})
        with contextlib.closing(_client(node)) as client:
            stub = ledger_pb2_grpc.LedgerServiceStub(client.channel())
            token = client.unary(stub.GetTokenInfo, ledger_pb2.GetTokenInfoRequest())
        row.update({"final_epoch": token.final_epoch, "supply": token.supply,
                    "minted_total": token.minted_total})
    except ClientError as exc:
        row["error"] = str(exc)
    return row


# --- output ---------------------------------------------------------------------------------

def _summary(state: TestnetState, directory: Path) -> dict[str, Any]:
    return {"network_id": state.network_id, "directory": str(directory),
            "genesis": state.genesis,
            "nodes": [{"name": n.name, "peer_id": n.peer_id, "pid": n.pid, "socket": n.socket,
                       "log": n.log, "dashboard": _dashboard(n)} for n in state.nodes]}


def _dashboard(node: NodeEntry) -> str:
    return f"http://127.0.0.1:{node.http_port}/"


def _human_summary(summary: dict[str, Any]) -> str:
    nodes = summary["nodes"]
    first = nodes[1] if len(nodes) > 1 else nodes[0]
    other = nodes[2] if len(nodes) > 2 else nodes[0]
    lines = [f"Mesh testnet {summary['network_id']}: {len(nodes)} nodes, every one a "
             "validator with 1,000,000 TEST", ""]
    lines += [f"  {n['name']:<8} {n['peer_id']}  meshctl --socket {n['socket']} status"
              for n in nodes]
    lines += ["", f"Dashboard: {nodes[0]['dashboard']} (node-0; REST API: /openapi.json)"]
    lines += ["", "Try (rewards are minted from the first settled epoch, within a minute):",
              f"  export MESH_SOCKET={first['socket']}",
              "  meshctl status",
              "  meshctl token info",
              "  meshctl rewards ls",
              "  meshctl storage put README.md -k 2 -n 3   (with --plugin storage)",
              f"  meshctl --socket {other['socket']} storage get <the CID> -o copy.md",
              "  meshctl gov propose --help",
              "",
              f"Status: meshctl testnet status --dir {summary['directory']}",
              f"Stop:   meshctl testnet down --dir {summary['directory']}"]
    return "\n".join(lines)


def _human_status(data: dict[str, Any]) -> str:
    lines = [f"Testnet {data['network_id']} in {data['directory']}", "",
             f"{'node':<8} {'process':<8} {'state':<13} {'peers':>5} {'final epoch':>11} "
             f"{'minted':>20}"]
    for row in data["nodes"]:
        if not row["running"]:
            lines.append(f"{row['name']:<8} {'stopped':<8} (log: {row['log']})")
        elif "error" in row:
            lines.append(f"{row['name']:<8} {row['pid']:<8} {row['error']}")
        else:
            epoch = row["final_epoch"] if row["final_epoch"] >= 0 else "none"
            lines.append(f"{row['name']:<8} {row['pid']:<8} {row['state']:<13} "
                         f"{row['peer_count']:>5} {epoch!s:>11} {row['minted_total']:>20}")
    return "\n".join(lines)


def _note(message: str) -> None:
    """Progress on stderr (stdout is the result, JSON for scripts)."""
    click.echo(f"meshctl: {message}", err=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _require(directory: Path) -> TestnetState:
    state = TestnetState.load(directory)
    if state is None:
        fail(f"no testnet in {directory}; start one: meshctl testnet up --dir {directory}",
             EXIT_INVALID)
    return state
