"""A test driver for plugin authors: a small network of real meshd nodes on loopback.

    from meshd.testing import open_network, plugin_under_test

    async def test_echo(tmp_path):  # pytest with a trio plugin (pytest-trio)
        async with open_network(tmp_path, 3, plugins=[plugin_under_test("echo", Echo)]) as net:
            a, b, _ = net.nodes
            assert await a.call("echo", "ECHO", b"hi", peer=b) == b"hi"
            task = await a.submit_task("echo", "UPPER", b"abc")
            assert task.state == "done"

Two modes, one API:

* in this trio process (the default): every node is ``run_daemon`` in the
  test's nursery, so a plugin's code runs in the test process (breakpoints,
  coverage), and ``plugins=`` may name plugin classes that are not installed;
* as processes (``processes=True``): every node is a ``meshd run`` process, as
  an operator runs it; plugins come from the installed entry points and from
  ``config`` (e.g. external plugins).

Nodes talk to each other over real libp2p connections, and the test talks to
each node through its gRPC API, as meshctl does. docs/plugins.md §8 walks
through a plugin's tests with it.

What a test waits for is polled, bounded, with :func:`eventually` (in trio) or
:func:`eventually_blocking` (in a plain thread or process), the one polling
helper of Mesh's own tests and benchmarks too.

Real hosts in network namespaces, some behind NAT routers, are
:mod:`meshd.testing.netns` (root only).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import inspect
import os
import reprlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import grpc
import tomli_w
import trio

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from mesh.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshcore import genesis as genesis_doc
from meshcore.genesis import (
    Allocation,
    Genesis,
    MarketPolicy,
    RewardPolicy,
    Token,
    Validator,
)
from meshd import datadir
from meshd.config import Config
from meshd.daemon import run_daemon
from meshd.identity import load_or_create_identity
from meshd.p2p.host import peer_id_of
from meshd.plugin.api import Plugin
from meshd.plugin_host.loader import Available, available

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
START_TIMEOUT = 30.0  # for a node to answer its API, and for the nodes to connect
CALL_TIMEOUT = 60.0
NOT_YET: tuple[type[Exception], ...] = (grpc.RpcError,)  # a node not answering (yet)

T = TypeVar("T")


def plugin_under_test(name: str, plugin: Callable[[], Plugin], version: str = "1.0.0",
                      ) -> Available:
    """A plugin class (or factory) to run as if installed under ``name``."""
    return available(name, plugin, version)


def _identity(data_dir: Path) -> str:
    """The peer ID of the node whose data dir this is, its key created if missing."""
    return peer_id_of(load_or_create_identity(datadir.prepare(data_dir)))


def write_dist(site: Path, dist: str, version: str, points: Mapping[str, str]) -> None:
    """Install, without pip, a distribution ``dist`` whose ``mesh.plugins`` entry
    points are ``points`` (name → ``module:attribute``): a dist-info in ``site``,
    which importlib.metadata (and so meshd) reads as an installed package once
    ``site`` is on the path."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                                   f"Summary: the {dist} plugin\n")
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[mesh.plugins]\n{lines}")


def install_plugins(site: Path, points: Mapping[str, str], *, dist: str = "mesh-test-plugins",
                    version: str = "1.0.0", path: Sequence[Path] = ()) -> dict[str, str]:
    """:func:`write_dist` into ``site``; returns the environment under which a
    ``meshd`` process (``processes=True``) loads them: ``PYTHONPATH`` is ``site``,
    then ``path`` (where the plugins' modules are), then the current one."""
    write_dist(site, dist, version, points)
    entries = [str(site), *map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(entries)}


VALIDATOR_ALLOCATION = 1_000_000 * 10**6  # base units each validator holds (1,000,000 TST)


