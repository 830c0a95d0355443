"""What the API shows of a settled state: state root, rewards, token figures.

Pure functions over ``Settled`` (and the genesis); :class:`meshd.ledger.ledger.Ledger`
picks the state and forwards here. Errors are :mod:`meshd.errors`, written
for the person who asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshcore.genesis import Genesis
from meshcore.ledger import accounts, explain
from meshcore.ledger.record import POOLS, PoolTotal
from meshcore.ledger.rules import ZERO, Derived
from meshcore.ledger.state import Settled
from meshcore.ledger.stateroot import state_root
from meshd import errors

TOP_ACCOUNTS = 20


def final_settled(final_epoch: int, settled_at: Callable[[int], Settled | None],
                  epoch: int | None, what: str, *, genesis_ok: bool = False) -> Settled:
    """``Settled(epoch)`` (None: the newest final epoch), or a NotFound saying why not.

    Args:
        what: what the caller wants of the settlement, for the message ("rewards").
        genesis_ok: whether the genesis state (epoch -1) is an answer.
    """
    wanted = final_epoch if epoch is None else epoch
    if wanted < -1:
        raise errors.InvalidArgument(f"epoch {wanted} does not exist (epochs count from 0)")
    if wanted == -1 and not genesis_ok:
        if final_epoch < 0:
            raise errors.NotFound(f"no epoch is final yet on this node, so there are no "
                                  f"{what}; try again once epoch 0 has settled")
        raise errors.InvalidArgument(f"epoch -1 is the genesis state: it has no {what}")
    settled = settled_at(wanted)
    if settled is not None:
        return settled
    if final_epoch < 0:
        raise errors.NotFound(f"epoch {wanted} is not final yet (no epoch is final on this "
                              f"node yet), so it has no {what}; try again once it has settled")
    if wanted > final_epoch:
        raise errors.NotFound(f"epoch {wanted} is not final yet (the newest final epoch on "
                              f"this node is {final_epoch}), so it has no {what}; try again "
                              "once it has settled")
    raise errors.NotFound(f"this node no longer holds the settlement of epoch {wanted} "
                          f"(it holds epoch {final_epoch}); ask for epoch {final_epoch} or "
                          "ask a node that kept it")


@dataclass(frozen=True)
class StateRootInfo:
    epoch: int  # -1: no epoch final yet
    root: bytes  # empty for epoch -1
    supply: int
    canonical_seq: int = 0  # of the account asked about, in Settled(epoch)
    stored_seq: int = 0  # of the account asked about, stored now
    heads_digest: bytes = b""  # of the stored set now (docs/ledger.md §8.2)


@dataclass(frozen=True)
class FinalSettlement:
    """One epoch's final settlement, as ``WatchSettlements`` sends it."""

    epoch: int
    round: int
    value: bytes
    root: bytes
    supply: int
    minted: int
    slashed: int


def final_settlement(settled: Settled, root: bytes) -> FinalSettlement:
    """``settled`` (final, with state root ``root``) as a :class:`FinalSettlement`."""
    return FinalSettlement(settled.epoch, settled.decided_round, settled.decided_value, root,
                           settled.supply, settled.record.minted, settled.record.slashed)


def state_root_info(settled: Settled) -> StateRootInfo:
    """The root of ``settled`` (the genesis state has none: an empty root)."""
    root = state_root(settled) if settled.epoch >= 0 else b""
    return StateRootInfo(settled.epoch, root, settled.supply)


@dataclass(frozen=True)
class AccountRewards:
    account: bytes
    pools: tuple[tuple[str, int, int], ...]  # (pool, points, amount), in POOLS order
    total: int


@dataclass(frozen=True)
class Rewards:
    epoch: int
    emission: int
    minted: int
    pools: tuple[PoolTotal, ...]
    accounts: tuple[AccountRewards, ...]  # ascending account key


def rewards(settled: Settled) -> Rewards:
    """Per account, what each pool minted to it in ``settled``'s epoch."""
    record = settled.record
    by_account: dict[bytes, list[tuple[str, int, int]]] = {}
    for line in record.lines:
        by_account.setdefault(line.account, []).append((line.pool, line.points, line.amount))
    rows = tuple(
        AccountRewards(key, tuple(sorted(lines, key=lambda p: POOLS.index(p[0]))),
                       sum(amount for _, _, amount in lines))
        for key, lines in sorted(by_account.items()))
    return Rewards(settled.epoch, record.emission, record.minted, record.pools, rows)


