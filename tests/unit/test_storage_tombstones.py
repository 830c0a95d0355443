"""Tombstones (plugins/storage/mesh_storage/tombstones.py): the owner's signed removal
a holder keeps and shows, checked; nothing else excuses a piece gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from mesh_storage import tombstones
from mesh_storage.holding import FilePieces, ManifestStore
from mesh_storage.tombstones import Tombstone, TombstoneStore, excuse, from_drop, signed_drop

from meshd.p2p.host import peer_id_of
from meshd.plugin import InvalidArgument, PeerError, Unavailable
from meshd.plugin_host.signing import PluginSigner

FILE = "bafybei" + "a" * 52
OWNER_SEED, HOLDER_SEED = bytes(range(32)), bytes(range(1, 33))
OWNER, HOLDER = peer_id_of(OWNER_SEED), peer_id_of(HOLDER_SEED)


class Ledger:
    def clock_epoch(self) -> int:
        return 10


class Ctx:
    """What tombstones.py uses of a plugin's context."""

    def __init__(self, seed: bytes, answer: Any = None) -> None:
        self._signer = PluginSigner(seed, "net")
        self.peer_id = peer_id_of(seed)
        self.ledger = Ledger()
        self.answer = answer

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign("storage", data)

    def verify(self, peer_id: str, data: bytes, signature: bytes) -> bool:
        return self._signer.verify("storage", peer_id, data, signature)

    async def request(self, peer_id: str, event: str, data: bytes, *, timeout: float) -> bytes:
        assert event == tombstones.REMOVED and data == FILE.encode()
        if isinstance(self.answer, Exception):
            raise self.answer
        return bytes(self.answer)


def drop(**changes: Any) -> dict[str, Any]:
    return {**json.loads(signed_drop(Ctx(OWNER_SEED), FILE, ["p"])), **changes}  # type: ignore[arg-type]


def test_a_signed_drop_carries_a_tombstone_the_holder_checks() -> None:
    asked = drop()
    assert (asked["file"], asked["pieces"], asked["epoch"]) == (FILE, ["p"], 10)
    kept = from_drop(Ctx(HOLDER_SEED), OWNER, FILE, asked)  # type: ignore[arg-type]
    assert (kept.owner, kept.epoch) == (OWNER, 10)


@pytest.mark.parametrize(("asked", "why"), [
    ({"file": FILE, "pieces": []}, "takes the owner's signed removal"),
    (drop(epoch="10"), "takes the owner's signed removal"),
    (drop(epoch=-1), "takes the owner's signed removal"),
    (drop(signature="zz"), "takes the owner's signed removal"),
    (drop(epoch=12), "has not come"),
    (drop(epoch=9), "is not signed by the sender"),
])
def test_a_drop_without_the_senders_signature_is_refused(asked: dict[str, Any],
                                                         why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        from_drop(Ctx(HOLDER_SEED), OWNER, FILE, asked)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):  # and signed by another than the sender
        from_drop(Ctx(HOLDER_SEED), HOLDER, FILE, drop())  # type: ignore[arg-type]


def test_the_store_keeps_the_newest_statement_per_owner_on_disk(tmp_path: Path) -> None:
    store = TombstoneStore(tmp_path / "tombstones")
    with pytest.raises(InvalidArgument, match="keeps no removal"):
        store.answer(FILE)
    store.add(FILE, Tombstone(OWNER, 5, b"\x01" * 64))
    store.add(FILE, Tombstone(OWNER, 4, b"\x02" * 64))  # older: not kept
    store.add(FILE, Tombstone(HOLDER, 7, b"\x03" * 64))
    again = TombstoneStore(tmp_path / "tombstones")
    assert again.get(FILE) == {OWNER: Tombstone(OWNER, 5, b"\x01" * 64),
                               HOLDER: Tombstone(HOLDER, 7, b"\x03" * 64)}
    assert json.loads(again.answer(FILE))[OWNER] == {"epoch": 5, "signature": "01" * 64}
    assert again.get("../etc") == {}
    (tmp_path / "tombstones" / FILE).write_text("[1, 2]")  # damaged: nothing, no crash
    assert again.get(FILE) == {}


def shown(epoch: int, seed: bytes = OWNER_SEED, owner: str = OWNER) -> bytes:
    signature = Ctx(seed).sign(tombstones.statement(FILE, epoch))
    return json.dumps({owner: {"epoch": epoch, "signature": signature.hex()}}).encode()


