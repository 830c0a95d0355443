"""Install test plugins as real entry points, without pip (meshd.testing does the work).

The dist-info goes into a directory that is then put on the path (sys.path
in-process, PYTHONPATH for meshd subprocesses), with the repository, so that
tests.plugin_fixtures imports.
"""

from __future__ import annotations

from pathlib import Path

from meshd.testing import install_plugins
from meshd.testing import write_dist as write_dist

ROOT = Path(__file__).resolve().parents[1]


def plugin_env(site: Path, plugins: dict[str, str], version: str = "1.0.0") -> dict[str, str]:
    """Install ``plugins`` into ``site``; the environment that puts it, and the
    repository (for tests.plugin_fixtures), on a meshd subprocess's path."""
    return install_plugins(site, plugins, version=version, path=[ROOT])
