"""Ledger-v1 constants of settlement, rewards and penalties (docs/ledger.md §2).

They are not in the genesis (that would change every Network ID); changing one
is a new ledger version. Stakes are scaled by ``proposal_stake`` (PS) of the
epoch's parameters, because a raw base-unit constant means wildly different
things for ``decimals`` 0 and 18. The constants of entry validity
(``MAX_EPOCH_AHEAD``, ``MAX_ENTRIES_PER_EPOCH``, ``MEMO_MAX_BYTES``) live in
meshcore/ledger/rules.py, ``ENTRY_MAX_BYTES`` and ``DEPS_MAX`` in entry.py.
"""

from __future__ import annotations

from meshcore.genesis import GovernanceParams

UNBONDING_EPOCHS = 24  # an unstaked lot matures this many epochs after its settlement
MIN_ATTEST_STAKE_DIVISOR = 10  # MIN_ATTEST_STAKE = PS // 10
VALIDATOR_SET_SIZE = 21
MIN_VALIDATORS = 4  # below this many candidates the previous set carries over
SET_LAG = 2  # V(E+2) and Params(E+2) are fixed by Settled(E)
MIN_PROBES = 3
MAX_PROBES = 100_000
MAX_OBSERVATIONS = 1024
MIN_ATTESTERS = 2
MAX_UNITS_PER_RECEIPT = 1_000_000
REQUESTER_UNITS_CAP = 10_000_000
VERIFY_QUORUM = 2
SLASH_EQUIVOCATION_BPS = 5000
ESCROW_MAX_EPOCHS = 8  # a lock returns what is left at most this many epochs after its own
BPS = 10_000


def min_attest_stake(governance: GovernanceParams) -> int:
    """Bonded stake to count as attester, requester or verifier: ``PS // 10``, and at least 1.

    With ``proposal_stake`` below 10, ``PS // 10`` is 0 and every account,
    staked or not, would count: Sybils would earn uptime for each other.
    """
    return max(1, governance.proposal_stake // MIN_ATTEST_STAKE_DIVISOR)


def min_validator_stake(governance: GovernanceParams) -> int:
    """Bonded stake to be a validator candidate: ``PS``, and at least 1.

    A validator's weight is its bonded stake and weights are >= 1 (§1), so a
    genesis with ``proposal_stake = 0`` still needs one base unit bonded.
    """
    return max(1, governance.proposal_stake)
