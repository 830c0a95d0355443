"""Benchmark: meshd start to READY, restart to READY, and SIGTERM to exit.

Each run starts ``meshd run`` (the venv's) on a fresh data dir with the p2p
listener on 127.0.0.1 port 0 and ``NOTIFY_SOCKET`` set to a Unix datagram socket
bound here, and times from just before ``Popen`` until the ``READY=1`` datagram
arrives (meshd sends it once its API answers a health check). Then:

* SIGTERM → process exit is timed;
* the same data dir is started again ("restart": the identity and genesis copy
  exist) and stopped the same way.

Baselines, measured in the same runs (interleaved, so machine drift hits both):
``python -c pass`` (the interpreter) and ``python -c "import libp2p"`` (the
interpreter plus the import that dominates meshd's start), each timed until
the code has run (a byte on stdout), not until exit, as READY is. Ratios are of
medians. One untimed warmup run first fills the page cache. Goal: cold start to
READY <= 2 s.

Run from the repository root: ``.venv/bin/python bench/cold_start.py [--runs N] [--json]``.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import output

BIN = Path(sys.executable).parent  # the venv's bin: meshd and meshctl live next to python
TIMEOUT = 20.0  # for READY and for exit: a stuck meshd fails the run instead of hanging it
READY_GOAL = 2.0
ROWS = ("cold start to READY", "restart to READY", "SIGTERM to exit")
BASELINES = {"python -c pass": "pass", "python -c 'import libp2p'": "import libp2p"}
SHORT = {"python -c pass": "pass", "python -c 'import libp2p'": "libp2p"}  # column labels


def make_genesis(directory: Path) -> Path:
    subprocess.run([str(BIN / "meshctl"), "network", "init", "--allow-no-validators",
                                          "--name", "Bench",
                    "--token-name", "Bench", "--token-symbol", "BEN", "--out", str(directory)],
                   check=True, capture_output=True, timeout=TIMEOUT)
    return directory / "genesis.toml"


def time_python(code: str) -> float:
    """Seconds until ``code`` has run in a new interpreter, teardown excluded.

    The child writes a byte once done; READY also comes before meshd's exit, and
    tearing down an interpreter with libp2p loaded takes ~0.15 s more.
    """
    argv = [sys.executable, "-c", f"{code}\nimport os\nos.write(1, b'.')"]
    started = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        marker = proc.stdout.read(1) if readable else b""
        elapsed = time.perf_counter() - started
        if not readable:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
    if marker != b"." or proc.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed (exit code {proc.returncode})")
    return elapsed


def _meshd_env(notify_path: str) -> dict[str, str]:
    # MESHD_* variables of whoever runs this would change meshd's config: drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHD_")}
    env["NOTIFY_SOCKET"] = notify_path
    return env


def _fail(proc: subprocess.Popen[bytes], log: Path, why: str) -> RuntimeError:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return RuntimeError(f"meshd {why} (exit code {proc.returncode}); its stderr:\n"
                        f"{log.read_text(errors='replace')[-2000:]}")


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait for a READY=1 datagram; False if meshd exits or the deadline passes first."""
    while (left := deadline - time.perf_counter()) > 0:
        sock.settimeout(min(0.05, left))  # short: notice a meshd that died quickly
        try:
            message = sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            if proc.poll() is not None:
                return False
            continue
        if "READY=1" in message.splitlines():
            return True
    return False


def start(genesis: Path, data_dir: Path, log: Path,
          notify: socket.socket) -> tuple[subprocess.Popen[bytes], float]:
    """Start meshd on ``data_dir``; return it and the seconds it took to send READY=1."""
    argv = [str(BIN / "meshd"), "run", "--genesis", str(genesis), "--data-dir", str(data_dir),
            "--listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "warning"]
    with log.open("ab") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=_meshd_env(notify.getsockname()),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    ready = _wait_ready(notify, proc, started + TIMEOUT)
    elapsed = time.perf_counter() - started
    if not ready:
        raise _fail(proc, log, "did not send READY=1")
    return proc, elapsed


def stop(proc: subprocess.Popen[bytes], log: Path) -> float:
    """SIGTERM meshd; return the seconds until it exited (cleanly, or this raises)."""
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise _fail(proc, log, "did not exit after SIGTERM") from None
    elapsed = time.perf_counter() - started
    if code != 0:
        raise _fail(proc, log, "exited with an error after SIGTERM")
    return elapsed


def one_run(genesis: Path, workdir: Path, index: int) -> dict[str, list[float]]:
    """Baselines, then a first start and a restart of one fresh data dir, each stopped."""
    samples: dict[str, list[float]] = {name: [time_python(code)]
                                       for name, code in BASELINES.items()}
    data_dir, log = workdir / f"run-{index}", workdir / f"run-{index}.log"
    # Bound until meshd has exited: it also sends STOPPING=1, and fails if the socket is gone.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(workdir / f"run-{index}.notify"))
        proc, cold = start(genesis, data_dir, log, notify)
        first_stop = stop(proc, log)
        proc, restart = start(genesis, data_dir, log, notify)
        samples["SIGTERM to exit"] = [first_stop, stop(proc, log)]
    samples["cold start to READY"] = [cold]
    samples["restart to READY"] = [restart]
    return samples


def run_all(runs: int) -> dict[str, Any]:
    loadavg = os.getloadavg()[0]
    pooled: dict[str, list[float]] = {name: [] for name in (*ROWS, *BASELINES)}
    with tempfile.TemporaryDirectory(prefix="mesh-cold-") as tmp:
        workdir = Path(tmp)
        genesis = make_genesis(workdir)
        one_run(genesis, workdir, -1)  # warmup, not recorded: page cache
        for index in range(runs):
            for name, values in one_run(genesis, workdir, index).items():
                pooled[name].extend(values)
    medians = {name: statistics.median(v) for name, v in pooled.items()}
    stats = {name: {"min": min(v), "median": medians[name], "max": max(v), "samples": v}
             for name, v in pooled.items()}
    ratios = {name: {base: medians[name] / medians[base] for base in BASELINES} for name in ROWS}
    return {"runs": runs, "seconds": stats, "median_ratio_to_baseline": ratios,
            "ready_goal_seconds": READY_GOAL, "loadavg_before": loadavg}


def print_table(results: dict[str, Any]) -> None:
    print(f"meshd start and stop, {results['runs']} runs (+1 warmup), seconds "
          f"(load average before: {results['loadavg_before']:.2f})")
    print(f"{'':26} {'min':>6} {'median':>6} {'max':>6}  "
          + "  ".join(f"{'/' + short:>7}" for short in SHORT.values()) + "  (ratios of medians)")
    for name, s in results["seconds"].items():
        ratios = results["median_ratio_to_baseline"].get(name)
        shown = "  ".join(f"{ratios[b]:7.2f}" for b in BASELINES) if ratios else "   baseline"
        print(f"{name:26} {s['min']:6.3f} {s['median']:6.3f} {s['max']:6.3f}  {shown}")
    median = results["seconds"]["cold start to READY"]["median"]
    verdict = "met" if median <= READY_GOAL else "NOT met"
    print(f"goal: cold start to READY <= {READY_GOAL:g} s: median {median:.2f} s ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs (each: start, restart)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = run_all(args.runs)
    output.emit(results, args.json, print_table)


if __name__ == "__main__":
    main()
