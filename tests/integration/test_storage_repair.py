"""Repair on five real daemons: a stripe a repair left short of n pieces (a node
refused its piece) is topped up at the next check, though above the threshold."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import trio
from mesh_storage import unixfs
from mesh_storage.manifest import PIECE, Manifest, Stripe
from mesh_storage.pieces import digest_hex
from mesh_storage.plugin import StoragePlugin
from mesh_storage.repair import threshold

from meshd.plugin import Event, InvalidArgument
from meshd.testing import Node, eventually, open_network, plugin_under_test
from tests.integration.test_plugins import Instances

K, N = 2, 4  # threshold 3: a stripe with 3 live pieces is not repaired by itself


async def put(owner: Node, data: bytes) -> Manifest:
    """What `meshctl storage put -k 2 -n 4` does, through the owner's operator events."""
    cid = str(unixfs.root(data[i:i + PIECE] for i in range(0, len(data), PIECE)).cid)
    header = json.dumps({"k": K, "n": N, "holders": [], "file": cid}).encode()
    answer = json.loads(await owner.call("storage", "PUT_STRIPE", header + b"\n" + data,
                                         timeout=60))
    manifest = Manifest("f.bin", len(data), cid, hashlib.sha256(data).hexdigest(), K, N,
                        owner.peer_id, (Stripe(len(data), tuple(answer["pieces"]),
                                               tuple(answer["roots"])),))
    await owner.call("storage", "PUT_MANIFEST", manifest.encode(), timeout=60)
    return manifest


async def test_a_stripe_a_repair_left_short_is_topped_up_to_n(tmp_path: Path) -> None:
    factory = Instances(StoragePlugin)
    settings = {"plugins.settings": {"storage": {  # driven by hand
        "repair_every": 3600, "audit_every": 3600, "repair_grace": 0}}}
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("storage", factory)],
                                config=settings) as net:
            plugin = {p.ctx.peer_id: p for p in factory.made}
            owner = plugin[net.nodes[0].peer_id]

            async def all_announced() -> bool:
                return len(await owner.files.candidates(fresh=True)) == 4
            await eventually(all_announced, timeout=60, what="every holder announced")
            manifest = await put(net.nodes[0], os.urandom(K * PIECE))
            pieces = manifest.stripes[0].pieces
            assert threshold(manifest) == 3

            # Two holders lose their pieces; one of them refuses to take one back.
            holder_of = {cid: p for p in plugin.values() for cid in pieces
                         if p.chunks.has(digest_hex(cid))}
            lost = [holder_of[cid] for cid in pieces[:2]]
            for cid, holder in zip(pieces[:2], lost, strict=True):
                holder.chunks.remove(digest_hex(cid))
            refusing = lost[1]

            async def full(event: Event) -> bytes:
                raise InvalidArgument("this node is full")
            refusing.ctx.on("HOLD_PIECE", full)

            async def live() -> int:
                return sum(1 for found in await owner.files.who_has(list(pieces)) if found)

            # 2 live < 3: repaired, but only to 3, the threshold.
            await owner.repairer.check(manifest)
            assert await live() == 3
            assert (manifest.cid, 0) in owner.repairer.short
            # The node takes pieces again: the next check tops the stripe up to n.
            refusing.ctx.on("HOLD_PIECE", refusing.holding.hold_piece)
            await owner.repairer.check(manifest)
            assert await live() == N
            assert owner.repairer.short == set()
            assert owner.repairer.repaired.pieces == 2
