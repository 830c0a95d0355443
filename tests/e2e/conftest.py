from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import LOOPBACK, Meshd, meshctl


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    """A genesis made the way a founder makes one."""
    meshctl("network", "init", "--allow-no-validators",
            "--name", "StorageNet", "--token-name", "STORE",
            "--token-symbol", "STR", "--token-distribution", "uptime:40,tasks:40,governance:20",
            "--plugin", "storage", "--bootstrap-port", "8080", "--out", str(tmp_path / "net"))
    return tmp_path / "net" / "genesis.toml"


@pytest.fixture
def network_id(genesis: Path) -> str:
    return str(json.loads(meshctl("network", "inspect", str(genesis), "--json").stdout)[
        "network_id"])


@pytest.fixture
def node(tmp_path: Path, genesis: Path) -> Iterator[Callable[..., Meshd]]:
    """Factory of meshd processes on loopback; all are killed at the end."""
    started: list[Meshd] = []

    def make(name: str = "n1", *args: str, genesis_file: Path | None = genesis,
             start: bool = True, loopback: bool = True, **kwargs: object) -> Meshd:
        process = Meshd(tmp_path, name, genesis_file, *(LOOPBACK if loopback else ()), *args,
                        **kwargs)  # type: ignore[arg-type]
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.kill()
