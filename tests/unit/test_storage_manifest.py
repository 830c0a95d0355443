"""The storage template's manifest, piece CIDs and placement (pure parts, no meshd)."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mesh_storage import erasure, sealing
from mesh_storage.manifest import (
    MAX_MANIFEST,
    PIECE,
    Manifest,
    ManifestError,
    Stripe,
    parse_manifest,
)
from mesh_storage.pieces import CidError, check_piece, cid_of_digest, digest_hex, piece_cid
from mesh_storage.placement import Candidate, NotEnoughHolders, place, subnet
from mesh_storage.reputation import SHUN_FOR, Reputation

FILE = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
PIECES = tuple(piece_cid(bytes([i])) for i in range(8))
ROOTS = ("ab" * 32,) * 8


def manifest(**change: object) -> Manifest:
    fields: dict[str, object] = dict(
        name="f.bin", size=4 * PIECE + 10, cid=FILE, sha256="cd" * 32, k=4, n=8,
        owner="12D3KooWowner", stripes=(Stripe(4 * PIECE, PIECES, ROOTS),
                                        Stripe(10, PIECES, ROOTS)))
    return Manifest(**(fields | change))  # type: ignore[arg-type]


def test_a_manifest_reads_back_as_written() -> None:
    assert parse_manifest(manifest().encode()) == manifest()
    assert manifest().coding == erasure.Coding(4, 8) and manifest().stripe_size == 4 * PIECE


@pytest.mark.parametrize("change", [
    {"format": "mesh-storage-manifest/1"}, {"k": 9}, {"k": 0}, {"n": True}, {"size": 7},
    {"cid": "Qm" + "a" * 44}, {"cid": "../../x"}, {"sha256": "x"}, {"segment": 0},
    {"owner": 5}, {"encrypted": "no"}, {"stripes": "x"}, {"stripes": [{"length": 1}]},
    {"stripes": [{"length": 4 * PIECE + 10, "pieces": list(PIECES), "roots": list(ROOTS)}]},
    {"stripes": [{"length": 10, "pieces": list(PIECES), "roots": list(ROOTS)},
                 {"length": 4 * PIECE, "pieces": list(PIECES), "roots": list(ROOTS)}]},
    {"stripes": [{"length": 4 * PIECE + 10, "pieces": ["bafynot"] * 8,
                  "roots": list(ROOTS)}]},
])
def test_a_malformed_manifest_is_refused_naming_what_is_wrong(change: dict[str, object]
                                                                ) -> None:
    fields = json.loads(manifest().encode()) | change
    with pytest.raises(ManifestError, match="manifest"):
        parse_manifest(json.dumps(fields).encode())


@pytest.mark.parametrize("data", [b"\xff\xfe", b"plain bytes", b"[1, 2]",
                                  b"x" * (MAX_MANIFEST + 1)])
def test_bytes_that_are_not_a_manifest_are_refused(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


def test_a_manifest_must_fit_in_one_request() -> None:
    stripes = (Stripe(4 * PIECE, PIECES, ROOTS),) * 3000
    with pytest.raises(ManifestError, match="larger k"):
        manifest(size=3000 * 4 * PIECE, stripes=stripes).encode()


@given(st.binary(max_size=2000))
def test_a_piece_cid_names_the_sha256_chunks_are_filed_under(data: bytes) -> None:
    cid = piece_cid(data)
    assert cid.startswith("bafkrei") and digest_hex(cid) == hashlib.sha256(data).hexdigest()
    assert cid_of_digest(digest_hex(cid)) == cid
    check_piece(cid, data)
    with pytest.raises(CidError, match="do not match its CID"):
        check_piece(cid, data + b"!")


@given(st.text(max_size=120))
def test_text_that_is_not_a_piece_cid_is_refused(text: str) -> None:
    try:
        digest = digest_hex(text)
    except CidError:
        return
    assert cid_of_digest(digest) == text


@pytest.mark.parametrize("text", [FILE, "Qm" + "a" * 44, "", "bafk", "b" * 200])
def test_other_cids_and_junk_are_not_piece_cids(text: str) -> None:
    with pytest.raises(CidError):
        digest_hex(text)


def candidates(*subnets: str) -> list[Candidate]:
    return [Candidate(f"peer{i}", (f"/ip4/{net}.{i + 1}/tcp/4001",))
            for i, net in enumerate(subnets)]


def test_holders_are_spread_over_subnets_before_any_shares_one() -> None:
    pool = candidates("10.0.1", "10.0.1", "10.0.1", "10.0.2", "10.0.3", "10.0.2")
    for seed in range(20):
        plan = place(pool, 3, uploader="me", rng=random.Random(seed))
        assert plan.subnets == 3 and len(set(plan.holders)) == 3
    plan = place(pool, 5, uploader="me", rng=random.Random(1))
    assert plan.subnets == 3 and len(set(plan.holders)) == 5  # then shared, never repeated


def test_the_uploader_and_failed_holders_are_never_chosen_and_preferred_keep_their_slot(
        ) -> None:
    pool = [*candidates("10.0.1", "10.0.2", "10.0.3", "10.0.4"), Candidate("me", ())]
    plan = place(pool, 3, uploader="me", preferred=["", "peer2", "peer0"], avoid={"peer0"})
    assert plan.holders[1] == "peer2" and "me" not in plan.holders
    assert "peer0" not in plan.holders
    with pytest.raises(NotEnoughHolders, match="3 holders are needed and 2 other"):
        place(pool, 3, uploader="me", avoid={"peer0", "peer1"})


def test_shunned_holders_are_chosen_only_when_no_other_node_can_take_a_piece() -> None:
    pool = candidates("10.0.1", "10.0.2", "10.0.3", "10.0.4")
    for seed in range(20):
        plan = place(pool, 3, uploader="me", shunned={"peer1"}, preferred=["peer1"],
                     rng=random.Random(seed))
        assert "peer1" not in plan.holders  # not even where it was preferred
    # Four pieces, four nodes: the shunned one too, and it shares no subnet.
    plan = place(pool, 4, uploader="me", shunned={"peer1"}, rng=random.Random(3))
    assert set(plan.holders) == {"peer0", "peer1", "peer2", "peer3"} and plan.subnets == 4


def test_a_holder_is_shunned_for_a_while_after_a_proven_failure_and_remembered(
        tmp_path: Path) -> None:
    path = tmp_path / "reputation.json"
    seen = Reputation(path)
    seen.record("peerA", passed=True, now=1000.0)
    seen.record("peerB", passed=True, now=1000.0)
    seen.record("peerB", passed=False, now=2000.0)
    assert not seen.shunned("peerA", now=2000.0)
    assert seen.shunned("peerB", now=2000.0 + SHUN_FOR - 1)
    assert not seen.shunned("peerB", now=2000.0 + SHUN_FOR + 1)
    again = Reputation(path)  # written after the failure
    assert again.of("peerB") | {"shunned": None} == {"passed": 1, "failed": 1,
                                                     "last_failed_at": 2000.0, "shunned": None}
    assert again.of("never") == {"passed": 0, "failed": 0, "last_failed_at": None,
                                 "shunned": False}
    path.write_text("{not json")
    assert Reputation(path).holders == {}  # a damaged file is a fresh start, not a crash


def test_a_node_s_subnet_comes_from_its_first_routable_ip() -> None:
    assert subnet(["/dns4/x/tcp/1", "/ip4/0.0.0.0/tcp/1", "/ip4/192.0.2.77/tcp/1"], "p") == \
        "192.0.2.0/24"
    assert subnet(["/ip6/2001:db8:1:2::5/tcp/1"], "p") == "2001:db8:1::/48"
    assert subnet(["/ip4/not-an-ip/tcp/1"], "p") == "p"  # unknown: its own


def test_meshctl_without_the_storage_package_says_what_to_install() -> None:
    # meshctl installed alone: every other noun works, storage says why it cannot.
    hide = ("import sys; sys.modules['mesh_storage'] = None; "
            "sys.modules['mesh_storage.manifest'] = None; from meshctl.main import main; "
            "sys.argv = ['meshctl'] + sys.argv[1:]; main()")
    storage = subprocess.run([sys.executable, "-c", hide, "storage", "get", FILE, "-o", "x"],
                             capture_output=True, text=True, timeout=60)
    assert storage.returncode == 1
    assert "needs the storage plugin's package" in storage.stderr
    version = subprocess.run([sys.executable, "-c", hide, "version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "meshctl" in version.stdout


@given(st.binary(max_size=3000), st.integers(0, 1 << 40))
def test_a_sealed_stripe_opens_with_its_key_and_index_only(plain: bytes, index: int) -> None:
    key = sealing.new_key()
    sealed = sealing.seal(key, index, plain)
    assert len(sealed) == len(plain) + sealing.TAG_BYTES
    assert sealing.open_sealed(key, index, sealed) == plain
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.open_sealed(sealing.new_key(), index, sealed)
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.open_sealed(key, index + 1, sealed)  # stripes cannot be swapped
    with pytest.raises(sealing.SealError, match="does not open"):
        sealing.open_sealed(key, index, bytes([sealed[0] ^ 1]) + sealed[1:])


def test_a_capability_carries_the_cid_and_the_key() -> None:
    key = sealing.new_key()
    assert sealing.parse_capability(sealing.capability(FILE, key)) == (FILE, key)
    assert sealing.parse_capability(f" {FILE} ") == (FILE, None)
    for bad in (f"{FILE}#", f"{FILE}#short", f"{FILE}#{'A' * 50}", f"{FILE}#!!!"):
        with pytest.raises(sealing.SealError, match="32-byte key"):
            sealing.parse_capability(bad)
