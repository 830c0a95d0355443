"""py-libp2p's AutoTLS client stays out of meshd (meshd/p2p/upstream/autotls_standin.py)."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from meshd.p2p.upstream.autotls_standin import STAND_INS, AutoTLSNotLoaded


def test_a_daemon_imports_neither_the_acme_client_nor_its_http_libraries() -> None:
    probe = ("import sys, json, meshd.daemon, libp2p.host.basic_host; "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    loaded = set(json.loads(out))
    assert "libp2p" in loaded
    assert not loaded & {"requests", "httpx", "rich", "pygments", "click"}


def test_calling_a_stand_in_says_what_is_missing() -> None:
    # A fresh interpreter: in this one another test may have imported libp2p
    # before meshd.p2p, and so the real module.
    probe = ("import meshd.p2p\n"
             "from libp2p.security.tls.autotls.acme import ACMEClient\n"
             "ACMEClient(None, None)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert f"{AutoTLSNotLoaded.__name__}: " in result.stderr
    assert "does not use py-libp2p's AutoTLS" in result.stderr


def test_the_stand_ins_cover_every_name_the_host_imports_from_them() -> None:
    spec = importlib.util.find_spec("libp2p.host.basic_host")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    imported: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in STAND_INS:
            imported.setdefault(node.module, set()).update(a.name for a in node.names)
    assert imported == {module: set(names) for module, names in STAND_INS.items()}
