"""The state root: one hash of everything a settlement decided (docs/ledger.md §4.3).

Precommits carry it, so a certificate certifies the state, and two nodes (or
two implementations) compare it to know they computed the same settlement.
"""

from __future__ import annotations

from meshcore.governance.tally import Outcome
from meshcore.ledger.encoding import length_prefixed, listed, tagged_hash, uvarint
from meshcore.ledger.record import reward_record_digest
from meshcore.ledger.state import Account, Proposal, Settled, UpgradeNotice, ValidatorSet

OUTCOME_CODES = {Outcome.PASSED: 1, Outcome.REJECTED: 2, Outcome.VETOED: 3,
                 Outcome.NO_QUORUM: 4}  # 0: still open


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
        uvarint(settled.community_pool),
        uvarint(settled.deposits_burned_total),
        listed(_proposal(key, p) for key, p in sorted(settled.proposals.items())),
        _upgrade(settled.upgrade),
        _market(settled),
    ])


def _market(settled: Settled) -> bytes:
    """Paid tasks (docs/ledger.md §12.5), each part after a tag byte and only when it is
    not empty, so that every root made before paid tasks existed stays the same:
    1 and the escrows, ascending by (requester, task); 2, the base price of the next
    epoch and the base fees burned."""
    parts = b""
    if settled.escrows:
        parts += b"\x01" + listed(
            length_prefixed(requester) + length_prefixed(task) + uvarint(e.remaining)
            + uvarint(e.until) for (requester, task), e in sorted(settled.escrows.items()))
    if settled.base_price or settled.market_burned_total:
        parts += b"\x02" + uvarint(settled.base_price) + uvarint(settled.market_burned_total)
    return parts


def _proposal(key: bytes, p: Proposal) -> bytes:
    result = p.result
    outcome = (uvarint(0) if result is None else uvarint(OUTCOME_CODES[result.outcome]) + b"".join(
        uvarint(n) for n in (result.yes, result.no, result.abstain, result.veto,
                             result.eligible, result.voters, result.ignored)))
    return b"".join([
        length_prefixed(key), length_prefixed(p.author), uvarint(p.deposit),
        uvarint(p.start), uvarint(p.end),
        uvarint(p.rules.quorum_percent), uvarint(p.rules.threshold_percent),
        uvarint(p.rules.veto_percent),
        listed(length_prefixed(acc) + uvarint(w) for acc, w in sorted(p.snapshot.items())),
        listed(length_prefixed(voter) + uvarint(seq) + uvarint(option)
               for voter, (seq, option) in sorted(p.votes.items())),
        outcome,
    ])


def _upgrade(upgrade: UpgradeNotice | None) -> bytes:
    if upgrade is None:
        return uvarint(0)
    return uvarint(1) + b"".join([
        length_prefixed(upgrade.proposal), length_prefixed(upgrade.version.encode("utf-8")),
        length_prefixed(upgrade.url.encode("utf-8")), length_prefixed(upgrade.sha256),
        uvarint(upgrade.activation_epoch)])


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
