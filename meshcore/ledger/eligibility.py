"""Eligible(E): whose evidence counts in the settlement of epoch E (docs/ledger.md §6.1)."""

from __future__ import annotations

from meshcore.ledger.constants import min_attest_stake
from meshcore.ledger.state import Settled


def ineligibility(key: bytes, prev: Settled, now: Settled) -> str | None:
    """Why ``key`` is not Eligible(E), or None when it is.

    Eligible(E) = not jailed and (``Settled(E-1).bonded >= MIN_ATTEST_STAKE``
    or a member of V(E)).

    Args:
        prev: ``Settled(E-1)``: its bonded stake, ``Params(E)`` and ``V(E)``.
        now: the state whose jail flags apply (the settlement in progress).
    """
    if now.account(key).jailed:
        return "jailed"
    bonded = prev.account(key).bonded
    needed = min_attest_stake(prev.params.governance)
    if bonded >= needed or any(member == key for member, _ in prev.validators):
        return None
    return f"bonded {bonded} < {needed}"
