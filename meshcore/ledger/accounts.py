"""Accounts: 32-byte Ed25519 public keys, shown as libp2p peer IDs.

A peer ID of an Ed25519 key (``12D3KooW...``) is the base58btc encoding of an
identity multihash of the protobuf-encoded public key: 0x00 (identity), 0x24
(36 bytes), then ``PublicKey{Type=Ed25519 (1), Data=<32 bytes>}`` encoded as
0x08 0x01 0x12 0x20 <key>. docs/ledger.md §1: orders use the raw key bytes.
"""

from __future__ import annotations

import base58

ED25519_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
KEY_BYTES = 32


def key_of(peer_id: str) -> bytes:
    """The public key of an Ed25519 peer ID.

    Raises:
        ValueError: not base58, or not the peer ID of an Ed25519 key.
    """
    try:
        raw = base58.b58decode(peer_id)
    except ValueError:
        raise ValueError(f"{peer_id!r} is not base58") from None
    if len(raw) != len(ED25519_PEER_ID_PREFIX) + KEY_BYTES \
            or not raw.startswith(ED25519_PEER_ID_PREFIX):
        raise ValueError(f"{peer_id!r} is not the peer ID of an Ed25519 key")
    return raw[len(ED25519_PEER_ID_PREFIX):]


def peer_id_of(key: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise ValueError("an account key is 32 bytes")
    return base58.b58encode(ED25519_PEER_ID_PREFIX + key).decode()