def write_genesis(directory: Path, *, plugins: Sequence[str] = (), name: str = "TestNet",
                  epoch_seconds: int = 60, validators: Sequence[str] = (),
                  market: MarketPolicy | None = None) -> Path:
    """A genesis requiring ``plugins`` (``"name"`` or ``"name>=1,<2"``); returns its path.

    ``validators`` (peer IDs) are its validators, each holding
    VALIDATOR_ALLOCATION: epochs settle and rewards are minted. Without any,
    nothing is ever minted (docs/ledger.md §4.4). ``market``: the paid tasks'
    table (docs/ledger.md §12), if not the defaults.
    """
    genesis = Genesis(name=name, genesis_time=dt.datetime.now(dt.UTC).replace(microsecond=0),
                      token=Token("Test", "TST", allocations=tuple(
                          Allocation(v, VALIDATOR_ALLOCATION) for v in validators)),
                      rewards=RewardPolicy(epoch_seconds=epoch_seconds),
                      plugins=tuple(genesis_doc.parse_plugin(p) for p in plugins),
                      validators=tuple(Validator(v) for v in validators),
                      market=market or MarketPolicy())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "genesis.toml"
    path.write_text(genesis_doc.dumps(genesis), encoding="utf-8")
    return path


@dataclass
class Node:
    """One node of the network, reached through its API socket."""

    name: str
    data_dir: Path
    socket: Path
    peer_id: str = ""
    listen_addrs: tuple[str, ...] = ()

    async def call(self, plugin: str, event: str, data: bytes = b"", *,
                   peer: Node | str | None = None, timeout: float = 10.0) -> bytes:
        """Send ``event`` to this node's ``plugin`` (or ``peer``'s), as a peer would.

        Raises grpc.RpcError with the plugin's message when it refuses.
        """
        peer_id = peer.peer_id if isinstance(peer, Node) else (peer or "")
        request = plugins_pb2.CallPluginRequest(plugin=plugin, event=event, data=data,
                                                peer_id=peer_id, timeout_ms=int(timeout * 1000))
        response = await self._rpc(plugins_pb2_grpc.PluginsServiceStub, "CallPlugin", request,
                                   timeout + 5)
        return bytes(response.data)

    async def submit_task(self, plugin: str, kind: str, payload: bytes, *,
                          redundancy: int = 1, capabilities: Sequence[str] = (),
                          timeout: float = 30.0, attempts: int = 3) -> tasks_pb2.Task:
        """Run a task on the network from this node and return it once finished."""
        request = tasks_pb2.SubmitTaskRequest(
            plugin=plugin, kind=kind, payload=payload, redundancy=redundancy,
            capabilities=list(capabilities), timeout_ms=int(timeout * 1000),
            attempts=attempts, wait=True)
        response = await self._rpc(tasks_pb2_grpc.TasksServiceStub, "SubmitTask", request,
                                   timeout * attempts * 2 + 30)
        task: tasks_pb2.Task = response.task
        return task

    async def plugins(self) -> dict[str, plugins_pb2.Plugin]:
        """The plugins this node runs, by name (``meshctl plugins ls``)."""
        response = await self._rpc(plugins_pb2_grpc.PluginsServiceStub, "ListPlugins",
                                   plugins_pb2.ListPluginsRequest())
        return {p.name: p for p in response.plugins}

    async def status(self) -> node_pb2.NodeStatus:
        """``meshctl status``: peer ID, listen addresses, peer count, state."""
        response = await self._rpc(node_pb2_grpc.NodeServiceStub, "GetStatus",
                                   node_pb2.GetStatusRequest())
        status: node_pb2.NodeStatus = response.status
        return status

    async def history(self, limit: int = 50) -> list[ledger_pb2.HistoryEntry]:
        """``meshctl ledger history``: this node's newest entries first (receipts
        it countersigned show as kind ``task_receipt``)."""
        response = await self._rpc(ledger_pb2_grpc.LedgerServiceStub, "ListHistory",
                                   ledger_pb2.ListHistoryRequest(limit=limit))
        return list(response.entries)

    async def token_info(self) -> ledger_pb2.GetTokenInfoResponse:
        """``meshctl token info``: the newest final epoch, supply and what was minted."""
        response: ledger_pb2.GetTokenInfoResponse = await self._rpc(
            ledger_pb2_grpc.LedgerServiceStub, "GetTokenInfo", ledger_pb2.GetTokenInfoRequest())
        return response

    async def rewards(self, epoch: int | None = None) -> ledger_pb2.ListRewardsResponse:
        """``meshctl rewards ls``: what each account earned in a final epoch
        (default: the newest); raises grpc.RpcError while none is final."""
        request = ledger_pb2.ListRewardsRequest()
        if epoch is not None:
            request.epoch = epoch
        response: ledger_pb2.ListRewardsResponse = await self._rpc(
            ledger_pb2_grpc.LedgerServiceStub, "ListRewards", request)
        return response

    async def earned(self, pool: str, epochs: int = 30) -> dict[str, int]:
        """What each account earned from ``pool`` (uptime, tasks or governance)
        over the last ``epochs`` final epochs, in base units; accounts that
        earned nothing are left out. For "does my plugin's work pay?"::

            earned = await eventually(lambda: node.earned("tasks"), timeout=90,
                                      what="the task to earn from the tasks pool")
        """
        final = (await self.token_info()).final_epoch
        earned: dict[str, int] = {}
        for epoch in range(max(0, final - epochs + 1), final + 1):
            for account in (await self.rewards(epoch)).accounts:
                for share in account.pools:
                    if share.pool == pool and int(share.amount) > 0:
                        earned[account.account] = earned.get(account.account, 0) + \
                            int(share.amount)
        return earned

    async def _rpc(self, stub: Any, method: str, request: Any,
                   timeout: float = CALL_TIMEOUT) -> Any:
        def call() -> Any:
            with grpc.insecure_channel(f"unix:{self.socket}") as channel:
                return getattr(stub(channel), method)(request, timeout=timeout)

        # Off the trio thread: in-process nodes serve on this very loop.
        return await trio.to_thread.run_sync(call)


