"""Validity of evidence entries that needs no stored past (docs/ledger.md §3.2).

Attestations, task receipts, failure verdicts and penalties carry their
evidence inside the entry: field shapes, the provider's signature over the task
claim, and for a penalty the two conflicting signed bodies. Everything here is
a function of the entry alone; rules.judge adds what needs the causal past.
"""

from __future__ import annotations

import itertools

import nacl.exceptions
import nacl.signing
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger.constants import MAX_OBSERVATIONS, MAX_PROBES, MIN_PROBES
from meshcore.ledger.encoding import tagged_hash
from meshcore.ledger.entry import (
    ENTRY_MAX_BYTES,
    HASH_BYTES,
    KEY_BYTES,
    SIGNATURE_BYTES,
    SIGNATURE_DOMAIN,
    Verified,
    entry_hash,
)

CLAIM_TAG = "mesh/task-claim/v1"
EVIDENCE_KINDS = frozenset({"attestation", "task_receipt", "task_verdict", "penalty"})


def claim_hash(claim: bytes) -> bytes:
    """``H("mesh/task-claim/v1", claim)``: names a task claim in offence keys and records."""
    return tagged_hash(CLAIM_TAG, claim)


def encode_claim(claim: ledger_pb2.TaskClaim) -> bytes:
    """The canonical bytes of a claim: what both parties sign."""
    return claim.SerializeToString(deterministic=True)


def sign_claim(seed: bytes, claim: bytes) -> bytes:
    """The provider's signature over ``"mesh/task-claim/v1" ‖ 0x00 ‖ claim``."""
    message = CLAIM_TAG.encode("ascii") + b"\x00" + claim
    return nacl.signing.SigningKey(seed).sign(message).signature


def parse_claim(claim: bytes) -> ledger_pb2.TaskClaim | None:
    """The claim, or None when ``claim`` is not a canonically encoded TaskClaim."""
    parsed = ledger_pb2.TaskClaim()
    try:
        parsed.ParseFromString(claim)
    except DecodeError:
        return None
    parsed.DiscardUnknownFields()
    return parsed if parsed.SerializeToString(deterministic=True) == claim else None


def equivocation_of(penalty: ledger_pb2.Penalty) -> tuple[bytes, int]:
    """(author, seq) that both conflicting bodies of a valid penalty entry name."""
    wire = ledger_pb2.Entry.FromString(penalty.equivocation.entry_a)
    body = ledger_pb2.EntryBody.FromString(wire.body)
    return body.author, body.seq


def evidence_problem(item: Verified, network_id: str, plugins: frozenset[str]) -> str | None:
    """What is wrong with an evidence entry's own content, or None.

    Args:
        item: an entry of kind attestation, task_receipt, task_verdict or penalty.
        network_id: this network's ID.
        plugins: the plugin names the genesis requires (tasks of other plugins
            are not evidence).

    Raises:
        ValueError: ``item`` is of another kind.
    """
    kind = item.kind
    if kind == "attestation":
        return _attestation_problem(item)
    if kind == "task_receipt":
        receipt = item.body.task_receipt
        return _claim_problem(item, receipt.claim, receipt.provider_signature, network_id,
                              plugins, receipt=True)
    if kind == "task_verdict":
        verdict = item.body.task_verdict
        problem = _claim_problem(item, verdict.claim, verdict.provider_signature, network_id,
                                 plugins, receipt=False)
        if problem is not None:
            return problem
        if len(verdict.expected_digest) != HASH_BYTES:
            return "verdict expected_digest is not 32 bytes"
        claim = parse_claim(verdict.claim)
        assert claim is not None
        if verdict.expected_digest == claim.result_digest:
            return "verdict expected_digest equals the claimed result: not a failure"
        return None
    if kind == "penalty":
        return _penalty_problem(item, network_id)
    raise ValueError(f"{kind!r} is not an evidence kind ({', '.join(sorted(EVIDENCE_KINDS))})")


