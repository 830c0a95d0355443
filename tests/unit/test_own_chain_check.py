"""Who must have answered before a restarted node writes again (meshd/ledger/own_chain.py)."""

from __future__ import annotations

from meshcore.ledger.accounts import peer_id_of
from meshd.ledger.own_chain import CONNECT_SETTLE, NON_VALIDATOR_WAIT, OwnChainCheck

KEYS = [bytes([i]) * 32 for i in range(1, 6)]
A, B, C, D, E = KEYS  # E is never a validator here
PEER = {key: peer_id_of(key) for key in KEYS}
FOUR = tuple((key, 1) for key in (A, B, C, D))
START = 10  # the clock's epoch at start
NOT_FINAL = START  # epochs up to the start's may be final: they prove nothing


def restarted(key: bytes) -> OwnChainCheck:
    return OwnChainCheck(key, start_epoch=START, fresh=False)


NOBODY_ELSE: set[str] = set()  # connected peers beyond those that answered
SETTLED = CONNECT_SETTLE  # answers come at 0..2: judged from here on


def test_a_validator_needs_a_quorum_of_weight_with_its_own() -> None:
    check = restarted(A)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE) == \
        "no peer has answered since it started"
    check.answer(PEER[B], 0, 0)
    problem = check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE)
    assert problem is not None and "2 of 4 weight" in problem and "needs 3" in problem
    assert f"epoch {START + 1} to be final" in problem
    assert check.validators_to_ask(FOUR) == [PEER[C], PEER[D]]
    check.answer(PEER[E], 0, 0)  # not a validator: no weight
    assert check.verdict(FOUR, NOT_FINAL, 10_000, NOBODY_ELSE) is not None  # never on time alone
    check.answer(PEER[C], 0, 1)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 1, NOBODY_ELSE) is None


def test_weights_count_not_heads() -> None:
    heavy = ((A, 1), (B, 1), (C, 5))
    check = restarted(A)
    check.answer(PEER[B], 0, 0)
    assert check.verdict(heavy, NOT_FINAL, SETTLED, NOBODY_ELSE) is not None  # 2 of 7
    check.answer(PEER[C], 0, 0)
    assert check.verdict(heavy, NOT_FINAL, SETTLED, NOBODY_ELSE) is None  # 7 of 7


def test_an_epoch_settled_from_closes_after_the_start_is_enough() -> None:
    """Its cut holds closes of a quorum of validators written after the start."""
    check = restarted(A)
    check.answer(PEER[B], 0, 0)  # one validator: 2 of 4 with A's own
    assert check.verdict(FOUR, START, SETTLED, NOBODY_ELSE) is not None
    assert check.verdict(FOUR, START + 1, SETTLED, NOBODY_ELSE) is None


def test_a_peer_that_knows_newer_own_entries_holds_writes_until_they_are_fetched() -> None:
    check = restarted(A)
    for key in (B, C, D):
        check.answer(PEER[key], 0, 0)
    check.answer(PEER[B], 7, 1)
    for final in (NOT_FINAL, START + 5):
        problem = check.verdict(FOUR, final, SETTLED + 1, NOBODY_ELSE)
        assert problem is not None and f"peer {PEER[B]}" in problem and "seq 7" in problem
    check.answer(PEER[B], 0, 2)  # the next sync fetched them
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 2, NOBODY_ELSE) is None


def test_a_node_that_is_not_a_validator_writes_after_a_wait_with_one_answer() -> None:
    check = restarted(E)
    check.answer(PEER[B], 0, 100)
    assert check.verdict(FOUR, NOT_FINAL, 100 + NON_VALIDATOR_WAIT - 1, NOBODY_ELSE) is not None
    assert check.verdict(FOUR, NOT_FINAL, 100 + NON_VALIDATOR_WAIT, NOBODY_ELSE) is None


def test_without_validators_one_answer_is_enough() -> None:
    check = restarted(A)
    assert check.verdict((), NOT_FINAL, SETTLED, NOBODY_ELSE) is not None
    check.answer(PEER[B], 0, 0)
    assert check.verdict((), NOT_FINAL, SETTLED, NOBODY_ELSE) is None


def test_a_new_node_needs_one_answer() -> None:
    """Nothing stored at all: no own entry to fork (a fresh network's validators would
    otherwise wait for each other before their first close)."""
    check = OwnChainCheck(A, start_epoch=START, fresh=True)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE) is not None
    check.answer(PEER[B], 0, 0)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED, NOBODY_ELSE) is None


def test_a_sole_validator_still_waits_for_one_answer() -> None:
    """Its own weight is a quorum, but its data directory is what may be old."""
    check = restarted(A)
    assert check.verdict(((A, 1),), NOT_FINAL, SETTLED, NOBODY_ELSE) is not None
    check.answer(PEER[E], 0, 0)
    assert check.verdict(((A, 1),), NOT_FINAL, SETTLED, NOBODY_ELSE) is None


def test_every_connected_peer_is_asked_before_writing() -> None:
    """A quorum answered first, but a connected peer that saw the newest own
    entries had not: writes wait for it (or for its sync to fail)."""
    check = restarted(A)
    for key in (B, C):
        check.answer(PEER[key], 0, 0)
    connected = {PEER[B], PEER[C], PEER[D], PEER[E]}
    problem = check.verdict(FOUR, START + 1, SETTLED, connected)
    assert problem is not None and "waiting for 2 connected peers" in problem
    assert check.to_ask(FOUR, connected) == [PEER[D], PEER[E]]  # validators first
    check.answer(PEER[E], 3, 1)  # E knows seq 3, not stored here
    assert "seq 3" in str(check.verdict(FOUR, START + 1, SETTLED + 1, connected))
    check.answer(PEER[E], 0, 2)  # fetched
    check.failed(PEER[D])  # D did not answer: asked again, not waited for
    assert check.verdict(FOUR, NOT_FINAL, SETTLED + 2, connected) is None
    assert check.to_ask(FOUR, connected) == [PEER[D]]


def test_a_new_node_does_not_wait_for_every_peer() -> None:
    check = OwnChainCheck(A, start_epoch=START, fresh=True)
    check.answer(PEER[B], 0, 0)
    assert check.verdict(FOUR, NOT_FINAL, SETTLED, {PEER[B], PEER[C], PEER[D]}) is None


def test_peers_that_connect_soon_after_the_first_answer_are_waited_for() -> None:
    check = restarted(A)
    for key in (B, C):
        check.answer(PEER[key], 0, 0)
    early = check.verdict(FOUR, START + 1, 1.0, NOBODY_ELSE)
    assert early is not None and "waiting 4.0 s more for peers to connect" in early
    assert check.verdict(FOUR, START + 1, CONNECT_SETTLE, NOBODY_ELSE) is None
