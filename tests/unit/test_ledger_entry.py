"""Ledger entries: canonical encoding, hash, signature and self-contained rules.

docs/ledger.md §1 and §3.2 (rules 1-3). Vectors are computed here from the
documented rules (protobuf wire format, domain-separated SHA-256 and Ed25519),
not by the code under test.
"""

from __future__ import annotations

import hashlib

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import entry
from meshcore.ledger.entry import EntryError

NET = "net_pbveuy5e75bdsw3e25x4g2rviy"
SEED = bytes(range(1, 33))
AUTHOR = bytes(nacl.signing.SigningKey(SEED).verify_key)
BOB = bytes(32 * [7])


def signed_raw(body: bytes, seed: bytes = SEED) -> bytes:
    """Sign arbitrary body bytes (canonical or not) as an author would."""
    signature = nacl.signing.SigningKey(seed).sign(b"mesh/entry-sig/v1\x00" + body).signature
    return ledger_pb2.Entry(body=body, signature=signature).SerializeToString()


def transfer_body(**fields: object) -> ledger_pb2.EntryBody:
    values: dict[str, object] = {"network_id": NET, "author": AUTHOR, "seq": 1,
                                 "transfer": ledger_pb2.Transfer(to=BOB, amount=5)}
    values.update(fields)
    return ledger_pb2.EntryBody(**values)  # type: ignore[arg-type]


def hand_encoded_transfer(network_id: str = NET) -> bytes:
    """network_id=1, author=2, seq=3 (1), transfer=16 {to=1, amount=2 (5)}: by the wire rules."""
    transfer = b"\x0a\x20" + BOB + b"\x10\x05"
    return (b"\x0a" + bytes([len(network_id)]) + network_id.encode()
            + b"\x12\x20" + AUTHOR + b"\x18\x01"
            + b"\x82\x01" + bytes([len(transfer)]) + transfer)  # tag (16 << 3 | 2) = 0x82 0x01


def test_the_canonical_encoding_hash_and_signature_follow_the_documented_rules() -> None:
    raw = entry.sign(SEED, transfer_body())
    wire = ledger_pb2.Entry.FromString(raw)
    assert wire.body == hand_encoded_transfer()
    verified = entry.verify(raw, NET)
    assert verified.hash == hashlib.sha256(b"mesh/entry/v1\x00" + wire.body).digest()
    nacl.signing.VerifyKey(AUTHOR).verify(b"mesh/entry-sig/v1\x00" + wire.body, wire.signature)
    assert (verified.author, verified.seq, verified.kind) == (AUTHOR, 1, "transfer")
    assert verified.raw == raw


def test_a_forged_signature_is_refused() -> None:
    wire = ledger_pb2.Entry.FromString(entry.sign(SEED, transfer_body()))
    other = nacl.signing.SigningKey(bytes(32)).sign(b"mesh/entry-sig/v1\x00" + wire.body)
    forged = ledger_pb2.Entry(body=wire.body, signature=other.signature).SerializeToString()
    with pytest.raises(EntryError, match="signature does not verify"):
        entry.verify(forged, NET)
    # The same key over the body without the domain tag is not a signature either.
    bare = nacl.signing.SigningKey(SEED).sign(wire.body).signature
    with pytest.raises(EntryError, match="signature does not verify"):
        entry.verify(ledger_pb2.Entry(body=wire.body, signature=bare).SerializeToString(), NET)


def test_a_changed_amount_breaks_the_signature() -> None:
    raw = entry.sign(SEED, transfer_body())
    tampered = raw.replace(b"\x10\x05", b"\x10\x06")
    assert tampered != raw
    with pytest.raises(EntryError, match="signature does not verify"):
        entry.verify(tampered, NET)


def test_an_entry_of_another_network_is_refused() -> None:
    raw = entry.sign(SEED, transfer_body(network_id="net_other"))
    with pytest.raises(EntryError, match="network"):
        entry.verify(raw, NET)


