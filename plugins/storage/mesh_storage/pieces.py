"""Piece CIDs: a piece is a raw IPFS block, named CIDv1(raw, sha2-256).

Pure (no meshd). The CID's digest is the SHA-256 that ChunkStore files the
bytes under, so a holder keeps pieces beside STORE_FILE chunks and an IPFS
tool reads the same name for the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re

from multiformats import CID

MAX_CID = 100  # characters; a raw sha2-256 CIDv1 in base32 is 59
# CIDv1 (0x01), raw (0x55), sha2-256 (0x12) of 32 bytes (0x20): every piece CID's
# binary form starts so. Pieces are named and checked on every request (a HAVE
# names up to 8,192), and multiformats' CID takes ~260 us per CID (it validates
# its arguments' types at run time); these bytes in base32 take ~5 us.
# tests/unit/test_storage_pieces.py checks both give the same answers.
RAW_SHA256 = b"\x01\x55\x12\x20"
PIECE_CID = re.compile(r"bafkrei[a-z2-7]{52}")  # the base32 form of RAW_SHA256 + 32 bytes


class CidError(ValueError):
    """Text that is not a piece CID, or bytes that do not match one."""


def piece_cid(data: bytes) -> str:
    """The CID of ``data`` as a raw block: ``bafkrei…``."""
    return cid_of_digest(hashlib.sha256(data).hexdigest())


def cid_of_digest(digest: str) -> str:
    """The piece CID of the bytes whose SHA-256 is ``digest`` (hex), as ChunkStore names them."""
    raw = bytes.fromhex(digest)
    if len(raw) != 32:
        raise CidError(f"{digest[:80]!r} is not a SHA-256 digest")
    return "b" + base64.b32encode(RAW_SHA256 + raw).decode("ascii").lower().rstrip("=")


def digest_hex(cid: str) -> str:
    """The SHA-256 (hex) a piece CID names; CidError for anything else."""
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_CID:
        raise CidError(f"{str(cid)[:80]!r} is not a piece CID")
    if PIECE_CID.fullmatch(cid):  # the usual case, without multiformats' cost
        digest = base64.b32decode(cid[1:].upper() + "======")[len(RAW_SHA256):].hex()
        if cid_of_digest(digest) == cid:  # canonical: unused trailing bits are zero
            return digest
    try:
        parsed = CID.decode(cid)
    except Exception as exc:  # multiformats raises ValueError, KeyError or IndexError on junk
        raise CidError(f"{cid[:80]!r} is not a CID: {exc}") from None
    if parsed.version != 1 or parsed.codec.name != "raw" \
            or parsed.hashfun.name != "sha2-256" or len(parsed.raw_digest) != 32:
        raise CidError(f"{cid} is not a piece CID (CIDv1, raw, sha2-256)")
    return bytes(parsed.raw_digest).hex()


def check_piece(cid: str, data: bytes) -> None:
    """CidError unless ``data`` is the piece ``cid`` names."""
    want = digest_hex(cid)
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise CidError(f"the piece's bytes do not match its CID {cid}: they hash to "
                       f"{piece_cid(data)}")