@dataclass
class Network:
    nodes: list[Node] = field(default_factory=list)
    genesis: Path | None = None

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    async def wait_connected(self, timeout: float = START_TIMEOUT) -> None:
        """Until every node has a connection to every other."""
        await eventually(self._all_connected, timeout=timeout,
                         what="every node to be connected to every other")

    async def _all_connected(self) -> bool:
        for node in self.nodes:
            if (await node.status()).peer_count < len(self.nodes) - 1:
                return False
        return True


@overload
async def eventually(probe: Callable[[], Awaitable[T]], until: Callable[[T], object] = bool,
                     *, timeout: float = START_TIMEOUT, interval: float = 0.05,
                     what: str = "condition",
                     not_yet: tuple[type[Exception], ...] = NOT_YET) -> T: ...


@overload
async def eventually(probe: Callable[[], T], until: Callable[[T], object] = bool,
                     *, timeout: float = START_TIMEOUT, interval: float = 0.05,
                     what: str = "condition",
                     not_yet: tuple[type[Exception], ...] = NOT_YET) -> T: ...


async def eventually(probe: Callable[[], Any], until: Callable[[Any], object] = bool,
                     *, timeout: float = START_TIMEOUT, interval: float = 0.05,
                     what: str = "condition",
                     not_yet: tuple[type[Exception], ...] = NOT_YET) -> Any:
    """Poll ``probe`` until ``until`` holds of its value, bounded; in trio.

    For state that has no event to wait on (a node's API, a plugin's
    counters): ``probe`` is called every ``interval`` seconds, its result
    awaited if it is awaitable, until ``until(value)`` is true.

    Example::

        await eventually(node.status, lambda s: s.peer_count == 2,
                         what="node0 to have two peers")

    Args:
        probe: reads the state; a plain or an async function (or one that
            returns an awaitable, e.g. ``functools.partial(trio.to_thread.run_sync,
            f)``).
        until: whether a value is the one waited for; by default its truth.
        timeout: seconds before giving up; a probe still running then is
            cancelled.
        interval: seconds between the end of one probe and the next.
        what: what is waited for, for the error ("node0 to have two peers").
        not_yet: exceptions of ``probe`` that mean "not yet" (the default:
            ``grpc.RpcError``, a node not answering its API yet); others
            propagate at once. ``()`` makes every exception fail the wait.

    Returns:
        The first value of ``probe`` for which ``until`` held.

    Raises:
        AssertionError: ``until`` did not hold within ``timeout``; the message
            names ``what``, the timeout and the last value (or exception),
            shortened.
    """
    last: object = _NO_VALUE
    with trio.move_on_after(timeout):
        while True:
            try:
                value = probe()
                if inspect.isawaitable(value):
                    value = await value
            except not_yet as error:
                last = _Raised(error)
            else:
                if until(value):
                    return value
                last = value
            await trio.sleep(interval)
    raise _timed_out(what, timeout, last)


