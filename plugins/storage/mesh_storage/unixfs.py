"""A file's IPFS root CID, as ``ipfs add --cid-version=1`` makes it (Kubo's defaults).

Pure (no meshd), like manifest.py. The same bytes give the same root CID in
Mesh and in IPFS, so a user can name a file by the CID they already know:

* chunks of CHUNK bytes (the last shorter), each a raw block (CIDv1, codec
  raw, SHA-256): "raw leaves";
* a file of one chunk is that raw block (its CID is the root);
* otherwise a balanced tree of dag-pb nodes of at most MAX_LINKS children,
  each a UnixFS ``File`` with its size and its children's sizes.

dag-pb needs a canonical encoding that protobuf's serializer does not give
(Links, field 2, before Data, field 1), so the few fields are written here by
hand; CIDs and multihashes are the ``multiformats`` package's.
tests/unit/test_storage_unixfs.py checks the result against npm's
ipfs-unixfs-importer, the reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from multiformats import CID, multihash

CHUNK = 256 * 1024  # Kubo's default chunker: size-262144
MAX_LINKS = 174  # Kubo's balanced layout
UNIXFS_FILE = 2


@dataclass(frozen=True)
class Node:
    """A block of the tree: its CID, the file bytes under it, and its own Tsize."""

    cid: CID
    filesize: int  # file bytes under it
    tsize: int  # bytes of every block under it, itself included (dag-pb's Tsize)


def file_cid(data: bytes) -> str:
    """The root CID of ``data`` (base32 CIDv1, e.g. ``bafkrei…`` or ``bafybei…``)."""
    return str(root(data[i:i + CHUNK] for i in range(0, len(data), CHUNK)).cid)


def root(chunks: Iterable[bytes]) -> Node:
    """The root of a file given as its chunks, in order (each CHUNK bytes but the last)."""
    return tree([leaf(chunk) for chunk in chunks])


def leaf(chunk: bytes) -> Node:
    """One chunk's raw block: a file read piece by piece keeps these, not its bytes."""
    return _raw(chunk)


def tree(leaves: list[Node]) -> Node:
    """The root over a file's leaves, in order."""
    level = leaves or [_raw(b"")]
    if len(level) == 1:
        return level[0]
    while len(level) > 1:
        level = [_file_node(level[i:i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
    return level[0]


def _raw(chunk: bytes) -> Node:
    return Node(CID("base32", 1, "raw", multihash.digest(chunk, "sha2-256")),
                len(chunk), len(chunk))


def _file_node(children: list[Node]) -> Node:
    filesize = sum(c.filesize for c in children)
    unixfs = (_field_varint(1, UNIXFS_FILE) + _field_varint(3, filesize)
              + b"".join(_field_varint(4, c.filesize) for c in children))
    links = b"".join(_field_bytes(2, _link(c)) for c in children)
    block = links + _field_bytes(1, unixfs)  # dag-pb: Links before Data
    cid = CID("base32", 1, "dag-pb", multihash.digest(block, "sha2-256"))
    return Node(cid, filesize, len(block) + sum(c.tsize for c in children))


def _link(child: Node) -> bytes:
    # PBLink: Hash (the child's binary CID), Name ("" is written, as Kubo does), Tsize.
    return _field_bytes(1, bytes(child.cid)) + _field_bytes(2, b"") + \
        _field_varint(3, child.tsize)


def _varint(value: int) -> bytes:
    return bytes(_varint_bytes(value))


def _varint_bytes(value: int) -> Iterator[int]:
    while value > 0x7F:
        yield (value & 0x7F) | 0x80
        value >>= 7
    yield value


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value
