"""The record of one settlement: every minted amount and slash, with its reason.

docs/ledger.md §6.5. ``Settle`` builds the record while it computes the
amounts, so ``meshctl rewards explain`` prints what the computation did, not a
second derivation that could drift from it. Only the reward lines enter the
state root (through :func:`reward_record_digest`); the rest is explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshcore.ledger.encoding import length_prefixed, listed, tagged_hash, uvarint

POOLS = ("uptime", "tasks", "governance")  # pool byte = position + 1


@dataclass(frozen=True)
class Evidence:
    """One counted entry behind a line: what it contributed and why."""

    entry: bytes  # hash of the entry in the cut
    author: bytes
    value: int  # uptime: score in per mille; tasks: counted units; governance: 1
    detail: str  # e.g. "39/40" or "units 120 of 150"


@dataclass(frozen=True)
class Ignored:
    """An entry that would have counted for the line's account, and the rule that refused it."""

    entry: bytes
    author: bytes
    rule: str
    reason: str


@dataclass(frozen=True)
class RewardLine:
    """One (pool, account): its points, its amount, and the evidence behind both."""

    pool: str
    account: bytes
    points: int
    amount: int
    rule: str  # e.g. uptime.lower_median, uptime.too_few, tasks.units, gov.settlement_signature
    evidence: tuple[Evidence, ...] = ()
    ignored: tuple[Ignored, ...] = ()


@dataclass(frozen=True)
class PoolTotal:
    """One pool: its size, the points shared, what was minted."""

    pool: str
    size: int
    points: int
    minted: int

    @property
    def not_minted(self) -> int:
        return self.size - self.minted


@dataclass(frozen=True)
class Offence:
    """One applied offence (docs/ledger.md §7.1)."""

    # 0x01 ‖ offender (equivocation), 0x02 ‖ claim hash (failed task) or
    # 0x03 ‖ proposal hash (dispute)
    key: bytes
    kind: str  # "equivocation", "failed_task" or "dispute"
    evidence: tuple[bytes, ...]  # entry hashes: the penalty entry, the verdicts or the proposal
    share: int  # S0 · bps // 10000, before the cap at S0
    detail: str


@dataclass(frozen=True)
class Slash:
    """What one offender lost in this settlement (docs/ledger.md §7.2)."""

    offender: bytes
    stake: int  # S0: bonded + unmatured lots, before any slash of this settlement
    slashed: int
    jailed: bool  # jailed by this settlement
    offences: tuple[Offence, ...]


@dataclass(frozen=True)
class Payment:
    """A provider paid out of a requester's lock for a receipt (docs/ledger.md §12)."""

    receipt: bytes  # the task_receipt entry's hash
    requester: bytes
    task: bytes  # the lock's task (base_id)
    provider: bytes
    price: int  # what the claim asked
    paid: int  # taken from the lock: the price, or what was left of it
    reason: str = ""  # why less than the price, if it was
    burned: int = 0  # of ``paid``, the base fee (docs/ledger.md §12.4); the provider got the rest
    units: int = 0  # the claim's


@dataclass(frozen=True)
class Refund:
    """What was left of a lock, returned to its requester at the lock's end."""

    requester: bytes
    task: bytes
    amount: int


@dataclass(frozen=True)
class Record:
    """Everything Settle(E) minted and slashed, and why."""

    epoch: int
    emission: int  # Params(E).emission_per_epoch
    pools: tuple[PoolTotal, ...] = ()
    lines: tuple[RewardLine, ...] = ()  # ascending (pool byte, account)
    slashes: tuple[Slash, ...] = ()  # ascending offender
    payments: tuple[Payment, ...] = ()  # ascending receipt hash (not in the reward digest:
    refunds: tuple[Refund, ...] = ()  # the accounts they change are in the state root)

    @property
    def minted(self) -> int:
        return sum(pool.minted for pool in self.pools)

    @property
    def slashed(self) -> int:
        return sum(slash.slashed for slash in self.slashes)


def pool_byte(pool: str) -> int:
    return POOLS.index(pool) + 1


def reward_record_digest(record: Record) -> bytes:
    """``H("mesh/rewards/v1", list of (pool byte, account, points, amount))``, ascending."""
    lines = sorted(record.lines, key=lambda line: (pool_byte(line.pool), line.account))
    return tagged_hash("mesh/rewards/v1", listed(
        bytes([pool_byte(line.pool)]) + length_prefixed(line.account)
        + uvarint(line.points) + uvarint(line.amount)
        for line in lines))
