"""Repair: pieces whose holders are gone are rebuilt and placed again, owner or not.

Every node that keeps a file's manifest checks the file each ``every``
seconds: which of its pieces have a live holder (``Files.who_has``, asked of
the holders now, not of the DHT) that did not fail this node's last audit
of it (audit.py). A piece missing for longer than ``grace``
seconds in a stripe with fewer than ``threshold`` live pieces is rebuilt:
the node fetches any k pieces of the stripe, decodes it, codes it again
(zfec is deterministic, so the rebuilt piece has the manifest's CID, which is
checked) and places it on a node that holds no piece of that stripe
(placement.py). The manifest does not change: the new holder announces that
it holds pieces of the file in the DHT.

A repair places every missing piece it can. When some find no holder (a
placement timed out, too few nodes answered lately), the stripe stays on
this node's list (``short``) and is topped up at the next checks until all n
pieces are back, even though it is above the threshold by then; otherwise
it would wait to fall below the threshold again.

So that the nodes keeping a manifest do not all repair the same stripe, they
take turns: ranked by the hash of the file's CID and their peer ID among the
stripe's live holders and themselves, the r-th waits r grace periods (the
first one, one); the next steps in only if the stripe is still short then.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import trio

from mesh_storage import erasure
from mesh_storage.files import Files
from mesh_storage.holding import Holding
from mesh_storage.manifest import Manifest
from mesh_storage.pieces import digest_hex, piece_cid
from mesh_storage.placement import NotEnoughHolders
from meshd.plugin import Context, MeshError

DEFAULT_EVERY = 600  # seconds between checks of the files this node keeps a manifest of
DEFAULT_GRACE = 3600  # seconds a piece may be missing before it is rebuilt elsewhere


def threshold(manifest: Manifest) -> int:
    """Live pieces below which a stripe is repaired: k plus half the spares, rounded up."""
    return manifest.k + -(-(manifest.n - manifest.k) // 2)


@dataclass
class Repaired:
    """What this node has repaired since it started."""

    pieces: int = 0


class Repairer:
    def __init__(self, ctx: Context, files: Files, holding: Holding, every: float,
                 grace: float) -> None:
        self.ctx = ctx
        self.files = files
        self.holding = holding
        self.every = every
        self.grace = grace
        self.missing_since: dict[tuple[str, int, int], float] = {}  # (file, stripe, piece)
        # (file, stripe): repaired by this node but left short of n pieces: topped
        # up at the next checks, whatever the threshold.
        self.short: set[tuple[str, int]] = set()
        self.repaired = Repaired()

    async def run_forever(self) -> None:
        while True:
            await trio.sleep(self.every)
            manifests = await trio.to_thread.run_sync(self.holding.manifests.manifests)
            kept = {m.cid for m in manifests}
            self.short = {(file, s) for file, s in self.short if file in kept}
            for manifest in manifests:
                try:
                    await self.check(manifest)
                except MeshError as exc:  # the network is busy or split: next time
                    self.ctx.log.info("repair check failed", extra={"file": manifest.cid,
                                                                    "error": str(exc)})

    async def check(self, manifest: Manifest) -> None:
        cids = [cid for stripe in manifest.stripes for cid in stripe.pieces]
        others = await self.files.who_has(cids)
        mine = await trio.to_thread.run_sync(
            lambda: [self.files.chunks.has(digest_hex(cid)) for cid in cids])
        now = trio.current_time()
        for s in range(len(manifest.stripes)):
            base = s * manifest.n
            holders = [set(others[base + i]) | ({self.ctx.peer_id} if mine[base + i] else set())
                       for i in range(manifest.n)]
            # A holder that failed this node's last audit of a piece does not count
            # as holding it, and is not given it back.
            failed = set()
            for i, cid in enumerate(manifest.stripes[s].pieces):
                audit = self.files.audits.get(cid)
                if audit is not None and not audit.ok:
                    holders[i].discard(audit.holder)
                    failed.add(audit.holder)
            missing = [i for i in range(manifest.n) if not holders[i]]
            for i in range(manifest.n):
                if holders[i]:
                    self.missing_since.pop((manifest.cid, s, i), None)
                else:
                    self.missing_since.setdefault((manifest.cid, s, i), now)
            if not missing:
                self.short.discard((manifest.cid, s))
                continue
            if manifest.n - len(missing) >= threshold(manifest) \
                    and (manifest.cid, s) not in self.short:
                continue
            since = min(self.missing_since[(manifest.cid, s, i)] for i in missing)
            live = set().union(*holders) | {self.ctx.peer_id}
            order = sorted(live, key=lambda p: hashlib.sha256(
                (manifest.cid + p).encode()).digest())
            wait = self.grace * (1 + order.index(self.ctx.peer_id))
            if now - since < wait:
                continue
            await self.repair(manifest, s, missing, set().union(*holders) | failed)

    def _failed_holder(self, cid: str) -> set[str]:
        """The holder whose last audit of piece ``cid`` by this node failed, if any."""
        audit = self.files.audits.get(cid)
        return {audit.holder} if audit is not None and not audit.ok else set()

    async def repair(self, manifest: Manifest, s: int, missing: list[int],
                     holding_stripe: set[str]) -> None:
        stripe = manifest.stripes[s]
        data = await self.files.rebuild(manifest.cid, manifest.coding, stripe.length,
                                        list(stripe.pieces))
        # Another keeper whose turn came first may have placed the pieces while
        # this one looked and rebuilt (seconds, under load): ask again.
        held = await self.files.who_has([stripe.pieces[i] for i in missing])
        here = await trio.to_thread.run_sync(
            lambda: [self.files.chunks.has(digest_hex(stripe.pieces[i])) for i in missing])
        missing = [i for i, peers, mine in zip(missing, held, here, strict=True)
                   if not mine and not set(peers) - self._failed_holder(stripe.pieces[i])]
        if not missing:
            self.short.discard((manifest.cid, s))
            return
        pieces = await trio.to_thread.run_sync(erasure.encode, data, manifest.coding)
        for i in missing:
            if piece_cid(pieces[i]) != stripe.pieces[i]:
                self.ctx.log.error("a rebuilt piece does not match the manifest's CID", extra={
                    "file": manifest.cid, "stripe": s, "piece": i})
                return
        try:
            placed = await self.files.place_pieces(
                {i: pieces[i] for i in missing}, list(stripe.pieces), owner=manifest.owner,
                file=manifest.cid, avoid=holding_stripe, partial=True, answered_lately=True)
        except (NotEnoughHolders, MeshError) as exc:
            self.ctx.log.warning("cannot repair: not enough nodes", extra={
                "file": manifest.cid, "stripe": s, "error": str(exc)})
            self.short.add((manifest.cid, s))
            return
        for i in placed:
            self.missing_since.pop((manifest.cid, s, i), None)
        if len(placed) < len(missing):
            self.short.add((manifest.cid, s))  # topped up at the next checks
        else:
            self.short.discard((manifest.cid, s))
        self.repaired.pieces += len(placed)
        self.ctx.log.info("repaired a stripe", extra={
            "file": manifest.cid, "stripe": s, "pieces": len(placed), "missing": len(missing)})