@dataclass(frozen=True)
class Explanation:
    epoch: int
    lines: list[str]
    record: dict[str, Any]  # explain_json: JSON-able


def explanation(settled: Settled, account: str = "", *, short: bool = True) -> Explanation:
    """``rewards explain``: the settlement's record as text and as data.

    Raises:
        errors.InvalidArgument: ``account`` is not an Ed25519 peer ID.
    """
    key = account_key(account, "account") if account else None
    return Explanation(settled.epoch, explain.explain_lines(settled, key, short=short),
                       explain.explain_json(settled, key))


@dataclass(frozen=True)
class Holder:
    account: bytes
    liquid: int
    bonded: int
    unbonding: int  # lots, matured or not

    @property
    def total(self) -> int:
        return self.liquid + self.bonded + self.unbonding


@dataclass(frozen=True)
class TokenInfo:
    name: str
    symbol: str
    decimals: int
    final_epoch: int
    supply: int
    minted_total: int
    emission_burned_total: int
    slashed_total: int
    allocations: tuple[tuple[str, int], ...]  # genesis: (peer ID, amount)
    top: tuple[Holder, ...]  # largest first, ties by account key
    holders: int
    emission_per_epoch: int
    epoch_seconds: int
    split: tuple[tuple[str, int], ...]  # (pool, percent of the emission)
    base_price: int = 0  # of paid tasks in the next epoch, per 1000 units of work
    market_burned_total: int = 0
    escrowed: int = 0  # held by requesters' locks
    spot_check_bps: int = 0  # of the next epoch (docs/compute.md §5)


def token_info(genesis: Genesis, settled: Settled, top: int = TOP_ACCOUNTS) -> TokenInfo:
    """The token as of ``settled``; emission and split are those of its next epoch."""
    held = [Holder(key, acc.liquid, acc.bonded, sum(acc.lots.values()))
            for key, acc in settled.accounts.items()]
    held = [h for h in held if h.total > 0]
    held.sort(key=lambda h: (-h.total, h.account))
    policy = settled.params.rewards
    return TokenInfo(
        name=genesis.token.name, symbol=genesis.token.symbol, decimals=genesis.token.decimals,
        final_epoch=settled.epoch, supply=settled.supply, minted_total=settled.minted_total,
        emission_burned_total=settled.emission_burned_total,
        slashed_total=settled.slashed_total,
        allocations=tuple((a.account, a.amount) for a in genesis.token.allocations),
        top=tuple(held[:top]), holders=len(held),
        emission_per_epoch=policy.emission_per_epoch, epoch_seconds=policy.epoch_seconds,
        split=(("uptime", policy.split.uptime), ("tasks", policy.split.tasks),
               ("governance", policy.split.governance)),
        base_price=settled.base_price, market_burned_total=settled.market_burned_total,
        escrowed=sum(e.remaining for e in settled.escrows.values()),
        spot_check_bps=settled.params.market.spot_check_bps)


def share_percent(part: int, whole: int) -> str:
    """``part / whole`` in percent with two decimals, rounded down ("12.50")."""
    if whole <= 0:
        return "0.00"
    hundredths = part * 10_000 // whole
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def account_key(peer_id: str, what: str) -> bytes:
    try:
        return accounts.key_of(peer_id)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{what}: {exc}") from None


@dataclass(frozen=True)
class StakeBalance:
    bonded: int  # settled
    pending_stake: int  # own stakes not settled yet
    pending_unstake: int
    unbonding: int  # settled lots not matured at the final epoch
    withdrawable: int  # matured lots minus withdrawals not settled yet

    @property
    def unstakable(self) -> int:
        return self.bonded + self.pending_stake - self.pending_unstake


def stake_balance(settled: Settled, key: bytes, head: Derived | None,
                  canon: Derived | None) -> StakeBalance:
    """The stake side of ``key``'s balance.

    Args:
        head: derived values of the account's newest stored entry (None: none).
        canon: those of its canonical head in ``settled`` (None: none); what
            lies between the two is not settled yet (the sums of docs/ledger.md §3.2).
    """
    base = canon or ZERO
    newest = head or base
    account = settled.account(key)
    matured = settled.matured(key, settled.epoch)
    return StakeBalance(
        bonded=account.bonded, pending_stake=newest.staked - base.staked,
        pending_unstake=newest.unstaked - base.unstaked,
        unbonding=sum(account.lots.values()) - matured,
        withdrawable=matured - (newest.withdrawn - base.withdrawn))
