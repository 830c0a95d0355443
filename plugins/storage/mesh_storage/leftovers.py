"""Leftovers: pieces a holder keeps of files their owners removed while it was away.

`storage rm` reaches the holders that answer (removal.py), and the owner's
node sweeps again for 7 days; a holder down for longer comes back with
pieces nobody will audit, pay for or read. So every ``every`` seconds (a day
by default) a holder looks at the files it holds pieces of (as HOLD_PIECE
named them: holding.FilePieces) that no one audited here for QUIET seconds
(or since it started),
and asks each owner of their pieces for its removal (``REMOVED``: the owner's
node keeps its own signed removal of each file it removed, and forgets it
when it puts the file again). A removal signed by that owner takes the owner
off the file's pieces, as its ``DROP_FILE`` would have; a piece goes when no
owner is left. The holder keeps the signed removal, to show an auditor that
still holds it to an old promise (tombstones.py).

Asking the owner itself is what makes this safe: its answer is what it
knows now, so a file put again since is not touched, and nobody else can
sign for it. An owner that cannot be reached, or shows no removal, leaves
the pieces as they are. A piece another held file also names stays: the
owner may keep it for that file (pieces are named by their content; every
HOLD_PIECE that names a file is recorded, so a piece shared is known).
"""

from __future__ import annotations

import trio

from mesh_storage import tombstones
from mesh_storage.holding import Holding
from mesh_storage.owners import LEGACY
from mesh_storage.pieces import digest_hex
from mesh_storage.tombstones import Tombstone
from meshd.plugin import Context, MeshError

DEFAULT_EVERY = 24 * 3600  # seconds between sweeps
QUIET = 7 * 24 * 3600.0  # a file audited here since is kept by someone: not asked about
ASK_TIMEOUT = 10.0


class Leftovers:
    def __init__(self, ctx: Context, holding: Holding, every: float) -> None:
        self.ctx = ctx
        self.holding = holding
        self.every = every

    async def sweep_forever(self) -> None:
        while True:
            await trio.sleep(self.every)
            await self.sweep()

    async def sweep(self, quiet: float = QUIET) -> int:
        """Ask the owners of the files not audited here for ``quiet`` seconds whether
        they removed them; drop what they did. The pieces dropped."""
        now = trio.current_time()
        files = await trio.to_thread.run_sync(self.holding.file_pieces.files)
        dropped = 0
        for file in files:
            audited = self.holding.audited.get(file)
            if audited is not None and now - audited < quiet:
                continue
            for owner in await trio.to_thread.run_sync(self._owners, file):
                try:
                    removal = await tombstones.excuse(self.ctx, owner, file, owner, -1,
                                                      ASK_TIMEOUT)
                except MeshError:  # the owner is away too: next sweep
                    continue
                if removal is not None:
                    dropped += await trio.to_thread.run_sync(self._drop, file, removal)
        return dropped

    def _owners(self, file: str) -> list[str]:
        """Whom this node keeps ``file``'s pieces for (blocks)."""
        owners = {o for cid in self.holding.file_pieces.pieces(file)
                  for o in self.holding.owners.of(digest_hex(cid))}
        return sorted(owners - {LEGACY, self.ctx.peer_id})

    def _drop(self, file: str, removal: Tombstone) -> int:
        """Take the removal's owner off ``file``'s pieces no other held file names, and
        keep the removal (blocks). The pieces deleted."""
        holding = self.holding
        others = {c for f in holding.file_pieces.files() if f != file
                  for c in holding.file_pieces.pieces(f)}
        pieces = holding.file_pieces.pieces(file)
        deleted = len(holding.take_off(removal.owner, [c for c in pieces if c not in others]))
        holding.tombstones.add(file, removal)
        # Kept for nobody else: no longer held (a piece another file names stays on
        # disk, listed under that file), nor asked about again.
        if not any(holding.owners.of(digest_hex(cid)) - {removal.owner, LEGACY}
                   for cid in pieces):
            holding.held.remove(file)
            holding.file_pieces.remove(file)
        self.ctx.log.info("dropped the pieces of a file its owner removed while this node "
                          "was away", extra={"file": file, "pieces": deleted,
                                             "why": removal.why})
        return deleted
