"""Settled state: what every account holds after a final settlement.

docs/ledger.md §4.1. ``Settled(-1)``, the genesis state, is built here; later
states come from settlements (not implemented yet). An account is its 32-byte
public key (meshcore/ledger/accounts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcore.genesis import Genesis
from meshcore.ledger import accounts


@dataclass
class Account:
    liquid: int = 0
    bonded: int = 0
    lots: dict[int, int] = field(default_factory=dict)  # release epoch -> amount
    canon_seq: int = 0
    canon_head: bytes = b""
    jailed: bool = False
    frozen: bool = False


@dataclass
class Settled:
    """The state after the final settlement of ``epoch`` (-1: genesis)."""

    epoch: int
    accounts: dict[bytes, Account] = field(default_factory=dict)
    validators: tuple[tuple[bytes, int], ...] = ()  # (account, weight), by account

    def account(self, key: bytes) -> Account:
        return self.accounts.get(key) or Account()

    def matured(self, key: bytes, upto_epoch: int) -> int:
        """Unbonded tokens of ``key`` released at or before ``upto_epoch``."""
        return sum(amount for release, amount in self.account(key).lots.items()
                   if release <= upto_epoch)


def genesis_state(genesis: Genesis) -> Settled:
    """``Settled(-1)``: the genesis allocations, liquid; the genesis validators.

    Raises:
        ValueError: an allocation or validator is not an Ed25519 peer ID (the
            ledger's accounts are Ed25519 keys).
    """
    state = Settled(epoch=-1)
    for allocation in genesis.token.allocations:
        state.accounts[accounts.key_of(allocation.account)] = Account(liquid=allocation.amount)
    state.validators = tuple(sorted((accounts.key_of(v.peer_id), v.weight)
                                    for v in genesis.validators))
    return state
