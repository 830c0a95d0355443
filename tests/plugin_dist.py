"""Install test plugins as real entry points, without pip.

Writes a minimal distribution (a dist-info with METADATA and
entry_points.txt) into a directory: importlib.metadata, and so meshd, finds
its plugins exactly as it finds an installed package once the directory is on
the path (sys.path in-process, PYTHONPATH for meshd subprocesses).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_dist(site: Path, dist: str, version: str, points: dict[str, str]) -> None:
    """A distribution ``dist`` whose ``mesh.plugins`` entry points are ``points``
    (name → ``module:attribute``)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                                   f"Summary: the {dist} plugin\n")
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[mesh.plugins]\n{lines}")


def plugin_env(site: Path, plugins: dict[str, str], version: str = "1.0.0") -> dict[str, str]:
    """Install ``plugins`` into ``site``; the environment that puts it, and the
    repository (for tests.plugin_fixtures), on a meshd subprocess's path."""
    write_dist(site, "mesh-test-plugins", version, plugins)
    path = [str(site), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}
