"""The settlement state machine of one epoch, input by input (docs/ledger.md §5.2)."""

from __future__ import annotations

import pytest

from meshcore.ledger.consensus import (
    NIL,
    Action,
    Conflict,
    Decided,
    EpochConsensus,
    Precommit,
    Prevote,
    Propose,
    Schedule,
    Step,
    is_quorum,
    leader,
    timeout_seconds,
)

A, B, C, D = (bytes([i]) * 32 for i in (1, 2, 3, 4))
FOUR = ((A, 1), (B, 1), (C, 1), (D, 1))  # epoch 0: round 1 led by A, 2 by B, ...
V, W, BAD = b"v" * 32, b"w" * 32, b"x" * 32


def machine(me: bytes | None = B, validators: tuple[tuple[bytes, int], ...] = FOUR,
            epoch: int = 0) -> EpochConsensus:
    return EpochConsensus(epoch, validators, me, lambda value: value != BAD)


def votes(actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, Prevote | Precommit | Propose | Decided)]


def test_leader_rotates_from_epoch_plus_round_minus_one() -> None:
    assert [leader(0, r, FOUR) for r in (1, 2, 3, 4, 5)] == [A, B, C, D, A]
    assert leader(2, 1, FOUR) == C
    assert leader(7, 3, FOUR) == B  # (7 + 3 - 1) mod 4 = 1


def test_quorum_and_timeouts() -> None:
    assert is_quorum(2, 3) and not is_quorum(1, 3)
    assert is_quorum(3, 4) and not is_quorum(2, 4)
    assert [timeout_seconds(Step.PROPOSE, r) for r in (1, 2, 3)] == [4.0, 6.0, 8.0]
    assert [timeout_seconds(Step.PREVOTE, r) for r in (1, 3)] == [2.0, 4.0]
    assert timeout_seconds(Step.PRECOMMIT, 2) == 3.0


def test_bad_validator_sets_are_refused() -> None:
    with pytest.raises(ValueError):
        machine(validators=((B, 1), (A, 1)))
    with pytest.raises(ValueError):
        machine(validators=((A, 0), (B, 1)))
    with pytest.raises(ValueError):
        machine(me=b"z" * 32)


def test_happy_round_decides() -> None:
    m = machine()
    assert m.start() == [Schedule(Step.PROPOSE, 1, 4.0)]
    assert m.on_proposal(A, 1, V) == [Prevote(1, V)]
    assert m.on_prevote(A, 1, V) == []
    assert m.on_prevote(C, 1, V) == [Schedule(Step.PREVOTE, 1, 2.0), Precommit(1, V)]
    assert m.locked == (V, 1) and m.valid == (V, 1)
    assert m.on_precommit(A, 1, V) == []
    assert m.on_precommit(C, 1, V) == [Decided(1, V, (A, B, C))]
    assert m.on_precommit(D, 1, V) == [] and m.on_timeout(Step.PREVOTE, 1) == []


def test_leader_proposes_once_closes_are_in_and_its_own_echo_is_a_no_op() -> None:
    m = machine(me=A)
    assert m.start() == [Schedule(Step.PROPOSE, 1, 4.0)]
    assert m.on_closes_quorum() == [Propose(1)]
    assert m.on_proposal(A, 1, V) == [Prevote(1, V)]
    assert m.on_prevote(A, 1, V) == []  # its own vote, counted when emitted
    assert m.on_closes_quorum() == []


def test_unacceptable_proposal_gets_nil() -> None:
    m = machine()
    m.start()
    assert m.on_proposal(A, 1, BAD) == [Prevote(1, NIL)]


def test_timeouts_walk_a_round_to_the_next() -> None:
    m = machine()
    m.start()
    assert m.on_timeout(Step.PREVOTE, 1) == []  # not in that step: ignored
    assert m.on_timeout(Step.PROPOSE, 1) == [Prevote(1, NIL)]
    m.on_prevote(A, 1, V)
    assert m.on_prevote(C, 1, W) == [Schedule(Step.PREVOTE, 1, 2.0)]
    assert m.on_timeout(Step.PREVOTE, 1) == [Precommit(1, NIL)]
    m.on_precommit(A, 1, V)
    assert m.on_precommit(C, 1, NIL) == [Schedule(Step.PRECOMMIT, 1, 2.0)]
    assert m.on_timeout(Step.PRECOMMIT, 1) == [Schedule(Step.PROPOSE, 2, 6.0)]
    assert m.on_timeout(Step.PRECOMMIT, 1) == []  # stale
    assert m.round == 2 and m.step is Step.PROPOSE


