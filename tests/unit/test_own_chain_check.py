"""Who must have answered before a restarted node writes again (meshd/ledger/own_chain.py)."""

from __future__ import annotations

from meshcore.ledger.accounts import peer_id_of
from meshd.ledger.own_chain import (
    CONNECT_SETTLE,
    NON_VALIDATOR_WAIT,
    RETRY_FAILED,
    OwnChainCheck,
)

KEYS = [bytes([i]) * 32 for i in range(1, 6)]
A, B, C, D, E = KEYS  # E is never a validator here
PEER = {key: peer_id_of(key) for key in KEYS}
FOUR = tuple((key, 1) for key in (A, B, C, D))
START = 10  # the clock's epoch at start
NOT_FINAL = START  # epochs up to the start's may be final: they prove nothing
NOBODY_ELSE: set[str] = set()  # connected peers beyond those that answered
SETTLED = CONNECT_SETTLE  # answers come at 0..2: judged from here on
MISSING = (7, b"h" * 32)  # (seq, hash) of an own entry a peer knows and this node lacks


def restarted(key: bytes) -> OwnChainCheck:
    return OwnChainCheck(key, start_epoch=START, fresh=False)


def test_a_validator_needs_a_quorum_of_weight_with_its_own() -> None:
    check = restarted(A)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE) == \
        "no peer has answered since it started"
    check.answer(PEER[B], None, 0)
    problem = check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE)
    assert problem is not None and "2 of 4 weight" in problem and "needs 3" in problem
    assert f"epoch {START + 1} to be final" in problem
    assert check.validators_to_ask(FOUR) == [PEER[C], PEER[D]]
    check.answer(PEER[E], None, 0)  # not a validator: no weight
    assert check.verdict(FOUR, NOT_FINAL, 10_000, NOBODY_ELSE) is not None  # never on time
    check.answer(PEER[C], None, 1)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 1, NOBODY_ELSE) is None


def test_weights_count_not_heads() -> None:
    heavy = ((A, 1), (B, 1), (C, 5))
    check = restarted(A)
    check.answer(PEER[B], None, 0)
    assert check.verdict(heavy, NOT_FINAL, SETTLED, NOBODY_ELSE) is not None  # 2 of 7
    check.answer(PEER[C], None, 0)
    assert check.verdict(heavy, NOT_FINAL, SETTLED, NOBODY_ELSE) is None  # 7 of 7


def test_an_epoch_settled_from_closes_after_the_start_is_enough() -> None:
    """Its cut holds closes of a quorum of validators written after the start."""
    check = restarted(A)
    check.answer(PEER[B], None, 0)  # one validator: 2 of 4 with A's own
    assert check.verdict(FOUR, START, SETTLED, NOBODY_ELSE) is not None
    assert check.verdict(FOUR, START + 1, SETTLED, NOBODY_ELSE) is None


def test_a_clock_behind_the_network_does_not_pass_an_old_settlement_for_a_new_one() -> None:
    check = restarted(A)
    check.saw_epoch(START + 40, 0)  # the catch-up brought entries of epoch 50
    check.answer(PEER[B], None, 1)
    assert check.verdict(FOUR, START + 1, SETTLED + 1, NOBODY_ELSE) is not None
    assert check.verdict(FOUR, START + 41, SETTLED + 1, NOBODY_ELSE) is None
    check.saw_epoch(START + 60, 1 + CONNECT_SETTLE)  # later entries: not the start's
    assert check.start_epoch == START + 40


def test_a_peer_that_knows_newer_own_entries_holds_writes_until_they_are_stored() -> None:
    check = restarted(A)
    for key in (B, C, D):
        check.answer(PEER[key], None, 0)
    check.answer(PEER[B], MISSING, 1)
    for final in (NOT_FINAL, START + 5):
        problem = check.verdict(FOUR, final, SETTLED + 1, NOBODY_ELSE)
        assert problem is not None and f"peer {PEER[B]}" in problem and "seq 7" in problem
    assert check.missing_hashes() == [MISSING[1]]
    check.stored({b"other" * 6})
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 1, NOBODY_ELSE) is not None
    check.stored({MISSING[1]})  # fetched, from B or anyone: B's answer is covered
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 1, NOBODY_ELSE) is None
    assert PEER[B] in check.answered


