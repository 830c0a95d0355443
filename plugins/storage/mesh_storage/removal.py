"""``REMOVE``: the owner takes a file out of the network (``meshctl storage rm``).

An operator event of the owner's node only: its own manifest says which
pieces to drop. The node asks every storage node that holds a piece of the
file now (HAVE) and every node the DHT names as a keeper of its manifest to
``DROP_FILE`` (holding.py), signed (tombstones.py: a holder shows the
signed removal to auditors that find the pieces gone): each takes the owner
off those pieces, deletes the pieces no other owner stored too, and deletes
its copy of the manifest (keepers then stop auditing and repairing the
file). The owner's node first moves its manifest aside (``removing/``), so
that it stops auditing and repairing the file too. Pieces the owner's other
files share are not dropped.

A node asked that did not answer keeps what it has, so ``rm`` says which;
running it again finishes the work, and so does the node itself: every
``every`` seconds (the repair period) it asks again for each file being
removed. A holder that was down during the removal answers no HAVE and is
not asked at all, so the manifest of a file removed in full is kept
(``removed/``) for RETAIN seconds, and each sweep drops what such a holder,
back since, still keeps. A file put again meanwhile is not swept.

The answer is JSON ``{"cid", "asked", "answered", "pieces", "manifests",
"unreachable": [peer IDs], "removed": bool}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import trio

from mesh_storage.files import MAX_EVENT_TIMEOUT, PIECE_TIMEOUT, Files, operator_only
from mesh_storage.holding import MAX_HAVE, Holding, file_cid, file_key
from mesh_storage.manifest import Manifest, ManifestError, parse_manifest
from mesh_storage.tombstones import sign_removal, signed_drop
from meshd.plugin import Context, Event, InvalidArgument, MeshError

MAX_KEEPERS = 100
DROPS_AT_ONCE = 16
RETAIN = 7 * 24 * 3600.0  # seconds a file removed in full is swept for holders back since


class Removal:
    def __init__(self, ctx: Context, files: Files, holding: Holding, every: float) -> None:
        self.ctx = ctx
        self.files = files
        self.holding = holding
        self.every = every
        ctx.on("REMOVE", operator_only(ctx, self.remove), timeout=MAX_EVENT_TIMEOUT)

    def _retire(self, cid: str, raw: bytes) -> None:
        self.holding.removing.put(cid, raw)
        self.holding.manifests.remove(cid)

    def _done(self, cid: str, raw: bytes) -> None:
        self.holding.removed.put(cid, raw)
        self.holding.removing.remove(cid)

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
        # Kept for good, so that a holder away past the sweeps can ask (leftovers.py).
        await trio.to_thread.run_sync(self.holding.tombstones.add, cid,
                                      sign_removal(self.ctx, cid))
        outcome = await self._drop_everywhere(manifest)
        if outcome.removed:
            await trio.to_thread.run_sync(self._done, cid, raw)
        self.ctx.log.info("removed a file" if outcome.removed else "removed a file in part",
                          extra={"file": cid, "asked": outcome.asked,
                                 "pieces": outcome.pieces, "manifests": outcome.manifests,
                                 "unreachable": len(outcome.unreachable)})
        return json.dumps({"cid": cid, "asked": outcome.asked,
                           "answered": outcome.asked - len(outcome.unreachable),
                           "pieces": outcome.pieces, "manifests": outcome.manifests,
                           "unreachable": sorted(outcome.unreachable),
                           "removed": outcome.removed}).encode()

    async def sweep_forever(self) -> None:
        while True:
            await trio.sleep(self.every)
            await self.sweep()

    async def sweep(self) -> None:
        """Ask again for the files being removed, and for those removed lately."""
        for store, finished in ((self.holding.removing, False), (self.holding.removed, True)):
            for manifest in await trio.to_thread.run_sync(store.manifests):
                cid = manifest.cid
                if await trio.to_thread.run_sync(self.holding.manifests.get, cid):
                    await trio.to_thread.run_sync(store.remove, cid)  # put again since
                    continue
                at = await trio.to_thread.run_sync(store.written_at, cid)
                if finished and (at is None or time.time() - at > RETAIN):
                    await trio.to_thread.run_sync(store.remove, cid)
                    continue
                try:
                    outcome = await self._drop_everywhere(manifest)
                except MeshError as exc:  # the network is busy or split: next time
                    self.ctx.log.info("removal sweep failed", extra={"file": cid,
                                                                     "error": str(exc)})
                    continue
                if not finished and outcome.removed:
                    await trio.to_thread.run_sync(self._done, cid, manifest.encode())
                if outcome.pieces or outcome.manifests or (outcome.removed and not finished):
                    self.ctx.log.info("a removal went on", extra={
                        "file": cid, "pieces": outcome.pieces, "manifests": outcome.manifests,
                        "removed": outcome.removed})

    async def _drop_everywhere(self, manifest: Manifest) -> Dropped:
        """DROP_FILE to every node holding a piece of ``manifest``'s file now, and every
        keeper of its manifest the DHT names."""
        cid = manifest.cid
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
        asks = [signed_drop(self.ctx, cid, pieces[at:at + MAX_HAVE])
                for at in range(0, len(pieces), MAX_HAVE)]
        outcome = Dropped(asked=len(targets))
        limit = trio.CapacityLimiter(DROPS_AT_ONCE)

        async def drop(peer: str) -> None:
            async with limit:
                try:
                    for ask in asks:
                        answer = json.loads(await self.ctx.request(
                            peer, "DROP_FILE", ask, timeout=PIECE_TIMEOUT))
                        outcome.pieces += int(answer.get("pieces", 0))
                        outcome.manifests += bool(answer.get("manifest"))
                except (MeshError, ValueError, AttributeError) as exc:
                    outcome.unreachable.append(peer)
                    self.ctx.log.info("a node did not drop a removed file", extra={
                        "file": cid, "peer_id": peer, "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in sorted(targets):
                nursery.start_soon(drop, peer)
        return outcome


@dataclass
class Dropped:
    """What one round of DROP_FILE asks came to."""

    asked: int
    pieces: int = 0
    manifests: int = 0
    unreachable: list[str] = field(default_factory=list)

    @property
    def removed(self) -> bool:
        return not self.unreachable