def test_quorum_of_nil_prevotes_precommits_nil() -> None:
    m = machine()
    m.start()
    m.on_timeout(Step.PROPOSE, 1)
    m.on_prevote(A, 1, NIL)
    assert votes(m.on_prevote(C, 1, NIL)) == [Precommit(1, NIL)]


def test_quorum_of_nil_precommits_starts_the_next_round_without_the_timeout() -> None:
    # After a partition heals, the round burnt during it ends this way at once
    # instead of after timeout_precommit: nothing can be decided in it any more.
    m = machine()
    m.start()
    m.on_timeout(Step.PROPOSE, 1)
    m.on_prevote(A, 1, NIL)
    m.on_prevote(C, 1, NIL)  # B precommits nil
    assert m.on_precommit(A, 1, V) == []
    assert m.on_precommit(C, 1, NIL) == [Schedule(Step.PRECOMMIT, 1, 2.0)]
    assert m.round == 1  # 3 of 4 precommitted, but 2 of 4 nil: not a quorum of nil
    assert m.on_precommit(D, 1, NIL) == [Schedule(Step.PROPOSE, 2, 6.0)]
    assert m.round == 2 and m.step is Step.PROPOSE
    assert m.on_timeout(Step.PRECOMMIT, 1) == []  # stale now


def test_more_than_a_third_in_a_later_round_skips_to_it() -> None:
    m = machine(validators=((A, 1), (B, 1), (C, 1), (D, 1), (b"\x05" * 32, 2)))
    m.start()
    assert m.on_prevote(A, 3, NIL) == []
    assert m.on_precommit(C, 3, NIL) == []  # 2 of 6: exactly a third is not enough
    assert m.on_prevote(D, 3, V) == [Schedule(Step.PROPOSE, 3, 8.0)]
    assert m.round == 3


def test_proposal_of_a_future_round_is_kept() -> None:
    m = machine()
    m.start()
    assert m.on_proposal(B, 2, W) == []
    for author in (A, C):
        m.on_precommit(author, 1, NIL)
    m.on_timeout(Step.PROPOSE, 1)
    m.on_prevote(A, 1, NIL)
    # B precommits nil: with A's and C's, a quorum of nil ends round 1 at once
    assert m.on_prevote(C, 1, NIL)[1:] == [Precommit(1, NIL), Schedule(Step.PROPOSE, 2, 6.0),
                                           Prevote(2, W)]


def test_strangers_and_wrong_leaders_are_ignored() -> None:
    m = machine()
    m.start()
    stranger = b"\x09" * 32
    assert m.on_proposal(C, 1, V) == []  # C does not lead round 1
    assert m.on_proposal(A, 1, V, origin=W, valid_round=1) == []  # vr must be < round
    assert m.on_proposal(A, 1, V, valid_round=1) == []  # an original has vr 0
    for author in (stranger, stranger, A, C):
        m.on_precommit(author, 1, V)
    assert m.decided is None  # the stranger did not count
    assert m.on_precommit(D, 1, V)[-1] == Decided(1, V, (A, C, D))


def test_duplicates_count_once_and_equivocation_is_reported() -> None:
    m = machine(me=None)
    assert m.on_prevote(A, 1, V) == []
    assert m.on_prevote(A, 1, V) == []
    assert m.on_prevote(A, 1, W) == [Conflict(Step.PREVOTE, 1, A, V, W)]
    assert m.on_proposal(A, 1, V) == []
    assert m.on_proposal(A, 1, W) == [Conflict(Step.PROPOSE, 1, A, V, W)]
    m.on_precommit(C, 2, V)
    m.on_precommit(C, 2, V)
    m.on_precommit(D, 2, V)
    assert m.decided is None  # C's duplicate is not a third precommit