def eventually_blocking(probe: Callable[[], T], until: Callable[[T], object] = bool,
                        *, timeout: float = START_TIMEOUT, interval: float = 0.2,
                        what: str = "condition",
                        not_yet: tuple[type[Exception], ...] = NOT_YET) -> T:
    """:func:`eventually` for synchronous code: a test or benchmark that drives
    nodes from a plain thread or process (``meshctl`` runs, blocking gRPC calls).

    Example::

        eventually_blocking(lambda: status(node)["peer_count"] == 2,
                            timeout=60, what="node0 to have two peers")

    Args:
        probe: reads the state (called, never awaited).
        until: whether a value is the one waited for; by default its truth.
        timeout: seconds before giving up; a probe is not interrupted, so the
            wait can overrun by one probe.
        interval: seconds of sleep between the end of one probe and the next.
        what: what is waited for, for the error.
        not_yet: exceptions of ``probe`` that mean "not yet" (by default
            ``grpc.RpcError``); others propagate at once.

    Returns:
        The first value of ``probe`` for which ``until`` held.

    Raises:
        AssertionError: ``until`` did not hold within ``timeout``; the message
            names ``what``, the timeout and the last value (or exception),
            shortened.
    """
    deadline = time.monotonic() + timeout
    last: object = _NO_VALUE
    while True:
        try:
            value = probe()
        except not_yet as error:
            last = _Raised(error)
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 10
_NO_VALUE = object()


@dataclass(frozen=True)
class _Raised:
    """A probe that raised one of the ``not_yet`` exceptions."""

    error: Exception


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    """The error of a wait that timed out, with the probe's ``last`` outcome."""
    if isinstance(last, _Raised):
        outcome = f"the last probe raised {_REPR.repr(last.error)}"
    elif last is _NO_VALUE:
        outcome = "no probe finished"
    else:
        outcome = f"the last value was {_REPR.repr(last)}"
    failure = AssertionError(f"timed out after {timeout:g} s waiting for {what}; {outcome}")
    failure.__cause__ = last.error if isinstance(last, _Raised) else None
    return failure


