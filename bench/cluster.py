"""Benchmark harness: N real ``meshd run`` processes on loopback, driven over gRPC.

Shared by the multi-node benchmarks (``gossip.py``, ``dht.py``), which import it
as ``cluster`` (``python bench/x.py`` puts ``bench/`` on ``sys.path``).
``running_nodes`` makes one genesis with ``meshctl network init``, starts node 0,
then the others with ``--bootstrap`` node 0's first listen address, each with a
fresh data dir, its log, ``--listen /ip4/127.0.0.1/tcp/0`` and a
``NOTIFY_SOCKET`` bound here (started = ``READY=1``); on the way out it sends
SIGTERM to every node still running and kills those not gone within
``STOP_TIMEOUT``. With ``genesis_args``, each node's identity is made first
(``meshd identity``) and the genesis gets extra ``meshctl network init``
arguments naming the nodes' peer IDs (validators, allocations, short epochs).
Also: a bounded poll (``wait_until``, on meshd.testing), per-process CPU and RSS
from ``/proc`` (Linux), and ``spread`` (min / median / max).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshd.testing import eventually_blocking

BIN = Path(sys.executable).parent  # the venv's bin: meshd and meshctl live next to python
CALL_TIMEOUT = 5.0  # per gRPC call
STOP_TIMEOUT = 10.0  # SIGTERM, then kill
WILDCARD = "/ip4/0.0.0.0/tcp/4001"  # a node in its own network namespace listens as operators do

_Stub = TypeVar("_Stub")


# --- daemons -------------------------------------------------------------------------------

def make_genesis(directory: Path, timeout: float, extra_args: Sequence[str] = ()) -> Path:
    """A network's genesis by ``meshctl network init`` in ``directory``; its path."""
    subprocess.run([str(BIN / "meshctl"), "network", "init", "--allow-no-validators",
                                          "--name", "Bench",
                    "--token-name", "Bench", "--token-symbol", "BEN", "--out", str(directory),
                    *extra_args], check=True, capture_output=True, timeout=timeout)
    return directory / "genesis.toml"


def make_identity(data_dir: Path, timeout: float) -> str:
    """Create the identity key in ``data_dir`` (``meshd identity``); its peer ID."""
    result = subprocess.run([str(BIN / "meshd"), "identity", "--data-dir", str(data_dir)],
                            check=True, capture_output=True, text=True, timeout=timeout)
    return result.stdout.strip()


