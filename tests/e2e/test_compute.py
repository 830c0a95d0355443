"""meshctl compute on 5 meshd processes: modules run by providers, refused with why."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mesh_compute.runs import units_of
from mesh_compute.sandbox import Sandbox

from meshd.testing import eventually_blocking
from tests.e2e.harness import (
    MESHCTL,
    Meshd,
    ctl_json,
    final_epoch,
    start_network,
    validator_genesis,
)
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


def paid_in(node: Meshd, task: str, since: int) -> tuple[int, list[dict[str, Any]],
                                                     list[dict[str, Any]]]:
    """The settlement (from epoch ``since`` on) whose record pays out of task ``task``'s
    lock: (epoch, payments, refunds), or (-1, [], []) while none has yet."""
    for epoch in range(since, int(ctl_json(node, "ledger", "state-root")["epoch"]) + 1):
        record = ctl_json(node, "rewards", "explain", str(epoch))
        payments = [p for p in record["payments"] if p["task"] == task]
        if payments:
            return epoch, payments, [r for r in record["refunds"] if r["task"] == task]
    return -1, [], []


@pytest.mark.timeout(300)  # 5 daemons start; a few runs; payments and a refund settle
def test_providers_run_a_module_alike_are_paid_and_refuse_with_why(tmp_path: Path) -> None:
    names = ["req", "p1", "p2", "p3", "small"]
    genesis, _ = validator_genesis(
        tmp_path, names, allocation=1_000_000, epoch_seconds=5,
        options=["--name", "ComputeNet", "--token-name", "CYCLE", "--token-symbol", "CYC",
                 "--plugin", "compute", "--base-price", "20", "--min-base-price", "20",
                 "--plugin", "storage", "--plugin-setting", "storage.k=2",
                 "--plugin-setting", "storage.n=3", "--spot-checks", "2500"])
    # Three providers ask 3 to start and 100 per million fuel over the network's base
    # price of 20 (held there by its minimum), which is burned; one runs for free, but
    # gives a run 16 MiB and 2,000,000 fuel at most: requirements leave it out.
    priced = tmp_path / "priced.toml"
    priced.write_text("[plugins.settings.compute]\nprice_per_mfuel = 100\nstart_fee = 3\n")
    small = tmp_path / "small.toml"
    small.write_text("[plugins.settings.compute]\nmax_memory_bytes = 16777216\n"
                     "max_fuel = 2000000\n")
    configs = {1: priced, 2: priced, 3: priced, 4: small}
    with start_network(tmp_path, genesis, names,
                       args_of=lambda i: ("--config", str(configs[i])) if i in configs
                       else ()) as nodes:
        connected(nodes)
        requester = nodes[0]
        ids = {n.status()["peer_id"]: n.name for n in nodes}

        # Every other node offers what it measured at start, at its price.
        plan = ctl_json(requester, "compute", "providers")
        offers = {ids[p["peer_id"]]: p for p in plan["providers"]}
        assert sorted(offers) == ["p1", "p2", "p3", "small"], plan
        assert all(o["score"] > 0 and o["cores"] >= 1 and o["arch"] == platform.machine()
                   for o in offers.values())
        assert offers["small"]["memory_bytes"] == 16 << 20
        assert (offers["p1"]["memory_bytes"], offers["p1"]["price_per_mfuel"],
                offers["p1"]["start_fee"]) == (64 << 20, 100, 3)

        # A hash on the 3 priced providers: the same output and fuel as wasmtime here,
        # each paid its price out of the requester's lock.
        data = tmp_path / "input.bin"
        data.write_bytes(os.urandom(100_000))
        module = EXAMPLES / "fnv1a.wat"
        local = Sandbox().run(module.read_text(), data.read_bytes())
        price = 3 + -(-local.fuel_used * 120 // 1_000_000)
        burned = units_of(local.fuel_used) * 20 // 1000
        price_info = ctl_json(requester, "compute", "price")
        assert (price_info["base_price_per_mfuel"], price_info["spot_check_bps"]) == (20, 2500)
        since = int(ctl_json(requester, "ledger", "state-root")["epoch"]) + 1
        code, shown, err = run(requester, str(module), "--input", str(data), "-k", "3",
                               "--min-memory", "32MiB", "--fuel", "2000000",
                               "--max-price", "1000")
        assert code == 0, err
        ran = shown["run"]
        assert isinstance(ran, dict)
        assert bytes.fromhex(ran["output_hex"]) == local.output
        assert ran["fuel"] == local.fuel_used
        attempts = shown["attempts"]
        assert isinstance(attempts, list) and len(attempts) == 3
        assert {ids[a["provider"]] for a in attempts} == {"p1", "p2", "p3"}
        assert {a["state"] for a in attempts} == {"done"}
        assert len({a["result_digest"] for a in attempts}) == 1  # identical results
        assert {a["units"] for a in attempts} == {units_of(local.fuel_used)}
        assert {a["price"] for a in attempts} == {str(price)}
        assert shown["lock"] and shown["max_price"] == "1000"
        records = {ids[p["peer_id"]]: p["record"]
                   for p in ctl_json(requester, "compute", "providers")["providers"]}
        assert {n: r["done"] for n, r in records.items()} == \
            {"p1": 1, "p2": 1, "p3": 1, "small": 0}
        assert records["small"]["first_seen"] is None  # never asked: 0.5, ranked between

        # The settlement pays each its price; the rest of the lock comes back at its
        # end; every node computed the same state.
        task = str(shown["task_id"])
        epoch, payments, _ = eventually_blocking(
            lambda: paid_in(requester, task, since), lambda found: found[0] >= 0,
            timeout=60, interval=1, what="the receipts' payments to settle")
        assert sorted((ids[p["provider"]], p["paid"], p["burned"]) for p in payments) == \
            [("p1", price, burned), ("p2", price, burned), ("p3", price, burned)]
        assert int(ctl_json(requester, "token", "info")["market_burned_total"]) >= 3 * burned
        roots = set()
        for n in nodes:
            eventually_blocking(lambda n=n: final_epoch(n) >= epoch, timeout=30, interval=0.5,
                                what=f"epoch {epoch} final on {n.name}")
            roots.add(json.dumps(ctl_json(n, "ledger", "state-root", "--epoch", str(epoch))))
        assert len(roots) == 1, roots
        refund_epoch, _, refunds = eventually_blocking(
            lambda: _refund_in(requester, task, epoch), lambda found: found[0] >= 0,
            timeout=60, interval=1, what="the rest of the lock to come back")
        assert refunds == [{"requester": str(requester.status()["peer_id"]), "task": task,
                            "amount": 3000 - 3 * price}]
        assert refund_epoch > epoch
        # The ledger's standing of each provider (`ledger standing`), folded from the
        # settlements: the same on every node once each has folded that epoch.
        p1 = next(p for p, n in ids.items() if n == "p1")
        standings = set()
        for n in nodes:
            shown_standing = eventually_blocking(
                lambda n=n: ctl_json(n, "ledger", "standing", p1),
                lambda st: int(st["through_epoch"]) >= refund_epoch, timeout=30, interval=0.5,
                what=f"{n.name} to fold epoch {refund_epoch}")
            for moving in ("through_epoch", "uptime_epochs"):  # each may have folded more
                del shown_standing[moving]
            standings.add(json.dumps(shown_standing, sort_keys=True))
        assert len(standings) == 1, standings
        folded = json.loads(standings.pop())
        assert folded["receipts"] >= 1 and folded["failed_tasks"] == 0, folded
        assert int(folded["earned"]) >= price - burned, folded
        requester_standing = ctl_json(requester, "ledger", "standing")
        assert int(requester_standing["paid"]) >= 3 * price, requester_standing
        assert int(requester_standing["refunded"]) >= 3000 - 3 * price, requester_standing

        # Without a price, only the free provider is asked; plain meshctl prints the
        # output itself (bytes), the summary on stderr.
        plain = subprocess.run([MESHCTL, "--socket", str(requester.socket), "compute", "run",
                                str(module), "--input", str(data), "--fuel", "2000000"],
                               capture_output=True,
                               timeout=60, check=True)
        assert plain.stdout == local.output
        assert b"8 bytes out, %d fuel, on 1 providers" % local.fuel_used in plain.stderr

        # A requester that cannot pay is refused before anyone works.
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--min-memory", "32MiB", "--max-price", str(10**12), "-k", "2",
                             check=False)
        assert done.returncode == 1, done.stderr
        assert "cannot lock 2000000000000 to pay for the task" in done.stderr
        assert "exceeds the author's available balance" in done.stderr

        # A loop that never ends stops at its fuel: a result, paid for that fuel.
        forever = tmp_path / "forever.wat"
        forever.write_text(FOREVER)
        code, shown, err = run(requester, str(forever), "--input", "-", "--fuel", "1000000",
                               "-k", "2", "--min-memory", "32MiB", "--max-price", "1000")
        assert code == 1, (code, err)
        ran = shown["run"]
        assert isinstance(ran, dict)
        assert ran["error"] == "out_of_fuel" and ran["fuel"] == 1_000_000, ran
        assert "spent all of its 1000000 fuel" in ran["message"]
        assert {a["units"] for a in shown["attempts"]} == {1000}  # type: ignore[union-attr]
        assert {a["price"] for a in shown["attempts"]} == {"123"}  # type: ignore[union-attr]
        listed = ctl_json(requester, "compute", "ls")
        assert [r["run"]["error"] if r["run"] else r["error"][:14] for r in listed[:4]] == \
            ["out_of_fuel", "cannot lock 20", "", ""]
        again = ctl_json(requester, "compute", "show", str(shown["task_id"])[:12])
        assert again["run"] == ran

        # Refused here, before anything is sent: with the reason.
        broken = tmp_path / "broken.wasm"
        broken.write_bytes(b"\x00asm\x01\x00\x00\x00garbage")
        clock = tmp_path / "clock.wat"
        clock.write_text(IMPORTS_CLOCK)
        huge = tmp_path / "huge.wasm"
        huge.write_bytes(b"\x00asm\x01\x00\x00\x00" + bytes(5 << 20))
        for path, why in [(broken, "not a valid WebAssembly module"),
                          (clock, "imports wasi_snapshot_preview1.clock_time_get"),
                          (huge, "over the limit of 4194304")]:
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
                             "--min-memory", "32MiB", "-k", "4", "--max-price", "1000",
                             "--fuel", "2000000", check=False)
        assert done.returncode == 1, done.stderr
        assert "3 connected providers can run this and 4 are needed" in done.stderr
        assert "offers 16 MiB of memory per run, not 32 MiB" in done.stderr
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--fuel", "5000000", "-k", "4", "--max-price", "1000",
                             check=False)  # 603 each for the priced ones
        assert done.returncode == 1, done.stderr
        assert "runs at most 2000000 fuel, not 5000000" in done.stderr
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "-k", "2", check=False)  # unpaid: the priced ones say so
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("over the 0 offered (--max-price)") == 3, done.stderr
        done = requester.ctl("compute", "run", str(module), "--input", str(data),
                             "--fuel", "1000000", "--max-price", "1000", "--cores", "4096",
                             check=False)
        assert done.returncode == 1, done.stderr
        assert "0 connected providers can run this and 1 are needed" in done.stderr
        assert done.stderr.count("cores, not 4096") == 4, done.stderr

        # A module stored with `storage put` runs by its CID: the task carries the
        # input only, and the provider reads the module from its storage plugin.
        stored = ctl_json(requester, "storage", "put", str(module))["cid"]
        by_cid = subprocess.run([MESHCTL, "--socket", str(requester.socket), "compute", "run",
                                 stored, "--input", str(data), "--fuel", "2000000"],
                                capture_output=True, timeout=120, check=False)
        assert by_cid.returncode == 0, by_cid.stderr
        assert by_cid.stdout == local.output
        unstored = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        done = requester.ctl("compute", "run", unstored, "--input", str(data), "--fuel",
                             "2000000", check=False, timeout=180)
        assert done.returncode == 1, done.stderr
        assert f"cannot read module {unstored}" in done.stderr, done.stderr
        done = requester.ctl("compute", "run", str(tmp_path / "nowhere.wat"), "--input",
                             str(data), check=False)
        assert done.returncode == 2 and "no such file, and not the CID" in done.stderr

        for node in nodes:
            assert node.process is not None and node.process.poll() is None, node.log()


def _refund_in(node: Meshd, task: str, after: int) -> tuple[int, list[Any], list[Any]]:
    """The settlement after epoch ``after`` that returns the rest of ``task``'s lock."""
    for epoch in range(after + 1, int(ctl_json(node, "ledger", "state-root")["epoch"]) + 1):
        refunds = [r for r in ctl_json(node, "rewards", "explain", str(epoch))["refunds"]
                   if r["task"] == task]
        if refunds:
            return epoch, [], refunds
    return -1, [], []
