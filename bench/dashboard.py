"""Benchmark: the dashboard's first paint and data-ready time in headless chromium.

A 4-node testnet (``meshctl testnet up``, the storage plugin, 3-s epochs) and Debian's chromium
driven by Playwright. Each of ``--loads`` cold loads opens node 0's dashboard
in a fresh browser context (no cache) and reads, from the page's own clock
(``performance``): first contentful paint, and data-ready, the moment every
panel shows data from the node (the node's peer ID, its peers, the DHT, the
final epoch, the rewards and plugins tables). The baseline, in the same run, is
the first paint of a one-line HTML page (``data:`` URL): the browser's floor.

Run from the repository root: ``.venv/bin/python bench/dashboard.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import output
from playwright.sync_api import Page, sync_playwright

BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# True once every panel shows data (the selectors tests/e2e/test_dashboard.py reads).
READY = """() => {
  const v = (id) => document.querySelector(`[data-testid="${id}"]`)?.dataset.value;
  const rows = (id) => document.querySelectorAll(`[data-testid="${id}"] tr`).length;
  return v("node-peer-id") && v("dht-routing-table") && v("ledger-final-epoch")
    && rows("peers-table") >= 3 && rows("rewards") > 0 && rows("plugins") > 0;
}"""
PAINT = """() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null"""


def first_paint(page: Page) -> float:
    page.wait_for_function(f"({PAINT})() !== null", timeout=30_000)
    paint: float = page.evaluate(PAINT)
    return paint


def load(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(READY, timeout=60_000, polling=20)
        ready: float = page.evaluate("performance.now()")
        return {"first_paint_ms": first_paint(page), "data_ready_ms": ready}
    finally:
        context.close()


def floor(browser: Any) -> float:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto("data:text/html,<!doctype html><p>baseline</p>")
        return first_paint(page)
    finally:
        context.close()


def table(results: dict[str, Any]) -> None:
    print(f"Dashboard of node 0 of a 4-node testnet, headless chromium, {results['loads']} "
          "cold loads (median, min-max)")
    for key, label in (("first_paint_ms", "first contentful paint"),
                       ("data_ready_ms", "every panel with data")):
        figures = results[key]
        print(f"{label:<24} {figures['median']:>7.0f} ms "
              f"({figures['min']:.0f}-{figures['max']:.0f})")
    print(f"{'baseline: a blank page':<24} {results['baseline_first_paint_ms']:>7.0f} ms "
          f"(first paint ratio dashboard/blank {results['first_paint_ratio']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-dashboard-") as tmp:
        directory = Path(tmp) / "testnet"
        up = subprocess.run([str(BIN / "meshctl"), "--json", "testnet", "up", "-n", "4",
                             "--plugin", "storage", "--epoch-seconds", "3",
                             "--dir", str(directory)],
                            capture_output=True, text=True, timeout=180, check=True)
        url = json.loads(up.stdout)["nodes"][0]["dashboard"]
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                    args=CHROMIUM_ARGS)
                load(browser, url)  # warm-up: the testnet's first epochs, chromium's caches
                samples = [load(browser, url) for _ in range(args.loads)]
                baseline = statistics.median(floor(browser) for _ in range(args.loads))
                browser.close()
        finally:
            subprocess.run([str(BIN / "meshctl"), "testnet", "down", "--dir", str(directory)],
                           capture_output=True, timeout=120, check=False)

    def spread(key: str) -> dict[str, float]:
        values = [s[key] for s in samples]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    results = {"loads": args.loads, "first_paint_ms": spread("first_paint_ms"),
               "data_ready_ms": spread("data_ready_ms"), "baseline_first_paint_ms": baseline,
               "first_paint_ratio": round(spread("first_paint_ms")["median"] / baseline, 2)}
    output.emit(results, args.json, table)


if __name__ == "__main__":
    main()
