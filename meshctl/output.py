"""Output for people (aligned text) and for scripts (--json, stable field names)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from google.protobuf.timestamp_pb2 import Timestamp


def emit(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON for scripts, or as ``human(data)`` for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(human(data))


def emit_line(data: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """One item of a stream: a JSON object per line, or a text block and a blank line."""
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        click.echo(human(data) + "\n")


def emit_stream(items: Iterable[Any], count: int | None, as_json: bool,
                human: Callable[[Any], str]) -> None:
    """Each data item of a server stream as :func:`emit_line` prints it, until
    ``count`` were shown (None: until the stream ends or Ctrl-C)."""
    shown = 0
    try:
        for data in items:
            emit_line(data, as_json, human)
            shown += 1
            if count is not None and shown >= count:
                return
    except KeyboardInterrupt:
        pass


def fields(rows: Sequence[tuple[str, Any]]) -> str:
    """``Label:  value`` lines, values aligned; list values continue below."""
    width = max(len(label) for label, _ in rows) + 2
    lines: list[str] = []
    for label, value in rows:
        values = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        values = values or ["-"]
        lines.append(f"{label + ':':<{width}}{values[0]}")
        lines.extend(" " * width + v for v in values[1:])
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """``3d 4h 5m 6s``, leaving out leading zero units."""
    total = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size or parts:
            parts.append(f"{total // size}{unit}")
            total %= size
    parts.append(f"{total}s")
    return " ".join(parts)


def token_amount(base_units: str | int, decimals: int, symbol: str) -> str:
    """``1500000 (1.5 STR)``: base units and the value in tokens, exactly (no floats)."""
    units = int(base_units)
    whole, fraction = divmod(abs(units), 10**decimals)
    digits = f"{fraction:0{decimals}d}".rstrip("0") if decimals else ""
    sign = "-" if units < 0 else ""
    return f"{units} ({sign}{whole}{'.' + digits if digits else ''} {symbol})"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=True)).rstrip()
                     for row in rows)


def timestamp_text(stamp: Timestamp) -> str:
    """RFC 3339 text of a Timestamp field; "" when it is unset."""
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else ""
