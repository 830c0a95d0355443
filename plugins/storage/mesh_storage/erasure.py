"""k-of-n erasure coding of one stripe of a file (zfec: Reed-Solomon over GF(2^8)).

Pure (no meshd), like manifest.py. A stripe of ``length`` bytes is cut into k
blocks of ``piece_size(length, k)`` bytes (the last padded with zeros) and
zfec makes n pieces of that size: pieces 0..k-1 are the blocks themselves
(zfec's code is systematic), k..n-1 are parity. Any k distinct pieces give the
stripe back; the stripe's length, kept with the file's manifest, drops the
padding. A file survives the loss of any n-k holders of each stripe, for
n/k times its size, where k+1 full replicas cost k+1 times to survive k.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import zfec

MAX_PIECES = 256  # zfec's limit on n (GF(2^8))


class ErasureError(ValueError):
    """Parameters or pieces that cannot code or give back a stripe."""


class NotEnoughPieces(ErasureError):
    """Fewer than k distinct pieces: the stripe cannot be rebuilt."""


@dataclass(frozen=True)
class Coding:
    """k-of-n: n pieces, any k of which rebuild the stripe."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_PIECES:
            raise ErasureError(f"need 1 <= k <= n <= {MAX_PIECES}, got k={self.k}, n={self.n}")

    @property
    def tolerated_losses(self) -> int:
        return self.n - self.k


def piece_size(length: int, k: int) -> int:
    """Bytes in each piece of a stripe of ``length`` bytes (at least 1)."""
    return max(1, -(-length // k))


def encode(stripe: bytes, coding: Coding) -> list[bytes]:
    """The n pieces of ``stripe``, in piece-index order."""
    size = piece_size(len(stripe), coding.k)
    padded = stripe.ljust(size * coding.k, b"\0")
    blocks = [padded[i * size:(i + 1) * size] for i in range(coding.k)]
    pieces: list[bytes] = zfec.Encoder(coding.k, coding.n).encode(blocks)
    return pieces


def decode(pieces: Mapping[int, bytes], coding: Coding, length: int) -> bytes:
    """The stripe of ``length`` bytes from any k of its pieces (index -> piece).

    Raises:
        NotEnoughPieces: fewer than k pieces.
        ErasureError: an index out of range, pieces of different sizes, or a
            size that does not fit ``length``.
    """
    if len(pieces) < coding.k:
        raise NotEnoughPieces(f"{len(pieces)} of the {coding.k} pieces needed "
                              f"(k={coding.k}, n={coding.n})")
    size = piece_size(length, coding.k)
    chosen = sorted(pieces.items())[:coding.k]
    for index, piece in chosen:
        if not 0 <= index < coding.n:
            raise ErasureError(f"piece index {index} is not below n={coding.n}")
        if len(piece) != size:
            raise ErasureError(f"piece {index} is {len(piece)} bytes; a stripe of {length} "
                               f"bytes has pieces of {size}")
    blocks = zfec.Decoder(coding.k, coding.n).decode([p for _, p in chosen],
                                                    [i for i, _ in chosen])
    return b"".join(blocks)[:length]
