"""The storage plugin's events between two real daemons (the installed entry point)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import trio
from mesh_storage.chunks import storage_proof
from mesh_storage.plugin import MAX_CHUNK, StoragePlugin

from meshd import errors
from meshd.plugin.loader import installed
from tests.integration.test_plugins import Instances, open_node, wait_until, write_genesis


async def test_a_chunk_stored_on_one_node_is_retrieved_and_proven(tmp_path: Path) -> None:
    entry = next(p for p in installed() if p.name == "storage")
    assert entry.load() is StoragePlugin  # the packaged entry point is this plugin
    genesis = write_genesis(tmp_path, "storage")
    a_side, b_side = Instances(StoragePlugin), Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {"capacity_bytes": MAX_CHUNK + 10}}}
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis,
                             [dataclasses.replace(entry, load=lambda: a_side)],
                             **settings) as a, \
                open_node(tmp_path, "b", genesis,
                          [dataclasses.replace(entry, load=lambda: b_side)],
                          bootstrap=(a.listen_addrs[0],), **settings) as b:
            ctx = a_side.last.ctx
            await wait_until(lambda: b.peer_id in ctx.peers())
            chunk = os.urandom(MAX_CHUNK)
            name = await ctx.request(b.peer_id, "STORE_FILE", chunk)
            assert name == hashlib.sha256(chunk).hexdigest().encode()
            assert await ctx.request(b.peer_id, "RETRIEVE_FILE", name) == chunk
            nonce = os.urandom(16)
            proof = await ctx.request(b.peer_id, "VERIFY_STORAGE", bytes.fromhex(
                name.decode()) + nonce)
            assert proof == storage_proof(nonce, chunk)
            # The chunk is in b's private data directory, named by its hash.
            stored = tmp_path / "b" / "plugins" / "storage" / "chunks" / name[:2].decode()
            assert (stored / name.decode()).read_bytes() == chunk

            with pytest.raises(errors.PeerError, match="exceed this node's capacity"):
                await ctx.request(b.peer_id, "STORE_FILE", b"more" * 10)
            with pytest.raises(errors.PeerError, match="a chunk is 1 to"):
                await ctx.request(b.peer_id, "STORE_FILE", b"")
            with pytest.raises(errors.PeerError, match="holds no chunk"):
                await ctx.request(b.peer_id, "RETRIEVE_FILE", b"0" * 64)
            with pytest.raises(errors.PeerError, match="not a chunk hash"):
                await ctx.request(b.peer_id, "RETRIEVE_FILE", b"../../identity.key")
            with pytest.raises(errors.PeerError, match="holds no chunk"):
                await ctx.request(b.peer_id, "VERIFY_STORAGE", bytes(32) + nonce)
            with pytest.raises(errors.PeerError, match="byte nonce"):
                await ctx.request(b.peer_id, "VERIFY_STORAGE", bytes(32))
