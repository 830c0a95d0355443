"""Real meshd processes for end-to-end tests.

Each process gets a NOTIFY_SOCKET bound by the test, so "started" means what
it means under systemd: meshd sent READY=1, which it does only once its API
answers. No polling, no sleeps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from mesh.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from mesh.node.v1 import node_pb2, node_pb2_grpc
from meshd.testing import netns

T = TypeVar("T")

BIN = Path(sys.executable).parent
MESHD = str(BIN / "meshd")
MESHCTL = str(BIN / "meshctl")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class StartFailed(Exception):
    pass


class Meshd:
    """One meshd process with its own data dir, logs and readiness socket."""

    def __init__(self, workdir: Path, name: str, genesis: Path | None,
                 *args: str, command: str = "run", env: dict[str, str] | None = None,
                 host: netns.Host | None = None) -> None:
        """``host``: run it inside that test-bed host's network namespace."""
        self.name = name
        self.data_dir = workdir / name
        self.socket = self.data_dir / "meshd.sock"
        self.log_path = workdir / f"{name}.log"
        self._notify_path = workdir / f"{name}.notify"
        self._argv = [MESHD, command, "--data-dir", str(self.data_dir), *args]
        if genesis is not None:
            self._argv += ["--genesis", str(genesis)]
        if host is not None:
            self._argv = host.command(self._argv)
        # Only loopback and the test bed's namespaces may carry test traffic:
        # no mDNS multicast from this machine's own interfaces.
        lan = {} if host is not None else {"MESHD_P2P_MDNS": "false"}
        self._env = {**os.environ, **lan, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []

    def start(self, wait: bool = True) -> Meshd:
        self.notifications = []  # a restart waits for its own READY=1
        self._notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self._notify_path))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self._env, "NOTIFY_SOCKET": str(self._notify_path)})
        if wait:
            self.wait_for_notification("READY=1")
        return self

    def wait_for_notification(self, state: str, timeout: float = READY_TIMEOUT) -> None:
        """Block until meshd sends ``state`` to its NOTIFY_SOCKET."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while state not in self.notifications:
            if self.process.poll() is not None:
                raise StartFailed(f"meshd exited with {self.process.returncode}:\n{self.log()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartFailed(f"no {state} within {timeout} s:\n{self.log()}")
            readable, _, _ = select.select([self._notify], [], [], min(remaining, 0.2))
            if readable:
                self.notifications += self._notify.recv(4096).decode().split("\n")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> tuple[int, float]:
        """Send ``sig`` and wait; returns (exit code, seconds it took)."""
        assert self.process is not None
        begun = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"meshd did not stop within {timeout} s:\n{self.log()}") from None
        finally:
            self._drain_notifications()
            self._notify.close()
        return code, time.monotonic() - begun

    def _drain_notifications(self) -> None:
        while select.select([self._notify], [], [], 0)[0]:
            self.notifications += self._notify.recv(4096).decode().split("\n")

    def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctl(self, *args: str, check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
        return meshctl("--socket", str(self.socket), *args, check=check, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.ctl("status", "--json").stdout)  # type: ignore[no-any-return]

    def wait_final(self, epoch: int, timeout: float = 30) -> int:
        """Follow WatchSettlements until ``epoch`` is final on this node (no polling)."""
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stream = ledger_pb2_grpc.LedgerServiceStub(channel).WatchSettlements(
                ledger_pb2.WatchSettlementsRequest(from_epoch=epoch), timeout=timeout)
            try:
                for settled in stream:
                    stream.cancel()
                    return int(settled.epoch)
            except grpc.RpcError as error:
                if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise AssertionError(f"epoch {epoch} not final on {self.name} within "
                                         f"{timeout:g} s") from None
                raise
        raise AssertionError("WatchSettlements ended")

    def until_settled(self, probe: Callable[[], T], until: Callable[[T], object] = bool, *,
                      timeout: float = 60, what: str = "the condition") -> T:
        """``probe()`` now and again each time an epoch becomes final on this node
        (its settlement stream: what depends on the settled state changes only
        then), until ``until`` holds of its result; that result. Bounded."""
        last: T | None = None
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stream = ledger_pb2_grpc.LedgerServiceStub(channel).WatchSettlements(
                ledger_pb2.WatchSettlementsRequest(), timeout=timeout)
            try:
                for _ in stream:  # the newest final epoch at once, then each new one
                    last = probe()
                    if until(last):
                        stream.cancel()
                        return last
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
        raise AssertionError(f"{what} did not hold on {self.name} within {timeout:g} s of "
                             f"settlements; last: {last!r}")

    def follow(self, *args: str) -> Follower:
        """Start ``meshctl ARGS --json`` (a watch command) on this node; its
        lines are read as they come (see :class:`Follower`)."""
        return Follower([MESHCTL, "--socket", str(self.socket), *args, "--json"])

    def watch_until(self, condition: Callable[[Any], bool], timeout: float = 20) -> Any:
        """Follow WatchStatus until ``condition(status)`` holds; return that status."""
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stream = node_pb2_grpc.NodeServiceStub(channel).WatchStatus(
                node_pb2.WatchStatusRequest(), timeout=timeout)
            for update in stream:
                if condition(update.status):
                    stream.cancel()
                    return update.status
        raise AssertionError("WatchStatus ended")


class Follower:
    """A streaming ``meshctl … --json`` subprocess; :meth:`until` reads its JSON
    lines as they arrive, bounded in time. Use as a context manager."""

    def __init__(self, argv: list[str]) -> None:
        self.lines: list[Any] = []
        self._process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL, text=True)
        self._buffer = ""

    def until(self, condition: Callable[[Any], bool], timeout: float = 30,
              what: str = "the line") -> Any:
        """The first line not read before for which ``condition`` holds."""
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                data = json.loads(line)
                self.lines.append(data)
                if condition(data):
                    return data
            left = deadline - time.monotonic()
            if left <= 0 or self._process.poll() is not None:
                stderr = "" if self._process.poll() is None else self._process.stderr.read() \
                    if self._process.stderr else ""
                raise AssertionError(f"{what} did not come within {timeout:g} s; lines: "
                                     f"{self.lines[-5:]!r} {stderr}")
            ready, _, _ = select.select([self._process.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._process.stdout.fileno(), 65536).decode()
                if not chunk:
                    continue  # closed: poll() says so next round
                self._buffer += chunk

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()


def meshctl(*args: str, check: bool = True, timeout: float = 30,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"meshctl {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def run_meshd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run meshd expecting it to exit by itself (bad input)."""
    return subprocess.run([MESHD, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Subscription:
    """``meshctl pubsub sub TOPIC --json`` on one node, its messages collected by a thread."""

    def __init__(self, node: Meshd, topic: str) -> None:
        self.node = node
        self.topic = topic
        self._process = subprocess.Popen(
            [MESHCTL, "--socket", str(node.socket), "pubsub", "sub", topic, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self._lock = threading.Condition()
        self._data: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._lock:
                self._data.append(json.loads(line)["data"])
                self._lock.notify_all()

    def received(self) -> list[str]:
        with self._lock:
            return list(self._data)

    def wait_for(self, condition: Callable[[list[str]], bool], timeout: float) -> bool:
        """Whether ``condition(messages so far)`` held within ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: condition(self._data), timeout)

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        self._reader.join(5)


def gossip_reaches(publisher: Meshd, subscriptions: list[Subscription], tag: str,
                   timeout: float = 40) -> None:
    """Publish probes from ``publisher`` until every subscription got one, bounded.

    A subscription is only useful once gossipsub has grafted the subscriber into
    the topic's mesh (heartbeats, 1 s), for which py-libp2p has no event: probes
    every half second stand in for it. Raises if some never receive within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    probe = 0
    while True:
        publisher.ctl("pubsub", "pub", subscriptions[0].topic, f"{tag}-probe-{probe}")
        probe += 1
        late = [s for s in subscriptions
                if not s.wait_for(lambda got: any(m.startswith(f"{tag}-probe") for m in got),
                                  max(0.0, min(0.5, deadline - time.monotonic())))]
        if not late:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"no {tag} probe reached {[s.node.data_dir.name for s in late]}"
                                 f" within {timeout} s")


def gossip_delivers_all(publisher: Meshd, subscriptions: list[Subscription], tag: str,
                        count: int = 5, timeout: float = 20) -> None:
    """Publish ``count`` messages; every subscription must receive every one."""
    sent = [f"{tag}-{i}" for i in range(count)]
    for message in sent:
        publisher.ctl("pubsub", "pub", subscriptions[0].topic, message)
    for subscription in subscriptions:
        if not subscription.wait_for(lambda got: set(sent) <= set(got), timeout):
            missing = sorted(set(sent) - set(subscription.received()))
            raise AssertionError(f"{subscription.node.data_dir.name} missed {missing}")


# --- networks of validators --------------------------------------------------

LOOPBACK = ("--listen", "/ip4/127.0.0.1/tcp/0")


def identity(data_dir: Path) -> str:
    """The peer ID of the node whose data directory is ``data_dir`` (created if new)."""
    result = run_meshd("identity", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ctl_json(node: Meshd, *args: str) -> Any:
    return json.loads(node.ctl(*args, "--json").stdout)


def final_epoch(node: Meshd) -> int:
    return int(ctl_json(node, "ledger", "state-root")["epoch"])


def wait_final(nodes: list[Meshd], epoch: int, timeout: float = 90) -> None:
    """Until ``epoch`` is final on every node (their settlement streams), bounded."""
    deadline = time.monotonic() + timeout
    try:
        for node in nodes:
            node.wait_final(epoch, max(0.1, deadline - time.monotonic()))
    except AssertionError as late:
        raise AssertionError(f"{late}: final epochs {[final_epoch(n) for n in nodes]}") from None


def validator_genesis(workdir: Path, validators: Sequence[str], *, allocation: int,
                      epoch_seconds: int, options: Sequence[str]) -> tuple[Path, float]:
    """``meshctl network init`` into ``workdir/net``: each node named in
    ``validators`` (its identity made in ``workdir/<name>``) is a genesis
    validator holding ``allocation``; the genesis time is now, in whole
    seconds. ``options``: further init options (name, token, emission …).
    Returns the genesis file and the genesis time (Unix seconds)."""
    ids = [identity(workdir / name) for name in validators]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    args = [a for peer in ids for a in ("--allocate", f"{peer}:{allocation}",
                                        "--validator", peer)]
    meshctl("network", "init", "--allow-no-validators",
            "--epoch-seconds", str(epoch_seconds), *options,
            "--genesis-time", start.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "--out", str(workdir / "net"), *args)
    return workdir / "net" / "genesis.toml", start.timestamp()


@contextlib.contextmanager
def start_network(workdir: Path, genesis: Path, names: Sequence[str], *,
                  started: int | None = None,
                  env: Callable[[int], dict[str, str] | None] = lambda index: None,
                  args: Sequence[str] = (),
                  args_of: Callable[[int], Sequence[str]] = lambda index: (),
                  ) -> Iterator[list[Meshd]]:
    """A meshd per name on loopback: the first starts alone, the others
    bootstrap from it. Only the first ``started`` (all by default) are
    started; the rest are returned ready to start. ``env(i)``: node i's
    environment; ``args``: further `meshd run` options for every node,
    ``args_of(i)``: for node i.
    Every node is killed when the block exits."""
    nodes: list[Meshd] = []
    try:
        for index, name in enumerate(names):
            bootstrap = ("--bootstrap", nodes[0].status()["listen_addrs"][0]) if nodes else ()
            node = Meshd(workdir, name, genesis, *LOOPBACK, *bootstrap, *args, *args_of(index),
                         env=env(index))
            nodes.append(node)
            if started is None or index < started:
                node.start()
        yield nodes
    finally:
        for node in nodes:
            node.kill()
