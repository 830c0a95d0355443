"""Unsigned LEB128 varints: the ledger's hashed encodings (docs/ledger.md §1) and
the length prefix of every Mesh frame (docs/protocol.md "Framing")."""

from __future__ import annotations


def uvarint(value: int) -> bytes:
    """Unsigned LEB128, minimal length.

    Raises:
        ValueError: ``value`` is negative.
    """
    if value < 0:
        raise ValueError(f"uvarint of a negative number ({value})")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
