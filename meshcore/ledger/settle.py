"""The settlement function ``Settle(E, v)`` (docs/ledger.md §4.2): pure.

Given ``Settled(E-1)`` and the cut of the decided value of E, it computes
``Settled(E)``: canonical chains, own effects, penalties, rewards, parameters,
the validator set and the supply. No I/O, no clock, no randomness: every
honest node holding the same cut computes the same state and state root.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from meshcore.governance import settle as governance_settle
from meshcore.ledger import accounts, canon, escrow
from meshcore.ledger.constants import UNBONDING_EPOCHS
from meshcore.ledger.entry import HASH_BYTES, Verified
from meshcore.ledger.evidence_rules import EVIDENCE_KINDS, evidence_problem
from meshcore.ledger.penalties import apply_penalties
from meshcore.ledger.record import Record
from meshcore.ledger.rewards import compute_rewards
from meshcore.ledger.state import Account, Settled
from meshcore.ledger.validators import next_validator_set


@dataclass(frozen=True)
class Settlement:
    """The outcome of ``Settle(E, v)``."""

    settled: Settled  # Settled(E)
    newly_canonical: tuple[bytes, ...]  # hashes, authors ascending then seq
    frozen: frozenset[bytes]  # authors frozen by this settlement

    @property
    def record(self) -> Record:
        """What was minted and slashed, and why (also ``settled.record``)."""
        return self.settled.record


def settle(prev: Settled, epoch: int, decided_round: int, decided_value: bytes,
           cut: Iterable[Verified], *, plugins: frozenset[str] | None = None) -> Settlement:
    """``Settle(epoch, decided_value)`` from ``prev`` = ``Settled(epoch - 1)``.

    Args:
        prev: the settled state of the previous epoch (not modified).
        epoch: the epoch settled, ``prev.epoch + 1``.
        decided_round: the round whose precommits decided the value (>= 1).
        decided_value: the hash of the decided original proposal.
        cut: entries of K, the decided proposal's causal past minus itself.
            The full K is always right. A node may pass less: every entry of K
            not canonical in ``prev``, plus every entry of K with
            ``body.epoch >= epoch`` (so evidence of this epoch that became
            canonical early is recognised by walking back from the canonical
            heads). Entries already canonical in ``prev`` never take effect
            again, and the order and repetition of entries do not matter.
        plugins: when given, the genesis plugin names: every evidence entry
            of the cut is re-checked (a bug guard; a valid store holds none
            that fails).

    Raises:
        ValueError: ``epoch`` does not follow ``prev``, the value is not a
            hash, or (with ``plugins``) the cut holds invalid evidence.
    """
    if epoch != prev.epoch + 1:
        raise ValueError(f"Settle({epoch}) needs Settled({epoch - 1}), got Settled({prev.epoch})")
    if len(decided_value) != HASH_BYTES or decided_round < 1:
        raise ValueError("a decision is a round >= 1 and a 32-byte proposal hash")
    entries = canon.distinct(cut)
    if plugins is not None:
        _check_evidence(entries.values(), prev.network_id, plugins)
    state = prev.copy()

    # 1. Canonical extension.
    extension = canon.extend(prev, entries)
    for author, (seq, head) in extension.heads.items():
        account = state.accounts.setdefault(author, Account())
        account.canon_seq, account.canon_head = seq, head
    for author in extension.frozen:
        state.accounts.setdefault(author, Account()).frozen = True
    newly = extension.newly_canonical()

    # 2. Own effects, authors ascending, each in seq order; governance votes.
    for item in newly:
        _own_effect(state, item, epoch)
        if item.kind == "gov_proposal":
            governance_settle.open_proposal(state, item, epoch, prev.params)
            _never_negative(state.accounts[item.author], item)
    governance_settle.record_votes(state, (e for e in newly if e.kind == "gov_vote"), epoch)
    closed = governance_settle.close_due(state, epoch)

    # 3. Penalties, passed disputes among them.
    slashes = apply_penalties(state, prev, epoch, newly, governance_settle.passed_disputes(closed))

    # 3a. Paid tasks: receipts pay providers out of their requesters' locks
    # (after penalties: a claim failed in this settlement is not paid); then
    # what is left of the locks that end now goes back.
    payments = escrow.pay(state, (e for e in newly if e.kind == "task_receipt"),
                          prev.base_price)
    refunds = escrow.refund(state, epoch)
    burned = sum(p.burned for p in payments)
    state.base_price = escrow.next_base_price(
        prev.base_price, sum(p.units for p in payments if p.paid), prev.params.market)

    # 4. Rewards. Entries canonical before this settlement count as evidence
    # only when the reduced cut is sure to carry them too (epoch >= E).
    canonical = newly + [e for e in extension.old if e.body.epoch >= epoch]
    record = compute_rewards(state, prev, epoch,
                             [e for e in canonical if e.body.epoch == epoch], canonical, slashes)
    for line in record.lines:
        if line.amount:
            state.accounts.setdefault(line.account, Account()).liquid += line.amount
    state.minted_total += record.minted
    state.emission_burned_total += record.emission - record.minted

    # 5. Governance: Params(E+2) is Params(E+1) with the passed changes.
    state.params = prev.params_after
    state.params_after = prev.params_after
    governance_settle.apply_effects(state, closed)
    governance_settle.take_snapshots(state, epoch)

    # 6. Validator set.
    state.validators = prev.validators_after
    state.validators_after = next_validator_set(state.accounts, state.validators,
                                                state.params_after)

    # 7. Supply, decision, record.
    state.supply += record.minted - record.slashed - burned
    state.epoch = epoch
    state.decided_round, state.decided_value = decided_round, decided_value
    state.record = dataclasses.replace(record, payments=payments, refunds=refunds)
    state.accounts = {key: acc for key, acc in state.accounts.items() if not acc.is_empty()}
    return Settlement(settled=state, newly_canonical=tuple(e.hash for e in newly),
                      frozen=extension.frozen)


def _own_effect(state: Settled, item: Verified, epoch: int) -> None:
    """Apply one newly canonical entry's effect on its author's (and a payee's) funds."""
    kind = item.kind
    account = state.accounts.setdefault(item.author, Account())
    if kind == "transfer":
        amount = item.body.transfer.amount
        account.liquid -= amount
        _never_negative(account, item)
        state.accounts.setdefault(item.body.transfer.to, Account()).liquid += amount
    elif kind == "stake":
        account.liquid -= item.body.stake.amount
        _never_negative(account, item)
        account.bonded += item.body.stake.amount
    elif kind == "unstake":
        # Validity bounded the unstake by the stake then; a slash since may have cut it.
        moved = min(item.body.unstake.amount, account.bonded)
        account.bonded -= moved
        if moved:
            release = epoch + UNBONDING_EPOCHS
            account.lots[release] = account.lots.get(release, 0) + moved
    elif kind == "lock":
        escrow.lock(state, item)
        _never_negative(account, item)
    elif kind == "withdraw":
        wanted = item.body.withdraw.amount
        for release in sorted(r for r in account.lots if r <= epoch - 1):
            taken = min(wanted, account.lots[release])
            account.lots[release] -= taken
            wanted -= taken
            if not account.lots[release]:
                del account.lots[release]
            if not wanted:
                break
        # Invariant: validity allowed only lots matured at fin_p <= E-1, never slashed since.
        assert wanted == 0, (f"withdraw {item.hash.hex()} of {accounts.peer_id_of(item.author)} "
                             f"exceeds its matured lots by {wanted}")
        account.liquid += item.body.withdraw.amount


def _never_negative(account: Account, item: Verified) -> None:
    # Invariant (docs/ledger.md §4.2 step 2): every debit was covered by Settled(F),
    # F <= E-1, credits only grow liquid and no one else debits it.
    assert account.liquid >= 0, (f"liquid of {accounts.peer_id_of(item.author)} would be "
                                 f"{account.liquid} after {item.kind} {item.hash.hex()}")


def _check_evidence(items: Iterable[Verified], network_id: str, plugins: frozenset[str]) -> None:
    for item in items:
        if item.kind in EVIDENCE_KINDS:
            problem = evidence_problem(item, network_id, plugins)
            if problem is not None:
                raise ValueError(f"cut holds invalid evidence {item.hash.hex()}: {problem}")