@pytest.mark.parametrize(("answer", "claimed_at", "excused"), [
    (shown(10), 10, True),
    (shown(10), 11, True),  # one epoch of clock skew
    (shown(10), 12, False),  # the file was put and promised again since
    (shown(10, HOLDER_SEED), 5, False),  # signed by the holder, not the owner
    (shown(10, HOLDER_SEED, HOLDER), 5, False),  # another's removal
    (b"not json", 5, False),
    (b'{"x": 1}', 5, False),
    (PeerError("peer refused: this node keeps no removal of it"), 5, False),
])
def test_only_the_owners_removal_since_the_claim_excuses_a_piece_gone(
        answer: Any, claimed_at: int, excused: bool) -> None:
    ctx = Ctx(HOLDER_SEED, answer)
    why = trio.run(excuse, ctx, HOLDER, FILE, OWNER, claimed_at, 1.0)
    assert (why is not None) == excused, why
    if excused:
        assert why is not None and (why.owner, why.epoch) == (OWNER, 10)
        assert f"removal signed by {OWNER} in epoch 10" in why.why


@pytest.mark.parametrize("failure", [Unavailable("the stream broke"),
                                     PeerError("peer refused: plugin 'storage' is busy")])
def test_a_holder_that_cannot_answer_shows_nothing_either_way(failure: Exception) -> None:
    with pytest.raises(type(failure)):
        trio.run(excuse, Ctx(HOLDER_SEED, failure), HOLDER, FILE, OWNER, 5, 1.0)


@pytest.mark.parametrize(("owner", "since", "me", "ends"), [
    (OWNER, 9, HOLDER, True),  # given the manifest before the removal: missed the rm
    (OWNER, 10, HOLDER, True),  # in the removal's epoch
    (OWNER, 11, HOLDER, False),  # given it after: the file was put again
    (OWNER, None, HOLDER, False),  # a copy kept before the epoch was recorded
    (HOLDER, 9, OWNER, False),  # the copy is of another owner's manifest
    (OWNER, 9, OWNER, False),  # the owner's node knows its own removals
])
def test_a_removal_shown_ends_a_keepers_copy_of_the_manifest_it_predates(
        owner: str, since: int | None, me: str, ends: bool) -> None:
    removal = Tombstone(OWNER, 10, b"s" * 64)  # checked already (excuse)
    assert tombstones.ends_copy(removal, owner, since, me) is ends


def test_the_manifest_store_records_when_a_copy_was_last_given(tmp_path: Path) -> None:
    store = ManifestStore(tmp_path)
    store.put(FILE, b"manifest", epoch=3)
    store.put(FILE, b"another", epoch=7)  # given again: the first bytes stay, the epoch moves
    assert (store.get(FILE), store.held_since(FILE), store.cids()) == (b"manifest", 7, [FILE])
    store.remove(FILE)
    assert (store.get(FILE), store.held_since(FILE)) == (None, None)


def test_an_owner_forgets_its_own_removal_when_it_puts_the_file_again(tmp_path: Path) -> None:
    store = TombstoneStore(tmp_path)
    store.add(FILE, Tombstone(OWNER, 10, b"o" * 64))
    store.add(FILE, Tombstone(HOLDER, 11, b"h" * 64))
    store.forget(FILE, OWNER)
    assert list(TombstoneStore(tmp_path).get(FILE)) == [HOLDER]  # on disk
    store.forget(FILE, HOLDER)
    store.forget(FILE, HOLDER)  # nothing left: no error
    assert store.get(FILE) == {} and not (tmp_path / FILE).exists()


def test_a_holder_records_which_pieces_came_for_each_file(tmp_path: Path) -> None:
    pieces = FilePieces(tmp_path / "held-pieces")
    piece = "bafkrei" + "a" * 52
    assert pieces.files() == [] and pieces.pieces(FILE) == []
    pieces.add(FILE, piece)
    pieces.add(FILE, piece)  # once
    (tmp_path / "held-pieces" / FILE).open("a").write("not-a-cid\n")
    assert (pieces.files(), pieces.pieces(FILE)) == ([FILE], [piece])
    pieces.remove(FILE)
    assert pieces.files() == []
