"""The holders' promises an auditor keeps (verdicts.py), on disk across restarts.

A promise is the last KEEP report this node countersigned per (holder, file):
the evidence a failure verdict rests on. Kept in memory, an auditor that
restarted could judge no holder until each had passed one of its audits
again. One JSON line per promise is appended as it comes; the file is
rewritten with the newest promise per key when it holds twice as many lines
as promises, and at load.
"""

from __future__ import annotations

import collections
import contextlib
import json
from pathlib import Path
from typing import Any

from mesh_storage.chunks import write_atomically
from meshd.plugin import TaskReport

Key = tuple[str, str]  # (holder, file CID)


class PromiseStore:
    def __init__(self, path: Path, limit: int) -> None:
        self._path = path
        self._limit = limit
        self._lines = 0
        self.promises: collections.OrderedDict[Key, TaskReport] = collections.OrderedDict()
        self._load()

    def add(self, key: Key, report: TaskReport) -> None:
        self.promises[key] = report
        self.promises.move_to_end(key)
        while len(self.promises) > self._limit:
            self.promises.popitem(last=False)
        self._append(_line(key, report))

    def pop(self, key: Key) -> TaskReport | None:
        """The promise for ``key``, now spent (judged): gone after a restart too."""
        report = self.promises.pop(key, None)
        if report is not None:
            self._append(json.dumps({"holder": key[0], "file": key[1], "spent": True},
                                    separators=(",", ":")) + "\n")
        return report

    def _append(self, line: str) -> None:
        with contextlib.suppress(OSError):  # a full disk loses a promise, not the audit
            with open(self._path, "a", encoding="ascii") as out:
                out.write(line)
            self._lines += 1
        if self._lines > 2 * max(len(self.promises), 1024):
            self._compact()

    def _load(self) -> None:
        try:
            text = self._path.read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return
        for line in text.splitlines():
            try:
                key, report = _parse(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: the rest still count
            if report is None:
                self.promises.pop(key, None)
                continue
            self.promises[key] = report
            self.promises.move_to_end(key)
        while len(self.promises) > self._limit:
            self.promises.popitem(last=False)
        self._compact()

    def _compact(self) -> None:
        with contextlib.suppress(OSError):
            write_atomically(self._path, "".join(
                _line(k, r) for k, r in self.promises.items()).encode("ascii"))
            self._lines = len(self.promises)


def report_json(report: TaskReport) -> dict[str, Any]:
    """A report as JSON data (bytes in hex): on disk here, and in CONFIRM_AUDIT."""
    return {"provider": report.provider, "kind": report.kind, "detail": report.detail.hex(),
            "units": report.units, "claim": report.claim.hex(),
            "signature": report.signature.hex()}


def report_from_json(data: dict[str, Any]) -> TaskReport:
    """The report :func:`report_json` gave; ValueError, KeyError or TypeError if it is none."""
    units = data["units"]
    if not isinstance(units, int) or isinstance(units, bool):
        raise TypeError("units")
    return TaskReport(str(data["provider"]), str(data["kind"]), bytes.fromhex(data["detail"]),
                      units, bytes.fromhex(data["claim"]), bytes.fromhex(data["signature"]))


def _line(key: Key, report: TaskReport) -> str:  # the holder is the report's provider
    return json.dumps({"file": key[1], "report": report_json(report)},
                      separators=(",", ":")) + "\n"


def _parse(line: str) -> tuple[Key, TaskReport | None]:
    """A promise line, or a spent one's (None)."""
    data: dict[str, Any] = json.loads(line)
    if data.get("spent") is True:
        return (str(data["holder"]), str(data["file"])), None
    report = report_from_json(data["report"])
    return (report.provider, str(data["file"])), report