def test_a_sync_that_fails_after_showing_a_missing_entry_keeps_writes_held() -> None:
    check = restarted(A)
    check.answer(PEER[B], MISSING, 0)  # the heads came; the fetch then failed
    check.failed(PEER[B], 0.5)
    for key in (C, D):
        check.answer(PEER[key], None, 1)
    connected = {PEER[B], PEER[C], PEER[D]}
    assert "seq 7" in str(check.verdict(FOUR, START + 5, SETTLED + 1, connected))


def test_a_node_that_is_not_a_validator_writes_after_a_wait_with_one_answer() -> None:
    check = restarted(E)
    check.answer(PEER[B], None, 100)
    assert check.verdict(FOUR, NOT_FINAL, 100 + NON_VALIDATOR_WAIT - 1, NOBODY_ELSE) is not None
    assert check.verdict(FOUR, NOT_FINAL, 100 + NON_VALIDATOR_WAIT, NOBODY_ELSE) is None


def test_without_validators_one_answer_is_enough() -> None:
    check = restarted(A)
    assert check.verdict((), NOT_FINAL, SETTLED, NOBODY_ELSE) is not None
    check.answer(PEER[B], None, 0)
    assert check.verdict((), NOT_FINAL, SETTLED, NOBODY_ELSE) is None


def test_a_new_node_needs_one_answer_and_does_not_wait_for_every_peer() -> None:
    """Nothing stored at all: no own entry to fork (a fresh network's
    validators would otherwise wait for each other before their first close)."""
    check = OwnChainCheck(A, start_epoch=START, fresh=True)
    assert check.verdict(FOUR, NOT_FINAL, 0, NOBODY_ELSE) is not None
    check.answer(PEER[B], None, 0)
    assert check.verdict(FOUR, NOT_FINAL, 0, {PEER[B], PEER[C], PEER[D]}) is None


def test_a_sole_validator_still_waits_for_one_answer() -> None:
    """Its own weight is a quorum, but its data directory is what may be old."""
    check = restarted(A)
    assert check.verdict(((A, 1),), NOT_FINAL, SETTLED, NOBODY_ELSE) is not None
    check.answer(PEER[E], None, 0)
    assert check.verdict(((A, 1),), NOT_FINAL, SETTLED, NOBODY_ELSE) is None


def test_every_connected_peer_is_asked_before_writing() -> None:
    """A quorum answered first, but a connected peer that saw the newest own
    entries had not: writes wait for it (or for its sync to fail)."""
    check = restarted(A)
    for key in (B, C):
        check.answer(PEER[key], None, 0)
    connected = {PEER[B], PEER[C], PEER[D], PEER[E]}
    problem = check.verdict(FOUR, START + 1, SETTLED, connected)
    assert problem is not None and "waiting for 2 connected peers" in problem
    assert check.to_ask(FOUR, connected, SETTLED) == [PEER[D], PEER[E]]  # validators first
    check.answer(PEER[E], MISSING, 1)
    assert "seq 7" in str(check.verdict(FOUR, START + 1, SETTLED + 1, connected))
    check.answer(PEER[E], None, 2)  # fetched
    check.failed(PEER[D], 3)  # D did not answer: not waited for, asked again later
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 3, connected) is None
    assert check.to_ask(FOUR, connected, 3 + RETRY_FAILED - 1) == []
    assert check.to_ask(FOUR, connected, 3 + RETRY_FAILED) == [PEER[D]]


def test_peers_that_connect_soon_after_the_first_answer_are_waited_for() -> None:
    check = restarted(A)
    for key in (B, C):
        check.answer(PEER[key], None, 0)
    early = check.verdict(FOUR, START + 1, 1.0, NOBODY_ELSE)
    assert early is not None and "waiting 4 s more for peers to connect" in early
    assert check.verdict(FOUR, START + 1, CONNECT_SETTLE, NOBODY_ELSE) is None


def test_only_a_node_that_never_heard_from_anyone_writes_alone() -> None:
    check = restarted(A)
    check.members_now(0, 0)
    assert not check.may_write_alone(9, 10)
    check.members_now(1, 9)  # a member came: the clock starts again when it goes
    check.members_now(0, 12)
    assert not check.may_write_alone(21, 10)
    assert check.may_write_alone(22, 10)
    check.answer(PEER[B], MISSING, 23)  # it answered before leaving: never alone
    check.members_now(0, 24)
    assert not check.may_write_alone(1_000, 10)
