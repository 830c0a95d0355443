"""Finding plugins: entry points of the group ``mesh.plugins``, checked against genesis.

A plugin's name is its entry point's name (the name genesis lists); its
version is its distribution's. Which plugins a node runs: every plugin the
genesis requires, plus those the operator enables (``plugins.enable``). A
required plugin that is missing, or installed in a version outside the
genesis range, stops the node before it joins the network: it could not
serve the network's business logic, nor judge its tasks.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from meshcore.genesis import RequiredPlugin
from meshd.plugin.api import ENTRY_POINT_GROUP, Plugin


class PluginSetupError(Exception):
    """The node's plugins do not match what the network requires."""


@dataclass(frozen=True)
class Available:
    """An installed plugin: an entry point of ``mesh.plugins``."""

    name: str
    version: str
    distribution: str
    summary: str
    load: Callable[[], object]  # imports the entry point's object


@dataclass(frozen=True)
class Selected:
    """A plugin this node will run."""

    name: str
    version: str
    distribution: str
    summary: str
    factory: Callable[[], Plugin]
    required: str | None  # the genesis range ("" = any), None if not required
    kind: str = "in-process"  # or "external"


def available(name: str, plugin: Callable[[], Plugin], version: str = "0.0.0",
              summary: str = "") -> Available:
    """An Available for a plugin class that is not installed as a package (tests)."""
    return Available(name, version, "", summary, lambda: plugin)


def installed() -> list[Available]:
    """Every entry point of ``mesh.plugins`` in the environment, by name."""
    found: dict[str, Available] = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist
        found.setdefault(point.name, Available(
            name=point.name,
            version=dist.version if dist is not None else "0",
            distribution=dist.name if dist is not None else "",
            summary=(dist.metadata["Summary"] or "") if dist is not None else "",
            load=point.load))
    return sorted(found.values(), key=lambda a: a.name)


def select(available: Iterable[Available], required: Sequence[RequiredPlugin],
           enabled: Sequence[str], external: Iterable[str] = ()) -> list[Selected]:
    """The in-process plugins to run, loaded (imported) and checked.

    Args:
        available: installed plugins (:func:`installed`).
        required: the genesis ``plugins``.
        enabled: names the operator enabled beyond the required ones.
        external: names of configured external plugins; they take the place
            of an installed plugin of that name and satisfy a requirement of
            it (their version is checked when they register).

    Raises:
        PluginSetupError: a required or enabled plugin is missing, out of the
            genesis range, or cannot be imported; every problem is listed.
    """
    by_name = {a.name: a for a in available}
    external_names = set(external)
    wanted: dict[str, str | None] = {r.name: r.version for r in required}
    for name in enabled:
        wanted.setdefault(name, None)
    problems: list[str] = []
    selected: list[Selected] = []
    for name, spec in sorted(wanted.items()):
        if name in external_names:
            continue
        item = by_name.get(name)
        if item is None:
            problems.append(_missing(name, spec, sorted(by_name)))
            continue
        if not version_in_range(item.version, spec):
            problems.append(f"plugin {name!r} is installed in version {item.version} "
                            f"({item.distribution}), but the network requires {name}{spec}: "
                            f"install a matching version")
            continue
        try:
            factory = _factory(item)
        except Exception as exc:  # the plugin's import ran its code: anything can happen
            problems.append(f"plugin {name!r} ({item.distribution} {item.version}) cannot be "
                            f"loaded: {type(exc).__name__}: {exc}")
            continue
        selected.append(Selected(name, item.version, item.distribution, item.summary,
                                 factory, spec))
    if problems:
        raise PluginSetupError("; ".join(problems))
    return selected


def _missing(name: str, spec: str | None, installed_names: list[str]) -> str:
    have = ", ".join(installed_names) or "none"
    if spec is None:
        return (f"plugin {name!r} is enabled in plugins.enable but not installed "
                f"(installed plugins: {have})")
    return (f"this network requires plugin {name!r}{' ' + spec if spec else ''}, which is "
            f"not installed (installed plugins: {have}); install the package that provides "
            f"it, or configure it as an external plugin")


def _factory(item: Available) -> Callable[[], Plugin]:
    target = item.load()
    if not callable(target):
        raise TypeError(f"entry point {item.name!r} names {target!r}, which is not callable; "
                        "it should name a Plugin subclass or a function returning a Plugin")

    def make() -> Plugin:
        plugin = target()
        if not isinstance(plugin, Plugin):
            raise TypeError(f"entry point {item.name!r} made a {type(plugin).__name__}, "
                            "not a meshd.plugin.Plugin")
        return plugin

    return make


def version_in_range(version: str, spec: str | None) -> bool:
    """Whether ``version`` satisfies the genesis range ``spec`` (None or "": any)."""
    if not spec:
        return True
    try:
        return Version(version) in SpecifierSet(spec)
    except InvalidVersion:
        return False
