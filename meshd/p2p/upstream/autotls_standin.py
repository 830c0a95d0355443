"""Stand-ins for py-libp2p's AutoTLS client, which meshd never runs.

py-libp2p 0.8.1's ``libp2p/host/basic_host.py:102-106`` imports the AutoTLS
ACME and broker clients at module level, for ``BasicHost.initiate_autotls_procedure``
alone, and with them ``requests``, ``httpx`` and httpx's command line (rich,
pygments, click): about 225 modules, 10 MiB of RSS and 0.2 s of start-up per
daemon (docs/py-libp2p.md#found-autotls-imported-by-every-host). meshd does not
use AutoTLS. ``install()``, called before libp2p is first imported, puts a
finder in front of the import system that answers those two modules with
stand-ins: the names basic_host imports exist, and calling any of them raises
``AutoTLSNotLoaded`` instead of doing something half-way.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import NoReturn

# The two modules and the names ``basic_host`` imports from them. Should a
# later py-libp2p import another name, ``import libp2p`` fails at once with an
# ImportError that names it (tests/unit/test_autotls_standin.py).
STAND_INS: dict[str, tuple[str, ...]] = {
    "libp2p.security.tls.autotls.acme": ("ACMEClient", "compute_b36_peer_id"),
    "libp2p.security.tls.autotls.broker": ("BrokerClient",),
}


class AutoTLSNotLoaded(RuntimeError):
    """Something called py-libp2p's AutoTLS client, which meshd replaces by stand-ins."""


def _not_loaded(module: str, name: str) -> object:
    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise AutoTLSNotLoaded(
            f"{module}.{name} is not loaded: meshd does not use py-libp2p's AutoTLS "
            "(meshd/p2p/upstream/autotls_standin.py)")

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"meshd's stand-in for {spec.name}")
        for name in STAND_INS[spec.name]:
            setattr(module, name, _not_loaded(spec.name, name))
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in STAND_INS:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), origin="meshd stand-in")


def install() -> None:
    """Answer the AutoTLS modules with stand-ins from now on (idempotent)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
