"""Segment Merkle trees (mesh_storage/merkle.py): every segment proves, nothing else does."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_storage import merkle
from mesh_storage.audit import AuditError, answer, check
from mesh_storage.merkle import ProofError, audit_path, root, segments, verify

from tests.properties import examples

SIZE = 16  # small segments: many leaves from small pieces


def test_the_hashes_are_rfc_6962s() -> None:
    # Three leaves: the tree splits 2 | 1, leaves and nodes domain-separated.
    piece = b"a" * SIZE + b"b" * SIZE + b"c"
    leaf = [hashlib.sha256(b"\x00" + s).digest() for s in segments(piece, SIZE)]
    left = hashlib.sha256(b"\x01" + leaf[0] + leaf[1]).digest()
    assert root(piece, SIZE) == hashlib.sha256(b"\x01" + left + leaf[2]).digest()
    assert audit_path(piece, 2, SIZE) == [left]
    assert audit_path(piece, 0, SIZE) == [leaf[1], leaf[2]]


@settings(max_examples=examples(200))
@given(st.binary(max_size=40 * SIZE), st.data())
def test_every_segment_proves_and_a_changed_one_does_not(piece: bytes, data: st.DataObject) -> None:
    parts = segments(piece, SIZE)
    top = root(piece, SIZE)
    index = data.draw(st.integers(0, len(parts) - 1))
    path = audit_path(piece, index, SIZE)
    assert verify(top, index, len(parts), parts[index], path)
    # Another segment's bytes, a flipped byte, another index, a cut path: refused.
    forged = bytearray(parts[index] or b"\0")
    forged[data.draw(st.integers(0, len(forged) - 1))] ^= 1
    assert not verify(top, index, len(parts), bytes(forged), path)
    if len(parts) > 1:
        other = (index + 1) % len(parts)
        if parts[other] != parts[index]:
            assert not verify(top, other, len(parts), parts[index], path)
        assert not verify(top, index, len(parts), parts[index], path[:-1])
        flipped = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
        assert not verify(top, index, len(parts), parts[index], flipped)


@pytest.mark.parametrize("index,count,path", [
    (-1, 1, []), (1, 1, []), (0, 0, []), (0, 2, [b"short"]), (0, 2, [b"\0" * 32] * 65)])
def test_malformed_questions_are_false_not_errors(index: int, count: int,
                                                  path: list[bytes]) -> None:
    assert verify(root(b"x"), index, count, b"x", path) is False


def test_an_index_outside_the_piece_has_no_path() -> None:
    with pytest.raises(ProofError, match="not one of the piece's 2"):
        audit_path(b"y" * (SIZE + 1), 2, SIZE)


def test_a_forged_answer_or_a_wrong_path_is_refused_with_the_reason() -> None:
    piece = bytes(range(256)) * 320 + b"tail"
    root = merkle.root(piece, 16384)
    good = answer(piece, 3, 16384)
    check(good, root, 3, 6)
    for forged, reason in ((good[:-1] + bytes([good[-1] ^ 1]), "do not lead to the piece's"),
                           (good[:1 + 32] + bytes(32) + good[1 + 64:], "do not lead"),
                           (good[:20], "cut short"), (b"", "empty")):
        try:
            check(forged, root, 3, 6)
        except AuditError as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"{forged[:8]!r} passed")
