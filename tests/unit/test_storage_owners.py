"""Whom a holder keeps a piece for: it goes when every owner removed it, never before."""

from __future__ import annotations

from pathlib import Path

from mesh_storage.owners import PieceOwners

NAME = "ab" * 32
ALICE = "12D3KooW" + "A" * 44
BOB = "12D3KooW" + "B" * 44


def test_a_piece_two_owners_stored_goes_only_when_both_removed_it(tmp_path: Path) -> None:
    owners = PieceOwners(tmp_path)
    owners.add(NAME, ALICE)
    owners.add(NAME, BOB)
    owners.add(NAME, ALICE)  # again: once is enough
    assert owners.of(NAME) == {ALICE, BOB}
    assert owners.remove(NAME, ALICE) is False  # Bob's still
    assert owners.remove(NAME, ALICE) is False  # not an owner any more: nothing changes
    assert owners.of(NAME) == {BOB}
    assert owners.remove(NAME, BOB) is True
    assert owners.of(NAME) == set()
    assert not (tmp_path / NAME[:2] / NAME).exists()


def test_a_piece_without_recorded_owners_is_never_removed(tmp_path: Path) -> None:
    owners = PieceOwners(tmp_path)  # kept before owners were recorded, or never placed here
    assert owners.remove(NAME, ALICE) is False
    (tmp_path / NAME[:2]).mkdir()
    (tmp_path / NAME[:2] / NAME).write_bytes(b"\xff not a peer id\n")  # damaged on disk
    assert owners.of(NAME) == set()
    assert owners.remove(NAME, ALICE) is False
