"""Whom a holder keeps each piece for: a piece goes only when every owner removed it.

Pieces are named by their content, so two owners who store the same file (or
the same stripe) share pieces on a holder. ``HOLD_PIECE`` names the owner a
piece is kept for (the uploader, or the owner of the file a repairer
rebuilt); ``DROP_FILE``, which an owner sends for itself only (the connection
authenticates it), takes that owner off, and the piece is deleted when no
owner is left. A piece kept before owners were recorded has none: it is
never deleted by ``DROP_FILE``.

A piece already on disk with no owner recorded (kept before owners were, or
stored as a STORE_FILE chunk) gets the owner LEGACY when a HOLD_PIECE names
one: no DROP_FILE can take that one off, so nobody can delete such a piece by
claiming it first.

On disk: ``root/<2 hex>/<piece digest>``, one peer ID (or LEGACY) per line.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

from mesh_storage.chunks import write_atomically

PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{40,128}")  # base58, as peer IDs are written
LEGACY = "*"  # the owner of a piece whose owners were never recorded: never taken off


class PieceOwners:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()  # add and remove run in worker threads

    def _path(self, name: str) -> Path:
        return self._root / name[:2] / name

    def of(self, name: str) -> set[str]:
        try:
            text = self._path(name).read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return set()
        return {line for line in text.split() if line == LEGACY or PEER_ID.fullmatch(line)}

    def add(self, name: str, owner: str) -> None:
        with self._lock:
            owners = self.of(name)
            if owner not in owners:
                self._write(name, owners | {owner})

    def remove(self, name: str, owner: str) -> bool:
        """Take ``owner`` off piece ``name``: whether it had been one and none is left."""
        with self._lock:
            owners = self.of(name)
            if owner not in owners:
                return False
            left = owners - {owner}
            if left:
                self._write(name, left)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self._path(name).unlink()
            return not left

    def _write(self, name: str, owners: set[str]) -> None:
        write_atomically(self._path(name), "".join(f"{o}\n" for o in sorted(owners)).encode())
