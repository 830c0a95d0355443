"""Import boundaries (DESIGN §1, STYLE rule 3), checked in fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules_loaded_by(*imports: str) -> set[str]:
    code = ";".join(f"import {name}" for name in imports)
    code += ";import sys,json;print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True, timeout=60)
    return set(json.loads(result.stdout))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_meshctl_imports_neither_meshd_trio_nor_libp2p() -> None:
    meshctl_modules = [f"meshctl.{p.stem}" for p in (ROOT / "meshctl").glob("*.py")
                       if p.stem != "__main__"]
    loaded = top_level(modules_loaded_by(*meshctl_modules))
    assert "meshctl" in loaded  # the check itself works
    assert not loaded & {"meshd", "trio", "libp2p"}


MESHCORE = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / "meshcore").rglob("*.py") if p.stem != "__init__")
# What makes code impure: time and randomness make two nodes disagree on a
# settlement; I/O and frameworks belong to the daemon (DESIGN §1).
CLOCKS_AND_CHANCE = {"time.time", "time.monotonic", "time.perf_counter", "datetime.now",
                     "datetime.utcnow", "date.today", "random", "secrets", "os.urandom"}


def test_meshcore_is_pure() -> None:
    assert "meshcore.ledger.settle" in MESHCORE  # the check itself sees the ledger core
    loaded = top_level(modules_loaded_by(*MESHCORE))
    assert not loaded & {"meshd", "meshctl", "trio", "libp2p", "grpc", "sqlite3", "anyio"}


def test_meshcore_reads_no_clock_and_draws_no_chance() -> None:
    offenders = []
    for path in (ROOT / "meshcore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
            elif isinstance(node, ast.Import):
                name = next((a.name for a in node.names if a.name in CLOCKS_AND_CHANCE), "")
            elif isinstance(node, ast.ImportFrom):
                name = node.module or ""
            else:
                continue
            if name in CLOCKS_AND_CHANCE:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


def test_only_meshd_p2p_imports_libp2p() -> None:
    offenders = []
    for path in ROOT.glob("mesh*/**/*.py"):
        if path.is_relative_to(ROOT / "meshd" / "p2p"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "libp2p" or n.startswith("libp2p.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_meshd_cli_help_does_not_import_libp2p() -> None:
    # `meshd --help` must be instant: libp2p (~0.6 s) loads only when a node starts.
    loaded = top_level(modules_loaded_by("meshd.cli"))
    assert "libp2p" not in loaded


def test_first_party_plugins_use_only_the_public_plugin_api() -> None:
    # plugins/ are written exactly as a third party would write them (DESIGN §1).
    offenders = []
    for path in ROOT.glob("plugins/*/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] in {"meshd", "meshcore", "meshctl", "mesh", "libp2p"} \
                        and name != "meshd.plugin":
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert list(ROOT.glob("plugins/*/**/*.py"))  # the check itself looks somewhere
    assert offenders == []


def test_the_plugin_api_loads_neither_libp2p_nor_grpc() -> None:
    # A plugin's tests and tools can import its module without a daemon's weight.
    loaded = top_level(modules_loaded_by("meshd.plugin", "mesh_storage.plugin"))
    assert not loaded & {"libp2p", "grpc"}
