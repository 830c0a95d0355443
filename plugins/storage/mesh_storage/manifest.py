"""A stored file's manifest: its layout in stripes and pieces, and what checks them.

Pure (no meshd): the plugin and ``meshctl storage`` share it.

A file is cut into stripes of k * PIECE bytes (the last shorter). Each stripe
is erasure coded into n pieces of at most PIECE bytes (erasure.py); any k of
them give it back. A piece is named by its CID (pieces.py) and committed to by
the Merkle root of its segments (merkle.py), which audits check. The file
itself is named by its IPFS root CID (unixfs.py): the same bytes have the same
name in Mesh and in IPFS. Because PIECE is Kubo's chunk size, stripes start on
UnixFS chunk boundaries.

The manifest is canonical JSON. It lists every piece's CID and root but no
holder: holders announce the pieces they keep as DHT provider records, so a
piece that is repaired onto a new holder needs no new manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mesh_storage.erasure import Coding, ErasureError
from mesh_storage.pieces import CidError, digest_hex

MAX_CHUNK = 512 * 1024  # bytes in one STORE_FILE chunk (the plugin refuses larger ones)
PIECE = 256 * 1024  # bytes of file in each of a stripe's k data pieces (Kubo's chunk size)
SEGMENT = 16 * 1024  # bytes per Merkle leaf: an audit answer's size (docs/storage.md)
MAX_MANIFEST = 1000 * 1024  # bytes: one request carries a manifest to a holder
FORMAT = "mesh-storage-file/2"
ROOT_HEX = re.compile(r"[0-9a-f]{64}")
FILE_CID = re.compile(r"baf[a-z2-7]{20,120}")


class ManifestError(ValueError):
    """Bytes or fields that are not a well-formed manifest."""


@dataclass(frozen=True)
class Stripe:
    length: int  # bytes of the file in this stripe
    pieces: tuple[str, ...]  # n piece CIDs, in piece-index order
    roots: tuple[str, ...]  # the pieces' Merkle roots (hex), same order


@dataclass(frozen=True)
class Manifest:
    name: str  # the file's name when it was stored
    size: int  # bytes
    cid: str  # the file's IPFS root CID (of the stored bytes: ciphertext when encrypted)
    sha256: str  # hex, of the stored bytes
    k: int
    n: int
    owner: str  # peer ID of the node that stored it
    stripes: tuple[Stripe, ...]
    segment: int = SEGMENT
    encrypted: bool = False

    @property
    def coding(self) -> Coding:
        return Coding(self.k, self.n)

    @property
    def stripe_size(self) -> int:
        return self.k * PIECE

    def encode(self) -> bytes:
        """The manifest's bytes; ManifestError when they would not fit in one request."""
        data = json.dumps({
            "format": FORMAT, "name": self.name, "size": self.size, "cid": self.cid,
            "sha256": self.sha256, "k": self.k, "n": self.n, "owner": self.owner,
            "segment": self.segment, "encrypted": self.encrypted,
            "stripes": [{"length": s.length, "pieces": list(s.pieces), "roots": list(s.roots)}
                        for s in self.stripes]}, separators=(",", ":")).encode()
        if len(data) > MAX_MANIFEST:
            raise ManifestError(f"the manifest of {len(self.stripes)} stripes is {len(data)} "
                                f"bytes, over {MAX_MANIFEST}: store the file with a larger k, "
                                "or in parts")
        return data


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``, every field checked; ManifestError names the first wrong one."""
    if len(data) > MAX_MANIFEST:
        raise ManifestError(f"a manifest is at most {MAX_MANIFEST} bytes, not {len(data)}")
    try:
        fields: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ManifestError("a manifest is JSON; these bytes are not") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise ManifestError(f"not a manifest (format {FORMAT})")
    name, size, cid, sha256 = (_field(fields, "name", str), _field(fields, "size", int),
                               _field(fields, "cid", str), _field(fields, "sha256", str))
    k, n, segment = (_field(fields, "k", int), _field(fields, "n", int),
                     _field(fields, "segment", int))
    owner, encrypted = _field(fields, "owner", str), _field(fields, "encrypted", bool)
    try:
        Coding(k, n)
    except ErasureError as exc:
        raise ManifestError(f"manifest: {exc}") from None
    if size < 1 or not FILE_CID.fullmatch(cid) or not ROOT_HEX.fullmatch(sha256) \
            or not 1 <= segment <= PIECE:
        raise ManifestError("manifest: size, cid, sha256 or segment is out of range")
    raw_stripes = _field(fields, "stripes", list)
    stripes = tuple(_stripe(s, n, k * PIECE) for s in raw_stripes)
    if sum(s.length for s in stripes) != size \
            or any(s.length != k * PIECE for s in stripes[:-1]):
        raise ManifestError(f"manifest: its stripes do not add up to {size} bytes in "
                            f"stripes of {k * PIECE}")
    return Manifest(name, size, cid, sha256, k, n, owner, stripes, segment, encrypted)


def _field(fields: dict[str, Any], key: str, kind: type) -> Any:
    value = fields.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest: {key!r} is missing or not {kind.__name__}")
    return value


def _stripe(raw: Any, n: int, stripe_size: int) -> Stripe:
    if not isinstance(raw, dict):
        raise ManifestError("manifest: a stripe is an object")
    length, pieces, roots = (_field(raw, "length", int), _field(raw, "pieces", list),
                             _field(raw, "roots", list))
    if not 1 <= length <= stripe_size or len(pieces) != n or len(roots) != n \
            or not all(isinstance(r, str) and ROOT_HEX.fullmatch(r) for r in roots):
        raise ManifestError(f"manifest: a stripe needs a length of 1 to {stripe_size} and "
                            f"{n} pieces and roots")
    try:
        for cid in pieces:
            digest_hex(cid)
    except CidError as exc:
        raise ManifestError(f"manifest: {exc}") from None
    return Stripe(length, tuple(pieces), tuple(roots))

