"""Client-side encryption of stored files: what holders keep is ciphertext only.

Pure (no meshd): ``meshctl storage put --encrypt`` seals the file before its
node sees it, and ``get`` opens it after the node rebuilt it, so neither the
holders nor the uploader's own daemon ever hold the plaintext.

* Each file has its own random 256-bit key; nothing else derives from it.
* Each stripe is sealed alone with AES-256-GCM (``cryptography``): the nonce
  is the stripe's index (a key seals one file, so an index is used once), the
  associated data binds it to the format and the index, so stripes cannot be
  reordered or swapped between files without the tag failing.
* A sealed stripe is 16 bytes longer (the tag), so plaintext stripes are
  k * PIECE - 16 bytes and sealed ones fill a stripe exactly.
* The file's CID is that of the sealed bytes: it says nothing of the
  plaintext (a plaintext CID would let anyone confirm a guess of it).
* The key travels in a **capability**, ``<file CID>#<key>`` (the key in
  unpadded base64url): whoever holds it can read the file. ``put`` prints it;
  nothing keeps it for you.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
TAG_BYTES = 16
AAD = b"mesh-storage-sealed/1\x00"


class SealError(ValueError):
    """A capability that is malformed, or a key that does not open the stripe."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def plain_stripe_size(stripe_size: int) -> int:
    """Plaintext bytes in a stripe of ``stripe_size`` sealed bytes."""
    return stripe_size - TAG_BYTES


def seal(key: bytes, index: int, plaintext: bytes) -> bytes:
    return AESGCM(key).encrypt(_nonce(index), plaintext, AAD + index.to_bytes(8, "big"))


def open_sealed(key: bytes, index: int, sealed: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(_nonce(index), sealed, AAD + index.to_bytes(8, "big"))
    except InvalidTag:
        raise SealError(f"stripe {index} does not open with this key: the capability is "
                        "not this file's, or the stripe was altered") from None


def capability(cid: str, key: bytes) -> str:
    return f"{cid}#{base64.urlsafe_b64encode(key).rstrip(b'=').decode()}"


def parse_capability(text: str) -> tuple[str, bytes | None]:
    """(file CID, key) from a capability, or (CID, None) from a bare CID."""
    cid, hash_, encoded = text.strip().partition("#")
    if not hash_:
        return cid, None
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SealError(f"the key after '#' is not a {KEY_BYTES}-byte key in base64url")
    return cid, key


def _nonce(index: int) -> bytes:
    if not 0 <= index < 1 << 64:
        raise SealError(f"stripe index {index} is out of range")
    return index.to_bytes(12, "big")