@contextlib.asynccontextmanager
async def open_network(directory: Path, size: int = 3, *,
                       plugins: Sequence[Available] | None = None,
                       genesis: Path | None = None, required: Sequence[str] | None = None,
                       config: Mapping[str, Any] | None = None, processes: bool = False,
                       epoch_seconds: int = 60, market: MarketPolicy | None = None,
                       ) -> AsyncIterator[Network]:
    """Start ``size`` connected nodes under ``directory``; stop them on exit.

    Without ``genesis``, the network mints: every node is a validator holding
    VALIDATOR_ALLOCATION, with epochs of ``epoch_seconds`` (rewards from the
    end of the first epoch on; pass a few seconds to see them in a test).

    Args:
        plugins: in-process mode only: the plugins installed, as far as the
            nodes know (:func:`plugin_under_test`); None = the real entry points.
        genesis: a genesis file; by default one requiring ``required`` (default:
            the names of ``plugins``) is written.
        config: ``section.key`` settings for every node, e.g.
            ``{"tasks.capabilities": ("gpu",)}`` or ``{"plugins.external": {...}}``.
        processes: run each node as a ``meshd run`` process.
        market: the genesis's ``market`` table, if not the defaults.
    """
    if processes and plugins is not None:
        raise ValueError("processes=True runs installed plugins only; install the plugin "
                         "(pip install -e .) or test it in-process")
    if genesis is None:
        names = required if required is not None else [p.name for p in plugins or ()]
        genesis = write_genesis(directory, plugins=names, epoch_seconds=epoch_seconds,
                                market=market,
                                validators=[_identity(directory / f"node{i}")
                                            for i in range(size)])
    network = Network(genesis=genesis)
    async with trio.open_nursery() as nursery:
        try:
            for index in range(size):
                name = f"node{index}"
                bootstrap = (network.nodes[0].listen_addrs[0],) if network.nodes else ()
                settings = {"node.data_dir": directory / name, "node.genesis": genesis,
                            "p2p.listen": (LOOPBACK,), "p2p.bootstrap": bootstrap,
                            **(config or {})}
                start = _start_process if processes else functools.partial(
                    _start_in_process, plugins)
                node = await nursery.start(start, name, settings)
                network.nodes.append(node)
            await network.wait_connected()
            yield network
        finally:
            nursery.cancel_scope.cancel()


async def _start_in_process(plugins: Sequence[Available] | None, name: str,
                            settings: dict[str, Any], *,
                            task_status: trio.TaskStatus[Node]) -> None:
    config = Config.load(overrides=settings)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(functools.partial(run_daemon, config, plugins=plugins))
        task_status.started(Node(name, config.node.data_dir, info.api.socket, info.peer_id,
                                 info.listen_addrs))


async def _start_process(name: str, settings: dict[str, Any], *,
                         task_status: trio.TaskStatus[Node]) -> None:
    data_dir = Path(settings.pop("node.data_dir"))
    log_path = data_dir.parent / f"{name}.log"

    def launch() -> subprocess.Popen[bytes]:
        data_dir.mkdir(parents=True, exist_ok=True)
        config_file = data_dir.parent / f"{name}.toml"
        config_file.write_text(_toml(settings), encoding="utf-8")
        argv = [str(Path(sys.executable).parent / "meshd"), "run", "--data-dir", str(data_dir),
                "--config", str(config_file)]
        with log_path.open("ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=dict(os.environ))

    process = await trio.to_thread.run_sync(launch)
    try:
        node = Node(name, data_dir, data_dir / "meshd.sock")

        async def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"meshd {name} exited {process.returncode}; see {log_path}")
            if not node.socket.exists():
                return False
            status = await node.status()
            node.peer_id, node.listen_addrs = status.peer_id, tuple(status.listen_addrs)
            return bool(node.listen_addrs)

        await eventually(ready, what=f"meshd {name} to answer its API")
        task_status.started(node)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await trio.to_thread.run_sync(process.wait)
            process.kill()
            await trio.to_thread.run_sync(process.wait)


def _toml(settings: Mapping[str, Any]) -> str:
    """``section.key`` settings as a config file."""
    document: dict[str, dict[str, Any]] = {}
    for dotted, value in settings.items():
        section, _, key = dotted.partition(".")
        document.setdefault(section, {})[key] = _plain(value)
    return tomli_w.dumps(document)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


__all__ = ["Network", "Node", "eventually", "eventually_blocking", "open_network",
           "plugin_under_test", "write_genesis"]
