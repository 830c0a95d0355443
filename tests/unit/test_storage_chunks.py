"""The storage plugin's chunk store: content addressing, capacity, damage."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
from pathlib import Path

import pytest
from mesh_storage.chunks import (
    ChunkStore,
    StorageFull,
    check_hash,
    storage_proof,
    write_atomically,
)


def test_a_chunk_is_named_by_its_hash_and_stored_once(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks", capacity=1000)
    name = store.put(b"hello")
    assert name == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == name and store.used == 5
    assert store.has(name) and store.get(name) == b"hello"
    assert store.get("0" * 64) is None
    # The count of used bytes survives a restart.
    assert ChunkStore(tmp_path / "chunks", capacity=1000).used == 5


def test_capacity_is_enforced(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, capacity=8)
    store.put(b"12345")
    with pytest.raises(StorageFull, match="exceed this node's capacity"):
        store.put(b"6789")
    assert store.used == 5


def test_a_damaged_chunk_is_dropped_not_served(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, capacity=100)
    name = store.put(b"original")
    (tmp_path / name[:2] / name).write_bytes(b"tampered")
    assert store.get(name) is None
    assert not store.has(name) and store.used == 0


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "0" * 63, "", "0" * 64 + "/"])
def test_names_that_are_not_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a chunk hash"):
        check_hash(bad)


def test_the_proof_depends_on_nonce_and_content() -> None:
    proofs = {storage_proof(n, d) for n in (b"a" * 16, b"b" * 16) for d in (b"x", b"y")}
    assert len(proofs) == 4


def test_writers_of_one_chunk_at_once_never_leave_it_damaged(tmp_path: Path) -> None:
    # Overlapping repairs store the same piece on one holder: with a shared
    # temporary name, one writer truncated the other's file before its rename.
    data = os.urandom(256 * 1024)
    path = tmp_path / "ab" / "piece"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            list(pool.map(lambda _: write_atomically(path, data), range(32)))
            assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["piece"]  # no temporary left