def test_an_equivocator_counts_once_towards_any_value() -> None:
    m = machine(me=A)
    m.start()
    m.on_timeout(Step.PROPOSE, 1)  # A prevotes nil
    m.on_prevote(B, 1, V)
    assert m.on_prevote(B, 1, W) == [Conflict(Step.PREVOTE, 1, B, V, W)]
    assert m.on_prevote(C, 1, V) == [Schedule(Step.PREVOTE, 1, 2.0)]  # A, B, C: 3 of 4


def test_precommits_for_one_value_in_different_rounds_do_not_add_up() -> None:
    m = machine(me=None)
    m.on_precommit(A, 1, V)
    m.on_precommit(B, 1, V)
    m.on_precommit(C, 2, V)
    m.on_precommit(D, 3, V)
    assert m.decided is None
    assert m.on_precommit(A, 3, V) == []
    assert m.on_precommit(B, 3, V) == [Decided(3, V, (A, B, D))]


def test_observer_decides_without_voting() -> None:
    m = machine(me=None)
    assert m.start() == [] and m.on_closes_quorum() == []
    assert m.on_proposal(A, 1, V) == []
    for author in (A, B):
        assert m.on_precommit(author, 1, V) == []
    assert m.on_precommit(C, 1, V) == [Decided(1, V, (A, B, C))]


def locked_on_v_in_round_1(me: bytes = B) -> EpochConsensus:
    """``me`` locks V in round 1, which then fails (precommits of others are nil)."""
    m = machine(me=me)
    m.start()
    m.on_proposal(A, 1, V)
    m.on_prevote(A, 1, V)
    m.on_prevote(C, 1, V)
    assert m.locked == (V, 1)
    for author in (A, C):
        m.on_precommit(author, 1, NIL)
    m.on_timeout(Step.PRECOMMIT, 1)
    assert m.round == 2
    return m


def test_locked_validator_prevotes_nil_on_another_original() -> None:
    m = locked_on_v_in_round_1(me=D)
    assert m.on_proposal(B, 2, W) == [Prevote(2, NIL)]
    m = locked_on_v_in_round_1(me=D)
    assert m.on_proposal(B, 2, V) == [Prevote(2, V)]  # its own lock: fine


def test_locked_validator_follows_a_pol_of_its_lock_round_or_later() -> None:
    m = locked_on_v_in_round_1(me=D)
    # W gets quorum prevotes in round 2 (D, locked, prevotes nil there).
    m.on_timeout(Step.PROPOSE, 2)  # D prevotes nil in round 2
    for author in (A, B, C):
        m.on_prevote(author, 2, W)
    m.on_precommit(A, 2, NIL)
    m.on_precommit(B, 2, NIL)
    assert m.round == 2
    m.on_timeout(Step.PREVOTE, 2)
    m.on_timeout(Step.PRECOMMIT, 2)
    assert m.round == 3
    # C re-proposes W with its round-2 POL: D, locked on (V, 1), follows it.
    assert m.on_proposal(C, 3, b"r" * 32, origin=W, valid_round=2) == [Prevote(3, W)]


def test_pol_of_the_lock_round_is_followed() -> None:
    # Two values with quorum prevotes in one round need equivocators (A, C here).
    m = machine(me=D)
    m.start()
    m.on_proposal(A, 1, V)
    m.on_prevote(A, 1, V)
    m.on_prevote(C, 1, V)  # D locks (V, 1)
    m.on_prevote(A, 1, W)
    m.on_prevote(B, 1, W)
    m.on_prevote(C, 1, W)  # W has A, B, C in round 1 too
    for author in (A, B, C):
        m.on_precommit(author, 1, NIL)
    m.on_timeout(Step.PRECOMMIT, 1)
    # locked.round = 1 <= vr = 1: the rule of §5.2 lets a POL of the lock round through.
    assert m.on_proposal(B, 2, b"r" * 32, origin=W, valid_round=1) == [Prevote(2, W)]


