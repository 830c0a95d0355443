"""``REMOVE``: the owner takes a file out of the network (``meshctl storage rm``).

An operator event of the owner's node only: its own manifest says which
pieces to drop. The node asks every storage node that holds a piece of the
file now (HAVE) and every node the DHT names as a keeper of its manifest to
``DROP_FILE`` (holding.py): each takes the owner off those pieces, deletes
the pieces no other owner stored too, and deletes its copy of the manifest
(keepers then stop auditing and repairing the file). The owner's node first
moves its manifest aside (``removing/``), so that it stops auditing and
repairing the file too, and deletes it last, only when every node asked
answered: a node that was unreachable keeps what it has, so ``rm`` says
which, and running it again finishes the work. Pieces the owner's other
files share are not dropped.

The answer is JSON ``{"cid", "asked", "answered", "pieces", "manifests",
"unreachable": [peer IDs], "removed": bool}``.
"""

from __future__ import annotations

import json

import trio

from mesh_storage.files import MAX_EVENT_TIMEOUT, PIECE_TIMEOUT, Files, operator_only
from mesh_storage.holding import MAX_HAVE, Holding, file_cid, file_key
from mesh_storage.manifest import ManifestError, parse_manifest
from meshd.plugin import Context, Event, InvalidArgument, MeshError

MAX_KEEPERS = 100
DROPS_AT_ONCE = 16


class Removal:
    def __init__(self, ctx: Context, files: Files, holding: Holding) -> None:
        self.ctx = ctx
        self.files = files
        self.holding = holding
        ctx.on("REMOVE", operator_only(ctx, self.remove), timeout=MAX_EVENT_TIMEOUT)

    def _retire(self, cid: str, raw: bytes) -> None:
        self.holding.removing.put(cid, raw)
        self.holding.manifests.remove(cid)

    async def remove(self, event: Event) -> bytes:
        cid = file_cid(event.data)
        raw = await trio.to_thread.run_sync(self.holding.manifests.get, cid) \
            or await trio.to_thread.run_sync(self.holding.removing.get, cid)
        if raw is None:
            raise InvalidArgument(f"this node keeps no manifest of {cid}: only the node that "
                                  "put a file can remove it (`meshctl storage ls`)")
        try:
            manifest = parse_manifest(raw)
        except ManifestError as exc:
            raise InvalidArgument(f"this node's manifest of {cid} is damaged: {exc}") from None
        if manifest.owner != self.ctx.peer_id:
            raise InvalidArgument(f"file {cid} belongs to {manifest.owner}; only its owner's "
                                  "node can remove it")
        # Being removed from here on: this node stops auditing and repairing it
        # (an audit of a piece already dropped would look like a lost piece).
        await trio.to_thread.run_sync(self._retire, cid, raw)
        # A piece this owner's other files share stays (pieces are named by content).
        others = {c for m in await trio.to_thread.run_sync(self.holding.manifests.manifests)
                  if m.owner == self.ctx.peer_id and m.cid != cid
                  for stripe in m.stripes for c in stripe.pieces}
        pieces = [c for stripe in manifest.stripes for c in stripe.pieces if c not in others]
        targets = {p for found in await self.files.who_has(pieces) for p in found}
        try:
            targets |= {p.peer_id for p in await self.ctx.dht.find_providers(
                file_key(cid), MAX_KEEPERS)}
        except MeshError as exc:
            self.ctx.log.info("no DHT answer for the keepers of a file", extra={
                "file": cid, "error": str(exc)})
        targets.discard(self.ctx.peer_id)
        asks = [json.dumps({"file": cid, "pieces": pieces[at:at + MAX_HAVE]}).encode()
                for at in range(0, len(pieces), MAX_HAVE)]
        dropped, manifests, unreachable = 0, 0, []
        limit = trio.CapacityLimiter(DROPS_AT_ONCE)

        async def drop(peer: str) -> None:
            nonlocal dropped, manifests
            async with limit:
                try:
                    for ask in asks:
                        answer = json.loads(await self.ctx.request(
                            peer, "DROP_FILE", ask, timeout=PIECE_TIMEOUT))
                        dropped += int(answer.get("pieces", 0))
                        manifests += bool(answer.get("manifest"))
                except (MeshError, ValueError, AttributeError) as exc:
                    unreachable.append(peer)
                    self.ctx.log.info("a node did not drop a removed file", extra={
                        "file": cid, "peer_id": peer, "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in sorted(targets):
                nursery.start_soon(drop, peer)
        removed = not unreachable
        if removed:
            await trio.to_thread.run_sync(self.holding.removing.remove, cid)
        self.ctx.log.info("removed a file" if removed else "removed a file in part", extra={
            "file": cid, "asked": len(targets), "pieces": dropped, "manifests": manifests,
            "unreachable": len(unreachable)})
        return json.dumps({"cid": cid, "asked": len(targets),
                           "answered": len(targets) - len(unreachable), "pieces": dropped,
                           "manifests": manifests, "unreachable": sorted(unreachable),
                           "removed": removed}).encode()
