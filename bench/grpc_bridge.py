"""Benchmark: gRPC unary round trips through the trio bridge vs a bare grpc.aio server.

Two echo servers listen on Unix sockets in a temporary directory, each in a
process of its own, both behind the same generic handler (raw bytes, no .proto):

* ``bare``: a grpc.aio server whose handler returns the request (asyncio only);
* ``bridge``: the same server started by ``meshd.rpc.bridge.serve_in_thread`` from
  ``trio.run``; its handler does ``await bridge.call(echo, request, timeout=...)``
  with ``echo`` running on trio, as meshd's API handlers do.

A client process (sync grpcio, N threads doing serial calls on one shared
channel) runs for a warmup second, then for ``--seconds`` per point, recording
every call's latency. Points run interleaved (bare 1, bridge 1, bare 10,
bridge 10), in several rounds, and each point reports its median round, so that
drift on the machine hits both servers alike. The baseline is
the bare server measured in the same run; the goal is QPS bridge/bare >= 0.7.

Run from the repository root: ``.venv/bin/python bench/grpc_bridge.py [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import output

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
KINDS = ("bare", "bridge")
CONCURRENCY = (1, 10)
WARMUP = 1.0  # seconds of calls not recorded: connection setup, first-call costs
CALL_TIMEOUT = 5.0  # per call: a stuck server fails the run instead of hanging it
START_TIMEOUT = 20.0  # for a server process to be ready, and for the channel to connect
QPS_GOAL = 0.7

Handler = Callable[[bytes, Any], Awaitable[bytes]]


# --- servers (run with --serve KIND ADDRESS) -------------------------------------------------

async def _start_server(address: str, handler: Handler) -> grpc.aio.Server:
    """A grpc.aio server with one raw-bytes unary method, started on ``address``."""
    server = grpc.aio.server()
    methods = {"Echo": grpc.unary_unary_rpc_method_handler(handler)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    server.add_insecure_port(address)
    await server.start()
    return server


def _announce_ready() -> None:
    print("ready", flush=True)


def _wait_for_stdin_eof() -> None:
    # The parent closes our stdin to stop us: a clean stop that also works if it dies.
    sys.stdin.read()


async def _serve_bare(address: str) -> None:
    async def handler(request: bytes, context: Any) -> bytes:
        return request

    server = await _start_server(address, handler)
    _announce_ready()
    await asyncio.get_running_loop().run_in_executor(None, _wait_for_stdin_eof)
    await server.stop(None)


async def _serve_bridge(address: str) -> None:
    import trio

    from meshd.rpc.bridge import open_trio_bridge, serve_in_thread

    async def echo(request: bytes) -> bytes:
        return request

    async with open_trio_bridge() as bridge, trio.open_nursery() as nursery:
        async def handler(request: bytes, context: Any) -> bytes:
            # As meshd/rpc/status.py does: the call's deadline also bounds the trio task.
            return await bridge.call(echo, request, timeout=context.time_remaining())

        async def start() -> tuple[None, Callable[[], Awaitable[None]]]:
            server = await _start_server(address, handler)
            return None, functools.partial(server.stop, None)

        await nursery.start(serve_in_thread, start)
        _announce_ready()
        await trio.to_thread.run_sync(_wait_for_stdin_eof, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def serve(kind: str, address: str) -> None:
    if kind == "bare":
        asyncio.run(_serve_bare(address))
    elif kind == "bridge":
        import trio

        trio.run(_serve_bridge, address)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


# --- client (run with --client ADDRESS) ------------------------------------------------------

def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_client(address: str, concurrency: int, seconds: float, payload: int) -> dict[str, Any]:
    """Serial calls from ``concurrency`` threads; count, QPS and latency in ms."""
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    echo = channel.unary_unary(METHOD)  # no (de)serializers: bytes in, bytes out
    request = os.urandom(payload)
    if echo(request, timeout=CALL_TIMEOUT) != request:
        raise SystemExit("the server did not echo the request")
    measure_from = time.perf_counter() + WARMUP
    end = measure_from + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []

    def worker(out: list[float]) -> None:
        try:
            while (started := time.perf_counter()) < end:
                echo(request, timeout=CALL_TIMEOUT)
                if started >= measure_from:
                    out.append(time.perf_counter() - started)
        except Exception as exc:  # reported by the main thread: a failed call fails the run
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    if errors:
        raise SystemExit(f"{len(errors)} client thread(s) failed: {errors[0]!r}")
    ordered = sorted(x for out in latencies for x in out)
    if not ordered:
        raise SystemExit("no call completed in the measured window")
    return {"count": len(ordered), "qps": len(ordered) / seconds,
            "p50_ms": 1000 * _percentile(ordered, 0.50),
            "p99_ms": 1000 * _percentile(ordered, 0.99)}


# --- orchestration ---------------------------------------------------------------------------

def _self(*args: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *args]


@contextlib.contextmanager
def server_process(kind: str, address: str) -> Iterator[int]:
    """A ``--serve`` process, ready when entered (yields its pid), stopped on exit."""
    proc = subprocess.Popen(_self("--serve", kind, address), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        readable, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        if not readable or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} server did not start (exit code {proc.poll()})")
        yield proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(address: str, server_pid: int, concurrency: int, seconds: float,
            payload: int) -> dict[str, Any]:
    args = ("--client", address, "--concurrency", str(concurrency),
            "--seconds", str(seconds), "--payload", str(payload))
    cpu_before = _cpu_seconds(server_pid)
    done = subprocess.run(_self(*args), capture_output=True, text=True, check=False,
                          timeout=seconds + WARMUP + START_TIMEOUT + 10)
    if done.returncode != 0:
        raise RuntimeError(f"client failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    # Server CPU per call, over warmup and measurement (calls ~ qps * both spans).
    calls = result["qps"] * (seconds + WARMUP)
    result["server_cpu_us_per_call"] = (_cpu_seconds(server_pid) - cpu_before) / calls * 1e6
    return result


def run_all(seconds: float, payload: int, rounds: int) -> dict[str, Any]:
    """``rounds`` interleaved rounds of every point; each point keeps its median round."""
    loadavg = os.getloadavg()[0]
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp, contextlib.ExitStack() as stack:
        addresses = {kind: f"unix:{tmp}/{kind}.sock" for kind in KINDS}
        pids = {kind: stack.enter_context(server_process(kind, addresses[kind]))
                for kind in KINDS}
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for kind in KINDS:
                    point = measure(addresses[kind], pids[kind], concurrency, seconds, payload)
                    samples.setdefault((kind, concurrency), []).append(point)
    points = []
    for (kind, concurrency), runs in samples.items():
        ordered = sorted(runs, key=lambda r: r["qps"])
        median = ordered[len(ordered) // 2]
        points.append({"server": kind, "clients": concurrency, **median,
                       "qps_min": ordered[0]["qps"], "qps_max": ordered[-1]["qps"]})
    qps = {(p["server"], p["clients"]): p["qps"] for p in points}
    ratios = {str(n): qps["bridge", n] / qps["bare", n] for n in CONCURRENCY}
    return {"transport": "unix socket", "payload_bytes": payload, "seconds_per_point": seconds,
            "rounds": rounds, "warmup_seconds": WARMUP, "points": points,
            "qps_ratio_bridge_over_bare": ratios, "qps_ratio_goal": QPS_GOAL,
            "loadavg_before": loadavg}


def print_table(results: dict[str, Any]) -> None:
    print(f"gRPC unary echo, {results['payload_bytes']}-byte payload, unix socket, "
          f"{results['seconds_per_point']:g} s per point, median of {results['rounds']} "
          f"interleaved rounds (load average before: {results['loadavg_before']:.2f})")
    print(f"{'server':8} {'clients':>7} {'QPS':>7} {'(min-max)':>13} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'server CPU µs/call':>19}")
    for p in results["points"]:
        spread = f"({p['qps_min']:.0f}-{p['qps_max']:.0f})"
        print(f"{p['server']:8} {p['clients']:>7} {p['qps']:>7.0f} {spread:>13} "
              f"{p['p50_ms']:>7.3f} {p['p99_ms']:>7.3f} {p['server_cpu_us_per_call']:>19.0f}")
    ratios = results["qps_ratio_bridge_over_bare"]
    parts = ", ".join(f"{n} client{'s' if n != '1' else ''} {r:.2f}" for n, r in ratios.items())
    print(f"ratio bridge/bare QPS: {parts} (goal >= {QPS_GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--payload", type=int, default=64, help="request size in bytes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; each point reports its median round")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds <= 0 or args.payload < 0:
        parser.error("--seconds must be positive and --payload not negative")
    if args.serve:
        serve(*args.serve)
    elif args.client:
        print(json.dumps(run_client(args.client, args.concurrency, args.seconds, args.payload)))
    else:
        results = run_all(args.seconds, args.payload, args.rounds)
        output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
