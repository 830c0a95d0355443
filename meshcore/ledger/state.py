"""Settled state: what every account holds after a final settlement.

docs/ledger.md §4.1. ``Settled(-1)``, the genesis state, is built here; later
states come from :func:`meshcore.ledger.settle.settle`. An account is its
32-byte public key (meshcore/ledger/accounts.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from meshcore.genesis import (
    Genesis,
    GovernanceParams,
    MarketPolicy,
    PenaltyPolicy,
    RewardPolicy,
    market_table,
    penalties_table,
)
from meshcore.governance.tally import Tally
from meshcore.ledger import accounts
from meshcore.ledger.record import Record

ValidatorSet = tuple[tuple[bytes, int], ...]  # (account, weight >= 1), ascending account


@dataclass
class Account:
    liquid: int = 0
    bonded: int = 0
    lots: dict[int, int] = field(default_factory=dict)  # release epoch -> amount (> 0)
    canon_seq: int = 0
    canon_head: bytes = b""
    jailed: bool = False
    frozen: bool = False

    def is_empty(self) -> bool:
        """True when nothing distinguishes the account from one never seen."""
        return self == Account()


@dataclass(frozen=True)
class Params:
    """The rules of one epoch: the genesis ``rewards``, ``governance``, ``penalties``
    and ``market`` tables."""

    rewards: RewardPolicy = field(default_factory=RewardPolicy)
    governance: GovernanceParams = field(default_factory=GovernanceParams)
    penalties: PenaltyPolicy = field(default_factory=PenaltyPolicy)
    market: MarketPolicy = field(default_factory=MarketPolicy)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> Params:
        return cls(genesis.rewards, genesis.governance, genesis.penalties, genesis.market)

    def canonical_json(self) -> bytes:
        """``{"governance": {...}, "rewards": {...}}`` by the rules of docs/genesis.md.

        The tables have the field names and shapes of ``genesis.to_dict``
        (a unit test holds them equal): compact, keys sorted, UTF-8.
        """
        tables = {"rewards": dataclasses.asdict(self.rewards),
                  "governance": dataclasses.asdict(self.governance)}
        tables["governance"]["mutable"] = list(self.governance.mutable)
        if penalties_table(self.penalties):  # absent at the defaults: roots made before stay
            tables["penalties"] = penalties_table(self.penalties)
        if market_table(self.market):  # likewise
            tables["market"] = market_table(self.market)
        return json.dumps(tables, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class PendingVerdicts:
    """Canonical failure verdicts on one claim whose offence is not applied yet.

    Verdicts count cumulatively over settlements (§7.1), so the tally is
    state: a verdict is added once, when it becomes canonical, and a later cut
    need not carry the verdicts (or the chains) that made it so.
    """

    provider: bytes
    votes: frozenset[tuple[bytes, bytes]]  # (verifier, verdict entry hash)


@dataclass(frozen=True)
class Proposal:
    """A canonical governance proposal (docs/governance.md §3); keyed by its entry hash.

    Replaced, never changed in place: settled states share these objects.
    """

    author: bytes
    action: bytes  # the GovProposal, deterministically encoded
    deposit: int
    start: int  # S: the settlement that made it canonical
    end: int  # T = S + P: the settlement that tallies it
    rules: GovernanceParams  # the governance params of epoch S, which decide it
    # Each account's tokens in Settled(S), > 0 only; empty until step 5 of Settle(S).
    snapshot: dict[bytes, int] = field(default_factory=dict)
    votes: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # voter -> (seq, option)
    result: Tally | None = None  # set by Settle(T); snapshot and votes are then dropped

    @property
    def is_open(self) -> bool:
        return self.result is None


@dataclass(frozen=True)
class Escrow:
    """What is left of a requester's lock for one task, and when it returns
    (docs/ledger.md §12); keyed by (requester, task)."""

    remaining: int
    until: int  # the settlement of this epoch refunds what is left


@dataclass(frozen=True)
class UpgradeNotice:
    """The latest passed protocol upgrade (docs/governance.md §5)."""

    proposal: bytes
    version: str
    url: str
    sha256: bytes
    activation_epoch: int


@dataclass
class Settled:
    """The state after the final settlement of ``epoch`` (-1: genesis).

    ``validators`` and ``params`` are those of epoch ``epoch + 1``;
    ``validators_after`` and ``params_after`` those of ``epoch + 2`` (SET_LAG).
    """

    epoch: int
    accounts: dict[bytes, Account] = field(default_factory=dict)
    validators: ValidatorSet = ()  # V(epoch + 1)
    validators_after: ValidatorSet = ()  # V(epoch + 2)
    params: Params = field(default_factory=Params)  # Params(epoch + 1)
    params_after: Params = field(default_factory=Params)  # Params(epoch + 2)
    network_id: str = ""
    supply: int = 0
    minted_total: int = 0
    emission_burned_total: int = 0
    slashed_total: int = 0
    offences: frozenset[bytes] = frozenset()  # applied offence keys
    decided_round: int = 0
    decided_value: bytes = b""
    record: Record = field(default_factory=lambda: Record(epoch=-1, emission=0))
    verdicts: dict[bytes, PendingVerdicts] = field(default_factory=dict)  # by claim hash
    community_pool: int = 0  # base units only governance spends, part of the supply
    deposits_burned_total: int = 0  # stakes of vetoed proposals and those without quorum
    proposals: dict[bytes, Proposal] = field(default_factory=dict)  # by entry hash
    upgrade: UpgradeNotice | None = None
    escrows: dict[tuple[bytes, bytes], Escrow] = field(default_factory=dict)  # (requester, task)
    base_price: int = 0  # of paid tasks in epoch + 1, per 1000 units (docs/ledger.md §12.4)
    market_burned_total: int = 0  # base fees burned

    def account(self, key: bytes) -> Account:
        return self.accounts.get(key) or Account()

    def matured(self, key: bytes, upto_epoch: int) -> int:
        """Unbonded tokens of ``key`` released at or before ``upto_epoch``."""
        return sum(amount for release, amount in self.account(key).lots.items()
                   if release <= upto_epoch)

    def validators_of(self, epoch: int) -> ValidatorSet:
        """``V(epoch)``, known for ``self.epoch + 1`` and ``self.epoch + 2``.

        Raises:
            ValueError: another epoch (this state no longer or not yet knows it).
        """
        if epoch == self.epoch + 1:
            return self.validators
        if epoch == self.epoch + 2:
            return self.validators_after
        raise ValueError(f"Settled({self.epoch}) knows V({self.epoch + 1}) and "
                         f"V({self.epoch + 2}), not V({epoch})")

    def params_of(self, epoch: int) -> Params:
        """``Params(epoch)``, known for ``self.epoch + 1`` and ``self.epoch + 2``.

        Raises:
            ValueError: another epoch.
        """
        if epoch == self.epoch + 1:
            return self.params
        if epoch == self.epoch + 2:
            return self.params_after
        raise ValueError(f"Settled({self.epoch}) knows Params({self.epoch + 1}) and "
                         f"Params({self.epoch + 2}), not Params({epoch})")

    def copy(self) -> Settled:
        """A copy whose accounts can be changed without touching this state."""
        return dataclasses.replace(
            self, accounts={key: dataclasses.replace(acc, lots=dict(acc.lots))
                            for key, acc in self.accounts.items()},
            verdicts=dict(self.verdicts), proposals=dict(self.proposals),
            escrows=dict(self.escrows))


def genesis_state(genesis: Genesis) -> Settled:
    """``Settled(-1)``: the genesis allocations, liquid; the genesis validators and params.

    Raises:
        ValueError: an allocation or validator is not an Ed25519 peer ID (the
            ledger's accounts are Ed25519 keys).
    """
    validators = tuple(sorted((accounts.key_of(v.peer_id), v.weight)
                              for v in genesis.validators))
    params = Params.from_genesis(genesis)
    state = Settled(epoch=-1, validators=validators, validators_after=validators,
                    params=params, params_after=params, network_id=genesis.network_id,
                    supply=sum(a.amount for a in genesis.token.allocations)
                    + genesis.token.community_pool,
                    community_pool=genesis.token.community_pool,
                    base_price=genesis.market.base_price)
    for allocation in genesis.token.allocations:
        state.accounts[accounts.key_of(allocation.account)] = Account(liquid=allocation.amount)
    return state