def _attestation_problem(item: Verified) -> str | None:
    observations = item.body.attestation.observations
    if not 1 <= len(observations) <= MAX_OBSERVATIONS:
        return f"an attestation has 1 to {MAX_OBSERVATIONS} observations, not {len(observations)}"
    for observation in observations:
        if len(observation.subject) != KEY_BYTES:
            return "observation subject is not a 32-byte key"
        if observation.subject == item.author:
            return "an attester observes itself"
        if not MIN_PROBES <= observation.probes <= MAX_PROBES:
            return f"probes must be {MIN_PROBES} to {MAX_PROBES}, got {observation.probes}"
        if observation.answered > observation.probes:
            return f"answered {observation.answered} exceeds probes {observation.probes}"
    if any(a.subject >= b.subject for a, b in itertools.pairwise(observations)):
        return "observation subjects must be strictly ascending"
    return None


def _claim_problem(item: Verified, raw_claim: bytes, signature: bytes, network_id: str,
                   plugins: frozenset[str], *, receipt: bool) -> str | None:
    claim = parse_claim(raw_claim)
    if claim is None:
        return "claim is not a canonically encoded TaskClaim"
    if claim.network_id != network_id:
        return f"claim of network {claim.network_id!r}, not {network_id}"
    if len(claim.requester) != KEY_BYTES or len(claim.provider) != KEY_BYTES:
        return "claim requester and provider must be 32-byte keys"
    if len(claim.task_id) != HASH_BYTES:
        return "claim task_id is not 32 bytes"
    if claim.plugin not in plugins:
        return f"claim plugin {claim.plugin!r} is not required by the genesis"
    if claim.units < 1:
        return "claim units must be at least 1"
    if len(claim.result_digest) != HASH_BYTES:
        return "claim result_digest is not 32 bytes"
    if claim.escrow and len(claim.escrow) != HASH_BYTES:
        return "claim escrow is not a 32-byte task ID"
    if bool(claim.escrow) != bool(claim.price):
        return "a claim names a price and an escrow, or neither"
    if receipt:
        if claim.requester != item.author:
            return "a receipt's claim must name its author as requester"
        if claim.epoch != item.body.epoch:
            return f"claim epoch {claim.epoch} differs from the entry's epoch {item.body.epoch}"
    if claim.provider == item.author:
        return ("a receipt's provider must be another account" if receipt
                else "a provider cannot judge its own task")
    if not _signed(claim.provider, CLAIM_TAG.encode("ascii") + b"\x00" + raw_claim, signature):
        return "provider signature does not verify over the claim"
    return None


def _penalty_problem(item: Verified, network_id: str) -> str | None:
    penalty = item.body.penalty
    if penalty.WhichOneof("evidence") != "equivocation":
        return "a penalty must carry equivocation evidence"
    bodies: list[tuple[bytes, ledger_pb2.EntryBody]] = []
    for name in ("entry_a", "entry_b"):
        raw = getattr(penalty.equivocation, name)
        signed = _signed_body(raw, network_id)
        if isinstance(signed, str):
            return f"penalty {name}: {signed}"
        bodies.append(signed)
    (hash_a, a), (hash_b, b) = bodies
    if a.author != b.author or a.seq != b.seq:
        return "penalty entries must have the same author and seq"
    if not hash_a < hash_b:
        return "penalty entries must be two different bodies, entry_a's hash first"
    return None


def _signed_body(raw: bytes, network_id: str) -> tuple[bytes, ledger_pb2.EntryBody] | str:
    """(hash, body) of a canonical, validly signed Entry, or what is wrong with it.

    Only what proves authorship is checked: the offence is signing two bodies
    for one seq, whatever else those bodies say.
    """
    if len(raw) > ENTRY_MAX_BYTES:
        return f"entry over {ENTRY_MAX_BYTES} bytes"
    wire = ledger_pb2.Entry()
    body = ledger_pb2.EntryBody()
    try:
        wire.ParseFromString(raw)
        body.ParseFromString(wire.body)
    except DecodeError:
        return "not an Entry"
    wire.DiscardUnknownFields()
    body.DiscardUnknownFields()
    if (wire.SerializeToString(deterministic=True) != raw
            or body.SerializeToString(deterministic=True) != wire.body):
        return "not canonically encoded"
    if body.network_id != network_id:
        return f"entry of network {body.network_id!r}, not {network_id}"
    if len(body.author) != KEY_BYTES:
        return "author is not a 32-byte key"
    if not _signed(body.author, SIGNATURE_DOMAIN + wire.body, wire.signature):
        return "signature does not verify against the author's key"
    return entry_hash(wire.body), body


def _signed(key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
