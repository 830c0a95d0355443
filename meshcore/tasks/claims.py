"""Task identities and claims: what requester and provider sign (pure, no I/O).

docs/tasks.md §3. The provider signs a TaskClaim naming the task execution,
both parties, the epoch, the units and the digest of its result; the
requester checks every field against what it asked and what it received
before it countersigns by writing the receipt into the ledger.
"""

from __future__ import annotations

import hashlib

import nacl.exceptions
import nacl.signing

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger.evidence_rules import CLAIM_TAG, claim_hash, encode_claim, parse_claim

MAX_UNITS = 1 << 40


def base_id(requester: bytes, plugin: str, kind: str, payload: bytes, nonce: bytes) -> bytes:
    """The task's name, the same for each of its redundant executions."""
    return hashlib.sha256(b"mesh/task/v1\x00" + requester + plugin.encode() + b"\x00"
                          + kind.encode() + b"\x00" + hashlib.sha256(payload).digest()
                          + nonce).digest()


def execution_id(base: bytes, provider: bytes) -> bytes:
    """The claim's task_id: one per (task, provider), so each execution earns its receipt."""
    return hashlib.sha256(b"mesh/task-exec/v1\x00" + base + provider).digest()


def report_id(requester: bytes, provider: bytes, plugin: str, kind: str,
              detail: bytes) -> bytes:
    """A reported task's task_id: the same report earns one receipt at most."""
    return hashlib.sha256(b"mesh/task-report/v1\x00" + requester + provider + plugin.encode()
                          + b"\x00" + kind.encode() + b"\x00"
                          + hashlib.sha256(detail).digest()).digest()


def result_digest(result: bytes) -> bytes:
    return hashlib.sha256(result).digest()


def rejected_digest(claim: bytes) -> bytes:
    """The expected_digest of a verdict from a verification rule (no correct result known)."""
    return hashlib.sha256(b"mesh/task-rejected/v1\x00" + claim_hash(claim)).digest()


def unshown_digest(claim: bytes) -> bytes:
    """The expected_digest of a verdict on an execution its provider did not show the
    validators auditing its receipt, while it answered them (docs/tasks.md §5d)."""
    return hashlib.sha256(b"mesh/task-unshown/v1\x00" + claim_hash(claim)).digest()


def make_claim(*, network_id: str, task_id: bytes, plugin: str, requester: bytes,
               provider: bytes, epoch: int, units: int, result: bytes, price: int = 0,
               escrow: bytes = b"") -> bytes:
    """The claim a provider signs; ``price`` and ``escrow`` for a paid task (both or
    neither, docs/ledger.md §12)."""
    return encode_claim(ledger_pb2.TaskClaim(
        network_id=network_id, task_id=task_id, plugin=plugin, requester=requester,
        provider=provider, epoch=epoch, units=units, result_digest=result_digest(result),
        price=price, escrow=escrow))


def signature_valid(provider: bytes, claim: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(provider).verify(
            CLAIM_TAG.encode("ascii") + b"\x00" + claim, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def claim_problem(claim: bytes, signature: bytes, *, network_id: str, task_id: bytes,
                  plugin: str, requester: bytes, provider: bytes, epoch: int, units: int,
                  result: bytes, escrow: bytes = b"", max_price: int = 0) -> str | None:
    """What is wrong with a provider's claim, or None when it says exactly what happened
    (for a paid task: the requester's ``escrow``, and a price from 1 to ``max_price``)."""
    parsed = parse_claim(claim)
    if parsed is None:
        return "the claim is not a canonical TaskClaim"
    expected = {"network_id": network_id, "task_id": task_id, "plugin": plugin,
                "requester": requester, "provider": provider, "epoch": epoch,
                "units": units, "result_digest": result_digest(result)}
    for name, value in expected.items():
        if getattr(parsed, name) != value:
            return f"the claim's {name} does not match the task"
    # A provider may work a paid task for free (no price, no escrow), never the reverse.
    if parsed.escrow and parsed.escrow != escrow:
        return "the claim's escrow is not the task's lock" if escrow else \
            "the claim asks for payment for a task that is not paid"
    if parsed.escrow and not 1 <= parsed.price <= max_price:
        return f"the claim's price {parsed.price} is not 1 to the {max_price} offered"
    if not 1 <= units <= MAX_UNITS:
        return f"units must be 1 to {MAX_UNITS}, not {units}"
    if not signature_valid(provider, claim, signature):
        return "the provider's signature over the claim does not verify"
    return None
