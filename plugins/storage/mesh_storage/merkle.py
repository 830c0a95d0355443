"""A Merkle tree over a piece's segments, for proofs of storage (RFC 6962 §2.1).

Pure (no meshd). A piece is cut into segments of SEGMENT bytes (the last may
be shorter); its root commits to all of them. An auditor that knows only the
root asks for segment i; the holder answers the segment and its audit path,
and ``verify`` checks them against the root, which only a holder of the whole
segment can pass. Hashing is RFC 6962's (Certificate Transparency): leaves are
SHA-256(0x00 || segment), inner nodes SHA-256(0x01 || left || right), and a
tree of n leaves splits at the largest power of two below n, so no leaf is
ever duplicated to fill the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

SEGMENT = 1024  # bytes
MAX_PATH = 64


class ProofError(ValueError):
    """An index out of range or a malformed audit path."""


def segments(piece: bytes, size: int = SEGMENT) -> list[bytes]:
    """The piece's segments; an empty piece is one empty segment."""
    return [piece[i:i + size] for i in range(0, len(piece), size)] or [b""]


def _leaf(segment: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + segment).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_root(leaves[:k]), _root(leaves[k:]))


def root(piece: bytes, size: int = SEGMENT) -> bytes:
    """The Merkle root over the piece's segments."""
    return _root([_leaf(s) for s in segments(piece, size)])


def audit_path(piece: bytes, index: int, size: int = SEGMENT) -> list[bytes]:
    """The sibling hashes from segment ``index`` up to the root, bottom first."""
    leaves = [_leaf(s) for s in segments(piece, size)]
    if not 0 <= index < len(leaves):
        raise ProofError(f"segment {index} is not one of the piece's {len(leaves)}")
    return _path(leaves, index)


def _path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_path(leaves[:k], index), _root(leaves[k:])]
    return [*_path(leaves[k:], index - k), _root(leaves[:k])]


def verify(expected_root: bytes, index: int, count: int, segment: bytes,
           path: Sequence[bytes]) -> bool:
    """Whether ``segment`` is segment ``index`` of ``count`` under ``expected_root``.

    RFC 9162 §2.1.3.2's audit-path verification; any malformed input is False.
    """
    if not 0 <= index < count or len(path) > MAX_PATH or any(len(h) != 32 for h in path):
        return False
    return _climb(_leaf(segment), index, count, list(path)) == expected_root


def _climb(hash_: bytes, index: int, count: int, path: list[bytes]) -> bytes | None:
    """Rebuild the root from a leaf's hash and its path (the path consumed top-down)."""
    if count == 1:
        return hash_ if not path else None
    if not path:
        return None
    k = _split(count)
    sibling = path.pop()  # the top of the path is the last entry
    if index < k:
        below = _climb(hash_, index, k, path)
        return None if below is None else _node(below, sibling)
    below = _climb(hash_, index - k, count - k, path)
    return None if below is None else _node(sibling, below)
