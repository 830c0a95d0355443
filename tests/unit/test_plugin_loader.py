"""Finding plugins through real entry points, and checking them against genesis."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshcore.genesis import RequiredPlugin
from meshd.plugin import Plugin
from meshd.plugin_host.loader import PluginSetupError, installed, select
from tests.plugin_dist import write_dist

MODULE = '''
from meshd.plugin import Plugin

class Good(Plugin):
    pass

def not_a_plugin():
    return object()

raise_on_import = False
'''


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "loader_fixture_mod.py").write_text(MODULE)
    (tmp_path / "loader_broken_mod.py").write_text("raise ImportError('no numpy here')\n")
    write_dist(tmp_path, "good-plugin", "1.4.0", {"good": "loader_fixture_mod:Good"})
    write_dist(tmp_path, "odd-plugin", "0.1", {
        "odd": "loader_fixture_mod:not_a_plugin", "broken": "loader_broken_mod:Thing"})
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("loader_fixture_mod", "loader_broken_mod"):
        sys.modules.pop(name, None)


def test_installed_plugins_are_found_by_entry_point(site: Path) -> None:
    found = {p.name: p for p in installed()}
    assert {"good", "odd", "broken", "storage"} <= set(found)
    good = found["good"]
    assert (good.version, good.distribution, good.summary) == (
        "1.4.0", "good-plugin", "the good-plugin plugin")


def test_required_and_enabled_plugins_are_selected(site: Path) -> None:
    chosen = select(installed(), [RequiredPlugin("good", ">=1.0,<2")], enabled=["storage"])
    assert [(s.name, s.required) for s in chosen] == [("good", ">=1.0,<2"), ("storage", None)]
    assert isinstance(chosen[0].factory(), Plugin)


def test_every_problem_is_reported_at_once(site: Path) -> None:
    with pytest.raises(PluginSetupError) as refused:
        select(installed(), [RequiredPlugin("good", ">=2"), RequiredPlugin("absent", ">=1"),
                             RequiredPlugin("broken")], enabled=["nothere"])
    message = str(refused.value)
    assert "plugin 'good' is installed in version 1.4.0 (good-plugin), but the network " \
           "requires good>=2" in message
    assert "this network requires plugin 'absent' >=1, which is not installed" in message
    assert "plugin 'broken' (odd-plugin 0.1) cannot be loaded: ImportError: no numpy here" \
        in message
    assert "plugin 'nothere' is enabled in plugins.enable but not installed" in message


def test_an_entry_point_that_makes_no_plugin_fails_when_started(site: Path) -> None:
    (odd,) = select(installed(), [], enabled=["odd"])
    with pytest.raises(TypeError, match=r"made a object, not a meshd\.plugin\.Plugin"):
        odd.factory()


def test_an_external_plugin_satisfies_a_requirement(site: Path) -> None:
    assert select(installed(), [RequiredPlugin("hello-js", ">=1")], enabled=[],
                  external=["hello-js"]) == []
