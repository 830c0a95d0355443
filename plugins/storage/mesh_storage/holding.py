"""What a node keeps for others: pieces and manifests, announced in the DHT.

Peer events (docs/storage.md gives the wire shapes):

* ``HOLD_PIECE``: a piece's CID, optionally a space and the peer ID of the
  owner it is kept for (default: the sender) and optionally another space
  and the CID of the file the piece is of, a newline, the piece. The holder
  checks the bytes against the CID, keeps them, records the owner
  (owners.py) and announces ``held/<file cid>`` the first time it holds a
  piece of that file (``piece/<cid>`` when no file is named).
* ``FETCH_PIECE``: a piece's CID, optionally a space and a 16-byte fetch
  nonce; the answer is the piece. With a nonce, the holder reports the
  delivery (kind RETRIEVE_FILE) for the asker to countersign.
* ``HOLD_MANIFEST``: a manifest; the holder checks and keeps it, and
  announces ``file/<cid>``.
* ``FETCH_MANIFEST``: a file's CID; the answer is its manifest.
* ``HAVE``: piece CIDs, one per line (at most MAX_HAVE); the answer is one
  byte per CID, 1 where this node holds that piece.
* ``DROP_FILE``: JSON ``{"file": CID, "pieces": [CIDs], "epoch", "signature"}``
  (at most MAX_HAVE pieces), from the file's owner, signed by it
  (tombstones.py): the holder takes the sender off each piece's owners and
  deletes the pieces no owner is left for, deletes its copy of the manifest
  if the sender owns it, and keeps the signed removal to show auditors
  (``REMOVED``). The answer is JSON ``{"pieces": dropped, "manifest":
  true|false}``.
* ``REMOVED``: a file's CID; the answer is the owners' signed removals of it
  this node keeps (tombstones.py), or a refusal when it keeps none.

Every storage node announces ``holders`` in the DHT, so an uploader anywhere
finds nodes to place pieces on (with their addresses, for placement.py).

A holder announces the files it holds pieces of, not each piece (as Kubo's
"roots" reprovider strategy does): a 100 MiB file at 4-of-8 is 800 pieces,
and each provider record walks the DHT and writes to its 20 closest nodes,
which took half of every holder's CPU during a put (docs/performance.md). A
reader finds a file's holders with one lookup and asks them which pieces
they have (``HAVE``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from mesh_storage.chunks import ChunkStore, StorageFull, chunk_hash, write_atomically
from mesh_storage.manifest import FILE_CID, PIECE, Manifest, ManifestError, parse_manifest
from mesh_storage.owners import LEGACY, PEER_ID, PieceOwners
from mesh_storage.pieces import CidError, check_piece, digest_hex
from mesh_storage.tombstones import REMOVED, TombstoneStore, from_drop
from meshd.plugin import Context, Event, InvalidArgument, MeshError

FETCH_NONCE = 16
ANNOUNCE_EVERY = 600.0  # seconds between re-announcements of this node as a holder
# Provider records live 48 h in the DHT (and only in memory: a restarted node
# forgets those it kept for others), so every held piece and manifest is
# announced again at start and then twice a day.
REANNOUNCE_HELD_EVERY = 12 * 3600.0
ANNOUNCE_RETRY = 2.0  # seconds before the second attempt while no DHT peer accepts it
ANNOUNCES_AT_ONCE = 4  # DHT provides in flight for newly held pieces
HOLDERS_KEY = "holders"
MAX_HAVE = 8192  # piece CIDs in one HAVE


def piece_key(cid: str) -> str:
    return f"piece/{cid}"


def file_key(cid: str) -> str:
    return f"file/{cid}"


def held_key(cid: str) -> str:
    """The provider record of the nodes holding pieces of file ``cid``."""
    return f"held/{cid}"


class Holding:
    """The holder's side: HOLD_PIECE, FETCH_PIECE, HOLD_MANIFEST, FETCH_MANIFEST,
    HAVE, DROP_FILE, REMOVED."""

    def __init__(self, ctx: Context, chunks: ChunkStore,
                 report: Callable[[Event, int], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.chunks = chunks
        self.manifests = ManifestStore(ctx.data_dir / "manifests")
        # The owner's manifests of files being removed (removal.py): out of
        # audits and repairs, kept until every holder dropped the file.
        self.removing = ManifestStore(ctx.data_dir / "removing")
        # ... and of files removed in full, kept a while to drop what holders
        # that were down during the removal still keep (removal.py).
        self.removed = ManifestStore(ctx.data_dir / "removed")
        self.owners = PieceOwners(ctx.data_dir / "owners")
        self.held = HeldFiles(ctx.data_dir / "held-files")
        self.file_pieces = FilePieces(ctx.data_dir / "held-pieces")
        # When this node last answered an audit of a piece of each file (trio time).
        self.audited: dict[str, float] = {}
        # A piece's bytes and its owners change together: a HOLD_PIECE racing a
        # DROP_FILE of the same piece must not leave an owner without the bytes.
        self._pieces = threading.Lock()
        # The owners' signed removals of files this node dropped pieces of: an
        # auditor that finds a piece gone sees why (tombstones.py).
        self.tombstones = TombstoneStore(ctx.data_dir / "tombstones")
        self._report = report
        self._announcing = trio.CapacityLimiter(ANNOUNCES_AT_ONCE)
        ctx.on("HOLD_PIECE", self.hold_piece)
        ctx.on("FETCH_PIECE", self.fetch_piece)
        ctx.on("HOLD_MANIFEST", self.hold_manifest)
        ctx.on("FETCH_MANIFEST", self.fetch_manifest)
        ctx.on("HAVE", self.have)
        ctx.on("DROP_FILE", self.drop_file)
        ctx.on(REMOVED, self.show_removals)

    async def announce_forever(self) -> None:
        """Keep this node findable as a holder, and what it holds findable too."""
        announced = False
        async with trio.open_nursery() as nursery:
            retry = ANNOUNCE_RETRY
            while True:
                try:
                    await self.ctx.dht.provide(HOLDERS_KEY)
                except MeshError as exc:  # not connected yet, or the DHT is busy
                    self.ctx.log.debug("holder announcement failed", extra={"error": str(exc)})
                    await trio.sleep(retry)  # each try walks the DHT: back off
                    retry = min(2 * retry, ANNOUNCE_EVERY)
                    continue
                retry = ANNOUNCE_RETRY
                if not announced:  # the first time: what it holds too
                    announced = True
                    nursery.start_soon(self._announce_held_forever)
                await trio.sleep(ANNOUNCE_EVERY)

    async def _announce_held_forever(self) -> None:
        while True:
            keys = [held_key(cid) for cid in await trio.to_thread.run_sync(self.held.cids)]
            keys += [file_key(cid) for cid in
                     await trio.to_thread.run_sync(self.manifests.cids)]
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(self._announce, key)
            self.ctx.log.info("announced what this node holds", extra={"keys": len(keys)})
            await trio.sleep(REANNOUNCE_HELD_EVERY)

    async def hold_piece(self, event: Event) -> bytes:
        head, newline, piece = event.data.partition(b"\n")
        cid_text, _, rest = head.partition(b" ")
        cid = _cid(cid_text)
        owner_text, _, file_text = rest.decode("ascii", "replace").partition(" ")
        owner = owner_text or event.peer
        if not newline or not 0 < len(piece) <= PIECE or not PEER_ID.fullmatch(owner) \
                or (file_text and not FILE_CID.fullmatch(file_text)):
            raise InvalidArgument(f"HOLD_PIECE takes a CID, optionally a space and the owner's "
                                  f"peer ID and another space and the file's CID, a newline "
                                  f"and a piece of 1 to {PIECE} bytes")
        try:
            check_piece(cid, piece)
            first = await trio.to_thread.run_sync(self._keep_for, piece, owner, cid,
                                                  file_text)
        except CidError as exc:
            raise InvalidArgument(f"piece refused: {exc}") from None
        except StorageFull as exc:
            raise InvalidArgument(str(exc)) from None
        if first:
            self.ctx.spawn(lambda: self._announce(held_key(file_text)),
                           name="storage file announce")
        elif not file_text:  # an uploader that names no file: the piece itself
            self.ctx.spawn(lambda: self._announce(piece_key(cid)), name="storage piece announce")
        return b""

    def _keep_for(self, piece: bytes, owner: str, cid: str, file: str) -> bool:
        """Keep ``piece`` for ``owner`` and record it under ``file`` (if named); whether
        the file is new to this node, to announce (blocks)."""
        new = self._keep(piece, owner)
        if not file:
            return False
        self.file_pieces.add(file, cid)  # which files it came for (leftovers.py)
        # A file is recorded (and announced) with a piece new to this node only:
        # naming endless files costs a sender a piece each, not nothing.
        return new and self.held.add(file)

    def take_off(self, owner: str, pieces: list[str]) -> list[str]:
        """Take ``owner`` off ``pieces``, deleting each that no owner is left for: those
        deleted (blocks)."""
        deleted = []
        for cid in pieces:
            name = digest_hex(cid)
            with self._pieces:
                if self.owners.remove(name, owner):
                    self.chunks.remove(name)
                    deleted.append(cid)
        return deleted

    def _keep(self, piece: bytes, owner: str) -> bool:
        """Keep ``piece`` for ``owner``; whether this node did not hold it before."""
        with self._pieces:
            name = chunk_hash(piece)
            held = self.chunks.has(name)
            if held and not self.owners.of(name):
                self.owners.add(name, LEGACY)  # kept before owners were recorded
            self.owners.add(self.chunks.put(piece), owner)
            return not held

    async def drop_file(self, event: Event) -> bytes:
        try:
            asked = json.loads(event.data)
            file = file_cid(str(asked["file"]).encode())
            pieces = [_cid(str(c).encode()) for c in asked["pieces"]]
        except (ValueError, KeyError, TypeError, InvalidArgument):
            raise InvalidArgument('DROP_FILE takes JSON {"file": CID, "pieces": [CIDs], '
                                  '"epoch", "signature"}') from None
        # Dropped without the owner's signature, a piece would look lost to an
        # auditor: the holder could not show why it went.
        tombstone = from_drop(self.ctx, event.peer, file, asked)
        if len(pieces) > MAX_HAVE:
            raise InvalidArgument(f"DROP_FILE takes at most {MAX_HAVE} pieces, not "
                                  f"{len(pieces)}")

        def drop() -> tuple[list[str], bool]:
            # The manifest first: a keeper that no longer has it stops auditing
            # and repairing the file before its pieces go.
            kept = self.manifests.get(file)
            try:
                mine = kept is not None and parse_manifest(kept).owner == event.peer
            except ManifestError:
                mine = False
            if mine:
                self.manifests.remove(file)
            dropped = self.take_off(event.peer, pieces)
            if dropped or mine:
                self.tombstones.add(file, tombstone)
            if dropped and not any(self.chunks.has(digest_hex(cid)) for cid in pieces):
                self.held.remove(file)  # no longer announced as held here
                self.file_pieces.remove(file)
            return dropped, mine

        dropped, manifest = await trio.to_thread.run_sync(drop)
        if dropped or manifest:
            self.ctx.log.info("dropped a file for its owner", extra={
                "file": file, "peer_id": event.peer, "pieces": len(dropped),
                "manifest": manifest})
        return json.dumps({"pieces": len(dropped), "manifest": manifest}).encode()

    async def show_removals(self, event: Event) -> bytes:
        return await trio.to_thread.run_sync(self.tombstones.answer, file_cid(event.data))

    async def fetch_piece(self, event: Event) -> bytes:
        cid_text, _, nonce = event.data.partition(b" ")
        cid = _cid(cid_text)
        if len(nonce) not in (0, FETCH_NONCE):
            raise InvalidArgument(f"FETCH_PIECE takes a CID and an optional {FETCH_NONCE}-byte "
                                  "nonce after a space")
        data = await trio.to_thread.run_sync(self.chunks.get, digest_hex(cid))
        if data is None:
            raise InvalidArgument(f"this node holds no piece {cid}")
        if nonce and event.peer != self.ctx.peer_id:
            self.ctx.spawn(lambda: self._report(event, len(data)),
                           name="storage delivery report")
        return data

    async def hold_manifest(self, event: Event) -> bytes:
        try:
            manifest = parse_manifest(event.data)
        except ManifestError as exc:
            raise InvalidArgument(f"manifest refused: {exc}") from None
        await trio.to_thread.run_sync(functools.partial(
            self.manifests.put, manifest.cid, event.data, epoch=self.ctx.ledger.clock_epoch()))
        self.ctx.spawn(lambda: self._announce(file_key(manifest.cid)),
                       name="storage manifest announce")
        return b""

    async def fetch_manifest(self, event: Event) -> bytes:
        cid = file_cid(event.data)
        data = await trio.to_thread.run_sync(self.manifests.get, cid)
        if data is None:
            raise InvalidArgument(f"this node holds no manifest of {cid}")
        return data

    async def have(self, event: Event) -> bytes:
        lines = event.data.split(b"\n") if event.data else []
        if len(lines) > MAX_HAVE:
            raise InvalidArgument(f"HAVE takes at most {MAX_HAVE} piece CIDs, not {len(lines)}")
        names = [digest_hex(_cid(line)) for line in lines]
        return await trio.to_thread.run_sync(
            lambda: bytes(self.chunks.has(name) for name in names))

    async def _announce(self, key: str) -> None:
        async with self._announcing:
            try:
                await self.ctx.dht.provide(key)
            except MeshError as exc:
                self.ctx.log.info("could not announce a held piece", extra={
                    "key": key, "error": str(exc)})


class FilePieces:
    """The pieces HOLD_PIECE named for each file, under ``root``/<file CID>, one piece
    CID per line, appended to: which of its pieces to drop when the file's owner turns
    out to have removed it while this node was away (leftovers.py)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()

    def add(self, file: str, piece: str) -> None:
        with self._lock:
            if piece not in self.pieces(file):
                self._root.mkdir(parents=True, exist_ok=True)
                with (self._root / file).open("a", encoding="ascii") as out:
                    out.write(piece + "\n")

    def pieces(self, file: str) -> list[str]:
        try:
            text = (self._root / file).read_text(encoding="ascii")
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        return [line for line in text.split() if _is_piece(line)]

    def files(self) -> list[str]:
        if not self._root.exists():
            return []
        return sorted(p.name for p in self._root.iterdir() if FILE_CID.fullmatch(p.name))

    def remove(self, file: str) -> None:
        with self._lock:
            (self._root / file).unlink(missing_ok=True)


