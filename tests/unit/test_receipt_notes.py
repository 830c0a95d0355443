"""Receipt notes: kept with a receipt's hash, on disk across restarts, bounded, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshd import errors
from meshd.tasks.notes import MAX_NOTE, ReceiptNotes


def test_notes_are_kept_reloaded_and_damaged_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "receipt-notes.jsonl"
    notes = ReceiptNotes(path)
    notes.add("ab" * 32, "storage", "served 2 pieces: bafkrei…, bafkrei…")
    notes.add("cd" * 32, "storage", "passed the audit of segment 3")
    assert notes.get(bytes.fromhex("ab" * 32)) == ("storage", "served 2 pieces: bafkrei…, "
                                                   "bafkrei…")
    assert notes.get(bytes(32)) is None
    with path.open("a") as out:
        out.write('{"receipt": "zz", "plugin"\n')  # a crash mid-write
    again = ReceiptNotes(path)
    assert again.get(bytes.fromhex("cd" * 32)) == ("storage", "passed the audit of segment 3")


def test_the_newest_notes_are_kept_and_the_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "receipt-notes.jsonl"
    notes = ReceiptNotes(path, limit=10)
    for i in range(25):
        notes.add(f"{i:064x}", "storage", f"note {i}")
    assert notes.get(bytes.fromhex(f"{0:064x}")) is None
    assert notes.get(bytes.fromhex(f"{24:064x}")) == ("storage", "note 24")
    assert len(path.read_text().splitlines()) <= 20
    reloaded = ReceiptNotes(path, limit=10)
    assert [reloaded.get(bytes.fromhex(f"{i:064x}")) is not None for i in (14, 15, 24)] \
        == [False, True, True]
    assert all(json.loads(line)["plugin"] == "storage" for line in path.read_text().splitlines())


@pytest.mark.parametrize("note", ["two\nlines", "x" * (MAX_NOTE + 1), "\x00"])
def test_a_note_that_is_not_one_short_line_is_refused(tmp_path: Path, note: str) -> None:
    notes = ReceiptNotes(tmp_path / "n.jsonl")
    with pytest.raises(errors.InvalidArgument, match="one line of at most"):
        notes.add("ab" * 32, "storage", note)
    assert not (tmp_path / "n.jsonl").exists()
