"""A get between real daemons rides out holders that fail a pass, and gives up
at once when fewer than k pieces have a live holder."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from mesh_storage import files, holding
from mesh_storage.files import FETCH_PATIENCE
from mesh_storage.pieces import digest_hex, piece_cid
from mesh_storage.plugin import StoragePlugin
from mesh_storage.tombstones import signed_drop, statement

from meshcore.genesis import RequiredPlugin, dumps, loads
from meshd.plugin import Event, EventHandler, MeshError, Unavailable
from meshd.plugin_host.runtime import plugin_settings
from meshd.testing import Network, eventually, open_network, plugin_under_test, write_genesis
from tests.integration.test_plugins import Instances
from tests.integration.test_storage_audits import K, N, store


@contextlib.asynccontextmanager
async def storage_network(tmp_path: Path) -> AsyncIterator[tuple[Network,
                                                                 dict[str, StoragePlugin]]]:
    """Four in-process storage nodes, each plugin by peer ID, once node0 finds the
    three others as holders."""
    factory = Instances(StoragePlugin)
    async with open_network(tmp_path, 4, plugins=[plugin_under_test("storage", factory)]
                            ) as net:
        plugin = {p.ctx.peer_id: p for p in factory.made}
        first = plugin[net.nodes[0].peer_id]

        async def all_announced() -> bool:
            return len(await first.files.candidates(fresh=True)) == 3
        await eventually(all_announced, timeout=60, what="every holder announced")
        yield net, plugin


async def test_a_get_asks_again_a_holder_that_failed_and_stops_when_too_few_are_left(
        tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            reader = plugin[owner.peer_id]  # the uploader holds no piece: all come from afar
            data = os.urandom(K * 256 * 1024)
            manifest = await store(owner, data)
            stripe = manifest.stripes[0]
            request = json.dumps({"file": manifest.cid, "k": K, "n": N, "length": stripe.length,
                                  "pieces": list(stripe.pieces)}).encode() + b"\n"
            holders = [plugin[h] for h in sorted({h for found in await reader.files.who_has(
                list(stripe.pieces)) for h in found})]
            assert len(holders) == N

            # Every holder fails its first two fetches (a connection being replaced,
            # say): a later pass reads the stripe all the same.
            asked: Counter[str] = Counter()
            for holder in holders:
                holder.ctx.on("FETCH_PIECE", failing_twice(holder, asked))
            assert await owner.call("storage", "GET_STRIPE", request, timeout=60) == data
            assert max(asked.values()) >= 3

            # Two of three holders gone (they hold nothing now): one pass, one
            # sweep, and the get says why at once rather than after FETCH_PATIENCE.
            for holder in holders[:2]:
                async def gone(event: Event) -> bytes:
                    raise Unavailable("gone")

                async def nothing(event: Event) -> bytes:
                    return bytes(len(event.data.split(b"\n")))
                holder.ctx.on("FETCH_PIECE", gone)
                holder.ctx.on("HAVE", nothing)
            reader.files.hints.clear()
            started = trio.current_time()
            try:
                await owner.call("storage", "GET_STRIPE", request, timeout=60)
            except grpc.RpcError as exc:
                message = str(exc.details())
            else:
                raise AssertionError("a stripe with one live piece of two needed was read")
            assert "only 1 have a live holder" in message, message
            assert trio.current_time() - started < FETCH_PATIENCE / 2


async def test_holders_announce_the_file_not_each_piece_and_a_reader_finds_them_by_it(
        tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            reader = plugin[owner.peer_id]  # holds no piece: every one comes from afar
            data = os.urandom(2 * K * 256 * 1024)
            manifest = await store(owner, data)
            pieces = [c for s in manifest.stripes for c in s.pieces]
            holders = {h for found in await reader.files.who_has(pieces) for h in found}
            assert len(holders) == N
            for holder in holders:
                assert plugin[holder].holding.held.cids() == [manifest.cid]

            async def announced() -> bool:
                found = await reader.ctx.dht.find_providers(holding.held_key(manifest.cid), 20)
                return {p.peer_id for p in found} == holders
            await eventually(announced, timeout=60, what="the holders to announce the file")
            assert await reader.files.file_holders(manifest.cid)
            for cid in pieces:
                assert not await reader.ctx.dht.find_providers(holding.piece_key(cid), 20)

            # With no hint of where pieces are, the file's record leads to them.
            reader.files.hints.clear()
            reader.files._file_holders.clear()
            stripe = manifest.stripes[1]
            request = json.dumps({"file": manifest.cid, "k": K, "n": N, "length": stripe.length,
                                  "pieces": list(stripe.pieces)}).encode() + b"\n"
            asked_all: list[str] = []  # per-piece lookups and sweeps of every node
            looks_up, sweeps = reader.files._providers, reader.files.who_has

            async def looking_up(cid: str, errors: list[str]) -> list[str]:
                asked_all.append(cid)
                return await looks_up(cid, errors)

            async def sweeping(cids: list[str], among: Any = None) -> list[list[str]]:
                if among is None:
                    asked_all.append("every node")
                return await sweeps(cids, among)
            reader.files._providers = looking_up  # type: ignore[method-assign]
            reader.files.who_has = sweeping  # type: ignore[method-assign]
            assert await owner.call("storage", "GET_STRIPE", request,
                                    timeout=60) == data[K * 256 * 1024:]
            assert asked_all == []

            # An uploader that names no file (an older meshctl): each piece is announced.
            older = await store(owner, os.urandom(K * 256 * 1024), name_file=False)

            async def piece_announced() -> bool:
                return bool(await reader.ctx.dht.find_providers(
                    holding.piece_key(older.stripes[0].pieces[0]), 20))
            await eventually(piece_announced, timeout=60, what="the piece to be announced")
            assert all(plugin[h].holding.held.cids() == [manifest.cid] for h in holders)

            # A malformed file CID in HOLD_PIECE is refused, naming the shape.
            holder = next(iter(holders))
            piece = os.urandom(1000)
            with pytest.raises(MeshError, match="the file's CID"):
                await reader.ctx.request(holder, "HOLD_PIECE", f"{piece_cid(piece)} "
                                         f"{owner.peer_id} not-a-cid\n".encode() + piece,
                                         timeout=30)


async def test_a_holder_down_during_rm_drops_the_files_pieces_once_it_is_back(
        tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            mine = plugin[owner.peer_id]
            data = os.urandom(2 * K * 256 * 1024)
            manifest = await store(owner, data)
            pieces = [c for s in manifest.stripes for c in s.pieces]
            down = plugin[next(h for found in await mine.files.who_has(pieces) for h in found)]

            async def unreachable(event: Event) -> bytes:
                raise Unavailable("this node is down")
            honest = {kind: down.ctx.registered.events[kind][0] for kind in ("HAVE", "DROP_FILE")}
            for kind in honest:
                down.ctx.on(kind, unreachable)
            await owner.call("storage", "REMOVE", manifest.cid.encode(), timeout=60)
            kept = [c for c in pieces if down.chunks.has(digest_hex(c))]
            assert kept  # it missed the removal
            assert all(not p.chunks.has(digest_hex(c)) for p in plugin.values()
                       if p is not down for c in pieces)

            # Back: the owner's next sweep finds what it still keeps, without the operator.
            for kind, handler in honest.items():
                down.ctx.on(kind, handler)
            await mine.removal.sweep()
            assert not [c for c in pieces if down.chunks.has(digest_hex(c))]
            assert mine.holding.removed.get(manifest.cid) is not None
            assert mine.holding.removing.get(manifest.cid) is None
            assert json.loads(await owner.call("storage", "FILES", b"")) == []

            # The same file put again is not swept away.
            again = await store(owner, data)
            await mine.removal.sweep()
            assert mine.holding.removed.get(manifest.cid) is None
            assert sum(p.chunks.has(digest_hex(c)) for p in plugin.values()
                       for s in again.stripes for c in s.pieces) == len(pieces)


async def test_a_holder_whose_stream_failed_once_is_asked_again_when_there_is_no_spare(
        tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            uploader = plugin[owner.peer_id]
            flaky = next(p for p in plugin.values() if p is not uploader).ctx.peer_id
            request = uploader.ctx.request
            lost: list[str] = []

            async def losing_one_stream(peer: str, event: str, data: bytes = b"",
                                        **options: Any) -> bytes:
                if peer == flaky and event == "HOLD_PIECE" and not lost:
                    lost.append(peer)  # as a stream that failed to open (py-libp2p)
                    raise Unavailable("request 'HOLD_PIECE' failed: handshake write failed")
                return await request(peer, event, data, **options)
            uploader.ctx.request = losing_one_stream  # type: ignore[method-assign]
            # N holders are needed, and only N other nodes exist: no spare to turn to.
            manifest = await store(owner, os.urandom(K * 256 * 1024))
            assert lost == [flaky]
            assert any(plugin[flaky].chunks.has(digest_hex(c))
                       for c in manifest.stripes[0].pieces)


def failing_twice(holder: StoragePlugin, asked: Counter[str]) -> EventHandler:
    honest, peer = holder.holding.fetch_piece, holder.ctx.peer_id

    async def flaky(event: Event) -> bytes:
        asked[peer] += 1
        if asked[peer] <= 2:
            raise Unavailable("this holder's connection is being replaced")
        return await honest(event)
    return flaky


async def test_the_owner_removes_a_file_and_a_piece_another_owner_stored_stays(
        tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            mine = plugin[owner.peer_id]
            manifest = await store(owner, os.urandom(3 * K * 256 * 1024))
            pieces = [c for s in manifest.stripes for c in s.pieces]
            holders = {h for found in await mine.files.who_has(pieces) for h in found}

            # Another owner stored one of those pieces on a holder too.
            shared, holder = next((c, h) for c in pieces for h in holders
                                  if plugin[h].chunks.has(digest_hex(c)))
            piece = plugin[holder].chunks.get(digest_hex(shared))
            assert piece is not None
            other, stranger_node = [n for n in net.nodes[1:] if n.peer_id != holder][:2]
            await plugin[other.peer_id].ctx.request(
                holder, "HOLD_PIECE", shared.encode() + b"\n" + piece, timeout=30)

            # Refused: a peer asking the owner's node, a node that does not own it,
            # and a stranger's DROP_FILE (it drops nothing).
            for node, peer, why in [(other, owner.peer_id, "is for this node's operator"),
                                    (other, None, "can remove it")]:
                with pytest.raises(grpc.RpcError) as refused:
                    await node.call("storage", "REMOVE", manifest.cid.encode(),
                                    peer=peer, timeout=60)
                assert why in str(refused.value.details())
            stranger = plugin[stranger_node.peer_id]
            ask = signed_drop(stranger.ctx, manifest.cid, pieces)
            assert json.loads(await stranger.ctx.request(holder, "DROP_FILE", ask)) == \
                {"pieces": 0, "manifest": False}
            assert plugin[holder].chunks.has(digest_hex(shared))
            # A drop its sender did not sign is refused: the holder could not show
            # an auditor why the pieces went (docs/storage.md §5a).
            unsigned = json.dumps({"file": manifest.cid, "pieces": pieces}).encode()
            forged = json.loads(signed_drop(stranger.ctx, manifest.cid, pieces))
            for asked, why in [(unsigned, "takes the owner's signed removal"),
                               (json.dumps({**forged, "epoch": forged["epoch"] + 1}).encode(),
                                "is not signed by the sender"),
                               (json.dumps({**forged, "epoch": 10**9}).encode(),
                                "which has not come")]:
                with pytest.raises(MeshError, match=why):
                    await mine.ctx.request(holder, "DROP_FILE", asked)

            # A holder that cannot answer keeps what it has; so does the owner's
            # node (its manifest says what is left), and rm again finishes.
            async def unreachable(event: Event) -> bytes:
                raise Unavailable("down for maintenance")
            plugin[holder].ctx.on("DROP_FILE", unreachable)
            first = json.loads(await owner.call("storage", "REMOVE", manifest.cid.encode(),
                                                timeout=60))
            assert not first["removed"] and first["unreachable"] == [holder], first
            assert [(f["cid"], f["removing"]) for f in json.loads(
                await owner.call("storage", "FILES", b""))] == [(manifest.cid, True)]
            # Out of this node's audits and repairs meanwhile: a dropped piece
            # would look lost.
            assert not mine.holding.manifests.manifests()
            plugin[holder].ctx.on("DROP_FILE", plugin[holder].holding.drop_file)
            removed = json.loads(await owner.call("storage", "REMOVE", manifest.cid.encode(),
                                                  timeout=60))
            assert removed["removed"] and not removed["unreachable"], removed
            # Every piece went but the shared one.
            assert first["pieces"] + removed["pieces"] == len(pieces) - 1
            assert first["manifests"] + removed["manifests"] >= 1
            left = {c for c in pieces for h in holders if plugin[h].chunks.has(digest_hex(c))}
            assert left == {shared}
            assert plugin[holder].holding.owners.of(digest_hex(shared)) == {other.peer_id}
            assert not [p for p in plugin.values() if p.holding.manifests.get(manifest.cid)]
            assert json.loads(await owner.call("storage", "FILES", b"")) == []
            with pytest.raises(grpc.RpcError):  # no one has its manifest any more
                await owner.call("storage", "GET_MANIFEST", manifest.cid.encode(), timeout=60)
            # An audit of a dropped piece is refused as dropped, not as lost, and
            # the holder shows the owner's signed removal (REMOVED).
            gone = next(c for c in pieces if c != shared)
            dropped_by = next(h for h in holders if plugin[h].holding.tombstones.get(
                manifest.cid) and not plugin[h].chunks.has(digest_hex(gone)))
            with pytest.raises(MeshError, match=r"dropped piece .* at its owner's request"):
                await mine.ctx.request(dropped_by, "AUDIT",
                                       f"{gone} 0 16384 1 100 {manifest.cid}".encode())
            shown = json.loads(await mine.ctx.request(dropped_by, "REMOVED",
                                                      manifest.cid.encode()))
            assert list(shown) == [owner.peer_id]
            assert mine.ctx.verify(owner.peer_id, statement(manifest.cid,
                                                            shown[owner.peer_id]["epoch"]),
                                   bytes.fromhex(shown[owner.peer_id]["signature"]))

            # A piece kept before owners were recorded (or a STORE_FILE chunk)
            # cannot be deleted by claiming it first.
            old = os.urandom(4096)
            old_cid = piece_cid(old)
            await trio.to_thread.run_sync(plugin[holder].chunks.put, old)
            await stranger.ctx.request(holder, "HOLD_PIECE", old_cid.encode() + b"\n" + old)
            drop = signed_drop(stranger.ctx, manifest.cid, [old_cid])
            assert json.loads(await stranger.ctx.request(holder, "DROP_FILE", drop)) == \
                {"pieces": 0, "manifest": False}
            assert plugin[holder].chunks.has(digest_hex(old_cid))


async def test_removing_a_file_keeps_the_pieces_another_file_of_the_owner_shares(
        tmp_path: Path) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, _):
            owner = net.nodes[0]
            first = os.urandom(K * 256 * 1024)  # one whole stripe, the same in both files
            a = await store(owner, first + os.urandom(1000))
            b = await store(owner, first + os.urandom(2000))
            assert a.stripes[0].pieces == b.stripes[0].pieces
            removed = json.loads(await owner.call("storage", "REMOVE", a.cid.encode(),
                                                  timeout=60))
            assert removed["removed"], removed
            stripe = b.stripes[0]
            request = json.dumps({"file": b.cid, "k": K, "n": N, "length": stripe.length,
                                  "pieces": list(stripe.pieces)}).encode() + b"\n"
            assert await owner.call("storage", "GET_STRIPE", request, timeout=60) == first


async def test_the_coding_comes_from_the_genesis_unless_the_node_says_otherwise(
        tmp_path: Path) -> None:
    genesis = write_genesis(tmp_path / "net", plugins=["storage"])
    tuned = dataclasses.replace(loads(genesis.read_text()), plugins=(
        RequiredPlugin("storage", "", '{"k":2,"n":3}'),))
    genesis.write_text(dumps(tuned))
    with trio.fail_after(60):
        async with open_network(tmp_path, 1, genesis=genesis,
                                plugins=[plugin_under_test("storage", StoragePlugin)]) as net:
            layout = json.loads(await net.nodes[0].call("storage", "LAYOUT"))
    assert (layout["k"], layout["n"]) == (2, 3)  # the network's, not the built-in 4 of 8
    # A node's own [plugins.settings.storage] overrides the genesis key by key.
    merged = plugin_settings(tuned.plugins, {"storage": {"n": 5}, "other": {"x": 1}})
    assert merged == {"storage": {"k": 2, "n": 5}, "other": {"x": 1}}


async def test_a_file_of_more_pieces_than_one_have_names_is_still_seen_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(240):
        async with storage_network(tmp_path) as (net, plugin):
            owner = net.nodes[0]
            manifest = await store(owner, os.urandom(3 * K * 256 * 1024))
            pieces = [c for s in manifest.stripes for c in s.pieces]
            # As a file of more than 8,192 pieces (over 1 GiB at 4-of-8) meets
            # the limit of one HAVE: STATUS, audits, repair and rm ask in parts.
            monkeypatch.setattr(holding, "MAX_HAVE", 4)
            monkeypatch.setattr(files, "MAX_HAVE", 4)
            assert len(pieces) > 4
            found = await plugin[owner.peer_id].files.who_has(pieces)
            assert all(found), found
            status = json.loads(await owner.call("storage", "STATUS", manifest.cid.encode(),
                                                 timeout=60))
            assert [s["healthy"] for s in status["stripes"]] == [N] * len(manifest.stripes)
