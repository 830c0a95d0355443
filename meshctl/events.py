"""meshctl events: the node's event streams in one, as they happen.

Each kind is the server stream its own command watches (``ledger watch``,
``gov watch``, ``tasks watch``, ``peers watch``), read on its own thread;
lines are printed in the order they arrive, tagged with their kind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import click

from meshctl.client import ClientError, MeshClient
from meshctl.context import fail, json_option, with_client
from meshctl.gov import proposal_change_line, proposal_stream
from meshctl.ledger import settlement_line, settlement_stream
from meshctl.output import emit_stream
from meshctl.peers import peer_event_line, peer_event_stream
from meshctl.tasks import task_change_line, task_stream

Source = Callable[[MeshClient], Iterable[dict[str, Any]]]

SOURCES: dict[str, tuple[Source, Callable[[dict[str, Any]], str]]] = {
    "settlement": (settlement_stream, settlement_line),
    "proposal": (proposal_stream, proposal_change_line),
    "task": (task_stream, task_change_line),
    "peer": (peer_event_stream, peer_event_line),
}


@click.command()
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(SOURCES)),
              help="Only these kinds (repeatable). Default: all.")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Stop after N events.")
@json_option
@with_client
def events(client: MeshClient, kinds: tuple[str, ...], count: int | None,
           as_json: bool) -> None:
    """Print the node's events as they happen: settlements, proposals, tasks, peers.

    Each kind starts as its own watch command does: the newest final
    settlement, every proposal and kept task, then each change; peers from
    now on. One line per event, tagged with its kind (--json: one object per
    line, {"kind": ..., "event": {...}}, the event as the kind's watch command
    prints it). Until Ctrl-C, or N events.
    """
    chosen = kinds or tuple(SOURCES)
    emit_stream(_merged(client, chosen), count, as_json,
                lambda d: f"[{d['kind']}] {SOURCES[d['kind']][1](d['event'])}")


def _merged(client: MeshClient, kinds: Iterable[str]) -> Iterator[dict[str, Any]]:
    arrived: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)

    def read(kind: str) -> None:
        try:
            for event in SOURCES[kind][0](client):
                arrived.put((kind, event))
        except ClientError as exc:
            arrived.put(("error", f"{kind} stream: {exc}"))
        except Exception as exc:  # reported on the main thread, not lost with the thread
            arrived.put(("error", f"{kind} stream: {type(exc).__name__}: {exc}"))

    for kind in kinds:
        threading.Thread(target=read, args=(kind,), daemon=True, name=f"events-{kind}").start()
    while True:
        kind, event = arrived.get()
        if kind == "error":
            fail(event)
        yield {"kind": kind, "event": event}
