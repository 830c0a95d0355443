"""Which validators audit a file in an epoch: drawn from the ledger's beacon.

Pure (no meshd). The auditors of file F in epoch E are the AUDITORS
validators ranked first by SHA-256("mesh-storage/auditor/v1", beacon, F, peer
ID), where the beacon is that of epoch E - BEACON_LAG (``ctx.ledger.beacon``:
final by then on a healthy network, and unknown to anyone before epoch E - 2
was decided). Every node computes the same auditors, so a node asked to
audit can check that it was drawn, and nobody (the file's owner, its
keepers, its holders) can choose who audits whom: a holder cannot arrange to
be audited only by friends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

AUDITORS = 2  # validators drawn per file and epoch
BEACON_LAG = 2  # epochs between the beacon's and the audits'
DOMAIN = b"mesh-storage/auditor/v1\x00"


def auditors(beacon: bytes, file: str, validators: Iterable[str],
             count: int = AUDITORS) -> list[str]:
    """The ``count`` validators drawn to audit ``file`` under ``beacon``, first drawn first."""
    def rank(peer: str) -> bytes:
        return hashlib.sha256(DOMAIN + beacon + b"\x00" + file.encode() + b"\x00"
                              + peer.encode()).digest()

    return sorted(set(validators), key=rank)[:count]
