"""A stored file: chunks named by their SHA-256, and a manifest chunk that lists them.

Pure (no meshd): the plugin uses its limits, and ``meshctl storage`` imports
it to build and read manifests.

``meshctl storage put`` splits a file into chunks of at most MAX_CHUNK bytes,
stores each with the storage plugin, then stores the manifest (canonical JSON,
itself one chunk); the manifest's name is the file's hash. ``get`` reads the
manifest, fetches the chunks and checks each and the whole file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_CHUNK = 512 * 1024  # bytes in one chunk (the plugin refuses larger ones)
MAX_REPLICAS = 8  # other nodes that keep a copy of each chunk
MANIFEST_FORMAT = "mesh-storage-manifest/1"
CHUNK_NAME = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The bytes are a malformed manifest."""


class NotAManifest(ManifestError):
    """The bytes are a chunk, not a manifest."""


@dataclass(frozen=True)
class Manifest:
    name: str  # the file's name when it was stored
    size: int  # bytes
    sha256: str  # hex, of the whole file
    chunks: tuple[str, ...]  # chunk names, in file order
    chunk_size: int = MAX_CHUNK

    def encode(self) -> bytes:
        """The manifest chunk; ManifestError when it does not fit in one chunk."""
        data = json.dumps({"format": MANIFEST_FORMAT, "name": self.name, "size": self.size,
                           "sha256": self.sha256, "chunk_size": self.chunk_size,
                           "chunks": list(self.chunks)}, separators=(",", ":")).encode()
        if len(data) > MAX_CHUNK:
            raise ManifestError(f"{len(self.chunks)} chunks are too many for one manifest "
                                f"(files up to about 3.5 GiB fit)")
        return data


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``.

    Raises:
        NotAManifest: ``data`` is not a manifest at all (a chunk of a file).
        ManifestError: it claims to be one but is malformed.
    """
    try:
        fields: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        fields = None
    if not isinstance(fields, dict) or fields.get("format") != MANIFEST_FORMAT:
        raise NotAManifest("not a manifest")
    chunks, size, digest, name = (fields.get("chunks"), fields.get("size"),
                                  fields.get("sha256"), fields.get("name"))
    chunk_size = fields.get("chunk_size", MAX_CHUNK)
    if not isinstance(chunks, list) \
            or not all(isinstance(c, str) and CHUNK_NAME.fullmatch(c) for c in chunks) \
            or not isinstance(size, int) or isinstance(size, bool) or size < 0 \
            or not isinstance(digest, str) or not isinstance(name, str) \
            or not isinstance(chunk_size, int):
        raise ManifestError("malformed manifest")
    return Manifest(name, size, digest, tuple(chunks), chunk_size)
