"""Plugin statements (meshd/plugin_host/signing.py): what one node's plugin signs,
any node checks, and only as that plugin's statement on that network."""

from __future__ import annotations

import nacl.signing
import pytest

from meshcore.ledger.evidence_rules import sign_claim
from meshd import errors
from meshd.p2p.host import peer_id_of
from meshd.plugin_host.signing import PluginSigner

SEED_A, SEED_B = bytes(range(32)), bytes(range(1, 33))
A, B = peer_id_of(SEED_A), peer_id_of(SEED_B)


def test_a_statement_checks_as_its_signers_for_that_plugin_and_network_only() -> None:
    signer, checker = PluginSigner(SEED_A, "net-1"), PluginSigner(SEED_B, "net-1")
    signature = signer.sign("storage", b"drop file x")
    assert len(signature) == 64
    assert checker.verify("storage", A, b"drop file x", signature)
    assert signer.verify("storage", A, b"drop file x", signature)  # and on its own node
    assert not checker.verify("storage", A, b"drop file y", signature)  # other data
    assert not checker.verify("storage", B, b"drop file x", signature)  # another signer
    assert not checker.verify("compute", A, b"drop file x", signature)  # another plugin
    other_network = PluginSigner(SEED_B, "net-2")
    assert not other_network.verify("storage", A, b"drop file x", signature)


def test_a_statement_is_no_task_claim_and_a_claim_no_statement() -> None:
    """A plugin may sign what peers send it: that never signs a claim for its node."""
    checker = PluginSigner(SEED_B, "net-1")
    claim = b"\x0a\x04abcd"
    assert not checker.verify("storage", A, claim, sign_claim(SEED_A, claim))
    raw = nacl.signing.SigningKey(SEED_A).sign(claim).signature  # no tag at all
    assert not checker.verify("storage", A, claim, raw)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65, b"\xff" * 64])
def test_a_malformed_signature_does_not_check(signature: bytes) -> None:
    assert not PluginSigner(SEED_B, "net-1").verify("storage", A, b"x", signature)


@pytest.mark.parametrize("peer_id", ["", "not-a-peer", "Qm" + "1" * 44])
def test_a_bad_peer_id_is_named(peer_id: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        PluginSigner(SEED_B, "net-1").verify("storage", peer_id, b"x", b"\x00" * 64)


def test_data_that_is_not_bytes_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="bytes"):
        PluginSigner(SEED_A, "net-1").sign("storage", "text")  # type: ignore[arg-type]
