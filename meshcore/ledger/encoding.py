"""The byte encoding of hashed ledger state (docs/ledger.md §1, §4.3).

Integers are unsigned LEB128 (minimal, unbounded), byte strings carry their
length as a uvarint prefix, lists their item count. ``H(tag, x)`` is
SHA-256(tag ‖ 0x00 ‖ x): the tag keeps each kind of hash apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from meshcore.varint import uvarint as uvarint  # the ledger's encodings use it


def tagged_hash(tag: str, data: bytes) -> bytes:
    """``H(tag, data)`` = SHA-256(tag ‖ 0x00 ‖ data)."""
    return hashlib.sha256(tag.encode("ascii") + b"\x00" + data).digest()


def length_prefixed(data: bytes) -> bytes:
    return uvarint(len(data)) + data


def listed(items: Iterable[bytes]) -> bytes:
    """A list: uvarint count, then the already encoded items."""
    encoded = list(items)
    return uvarint(len(encoded)) + b"".join(encoded)