@pytest.mark.parametrize("name, body", [
    ("duplicated field", hand_encoded_transfer() + b"\x18\x01"),
    ("explicit default value", hand_encoded_transfer() .replace(b"\x18\x01", b"\x18\x01\x30\x00")),
    ("unknown field", hand_encoded_transfer() + b"\x78\x01"),  # field 15, varint
    ("non-minimal varint", hand_encoded_transfer().replace(b"\x18\x01", b"\x18\x81\x00")),
    ("fields out of order", hand_encoded_transfer().replace(
        b"\x12\x20" + AUTHOR + b"\x18\x01", b"\x18\x01\x12\x20" + AUTHOR)),
])
def test_a_non_canonical_body_is_refused_even_when_signed(name: str, body: bytes) -> None:
    ledger_pb2.EntryBody.FromString(body)  # it parses: only its encoding is wrong
    with pytest.raises(EntryError, match="not canonically encoded"):
        entry.verify(signed_raw(body), NET)


@pytest.mark.parametrize("fields, reason", [
    ({"seq": 0}, "seq must be at least 1"),
    ({"prev": bytes(32)}, "prev must be empty exactly when seq is 1"),
    ({"seq": 2}, "prev must be empty exactly when seq is 1"),
    ({"seq": 2, "prev": bytes(31)}, "prev is not a 32-byte hash"),
    ({"deps": [bytes(31)]}, "not a 32-byte hash"),
    ({"deps": [bytes(32 * [2]), bytes(32 * [1])]}, "strictly ascending"),
    ({"deps": [bytes(32 * [1]), bytes(32 * [1])]}, "strictly ascending"),
    ({"seq": 2, "prev": bytes(32 * [3]), "deps": [bytes(32 * [3])]}, "cannot be a dep"),
    ({"deps": [i.to_bytes(32, "big") for i in range(1025)]}, "more than 1024 deps"),
    ({"author": AUTHOR[:31]}, "32-byte public key"),
    ({"transfer": None}, "no kind"),
])
def test_structural_rules(fields: dict[str, object], reason: str) -> None:
    body = transfer_body(**{k: v for k, v in fields.items() if v is not None})
    if fields.get("transfer", 0) is None:
        body.ClearField("transfer")
    raw = signed_raw(body.SerializeToString(deterministic=True))
    with pytest.raises(EntryError, match=reason):
        entry.verify(raw, NET)


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xff\xff", "not an Entry"),
    (ledger_pb2.Entry(body=b"\xff\xff", signature=bytes(64)).SerializeToString(),
     "not an EntryBody"),
    (b"\x0a" + b"\x80\x80\x04" + bytes(65536), "exceeds 65536"),
])
def test_garbage_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EntryError, match=reason):
        entry.verify(raw, NET)


amounts = st.integers(min_value=1, max_value=2**64 - 1)
hashes = st.binary(min_size=32, max_size=32)
kinds = st.one_of(
    st.builds(lambda to, a, memo: {"transfer": ledger_pb2.Transfer(to=to, amount=a, memo=memo)},
              hashes, amounts, st.text(max_size=20)),
    st.builds(lambda a: {"stake": ledger_pb2.Stake(amount=a)}, amounts),
    st.builds(lambda a: {"unstake": ledger_pb2.Unstake(amount=a)}, amounts),
    st.builds(lambda a: {"withdraw": ledger_pb2.Withdraw(amount=a)}, amounts),
    st.builds(lambda e: {"close": ledger_pb2.EpochClose(epoch=e)}, st.integers(0, 2**32)),
    st.just({"anchor": ledger_pb2.Anchor()}),
)


@given(seq=st.integers(1, 2**63), epoch=st.integers(0, 2**63),
       deps=st.sets(hashes, max_size=5), kind=kinds, prev=hashes)
def test_every_signed_entry_verifies_and_keeps_its_fields(seq: int, epoch: int,
                                                          deps: set[bytes],
                                                          kind: dict[str, object],
                                                          prev: bytes) -> None:
    ordered = sorted(deps - {prev})
    body = ledger_pb2.EntryBody(network_id=NET, author=AUTHOR, seq=seq,
                                prev=prev if seq > 1 else b"", deps=ordered, epoch=epoch,
                                **kind)  # type: ignore[arg-type]
    verified = entry.verify(entry.sign(SEED, body), NET)
    assert verified.body == body
    assert verified.kind == next(iter(kind))
