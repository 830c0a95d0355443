"""An auditor's promises survive its restart (spent ones stay spent), a damaged line
does not spoil the rest, and the file stays about as large as the promises it holds."""

from __future__ import annotations

from pathlib import Path

from mesh_storage.promises import PromiseStore

from meshd.plugin import TaskReport


def report(holder: str, n: int) -> TaskReport:
    return TaskReport(holder, "KEEP", f"piece {n} 16384 {n} 100 file".encode(), 1 + n,
                      bytes([n]) * 40, bytes([n]) * 64)


def test_promises_survive_a_restart_newest_per_holder_and_file(tmp_path: Path) -> None:
    path = tmp_path / "promises.jsonl"
    store = PromiseStore(path, limit=100)
    store.add(("alice", "f1"), report("alice", 1))
    store.add(("alice", "f1"), report("alice", 2))  # a newer promise replaces the older
    store.add(("bob", "f1"), report("bob", 3))
    assert store.pop(("bob", "f1")) == report("bob", 3)
    with open(path, "a", encoding="ascii") as out:
        out.write('{"holder": "carol", "file": "f')  # cut short by a crash
    again = PromiseStore(path, limit=100)
    assert again.promises == {("alice", "f1"): report("alice", 2)}  # bob's was spent
    assert len(path.read_text().splitlines()) == 1  # rewritten at load


def test_the_file_is_compacted_and_the_oldest_promises_go_first(tmp_path: Path) -> None:
    path = tmp_path / "promises.jsonl"
    store = PromiseStore(path, limit=3)
    for n in range(5000):
        store.add((f"holder{n % 5}", "f"), report(f"holder{n % 5}", n % 200))
    assert list(store.promises) == [("holder2", "f"), ("holder3", "f"), ("holder4", "f")]
    assert len(path.read_text().splitlines()) <= 2 * 1024 + 1
    assert set(PromiseStore(path, limit=3).promises) == set(store.promises)
