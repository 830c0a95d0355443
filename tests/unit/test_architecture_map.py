"""docs/architecture.md names every package and module of the tree, and only those.

The map is what a newcomer reads first (issue 15): a module added without a
line there, or a line left behind by a rename, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = ("meshcore", "meshd", "meshctl")


def modules() -> list[Path]:
    return sorted(p.relative_to(ROOT) for package in PACKAGES
                  for p in (ROOT / package).rglob("*.py")
                  if p.name not in ("__init__.py", "__main__.py"))


def test_every_package_is_on_the_map() -> None:
    packages = sorted({str(m.parent) for m in modules()})
    missing = [p for p in packages if f"`{p}/" not in MAP and f"**{p}/**" not in MAP]
    assert missing == []


def test_every_module_of_the_daemon_and_the_core_is_named() -> None:
    # meshctl is mapped as "one module per noun", the API's servicers as
    # "one thin `<domain>_servicer.py` per service"; the rest by name.
    missing = [str(m) for m in modules() if m.parts[0] != "meshctl"
               and not (m.parts[:2] == ("meshd", "api") and m.name.endswith("_servicer.py")
                        and "`<domain>_servicer.py`" in MAP)
               and f"`{m.name}`" not in MAP and f"`{m}`" not in MAP]
    assert missing == []


def test_every_path_the_map_names_exists() -> None:
    named = set(re.findall(r"`((?:meshd|meshcore|meshctl|plugins|proto|bench|tests)/[\w/.]*)`",
                           MAP))
    gone = sorted(p for p in named if not (ROOT / p.split(":")[0]).exists())
    assert gone == []
