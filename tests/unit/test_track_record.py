"""The router's track record of each provider (meshd/tasks/track_record.py)."""

from __future__ import annotations

from meshd.tasks.track_record import TrackRecords


def test_attempts_are_counted_by_how_they_ended_and_the_oldest_forgotten() -> None:
    records = TrackRecords(kept=2)
    for state in ("done", "done", "wrong", "timed_out", "failed", "invalid"):
        records.note("p", state)
    record = records.get("p")
    assert record is not None and (record.done, record.failed, record.wrong) == (2, 3, 1)
    first = record.first_seen
    records.note("q", "done")
    records.note("p", "done")  # p is the most recently seen now
    records.note("r", "done")
    assert records.get("q") is None and records.get("p") is not None
    assert records.get("p").first_seen == first  # type: ignore[union-attr]
