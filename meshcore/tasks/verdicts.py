"""Judging the redundant executions of a task (docs/tasks.md §4): pure.

A task with redundancy k is executed by k providers; their results are
compared by digest. A result wins when more than half of the k executions
returned it; the others are wrong, and the requester writes a verdict naming
what it expected: the winning digest, or, when no correct result is known
(the plugin's rule rejected the result), the claim's rejected digest.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from meshcore.tasks import claims


def majority(digests: Sequence[bytes], need: int) -> bytes | None:
    """The result digest more than half of ``need`` executions returned.

    None when fewer than ``need`` executions succeeded (``digests`` holds the
    successful ones), or when no digest has a strict majority.
    """
    if len(digests) != need or need < 1:
        return None
    digest, votes = collections.Counter(digests).most_common(1)[0]
    return digest if votes * 2 > need else None


def expected_digest(winner: bytes | None, result_digest: bytes, claim: bytes) -> bytes:
    """What a verdict on a wrong result names as expected.

    An outvoted result: the majority's digest. A result the plugin's rule
    rejected, with no other known to be correct: the claim's rejected digest.
    """
    if winner is not None and result_digest != winner:
        return winner
    return claims.rejected_digest(claim)
