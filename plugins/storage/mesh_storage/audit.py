"""Proofs of storage: holders are challenged for random segments of their pieces.

Each audit round (once per epoch, or every ``audit_every`` seconds when the
node's config says so), a file is audited by the validators the epoch's
beacon draws for it (drawn.py): a node that keeps the file's manifest audits
it if it was drawn, and otherwise asks those that were. An audit takes, for
each holder of the file, SAMPLES (3) random pieces it holds (all, if fewer)
and one random segment of each. The holder answers ``AUDIT`` with the segment
and its Merkle path; the auditor checks them against the root in the
manifest (merkle.py), which only a node holding that segment can pass. Each
piece challenged catches a holder missing a fraction p of its segments with
probability p, so N audits catch it with probability at least
1 - (1 - p)^(3N).

* A pass is paid for keeping: the holder reports ``KEEP`` (detail: the
  AUDIT request, which names the epoch and the piece), for its share of the
  KiB of the file's pieces it holds (split over the pieces challenged), and
  the auditor countersigns it once per epoch and piece (deliveries.py): a
  receipt in the ledger, counted in the tasks pool like any other.
* A failure (no answer, no piece, a segment or path that does not check) is
  recorded with its reason; STATUS shows each piece's last audit, and
  repair treats a piece whose last audit failed as missing.
* A failure the holder itself shows, of a piece it had been paid to keep,
  is a failure verdict in the ledger, confirmed by a second auditor: the
  holder is slashed (verdicts.py).
* A holder that says it no longer holds a piece it claimed (HAVE no, or
  an AUDIT refused as "holds no piece" or "dropped") has lost it, unless it
  shows the removal of the file signed by its owner (tombstones.py).
* Silence from a holder that has just said it holds the piece is not
  forgotten: the piece is challenged again each epoch, and left unproven in
  STRIKES epochs with no pass between it counts as a provable failure
  (containment.py).

``AUDIT``: a piece CID, a segment index, the segment size, the epoch, the
bytes of the file the holder is audited for, the file's CID, and the piece's
Merkle root (hex) and size in bytes as the auditor's manifest has them,
separated by spaces; the answer is a byte (the number of path hashes), the
path (32 bytes each, bottom first) and the segment. The holder first checks
the root and the size against its piece and refuses a wrong one, which
proves nothing: every number the auditor checks the answer with (root,
segment size, segment count) is then the piece's own, so a forged manifest
(from the owner, a keeper, or whoever sent it to a drawn auditor) cannot
have an honest holder slashed. A holder that refuses this way escapes no
more than one that stays silent (neither is slashed; both go unpaid and are
repaired around). Requests without the root and size, or without the file,
from older nodes are still answered.
"""

from __future__ import annotations

import dataclasses
import random

import trio

from mesh_storage import merkle, tombstones
from mesh_storage.containment import STRIKES, Contained
from mesh_storage.deliveries import KEEP, Deliveries
from mesh_storage.drawn import DrawnAuditors
from mesh_storage.erasure import piece_size
from mesh_storage.files import PIECE_TIMEOUT, Audit, Files
from mesh_storage.holding import MAX_HAVE, Holding
from mesh_storage.manifest import FILE_CID, PIECE, Manifest, ManifestError, parse_manifest
from mesh_storage.pieces import CidError, digest_hex
from mesh_storage.promises import report_from_json
from mesh_storage.tombstones import REMOVED, Tombstone
from mesh_storage.verdicts import Verdicts, epoch_of, piece_of
from meshd.plugin import (
    Context,
    Event,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    PeerError,
    TaskReport,
    Unavailable,
)

NO_PIECE = "holds no piece"  # the holder's own refusal (answer, below)
DROPPED = "at its owner's request"  # ... and the one it shows a removal for (tombstones.py)
# The holder's refusal of a manifest that is not the file's: the auditor's fault, no strike.
NOT_THIS_PIECE = "is not this piece's"
RECHECKS_AT_ONCE = 8  # holders whose contained pieces are challenged again at once
POLL = 1.0  # seconds between looks at the epoch clock
# Pieces of each holder challenged per audit: a holder that lost a fraction p of
# its pieces passes an audit with probability (1 - p)^3 instead of 1 - p
# (with one, a test that had to catch 1 lost piece in 9 took 139 s on CI).
SAMPLES = 3
HASH = 32


