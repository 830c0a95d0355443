"""Tombstones: the owner's signed removals a holder keeps, to show an auditor.

A holder that no longer has a piece it claimed has either lost it or dropped
it because the owner removed the file (removal.py). Only the second is no
fault, and only the owner can say so: ``DROP_FILE`` carries the owner's
signed statement (``ctx.sign``) ``storage/removed <file CID> <epoch>``, the
holder checks it and keeps it, and shows it (``REMOVED``, a file CID) to any
auditor that finds the piece gone. A statement counts for a claim the holder
made in that epoch or before (or one epoch after, for clocks on either side
of an epoch's start): the holder of a file put again since, which promised
its pieces anew, cannot excuse losing them with the old removal.
So a holder that denies a piece it claimed (``HAVE`` no, or an ``AUDIT``
refused as "holds no piece" or "dropped") without a removal signed by the
file's owner has lost it, provably, and is judged like one that sent a wrong
Merkle path (audit.py, verdicts.py).

On disk: ``tombstones/<file CID>``, JSON ``{owner: {"epoch", "signature"}}``
(hex), the newest statement per owner; a few hundred bytes per file removed,
kept for good (a claim never expires).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh_storage.chunks import write_atomically
from mesh_storage.manifest import FILE_CID
from mesh_storage.owners import PEER_ID
from meshd.plugin import Context, InvalidArgument, PeerError

REMOVED = "REMOVED"  # the holder's event: a file CID -> its tombstones (JSON)
# Refusals by a holder's plugin host, not its plugin: an overloaded holder shows
# nothing yet, which proves nothing (meshd's runtime.py and direct.py say these).
NOT_AN_ANSWER = (" is busy", "did not answer within", "the handler failed")
# Epochs a removal may seem older than a claim it excuses: the owner's and the
# auditor's clocks can stand on either side of an epoch's start.
SKEW = 1
MAX_OWNERS = 64  # owners' statements kept per file (each put the same bytes)


def statement(file: str, epoch: int) -> bytes:
    """What the owner signs to remove ``file`` in ``epoch``."""
    return f"storage/removed {file} {epoch}".encode("ascii")


def signed_drop(ctx: Context, file: str, pieces: list[str]) -> bytes:
    """A ``DROP_FILE`` request from this node, as the file's owner, signed now."""
    removal = sign_removal(ctx, file)
    return json.dumps({"file": file, "pieces": pieces, **removal.json()}).encode()


def sign_removal(ctx: Context, file: str) -> Tombstone:
    """This node's removal of ``file``, as its owner, signed now."""
    epoch = ctx.ledger.clock_epoch()
    return Tombstone(ctx.peer_id, epoch, ctx.sign(statement(file, epoch)))


@dataclass(frozen=True)
class Tombstone:
    owner: str
    epoch: int
    signature: bytes

    def json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "signature": self.signature.hex()}

    @property
    def why(self) -> str:
        return f"dropped at its owner's request: removal signed by {self.owner} in epoch " \
               f"{self.epoch}"


def from_drop(ctx: Context, owner: str, file: str, asked: dict[str, Any]) -> Tombstone:
    """The tombstone a DROP_FILE request carries, checked: InvalidArgument unless
    ``owner`` signed the removal of ``file``, in an epoch not after the next."""
    try:
        epoch, signature = asked["epoch"], bytes.fromhex(asked["signature"])
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise TypeError("epoch")
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument("DROP_FILE takes the owner's signed removal: \"epoch\" and "
                              "\"signature\" (hex), so that this node can show why it "
                              "dropped the file's pieces") from None
    if epoch > ctx.ledger.clock_epoch() + 1:
        raise InvalidArgument(f"the removal is signed for epoch {epoch}, which has not come")
    if not ctx.verify(owner, statement(file, epoch), signature):
        raise InvalidArgument(f"the removal of {file} is not signed by the sender")
    return Tombstone(owner, epoch, signature)


async def excuse(ctx: Context, holder: str, file: str, owner: str,
                 claimed_at: int, timeout: float) -> Tombstone | None:
    """Why ``holder`` no longer has a piece of ``file``: its tombstone signed by the
    file's ``owner`` in epoch ``claimed_at`` or later (less SKEW), checked; or None (no
    such removal, whatever it answered or refused).

    Raises:
        MeshError: the holder could not be asked (gone, a broken stream, no answer
            in time): nothing is shown either way.
    """
    try:
        answer = await ctx.request(holder, REMOVED, file.encode("ascii"), timeout=timeout)
    except PeerError as exc:  # it answered, and showed nothing (unless it was busy)
        if any(marker in str(exc) for marker in NOT_AN_ANSWER):
            raise
        return None
    try:
        shown = json.loads(answer)[owner]
        epoch, signature = shown["epoch"], bytes.fromhex(shown["signature"])
        valid = isinstance(epoch, int) and epoch >= claimed_at - SKEW \
            and ctx.verify(owner, statement(file, epoch), signature)
    except (ValueError, KeyError, TypeError, InvalidArgument):
        return None
    return Tombstone(owner, epoch, signature) if valid else None


def ends_copy(removal: Tombstone, owner: str, since: int | None, me: str) -> bool:
    """Whether ``removal`` (checked) ends node ``me``'s copy of a manifest whose owner
    is ``owner``, given to it last in epoch ``since``: the owner's, signed in that
    epoch or after (not for a file put again since), and ``me`` is not the owner
    (its node knows its own removals)."""
    return removal.owner == owner != me and since is not None and removal.epoch >= since


class TombstoneStore:
    """The removals this node was sent, under ``root``/<file CID>."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()

    def add(self, file: str, tombstone: Tombstone) -> None:
        with self._lock:
            kept = self.get(file)
            known = kept.get(tombstone.owner)
            if known is not None and known.epoch >= tombstone.epoch:
                return
            kept[tombstone.owner] = tombstone
            if len(kept) > MAX_OWNERS:
                return  # as many owners as fit: the rest drop nothing anyway
            write_atomically(self._root / file, json.dumps(
                {o: t.json() for o, t in sorted(kept.items())}).encode("ascii"))

    def forget(self, file: str, owner: str) -> None:
        """Drop ``owner``'s statement on ``file`` (its own, when it puts the file again)."""
        with self._lock:
            kept = self.get(file)
            if kept.pop(owner, None) is None:
                return
            if kept:
                write_atomically(self._root / file, json.dumps(
                    {o: t.json() for o, t in sorted(kept.items())}).encode("ascii"))
            else:
                (self._root / file).unlink(missing_ok=True)

    def get(self, file: str) -> dict[str, Tombstone]:
        """The owners' statements kept for ``file`` (none when it is no file CID)."""
        if not FILE_CID.fullmatch(file):
            return {}
        try:
            data = json.loads((self._root / file).read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        kept = {}
        for owner, shown in data.items() if isinstance(data, dict) else ():
            try:
                if PEER_ID.fullmatch(owner):
                    kept[owner] = Tombstone(owner, int(shown["epoch"]),
                                            bytes.fromhex(shown["signature"]))
            except (KeyError, TypeError, ValueError):
                continue
        return kept

    def answer(self, file: str) -> bytes:
        """The ``REMOVED`` answer: the statements kept for ``file``, as JSON."""
        kept = self.get(file)
        if not kept:
            raise InvalidArgument(f"this node keeps no removal of {file}")
        return json.dumps({o: t.json() for o, t in sorted(kept.items())}).encode("ascii")