class Node:
    """One ``meshd run`` process with its data dir, log, readiness socket and gRPC channel."""

    def __init__(self, workdir: Path, index: int, genesis: Path) -> None:
        self.index = index
        self.data_dir = workdir / f"node-{index}"
        self.socket = self.data_dir / "meshd.sock"
        self.log_path = workdir / f"node-{index}.log"
        self.genesis = genesis
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(workdir / f"node-{index}.notify"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.sigkilled = False  # by the benchmark, on purpose
        self.killed_at_stop = False  # did not exit within STOP_TIMEOUT of SIGTERM
        self.stop_seconds: float | None = None  # from SIGTERM (to all) to its exit
        self._channel: grpc.Channel | None = None
        self.log_level = "warning"

    def start(self, bootstrap: str | None, extra_env: Mapping[str, str],
              log_level: str = "warning", *, listen: str = "/ip4/127.0.0.1/tcp/0",
              wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        """Start ``meshd run``; ``wrap`` turns its argv into the command to run
        (e.g. inside a network namespace: meshd/testing/netns.py ``Host.command``)."""
        argv = [str(BIN / "meshd"), "run", "--genesis", str(self.genesis),
                "--data-dir", str(self.data_dir), "--listen", listen,
                "--log-level", log_level]
        self.log_level = log_level
        if bootstrap:
            argv += ["--bootstrap", bootstrap]
        if wrap is not None:
            argv = wrap(argv)
        # MESHD_* variables of whoever runs this would change meshd's config: drop them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHD_")}
        env.update(extra_env)
        env["NOTIFY_SOCKET"] = self.notify.getsockname()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)

    def profile(self, seconds: float, rate: int = 50) -> subprocess.Popen[bytes]:
        """Sample this node with py-spy for ``seconds``, into ``node-N.pyspy.txt`` (collapsed
        stacks, one "frames count" line each: flamegraph.pl or speedscope read them)."""
        assert self.proc is not None
        out = self.log_path.with_suffix(".pyspy.txt")
        # not a project dependency: `.venv/bin/pip install py-spy`
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        return subprocess.Popen(
            [py_spy, "record", "--pid", str(self.proc.pid), "--format", "raw",
             "--rate", str(rate), "--duration", str(max(1, round(seconds))),
             "--nonblocking", "--output", str(out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.notify], [], [], min(0.1, left))
            if readable and "READY=1" in self.notify.recv(4096).decode(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
        raise self.failure("did not send READY=1")

    def failure(self, why: str) -> RuntimeError:
        code = self.proc.poll() if self.proc else None
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        return RuntimeError(f"meshd node {self.index} {why} (exit code {code}); its log:\n{log}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        return self._channel

    def stub(self, stub_class: Callable[[grpc.Channel], _Stub]) -> _Stub:
        """A client of one of meshd's services, e.g. ``node.stub(DhtServiceStub)``."""
        return stub_class(self.channel)

    def status(self) -> Any:
        stub = self.stub(node_pb2_grpc.NodeServiceStub)
        return stub.GetStatus(node_pb2.GetStatusRequest(), timeout=CALL_TIMEOUT).status

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.sigkilled = True

    def stop(self) -> None:
        """SIGTERM if still running; the caller waits (all nodes stop in parallel)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None  # a restarted node gets a new one
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def running_nodes(workdir: Path, count: int, ready_timeout: float,
                  env: Mapping[str, str] | None = None,
                  genesis_args: Callable[[list[str]], Sequence[str]] | None = None,
                  log_level: str = "warning",
                  hosts: Sequence[Any] | None = None) -> Iterator[list[Node]]:
    """``count`` nodes, all READY within ``ready_timeout`` s (node 0, then the others).

    ``env`` is added to each daemon's environment. ``genesis_args``, given the
    nodes' peer IDs (in node order), returns extra ``meshctl network init``
    arguments. ``log_level`` is meshd's ``--log-level``. ``hosts`` (test-bed
    hosts of meshd/testing/netns.py, one per node) puts each node in its own
    network namespace, on the default wildcard listener. On the way out, every
    node still running gets SIGTERM; those not gone within ``STOP_TIMEOUT`` are
    killed.
    """
    extra_env = env or {}
    init_args: Sequence[str] = ()
    if genesis_args is not None:
        peer_ids = [make_identity(workdir / f"node-{i}", ready_timeout) for i in range(count)]
        init_args = genesis_args(peer_ids)
    genesis = make_genesis(workdir / "net", ready_timeout, init_args)
    nodes = [Node(workdir, i, genesis) for i in range(count)]

    def start(node: Node, bootstrap: str | None) -> None:
        if hosts is None:
            node.start(bootstrap, extra_env, log_level)
        else:
            node.start(bootstrap, extra_env, log_level, listen=WILDCARD,
                       wrap=hosts[node.index].command)

    try:
        start(nodes[0], None)
        nodes[0].wait_ready(time.monotonic() + ready_timeout)
        bootstrap = nodes[0].status().listen_addrs[0]
        for node in nodes[1:]:
            start(node, bootstrap)
        deadline = time.monotonic() + ready_timeout
        for node in nodes[1:]:
            node.wait_ready(deadline)
        yield nodes
    finally:
        stopping = time.monotonic()
        for node in nodes:
            node.stop()
        deadline = stopping + STOP_TIMEOUT
        for node in nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                if not node.sigkilled:
                    node.stop_seconds = time.monotonic() - stopping
            except subprocess.TimeoutExpired:
                node.killed_at_stop = True
                node.proc.kill()
                node.proc.wait()
            node.notify.close()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held.

    meshd.testing.eventually_blocking, with a condition that did not hold
    reported (a benchmark records it) instead of raised; an exception of
    ``condition`` (a node not answering) propagates.
    """
    try:
        eventually_blocking(condition, timeout=timeout, interval=interval, not_yet=())
    except AssertionError:
        return False
    return True


# --- resources (Linux /proc) -----------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class CpuWindow:
    """CPU % of a core used by each process between ``__init__`` and ``percent()``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.before = [cpu_seconds(pid) for pid in pids]

    def percent(self) -> list[float]:
        elapsed = time.monotonic() - self.started
        return [100 * (cpu_seconds(pid) - before) / elapsed
                for pid, before in zip(self.pids, self.before, strict=True)]


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (p99 of 1000 is the 990th)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
