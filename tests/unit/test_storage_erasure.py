"""Erasure coding of stripes (mesh_storage/erasure.py): any k of n pieces give the stripe back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_storage.erasure import (
    Coding,
    ErasureError,
    NotEnoughPieces,
    decode,
    encode,
    piece_size,
)

from tests.properties import examples


@st.composite
def coded(draw: st.DrawFn) -> tuple[bytes, Coding, list[int]]:
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, n))
    stripe = draw(st.binary(max_size=3000))
    survivors = draw(st.permutations(range(n)))[:k]
    return stripe, Coding(k, n), survivors


@settings(max_examples=examples(200))
@given(coded())
def test_any_k_pieces_give_the_stripe_back(case: tuple[bytes, Coding, list[int]]) -> None:
    stripe, coding, survivors = case
    pieces = encode(stripe, coding)
    assert len(pieces) == coding.n
    assert {len(p) for p in pieces} == {piece_size(len(stripe), coding.k)}
    assert decode({i: pieces[i] for i in survivors}, coding, len(stripe)) == stripe


def test_the_code_is_systematic_and_costs_n_over_k() -> None:
    stripe = bytes(range(256)) * 16  # 4096 bytes
    pieces = encode(stripe, Coding(4, 8))
    assert b"".join(pieces[:4]) == stripe  # the first k pieces are the data
    assert sum(map(len, pieces)) == 2 * len(stripe)


def test_losing_more_than_n_minus_k_pieces_is_an_error_that_says_so() -> None:
    coding = Coding(4, 8)
    pieces = encode(b"x" * 1000, coding)
    with pytest.raises(NotEnoughPieces, match="3 of the 4 pieces"):
        decode({0: pieces[0], 5: pieces[5], 7: pieces[7]}, coding, 1000)
    assert coding.tolerated_losses == 4


@pytest.mark.parametrize("k,n", [(0, 1), (3, 2), (1, 257), (-1, 4)])
def test_impossible_parameters_are_refused(k: int, n: int) -> None:
    with pytest.raises(ErasureError, match="k <= n"):
        Coding(k, n)


def test_pieces_that_do_not_fit_are_refused() -> None:
    coding = Coding(2, 4)
    pieces = encode(b"abcdef", coding)
    with pytest.raises(ErasureError, match="not below n=4"):
        decode({0: pieces[0], 9: pieces[1]}, coding, 6)
    with pytest.raises(ErasureError, match="pieces of 3"):
        decode({0: pieces[0], 1: pieces[1] + b"!"}, coding, 6)