def test_pol_older_than_the_lock_is_refused() -> None:
    m = machine(me=D)
    m.start()
    m.on_proposal(A, 1, W)
    for author in (A, B, C):
        m.on_prevote(author, 1, W)  # W has a round-1 POL; D prevoted it too
    m.on_timeout(Step.PRECOMMIT, 1)
    for author in (A, B):
        m.on_precommit(author, 1, NIL)
    m.on_precommit(C, 1, NIL)
    m.on_timeout(Step.PRECOMMIT, 1)
    m.on_proposal(B, 2, V)
    for author in (A, B, C):
        m.on_prevote(author, 2, V)  # D locks (V, 2)
    for author in (A, B, C):
        m.on_precommit(author, 2, NIL)
    m.on_timeout(Step.PRECOMMIT, 2)
    assert m.locked == (V, 2) and m.round == 3
    assert m.on_proposal(C, 3, b"r" * 32, origin=W, valid_round=1) == [Prevote(3, NIL)]


def test_leader_with_a_valid_value_re_proposes_it_with_its_pol() -> None:
    m = locked_on_v_in_round_1(me=D)
    m.on_closes_quorum()
    m.on_timeout(Step.PROPOSE, 2)
    for author in (A, B, C):
        m.on_precommit(author, 2, NIL)  # a quorum of nil: round 3 at once
    assert m.round == 3
    m.on_timeout(Step.PROPOSE, 3)
    m.on_precommit(A, 3, NIL)
    m.on_precommit(B, 3, NIL)
    m.on_prevote(A, 3, NIL)
    out = m.on_prevote(B, 3, NIL)  # D precommits nil: a quorum of nil again
    assert m.round == 4 and leader(0, 4, FOUR) == D
    assert Propose(4, V, 1, (A, C, D)) in out


def test_valid_value_is_learnt_after_leaving_its_round() -> None:
    m = machine(me=D)
    m.start()
    m.on_closes_quorum()
    m.on_proposal(A, 1, V)  # D prevotes V
    for author in (A, B, C):
        m.on_precommit(author, 1, NIL)
    m.on_timeout(Step.PREVOTE, 1)  # not in prevote step with a timer: ignored
    m.on_prevote(A, 1, NIL)
    m.on_prevote(B, 1, NIL)
    m.on_timeout(Step.PREVOTE, 1)
    m.on_timeout(Step.PRECOMMIT, 1)
    assert m.round == 2 and m.valid == (NIL, 0)
    # Conflicting nil/V prevotes of A and B arrive late: V has A, B, D in round 1.
    m.on_prevote(A, 1, V)
    m.on_prevote(B, 1, V)
    assert m.valid == (V, 1) and m.locked == (NIL, 0)


def test_restore_never_votes_twice_in_a_round() -> None:
    m = machine()
    out = m.restore([Prevote(1, NIL), Precommit(1, NIL), Prevote(2, W)])
    assert out == [] and m.round == 2 and m.step is Step.PREVOTE
    assert m.on_proposal(B, 2, V) == []  # B is us: no second prevote in round 2
    assert m.on_proposal(A, 1, V) == []


def test_restore_keeps_the_lock() -> None:
    m = machine(me=D)
    out = m.restore([Prevote(1, V), Precommit(1, V), Prevote(2, NIL), Precommit(2, NIL)])
    assert m.locked == (V, 1) and m.round == 2 and m.step is Step.PRECOMMIT and out == []
    for author in (A, B):
        m.on_precommit(author, 2, NIL)
    m.on_timeout(Step.PRECOMMIT, 2)
    assert m.on_proposal(C, 3, W) == [Prevote(3, NIL)]


def test_restored_leader_waits_for_its_pol_before_proposing() -> None:
    m = machine(me=C)
    m.restore([Prevote(1, V), Precommit(1, V), Prevote(2, NIL), Precommit(2, NIL)])
    m.on_closes_quorum()
    m.on_precommit(A, 2, NIL)
    out = m.on_precommit(B, 2, NIL)  # with C's own: a quorum of nil
    assert m.round == 3 and out == [Schedule(Step.PROPOSE, 3, 8.0)]  # no POL counted yet
    m.on_proposal(A, 1, V)
    m.on_prevote(A, 1, V)
    assert m.on_prevote(B, 1, V) == [Propose(3, V, 1, (A, B, C))]


def test_restore_refuses_a_forked_own_chain() -> None:
    with pytest.raises(ValueError):
        machine().restore([Prevote(1, V), Prevote(1, W)])
    m = machine()
    m.start()
    with pytest.raises(ValueError):
        m.restore([])