class HeldFiles:
    """The files this node holds pieces of (as HOLD_PIECE named them), to announce again
    after a restart: ``path``, one file CID per line, appended to."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._cids: set[str] | None = None  # read on first use

    def cids(self) -> list[str]:
        with self._lock:
            return sorted(self._loaded())

    def add(self, cid: str) -> bool:
        """Record file ``cid``; whether it is new."""
        with self._lock:
            known = self._loaded()
            if cid in known:
                return False
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="ascii") as out:
                out.write(cid + "\n")
            known.add(cid)
            return True

    def remove(self, cid: str) -> None:
        with self._lock:
            known = self._loaded()
            if cid in known:
                known.discard(cid)
                write_atomically(self._path, "".join(f"{c}\n" for c in sorted(known)).encode())

    def _loaded(self) -> set[str]:
        if self._cids is None:
            try:
                lines = self._path.read_text(encoding="ascii", errors="replace").split()
            except FileNotFoundError:
                lines = []
            self._cids = {line for line in lines if FILE_CID.fullmatch(line)}
        return self._cids


class ManifestStore:
    """Manifests under ``root``/<file CID>: the first one kept for a CID stays; and
    in <file CID>.since, the epoch it was last given to this node."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def put(self, cid: str, data: bytes, *, epoch: int | None = None) -> None:
        path = self._root / cid
        if not path.exists():
            write_atomically(path, data)
        if epoch is not None:  # a removal signed before it does not concern this copy
            write_atomically(self._root / f"{cid}.since", str(epoch).encode("ascii"))

    def held_since(self, cid: str) -> int | None:
        """The epoch the manifest of ``cid`` was last given to this node, if recorded."""
        try:
            return int((self._root / f"{cid}.since").read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def get(self, cid: str) -> bytes | None:
        try:
            return (self._root / cid).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, cid: str) -> None:
        for name in (cid, f"{cid}.since"):
            with contextlib.suppress(FileNotFoundError):
                (self._root / name).unlink()

    def written_at(self, cid: str) -> float | None:
        """When the manifest of ``cid`` was kept here (seconds since the epoch)."""
        try:
            return (self._root / cid).stat().st_mtime
        except FileNotFoundError:
            return None

    def cids(self) -> list[str]:
        if not self._root.exists():
            return []
        return sorted(p.name for p in self._root.iterdir() if FILE_CID.fullmatch(p.name))

    def manifests(self) -> list[Manifest]:
        """Every manifest kept, read from disk (one damaged on disk is left out)."""
        kept = []
        for cid in self.cids():
            try:
                kept.append(parse_manifest(self.get(cid) or b""))
            except ManifestError:
                continue
        return kept


def file_cid(data: bytes) -> str:
    """The file CID in ``data``, checked (it names a file under the manifest store)."""
    text = data.decode("ascii", "replace")
    if not FILE_CID.fullmatch(text):
        raise InvalidArgument(f"{text[:80]!r} is not a file CID (bafy…/bafk…, from "
                              "`meshctl storage put`)")
    return text


def _is_piece(text: str) -> bool:
    try:
        digest_hex(text)
    except CidError:
        return False
    return True


def _cid(data: bytes) -> str:
    try:
        text = data.decode("ascii")
        digest_hex(text)
    except (UnicodeDecodeError, CidError) as exc:
        raise InvalidArgument(str(exc) if isinstance(exc, CidError)
                              else "a piece CID is ASCII text") from None
    return text
