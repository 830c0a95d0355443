"""Which advertised providers can execute a task, least loaded first (docs/tasks.md §2): pure."""

from __future__ import annotations

from collections.abc import Iterable

from mesh.wire.v1 import wire_pb2


def rank_providers(advertised: Iterable[tuple[str, wire_pb2.TaskCapabilities]], plugin: str,
                   kind: str, required: Iterable[str]) -> list[str]:
    """Peers whose capabilities name ``plugin``/``kind`` and every label in
    ``required``, the least loaded (running / max_running) first. Equally
    loaded peers keep the order of ``advertised`` (the caller shuffles it)."""
    wanted = set(required)
    able: list[tuple[float, str]] = []
    for peer, caps in advertised:
        if not any(k.plugin == plugin and k.kind == kind for k in caps.kinds):
            continue
        if not wanted <= set(caps.capabilities):
            continue
        able.append((caps.running / max(caps.max_running, 1), peer))
    able.sort(key=lambda item: item[0])  # stable: the caller's order among equals
    return [peer for _, peer in able]
