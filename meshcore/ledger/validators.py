"""Step 6 of a settlement: the validator set of E+2 (docs/ledger.md §4.4)."""

from __future__ import annotations

from meshcore.ledger.constants import MIN_VALIDATORS, VALIDATOR_SET_SIZE, min_validator_stake
from meshcore.ledger.state import Account, Params, ValidatorSet


def next_validator_set(accounts: dict[bytes, Account], carried: ValidatorSet,
                       params: Params) -> ValidatorSet:
    """``V(E+2)`` from the stakes at the end of ``Settle(E)``.

    Args:
        accounts: the accounts after every step of the settlement.
        carried: ``V(E+1)``, kept (minus jailed members) when fewer than
            MIN_VALIDATORS accounts are candidates.
        params: ``Params(E+2)``, whose ``proposal_stake`` sets MIN_VALIDATOR_STAKE.

    Returns:
        (account, weight) ascending by account; the weight is the bonded stake.
    """
    needed = min_validator_stake(params.governance)
    candidates = sorted(((key, acc.bonded) for key, acc in accounts.items()
                         if not acc.jailed and acc.bonded >= needed),
                        key=lambda kv: (-kv[1], kv[0]))
    if len(candidates) >= MIN_VALIDATORS:
        return tuple(sorted(candidates[:VALIDATOR_SET_SIZE]))
    # Too few candidates to trust a stake-based set: keep the previous one.
    kept = tuple((key, weight) for key, weight in carried
                 if not (key in accounts and accounts[key].jailed))
    return kept or carried
