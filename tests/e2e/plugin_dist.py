"""Install test plugins as real entry points for meshd subprocesses.

Writes a minimal distribution (a dist-info with entry_points.txt) into a
directory and returns the environment that puts it, and the repository, on
the subprocess's path: meshd then finds the plugins exactly as it finds an
installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def plugin_env(site: Path, plugins: dict[str, str], version: str = "1.0.0") -> dict[str, str]:
    """``plugins``: entry-point name → ``module:attribute``; returns env for Meshd."""
    info = site / f"mesh_test_plugins-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mesh-test-plugins\n"
                                   f"Version: {version}\nSummary: plugins for Mesh's tests\n")
    lines = "".join(f"{name} = {target}\n" for name, target in plugins.items())
    (info / "entry_points.txt").write_text(f"[mesh.plugins]\n{lines}")
    path = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}
