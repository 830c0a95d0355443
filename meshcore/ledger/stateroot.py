"""The state root: one hash of everything a settlement decided (docs/ledger.md §4.3).

Precommits carry it, so a certificate certifies the state, and two nodes (or
two implementations) compare it to know they computed the same settlement.
"""

from __future__ import annotations

from meshcore.ledger.encoding import length_prefixed, listed, tagged_hash, uvarint
from meshcore.ledger.record import reward_record_digest
from meshcore.ledger.state import Account, Settled, ValidatorSet


def state_root(settled: Settled) -> bytes:
    """``H("mesh/state/v1", enc(settled))``.

    Raises:
        ValueError: ``settled`` is the genesis state: its epoch, -1, has no
            uvarint encoding and no settlement certifies it.
    """
    return tagged_hash("mesh/state/v1", encode_state(settled))


def encode_state(settled: Settled) -> bytes:
    """``enc(S)`` of §4.3 (see :func:`state_root`)."""
    if settled.epoch < 0:
        raise ValueError("Settled(-1), the genesis state, has no state root")
    return b"".join([
        length_prefixed(settled.network_id.encode("utf-8")),
        uvarint(settled.epoch),
        uvarint(settled.decided_round),
        length_prefixed(settled.decided_value),
        uvarint(settled.supply),
        uvarint(settled.minted_total),
        uvarint(settled.emission_burned_total),
        uvarint(settled.slashed_total),
        length_prefixed(reward_record_digest(settled.record)),
        length_prefixed(settled.params.canonical_json()),
        length_prefixed(settled.params_after.canonical_json()),
        _validators(settled.validators),
        _validators(settled.validators_after),
        listed(_account(key, acc) for key, acc in sorted(settled.accounts.items())
               if not acc.is_empty()),
        listed(length_prefixed(key) for key in sorted(settled.offences)),
    ])


def _validators(validators: ValidatorSet) -> bytes:
    return listed(length_prefixed(key) + uvarint(weight) for key, weight in validators)


def _account(key: bytes, acc: Account) -> bytes:
    flags = (1 if acc.jailed else 0) | (2 if acc.frozen else 0)
    return b"".join([
        length_prefixed(key),
        uvarint(acc.liquid),
        uvarint(acc.bonded),
        listed(uvarint(release) + uvarint(amount)
               for release, amount in sorted(acc.lots.items()) if amount),
        uvarint(acc.canon_seq),
        length_prefixed(acc.canon_head),
        uvarint(flags),
    ])
