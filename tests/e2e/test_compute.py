"""meshctl compute on 5 meshd processes: modules run by providers, refused with why."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest
from mesh_compute.runs import units_of
from mesh_compute.sandbox import Sandbox

from tests.e2e.harness import MESHCTL, Meshd, ctl_json, start_network, validator_genesis
from tests.e2e.test_storage import connected

EXAMPLES = Path(__file__).parents[2] / "plugins" / "compute" / "examples"
FOREVER = """(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "run") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))
"""
IMPORTS_CLOCK = """(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "run") (param i32 i32) (result i64) (i64.const 0)))
"""


def run(node: Meshd, *args: str) -> tuple[int, dict[str, object], str]:
    """``meshctl compute run … --json``: exit code, the task shown, stderr."""
    done = node.ctl("compute", "run", *args, "--json", check=False, timeout=120)
    shown = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, shown, done.stderr


@pytest.mark.timeout(240)  # 5 daemons start; a few runs of small modules
def test_providers_run_a_module_alike_stop_a_loop_at_its_fuel_and_refuse_with_why(
        tmp_path: Path) -> None:
    names = ["req", "p1", "p2", "p3", "small"]
    genesis, _ = validator_genesis(
        tmp_path, names, allocation=1_000_000, epoch_seconds=5,
        options=["--name", "ComputeNet", "--token-name", "CYCLE", "--token-symbol", "CYC",
                 "--plugin", "compute"])
    # One provider gives a run 16 MiB and 2,000,000 fuel at most: requirements leave it out.
    small = tmp_path / "small.toml"
    small.write_text("[plugins.settings.compute]\nmax_memory_bytes = 16777216\n"
                     "max_fuel = 2000000\n")
    with start_network(tmp_path, genesis, names,
                       args_of=lambda i: ("--config", str(small)) if i == 4 else ()) as nodes:
        connected(nodes)
        requester = nodes[0]
        ids = {n.status()["peer_id"]: n.name for n in nodes}

        # Every other node offers what it measured at start.
        plan = ctl_json(requester, "compute", "providers")
        offers = {ids[p["peer_id"]]: p for p in plan["providers"]}
        assert sorted(offers) == ["p1", "p2", "p3", "small"], plan
        assert all(o["score"] > 0 and o["cores"] >= 1 and o["arch"] == platform.machine()
                   for o in offers.values())
        assert offers["small"]["memory_bytes"] == 16 << 20
        assert offers["p1"]["memory_bytes"] == 64 << 20

        # A hash on 3 providers: the same output and fuel as wasmtime here.
        data = tmp_path / "input.bin"
        data.write_bytes(os.urandom(100_000))
        module = EXAMPLES / "fnv1a.wat"
        local = Sandbox().run(module.read_text(), data.read_bytes())
        code, shown, err = run(requester, str(module), "--input", str(data), "-k", "3")
        assert code == 0, err
        ran = shown["run"]
        assert isinstance(ran, dict)
        assert bytes.fromhex(ran["output_hex"]) == local.output
        assert ran["fuel"] == local.fuel_used
        attempts = shown["attempts"]
        assert isinstance(attempts, list) and len(attempts) == 3
        assert {a["state"] for a in attempts} == {"done"}
        assert len({a["result_digest"] for a in attempts}) == 1  # identical results
        assert {a["units"] for a in attempts} == {units_of(local.fuel_used)}
        # Plain meshctl prints the output itself (bytes), the summary on stderr.
        plain = subprocess.run([MESHCTL, "--socket", str(requester.socket), "compute", "run",
                                str(module), "--input", str(data)], capture_output=True,
                               timeout=60, check=True)
        assert plain.stdout == local.output
        assert b"8 bytes out, %d fuel, on 1 providers" % local.fuel_used in plain.stderr

        # A loop that never ends stops at its fuel, a result paid for that fuel.
        forever = tmp_path / "forever.wat"
        forever.write_text(FOREVER)
        code, shown, err = run(requester, str(forever), "--input", "-", "--fuel", "1000000",
                               "-k", "2")
        assert code == 1, (code, err)
        ran = shown["run"]
        assert isinstance(ran, dict)
        assert ran["error"] == "out_of_fuel" and ran["fuel"] == 1_000_000, ran
        assert "spent all of its 1000000 fuel" in ran["message"]
        assert {a["units"] for a in shown["attempts"]} == {1000}  # type: ignore[union-attr]
        listed = ctl_json(requester, "compute", "ls")
        assert [r["run"]["error"] for r in listed[:2]] == ["out_of_fuel", ""]
        again = ctl_json(requester, "compute", "show", str(shown["task_id"])[:12])
        assert again["run"] == ran

        # Refused here, before anything is sent: with the reason.
        broken = tmp_path / "broken.wasm"
        broken.write_bytes(b"\x00asm\x01\x00\x00\x00garbage")
        clock = tmp_path / "clock.wat"
        clock.write_text(IMPORTS_CLOCK)
        huge = tmp_path / "huge.wasm"
        huge.write_bytes(b"\x00asm\x01\x00\x00\x00" + bytes(2 << 20))
        for path, why in [(broken, "not a valid WebAssembly module"),
                          (clock, "imports wasi_snapshot_preview1.clock_time_get"),
                          (huge, "not a valid WebAssembly module")]:
            done = requester.ctl("compute", "run", str(path), "--input", str(data),
                                 check=False)
            assert done.returncode == 2 and why in done.stderr, (path, done.stderr)
        big_input = tmp_path / "big.bin"
        big_input.write_bytes(bytes(1 << 20))
        done = requester.ctl("compute", "run", str(module), "--input", str(big_input),
                             check=False)
        assert done.returncode == 2 and "a task carries at most" in done.stderr, done.stderr

        # Requirements no provider meets: refused with each provider's reason.
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--min-memory", "32MiB", "-k", "4", check=False)
        assert done.returncode == 1, done.stderr
        assert "3 connected providers can run this and 4 are needed" in done.stderr
        assert "offers 16 MiB of memory per run, not 32 MiB" in done.stderr
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--fuel", "5000000", "-k", "4", check=False)
        assert done.returncode == 1, done.stderr
        assert "runs at most 2000000 fuel, not 5000000" in done.stderr
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--cores", "4096", check=False)
        assert done.returncode == 1, done.stderr
        assert "0 connected providers can run this and 1 are needed" in done.stderr
        assert done.stderr.count("cores, not 4096") == 4, done.stderr

        # The providers ran it; the requester and the plugin-less peers are fine.
        for node in nodes:
            assert node.process is not None and node.process.poll() is None, node.log()
