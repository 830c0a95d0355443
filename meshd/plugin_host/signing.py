"""Statements plugins sign and check: ``ctx.sign`` and ``ctx.verify``.

A plugin signs with its node's identity key (the Ed25519 key its peer ID
names), so any node can check what another node's plugin stated without
asking that node again: storage's owner-signed removals are the use (a
holder shows one to an auditor to prove it dropped a piece at its owner's
request, not lost it).

The signed message is ``"mesh/plugin-statement/v1" ‖ 0 ‖ network ID ‖ 0 ‖
plugin ‖ 0 ‖ data``: a statement of one plugin is never another plugin's nor
another network's, and no statement is a ledger entry or a task claim, whose
messages start with other tags (docs/ledger.md §2, §3.2). So a plugin can sign
whatever its peers ask it to without signing anything else for its node.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing

from meshcore.ledger import accounts
from meshd import errors

STATEMENT_TAG = "mesh/plugin-statement/v1"
SIGNATURE_BYTES = 64


class PluginSigner:
    """Signs and checks plugin statements with this node's identity ``seed``."""

    def __init__(self, seed: bytes, network_id: str) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self._network_id = network_id

    def sign(self, plugin: str, data: bytes) -> bytes:
        """This node's signature over ``data`` as a statement of ``plugin``."""
        return self._key.sign(self._message(plugin, data)).signature

    def verify(self, plugin: str, peer_id: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``peer_id``'s over ``data`` as a statement of
        ``plugin`` on this network.

        Raises:
            errors.InvalidArgument: ``peer_id`` is not the peer ID of an Ed25519 key.
        """
        try:
            key = accounts.key_of(peer_id)
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            nacl.signing.VerifyKey(key).verify(self._message(plugin, data), signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True

    def _message(self, plugin: str, data: bytes) -> bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise errors.InvalidArgument("a plugin signs and checks bytes")
        return b"\x00".join((STATEMENT_TAG.encode("ascii"), self._network_id.encode("ascii"),
                             plugin.encode("ascii"), bytes(data)))
