"""The storage plugin's events between two real daemons (the installed entry point)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import grpc
import pytest
import trio
from mesh_storage.chunks import storage_proof
from mesh_storage.pieces import piece_cid
from mesh_storage.plugin import MAX_CHUNK, StoragePlugin, units_of

from mesh.ledger.v1 import ledger_pb2 as ledger_pb2
from mesh.ledger.v1 import ledger_pb2_grpc as ledger_pb2_grpc
from meshd import errors
from meshd.plugin import TaskReport
from meshd.plugin_host.loader import installed
from meshd.testing import eventually
from tests.integration.test_plugins import Instances, open_node, write_genesis


async def test_a_chunk_stored_on_one_node_is_retrieved_and_proven(tmp_path: Path) -> None:
    entry = next(p for p in installed() if p.name == "storage")
    assert entry.load() is StoragePlugin  # the packaged entry point is this plugin
    genesis = write_genesis(tmp_path, "storage")
    a_side, b_side = Instances(StoragePlugin), Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {"capacity_bytes": MAX_CHUNK + 2000}}}
    with trio.fail_after(60):
        async with open_node(tmp_path, "a", genesis,
                             [dataclasses.replace(entry, load=lambda: a_side)],
                             **settings) as a, \
                open_node(tmp_path, "b", genesis,
                          [dataclasses.replace(entry, load=lambda: b_side)],
                          bootstrap=(a.listen_addrs[0],), **settings) as b:
            ctx = a_side.last.ctx
            await eventually(lambda: b.peer_id in ctx.peers(), timeout=10, interval=0.02,
                             what="a's plugin to see b")
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
                await ctx.request(b.peer_id, "STORE_FILE", b"more" * 600)
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

            # A piece is held under its CID and fetched with a nonce: b reports
            # the delivery and a countersigns a receipt, once.
            a_plugin = a_side.last
            piece = os.urandom(1000)
            cid = piece_cid(piece)
            assert await ctx.request(b.peer_id, "HOLD_PIECE", cid.encode() + b"\n" + piece) == b""
            with pytest.raises(errors.PeerError, match="do not match its CID"):
                await ctx.request(b.peer_id, "HOLD_PIECE", cid.encode() + b"\n" + piece[1:])
            with pytest.raises(errors.PeerError, match="not a CID"):
                await ctx.request(b.peer_id, "FETCH_PIECE", b"../../identity.key")
            assert await ctx.request(b.peer_id, "HAVE", cid.encode() + b"\n"
                                     + piece_cid(b"other").encode()) == b"\x01\x00"
            failures: list[str] = []
            assert await a_plugin.files._fetch(b.peer_id, cid, failures) == piece, failures
            receipts = functools.partial(trio.to_thread.run_sync, task_receipts, a.api.socket)
            await eventually(receipts, what="a to countersign b's delivery")
            assert len(await receipts()) == 1
            assert not a_plugin.deliveries.fetches  # the fetch was consumed by its report
            # A delivery a did not fetch (or a second report of one) is refused.
            unasked = TaskReport(b.peer_id, "RETRIEVE_FILE", cid.encode() + b" " + os.urandom(16),
                                 units_of(len(piece)))
            assert await a_plugin.deliveries.check(unasked) is False
            with pytest.raises(errors.PeerError, match="optional 16-byte nonce"):
                await ctx.request(b.peer_id, "RETRIEVE_FILE", name + b"short")
            # The operator's events are refused to peers.
            with pytest.raises(errors.PeerError, match="is for this node's operator"):
                await ctx.request(b.peer_id, "GET_MANIFEST", b"bafy")


def task_receipts(socket: Path) -> list[str]:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        history = ledger_pb2_grpc.LedgerServiceStub(channel).ListHistory(
            ledger_pb2.ListHistoryRequest(limit=100), timeout=10)
    return [e.hash for e in history.entries if e.kind == "task_receipt"]