class AuditError(Exception):
    """An answer that does not prove the segment; the message says why."""


def answer(piece: bytes, index: int, segment: int) -> bytes:
    """The holder's answer: path length, path, segment."""
    path = merkle.audit_path(piece, index, segment)
    return bytes([len(path)]) + b"".join(path) + merkle.segments(piece, segment)[index]


def check(answer_: bytes, root: bytes, index: int, count: int) -> None:
    """AuditError unless ``answer_`` proves segment ``index`` of ``count`` under ``root``."""
    if not answer_:
        raise AuditError("the answer is empty")
    hashes = answer_[0]
    path_end = 1 + hashes * HASH
    if hashes > merkle.MAX_PATH or len(answer_) < path_end:
        raise AuditError(f"the answer is cut short: {hashes} path hashes announced, "
                         f"{max(0, len(answer_) - 1) // HASH} sent")
    path = [answer_[1 + i * HASH:1 + (i + 1) * HASH] for i in range(hashes)]
    if not merkle.verify(root, index, count, answer_[path_end:], path):
        raise AuditError(f"segment {index} and its Merkle path do not lead to the piece's root")


class Auditor:
    def __init__(self, ctx: Context, files: Files, holding: Holding, every: int) -> None:
        self.ctx = ctx
        self.files = files
        self.holding = holding
        self.every = every  # seconds; 0: once per epoch
        self.last = files.audits  # piece CID -> its last audit by this node (STATUS shows it)
        self.containment = files.containment
        self.verdicts = Verdicts(ctx, files, self.containment, self.audit_piece)
        self.drawn = DrawnAuditors(ctx, holding, self.verdicts, self.audit_file)
        self.keeps = Deliveries(ctx, KEEP, accepted=self._countersigned)
        self._paid: set[tuple[int, str, str]] = set()  # (epoch, holder, piece) countersigned
        ctx.on("AUDIT", self.answer)

    # --- the holder's side --------------------------------------------------

    async def answer(self, event: Event) -> bytes:
        try:
            cid, index, segment, _epoch, held, file, root, size = _audit_request(event.data)
        except (UnicodeDecodeError, ValueError, CidError):
            raise InvalidArgument("AUDIT takes a piece CID, a segment index, a segment size, "
                                  "an epoch, the bytes held, the file CID, and the piece's "
                                  "Merkle root and size, separated by spaces") from None
        piece = await trio.to_thread.run_sync(self.files.chunks.get, digest_hex(cid))
        removed = piece is None and bool(file) and bool(await trio.to_thread.run_sync(
            self.holding.tombstones.get, file))
        if removed:  # not lost: its owner removed the file
            raise InvalidArgument(f"this node dropped piece {cid} {DROPPED} (`{REMOVED}` "
                                  "shows the removal)")
        if piece is None:
            raise InvalidArgument(f"this node {NO_PIECE} {cid}")
        if root and (size != len(piece)
                     or root != await trio.to_thread.run_sync(merkle.root, piece, segment)):
            raise InvalidArgument(f"the auditor's Merkle root or size of piece {cid} "
                                  f"{NOT_THIS_PIECE}: its manifest is not the file's")
        try:
            proof = await trio.to_thread.run_sync(answer, piece, index, segment)
        except merkle.ProofError as exc:
            raise InvalidArgument(str(exc)) from None
        if event.peer != self.ctx.peer_id:
            self.ctx.spawn(lambda: self.keeps.report(event, held), name="storage keep report")
        if file:  # someone keeps the file: not a leftover (leftovers.py)
            self.holding.audited[file] = trio.current_time()
        return proof

    # --- the auditor's side -------------------------------------------------

    async def run_forever(self) -> None:
        last_epoch = -1
        while True:
            epoch = self.ctx.ledger.clock_epoch()
            if self.every or epoch != last_epoch:
                last_epoch = epoch
                await self.round(epoch)
            await trio.sleep(self.every or POLL)

    async def round(self, epoch: int) -> None:
        """The pieces this node contains, challenged again; then the files it keeps a
        manifest of: audited here where the beacon drew this node (or where no beacon
        is known yet), else by the validators it drew."""
        await self.recheck(epoch)
        for manifest in await trio.to_thread.run_sync(self.holding.manifests.manifests):
            drawn = self.drawn.drawn(manifest.cid, epoch)
            try:
                if drawn is None or self.ctx.peer_id in drawn:
                    await self.audit_file(manifest, epoch)
                if drawn:
                    await self.drawn.ask(manifest, epoch, drawn)
            except MeshError as exc:
                self.ctx.log.info("audit round failed", extra={"file": manifest.cid,
                                                               "error": str(exc)})

    def _countersigned(self, report: TaskReport) -> None:
        self.verdicts.kept(report)
        self.drawn.countersigned(report)

    async def audit_file(self, manifest: Manifest, epoch: int) -> None:
        """SAMPLES random pieces of each holder of the file, one random segment of each."""
        pieces = [(s, i, cid) for s, stripe in enumerate(manifest.stripes)
                  for i, cid in enumerate(stripe.pieces)]
        held: dict[str, list[int]] = {}  # holder -> indices into pieces
        answered: set[str] = set()  # whoever answered this HAVE, yes or no
        for at, peers in enumerate(await self.files.who_has([c for _, _, c in pieces],
                                                            answered=answered)):
            for peer in peers:
                held.setdefault(peer, []).append(at)

        async def one(holder: str, indices: list[int]) -> None:
            # Each piece once: a manifest may name one piece many times, and a
            # holder is paid for the bytes it keeps, not for how often they are named.
            distinct = {pieces[j][2]: j for j in indices}
            held_bytes = sum(piece_size(manifest.stripes[pieces[j][0]].length, manifest.k)
                             for j in distinct.values())
            picked = random.sample(sorted(distinct), min(SAMPLES, len(distinct)))
            # The pay for keeping the file, split over the pieces challenged.
            shares = [held_bytes // len(picked)] * len(picked)
            shares[0] += held_bytes - sum(shares)
            for cid, share in zip(picked, shares, strict=True):
                # It said HAVE yes a moment ago (who_has, above).
                result = await self.audit_piece(manifest, holder, cid, epoch, share,
                                                claimed=True)
                if result.provable:
                    await self._judge(manifest.cid, result, cid)
                if not result.ok:  # one failure is the round's finding; silence, no more asks
                    return

        async def denied(holder: str, promise: TaskReport, cids: list[str]) -> None:
            for cid in cids:
                result = await self.denial(manifest, holder, cid, epoch, promise)
                if result is not None and result.provable:
                    return  # one finding per round, as above

        async with trio.open_nursery() as nursery:
            for holder, indices in held.items():
                if holder != self.ctx.peer_id:
                    nursery.start_soon(one, holder, indices)
            for holder, (promise, cids) in self._denials(manifest, held, pieces,
                                                         answered).items():
                nursery.start_soon(denied, holder, promise, cids)

    async def recheck(self, epoch: int) -> None:
        """The pieces this node contains, each challenged again once this epoch, if
        its holder still says it holds it (containment.py): one HAVE per holder."""
        by_holder: dict[str, list[Contained]] = {}
        for entry in self.containment.due(epoch):
            by_holder.setdefault(entry.holder, []).append(entry)
        limiter = trio.CapacityLimiter(RECHECKS_AT_ONCE)

        async def again(holder: str, entries: list[Contained]) -> None:
            async with limiter:
                entries = entries[:MAX_HAVE]
                try:
                    have = await self.ctx.request(holder, "HAVE", "\n".join(
                        e.piece for e in entries).encode(), timeout=PIECE_TIMEOUT)
                except MeshError:
                    return  # offline: the round neither counts nor releases
                for entry, held in zip(entries, have.ljust(len(entries), b"\0"),
                                       strict=False):
                    if held != 1:  # it denies the piece it claimed: lost, unless removed
                        manifest = await self._manifest(entry.file)
                        if manifest is not None:
                            await self.denial(manifest, holder, entry.piece, epoch)
                        continue
                    self.files.saw(holder, entry.piece)
                    result = await self.audit(entry.file, holder, entry.piece,
                                              bytes.fromhex(entry.root), entry.size,
                                              entry.segment, epoch, entry.held_bytes,
                                              claimed=True)
                    if result.provable:
                        await self._judge(entry.file, result, entry.piece)

        async with trio.open_nursery() as nursery:
            for holder, entries in by_holder.items():
                nursery.start_soon(again, holder, entries)

    async def _judge(self, file: str, result: Audit, cid: str,
                     promise: TaskReport | None = None) -> None:
        """A provable failure of piece ``cid``: this node's verdict (on ``promise``, or
        the holder's latest), and a confirmation it asks for, or (contained to confirm
        another node's) its verdict on that claim."""
        contained = self.containment.get(result.holder, cid)
        if contained is not None and contained.report is not None:
            verdicts = await self.verdicts.confirmed(report_from_json(contained.report),
                                                     result.holder, cid, result.reason)
        else:
            verdicts = await self.verdicts.failed(file, result, cid, promise)
        self.containment.release(result.holder, cid)
        self.last[cid] = dataclasses.replace(result, verdicts=verdicts)

    def _denials(self, manifest: Manifest, held: dict[str, list[int]],
                 pieces: list[tuple[int, int, str]], answered: set[str],
                 ) -> dict[str, tuple[TaskReport, list[str]]]:
        """The pieces of ``manifest``'s file that holders it holds to a promise denied in
        the HAVE just asked (``answered``: who answered it), with the promise: pieces
        they said they hold lately (to this node, in the last 48 h) or named in the
        promise (first: a confirmer can check that one itself), and now say they do
        not. A holder that did not answer this HAVE is offline, not denying (though it
        may have answered another, for a repair, meanwhile)."""
        denials: dict[str, tuple[TaskReport, list[str]]] = {}
        for holder in sorted(answered):
            promise = self.verdicts.claims.promises.get((holder, manifest.cid))
            if promise is None or holder == self.ctx.peer_id:
                continue
            now = {pieces[j][2] for j in held.get(holder, [])}
            named = piece_of(promise)
            claimed = dict.fromkeys([named] if any(c == named for _, _, c in pieces) else [])
            claimed.update(dict.fromkeys(c for _, _, c in pieces
                                         if self.files.saw_holding(holder, c)))
            gone = [c for c in claimed
                    if c not in now and (holder, c) not in self.verdicts.judged]
            if gone:
                denials[holder] = (promise, gone)
        return denials

    async def denial(self, manifest: Manifest, holder: str, cid: str, epoch: int,
                     promise: TaskReport | None = None) -> Audit | None:
        """``holder`` says it does not hold piece ``cid`` of ``manifest``'s file, which
        it claimed: lost, and judged on ``promise`` (default: its latest here), unless
        it shows a removal of the file signed by its owner since that promise
        (tombstones.py). None when it cannot be asked or showed the removal."""
        promise = promise or self.verdicts.claims.promises.get((holder, manifest.cid))
        try:
            excuse = await self._excuse(holder, manifest.cid, manifest.owner, promise)
        except MeshError:
            return None  # offline: asked again next round, while its claim counts
        if excuse is not None:
            self.files.forget(holder, cid)
            self.ctx.log.info("a holder dropped a file at its owner's request", extra={
                "peer_id": holder, "file": manifest.cid, "piece": cid, "why": excuse.why})
            await self._missed_removal(manifest.cid, excuse)
            return None
        result = Audit(epoch, holder, False, (
            f"said it holds no piece {cid}, which it had claimed, and shows no removal of "
            f"the file signed by its owner"), trio.current_time(), provable=True)
        self.ctx.log.warning("a holder denied a piece it had claimed", extra={
            "peer_id": holder, "piece": cid, "file": manifest.cid})
        self.files.reputation.record(holder, passed=False)
        self.last[cid] = result
        await self._judge(manifest.cid, result, cid, promise)
        return self.last[cid]

    async def _gone(self, file: str, holder: str, reason: str, owner: str,
                    ) -> tuple[str, bool]:
        """The holder refused an audit saying the piece is gone: the reason, and whether
        that proves it lost (no removal signed by the file's ``owner`` shown; "": the
        owner this node's manifest of the file names)."""
        if not owner:
            manifest = await self._manifest(file)
            owner = manifest.owner if manifest is not None else ""
        if not owner:  # no owner to check a removal against: only its word counts
            return reason, NO_PIECE in reason
        try:
            excuse = await self._excuse(holder, file, owner,
                                        self.verdicts.claims.promises.get((holder, file)))
        except MeshError as exc:
            return f"{reason} (its removal could not be asked: {exc})", False
        if excuse is not None:
            await self._missed_removal(file, excuse)
            return f"{reason}; {excuse.why}", False
        return f"{reason}, and shows no removal of the file signed by its owner", True

    async def _excuse(self, holder: str, file: str, owner: str,
                      promise: TaskReport | None) -> Tombstone | None:
        """The removal of ``file`` signed by ``owner`` that ``holder`` shows, if it is
        dated at or after ``promise`` (any, without one); MeshError if it cannot be
        asked (tombstones.excuse)."""
        return await tombstones.excuse(self.ctx, holder, file, owner,
                                       epoch_of(promise) if promise else -1, PIECE_TIMEOUT)

    async def _missed_removal(self, file: str, removal: Tombstone) -> None:
        """A holder showed ``removal``, signed by the file's owner: this keeper missed the
        `rm`, so it drops its copy of the manifest and stops auditing and repairing the
        file (repairs would put a removed file back), unless it was given the manifest
        in the removal's epoch or after (the file was put again). The owner's node
        knows its own removals; pieces this node holds go by the owner's sweep, or its
        own (leftovers.py)."""
        def drop() -> bool:
            raw = self.holding.manifests.get(file)
            try:
                owner = parse_manifest(raw).owner if raw is not None else ""
            except ManifestError:
                return False
            if not tombstones.ends_copy(removal, owner, self.holding.manifests.held_since(file),
                                        self.ctx.peer_id):
                return False
            self.holding.manifests.remove(file)
            return True

        if await trio.to_thread.run_sync(drop):
            self.ctx.log.info("dropped the manifest of a file its owner removed, as a holder "
                              "showed", extra={"file": file, "why": removal.why})

    async def _manifest(self, file: str) -> Manifest | None:
        raw = await trio.to_thread.run_sync(self.holding.manifests.get, file)
        try:
            return parse_manifest(raw) if raw is not None else None
        except ManifestError:
            return None

    async def audit_piece(self, manifest: Manifest, holder: str, cid: str, epoch: int,
                          held_bytes: int = 0, *, claimed: bool = False) -> Audit:
        """Challenge ``holder`` for a random segment of piece ``cid`` of ``manifest``;
        ``held_bytes`` (what a pass is paid for) defaults to the piece's size."""
        stripe, index = next((s, s.pieces.index(cid)) for s in manifest.stripes
                             if cid in s.pieces)
        size = piece_size(stripe.length, manifest.k)
        return await self.audit(manifest.cid, holder, cid, bytes.fromhex(stripe.roots[index]),
                                size, manifest.segment, epoch, held_bytes or size,
                                claimed=claimed, owner=manifest.owner)

    async def audit(self, file: str, holder: str, cid: str, root: bytes, size: int,
                    segment: int, epoch: int, held_bytes: int, *, claimed: bool = False,
                    owner: str = "") -> Audit:
        """Challenge ``holder`` for a random segment of piece ``cid`` of ``file``;
        record the result. ``claimed``: the holder said HAVE yes for it in this round,
        so leaving it unproven is a strike (containment.py). ``owner``: the file's,
        whose signed removal alone excuses a piece gone ("": as this node's manifest
        of the file says)."""
        count = max(1, -(-size // segment))
        index = random.randrange(count)
        ask = f"{cid} {index} {segment} {epoch} {held_bytes} {file} {root.hex()} {size}".encode()
        expected = self.keeps.expect(holder, ask)
        try:
            got = await self.ctx.request(holder, "AUDIT", ask, timeout=PIECE_TIMEOUT)
            check(got, root, index, count)
            result = Audit(epoch, holder, True, at=trio.current_time())
        except (MeshError, AuditError) as exc:
            # Silence (a timeout, no connection) proves nothing; a proof that
            # does not check does, and so does a refusal saying the piece is gone
            # unless the holder shows the owner's signed removal of the file.
            provable = isinstance(exc, AuditError)
            reason = str(exc)
            if isinstance(exc, PeerError) and (NO_PIECE in reason or DROPPED in reason):
                reason, provable = await self._gone(file, holder, reason, owner)
            result = Audit(epoch, holder, False, reason, trio.current_time(), provable)
            self.ctx.log.warning("a holder failed an audit", extra={
                "peer_id": holder, "piece": cid, "segment": index, "error": str(exc)})
            # Unproven by a holder that answers and claims the piece (silence within
            # the deadline, or a refusal that proves nothing): a strike. Not when the
            # transport failed (no connection, a stream that broke or failed to
            # negotiate: as Storj counts them, offline, which under load befalls
            # honest holders too), nor when it refused this node's Merkle root and
            # sends the piece, which then says whose root is wrong.
            if claimed and not provable and not isinstance(exc, FailedPrecondition | Unavailable):
                entry = Contained(holder, cid, file, root.hex(), size, segment, held_bytes)
                shown = await self._shown(entry, result) if NOT_THIS_PIECE in str(exc) else None
                result = self._strike(entry, result) if shown is None else shown
        if result.ok:
            self.containment.release(holder, cid)
        if result.ok or result.provable:  # silence proves nothing either way, until judged
            self.files.reputation.record(holder, passed=result.ok)
        first_pass = result.ok and (epoch, holder, cid) not in self._paid
        if first_pass:  # paid once per epoch and piece, however often audited
            self._paid.add((epoch, holder, cid))
            self._paid = {p for p in self._paid if p[0] >= epoch - 1}
        self.keeps.answered(holder, ask, expected, held_bytes if first_pass else 0)
        self.last[cid] = result
        return result

    async def _shown(self, entry: Contained, result: Audit) -> Audit | None:
        """The holder refused this node's Merkle root of its piece: the piece, if it sends
        it, says whose root is wrong, and is no loss either way; None if it does not."""
        piece = await self.files.fetch_from(entry.holder, entry.piece)
        if piece is None:
            return None
        self.containment.release(entry.holder, entry.piece)
        if len(piece) == entry.size and bytes.fromhex(entry.root) == \
                await trio.to_thread.run_sync(merkle.root, piece, entry.segment):
            self.ctx.log.warning("a holder refused the true Merkle root of a piece it holds",
                                 extra={"peer_id": entry.holder, "piece": entry.piece})
            return dataclasses.replace(result, reason=(
                f"refused the piece's true Merkle root, and sent the piece: {result.reason}"))
        self.ctx.log.warning("this node's manifest has a wrong Merkle root", extra={
            "file": entry.file, "piece": entry.piece})
        return dataclasses.replace(result, reason=(
            f"{result.reason}; the piece it sent shows this node's manifest is not the file's"))

    def _strike(self, entry: Contained, result: Audit) -> Audit:
        contained = self.containment.strike(entry, result.epoch, result.reason)
        if contained.strikes < STRIKES:
            return dataclasses.replace(result, reason=(
                f"{result.reason} (unproven in {contained.strikes} of {STRIKES} epochs; it "
                "said it holds the piece)"))
        self.ctx.log.warning("a holder left a piece it claims unproven too long", extra={
            "peer_id": entry.holder, "piece": entry.piece, "epochs": contained.strikes})
        return dataclasses.replace(result, provable=True, reason=(
            f"said it holds the piece, then left it unproven in {contained.strikes} epochs "
            f"with no pass between (last: {result.reason})"))


def _audit_request(data: bytes) -> tuple[str, int, int, int, int, str, bytes, int]:
    fields = data.decode("ascii").split(" ")
    if len(fields) in (5, 6):  # from nodes before the file, then the root, was named
        fields += ["", "", "0"][len(fields) - 5:]
    cid, index, segment, epoch, held, file, root, size = fields
    digest_hex(cid)
    if (file and not FILE_CID.fullmatch(file)) or (root and not file):
        raise ValueError("not a file CID")
    if root and (len(root) != 2 * HASH or root != root.lower() or not 0 < int(size) <= PIECE):
        raise ValueError("not a Merkle root and piece size")
    numbers = int(index), int(segment), int(epoch), int(held)
    if not 0 < numbers[1] <= PIECE or min(numbers) < 0 or numbers[3] < 1:
        raise ValueError("out of range")
    return cid, *numbers, file, bytes.fromhex(root), int(size)
