"""Content-addressed chunks on disk: the name of a chunk is the SHA-256 of its bytes.

Writes are atomic (temporary file, fsync, rename), so a crash never leaves a
chunk whose content does not match its name; reads re-check the hash, so a
chunk damaged on disk is dropped and reported missing instead of served.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

HASH_HEX = re.compile(r"[0-9a-f]{64}")


class StorageFull(Exception):
    """Storing a chunk would exceed the configured capacity."""


def chunk_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_hash(text: str) -> str:
    """``text`` if it is a chunk name (64 lowercase hex characters), else ValueError."""
    if not HASH_HEX.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not a chunk hash (64 lowercase hex characters)")
    return text


def storage_proof(nonce: bytes, data: bytes) -> bytes:
    """What VERIFY_STORAGE answers: only a holder of the chunk can compute it."""
    return hashlib.sha256(b"mesh/storage-proof/v1\x00" + nonce + data).digest()


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: a temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per write: two threads writing the same chunk (overlapping
    # repairs) must not truncate each other's temporary file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class ChunkStore:
    """Chunks under ``root``/<first two hex characters>/<hash>."""

    def __init__(self, root: Path, capacity: int) -> None:
        self._root = root
        self._capacity = capacity
        self._used = sum(p.stat().st_size for p in root.glob("??/*") if p.is_file()) \
            if root.exists() else 0

    @property
    def used(self) -> int:
        return self._used

    def _path(self, name: str) -> Path:
        return self._root / name[:2] / name

    def has(self, name: str) -> bool:
        return self._path(check_hash(name)).is_file()

    def names(self) -> list[str]:
        """The names of every chunk kept (read from disk)."""
        if not self._root.exists():
            return []
        return [p.name for p in self._root.glob("??/*") if HASH_HEX.fullmatch(p.name)]

    def remove(self, name: str) -> None:
        """Delete chunk ``name`` if it is here."""
        path = self._path(check_hash(name))
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        self._used -= size

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its name."""
        name = chunk_hash(data)
        path = self._path(name)
        if path.is_file():
            return name
        if self._used + len(data) > self._capacity:
            raise StorageFull(f"storing {len(data)} bytes would exceed this node's capacity "
                              f"({self._used} of {self._capacity} bytes used)")
        write_atomically(path, data)
        self._used += len(data)
        return name

    def get(self, name: str) -> bytes | None:
        """The chunk's bytes, or None when it is not here (or was damaged, and dropped)."""
        path = self._path(check_hash(name))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if chunk_hash(data) != name:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._used -= len(data)
            return None
        return data
