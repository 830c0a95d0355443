"""meshctl plugins new: the package it writes passes its own tests, which prove the plugin earns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import meshctl


def test_a_new_plugin_passes_its_generated_tests(tmp_path: Path) -> None:
    package = tmp_path / "weather-station"
    out = meshctl("plugins", "new", "weather-station", "--dir", str(package)).stdout
    assert "pip install -e ." in out
    plugin = (package / "weather_station_mesh" / "plugin.py").read_text()
    assert "handle_task(" in plugin and "report_task(" in plugin and "accept_reports(" in plugin
    assert 'weather-station = "weather_station_mesh.plugin:WeatherStationPlugin"' in \
        (package / "pyproject.toml").read_text()
    # Its tests, as the author runs them: an event, a reported job countersigned,
    # and a task that earns its provider from the tasks pool of a minting network.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests"], cwd=package, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(package)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_a_new_javascript_plugin_passes_its_generated_tests(tmp_path: Path) -> None:
    package = tmp_path / "sensor"
    out = meshctl("plugins", "new", "sensor", "--lang", "js", "--dir", str(package)).stdout
    assert "npm ci" in out
    index = (package / "index.js").read_text()
    assert "handleTask(" in index and "reportTask(" in index and "acceptReports(" in index
    # Self-contained: its own copy of the client and the proto, the example's pinned tree.
    assert (package / "proto" / "mesh" / "pluginhost" / "v1" / "pluginhost.proto").is_file()
    lock = json.loads((package / "package-lock.json").read_text())
    assert lock["packages"][""]["name"] == "mesh-plugin-sensor"
    # `make setup` ran npm ci for plugins/examples/js-hash: the same packages are in
    # npm's cache, so this installs offline when the registry is unreachable.
    subprocess.run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund",
                    "--loglevel=error"], cwd=package, check=True, timeout=300)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests"], cwd=package, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_plugins_new_refuses_bad_names_and_busy_directories(tmp_path: Path) -> None:
    bad = meshctl("plugins", "new", "Bad_Name", "--dir", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "is not a plugin name" in bad.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    refused = meshctl("plugins", "new", "ok", "--dir", str(busy), check=False)
    assert refused.returncode == 2 and (busy / "mine.txt").read_text() == "keep"
    assert not (busy / "pyproject.toml").exists()
