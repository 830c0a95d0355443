"""Audits by validators the beacon draws: a file's keepers ask them, and they hand back
the holders' promises.

Each epoch, a node that keeps a file's manifest works out the file's auditors
(assignment.py). If it is one, it audits the file itself (audit.py);
otherwise it asks each of them with ``AUDIT_FILE``, handing over the
manifest and the holders' promises it knows (verdicts.py). A drawn auditor
checks that the beacon drew it for that file and epoch, audits the file
once, and countersigns the holders' KEEP reports. Each promise it
countersigns it hands back to the keepers that asked (``PROMISE``), so that
whichever validator is drawn next can judge a holder that breaks it. Who
audits whom is decided by the beacon, not by the file's owner or keepers.

While no beacon is known for the epoch (the ledger is behind, or the
network is in its first epochs), keepers audit their files themselves, as
they did before auditors were drawn.

``AUDIT_FILE``: a JSON header line ``{"epoch": E, "promises": [reports]}``
(reports as promises.report_json gives them), a newline, the manifest. The
answer is JSON ``{"auditing": true}``, or ``false`` when this node audits
that file this epoch already; refused, saying why, when the beacon did not
draw this node or the epoch is not the current one.
``PROMISE``: a KEEP report as JSON (promises.report_json), from a drawn
auditor of the file, for a file this node keeps; the answer is empty.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable

import trio

from mesh_storage.assignment import BEACON_LAG, auditors
from mesh_storage.deliveries import KEEP
from mesh_storage.files import PIECE_TIMEOUT
from mesh_storage.holding import Holding
from mesh_storage.manifest import Manifest, ManifestError, parse_manifest
from mesh_storage.promises import report_from_json, report_json
from mesh_storage.verdicts import Verdicts, epoch_of, file_of
from meshd.plugin import Context, Event, InvalidArgument, MeshError, TaskReport

AUDIT_FILE, PROMISE = "AUDIT_FILE", "PROMISE"
FILES_KEPT = 4096  # files audited for others, with the keepers that asked: newest kept
MAX_PROMISES = 128  # taken from one AUDIT_FILE (a holder's is ~1.5 KB; n is at most 64)
MAX_REQUEST = (1 << 20) - 2048  # what one AUDIT_FILE may carry (meshd's request limit)
AUDITS_AT_ONCE = 4  # drawn audits run at once; more AUDIT_FILEs are refused as busy


class DrawnAuditors:
    def __init__(self, ctx: Context, holding: Holding, verdicts: Verdicts,
                 audit_file: Callable[[Manifest, int], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.holding = holding
        self.verdicts = verdicts
        self._audit_file = audit_file
        self.audited: set[tuple[str, int]] = set()  # (file, epoch) audited for keepers
        # file -> the keepers that asked this node to audit it, to hand promises back to
        self.askers: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        self._auditing = trio.CapacityLimiter(AUDITS_AT_ONCE)
        # (epoch, file -> its holders' promises, newest last): one pass over the
        # promises an epoch, however many files this node keeps
        self._by_file: tuple[int, dict[str, list[TaskReport]]] = (-1, {})
        ctx.on(AUDIT_FILE, self.asked)
        ctx.on(PROMISE, self.promised)

    def drawn(self, file: str, epoch: int) -> list[str] | None:
        """The validators drawn to audit ``file`` in ``epoch``; None while no beacon is
        known for it here."""
        if epoch < BEACON_LAG:
            return None
        beacon = self.ctx.ledger.beacon(epoch - BEACON_LAG)
        validators = self.ctx.ledger.validators(epoch - BEACON_LAG)
        if beacon is None or not validators:
            return None
        return auditors(beacon, file, validators)

    async def ask(self, manifest: Manifest, epoch: int, drawn: list[str]) -> None:
        """As a keeper: have the drawn auditors (other than this node) audit ``manifest``."""
        raw = manifest.encode()
        promises: list[dict[str, object]] = []
        room = MAX_REQUEST - len(raw) - 64
        for report in reversed(self._promises_of(manifest.cid, epoch)[-MAX_PROMISES:]):
            promise = report_json(report)
            room -= len(json.dumps(promise)) + 2
            if room < 0:
                break
            promises.append(promise)
        data = json.dumps({"epoch": epoch, "promises": promises}).encode() + b"\n" + raw

        async def one(auditor: str) -> None:
            try:
                await self.ctx.request(auditor, AUDIT_FILE, data, timeout=PIECE_TIMEOUT)
            except MeshError as exc:
                self.ctx.log.info("a drawn auditor did not take a file", extra={
                    "peer_id": auditor, "file": manifest.cid, "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for auditor in drawn:
                if auditor != self.ctx.peer_id:
                    nursery.start_soon(one, auditor)

    def _promises_of(self, file: str, epoch: int) -> list[TaskReport]:
        at, grouped = self._by_file
        if at != epoch:
            grouped = {}
            for (_, of), report in self.verdicts.claims.promises.items():
                grouped.setdefault(of, []).append(report)
            self._by_file = (epoch, grouped)
        return grouped.get(file, [])

    async def asked(self, event: Event) -> bytes:
        """As a drawn auditor: audit the file a keeper names, once this epoch."""
        head, newline, raw = event.data.partition(b"\n")
        try:
            header = json.loads(head)
            epoch = header["epoch"]
            offered = [report_from_json(r) for r in header["promises"][:MAX_PROMISES]]
            manifest = parse_manifest(raw)
            if not newline or not isinstance(epoch, int) or isinstance(epoch, bool):
                raise TypeError("epoch")
        except (ValueError, KeyError, TypeError, ManifestError) as exc:
            raise InvalidArgument(f"{AUDIT_FILE} takes a JSON header line {{epoch, promises}} "
                                  f"and a manifest ({exc})") from None
        now = self.ctx.ledger.clock_epoch()
        if not now - 1 <= epoch <= now:
            raise InvalidArgument(f"epoch {epoch} is not this one ({now})")
        drawn = self.drawn(manifest.cid, epoch)
        if drawn is None:
            raise InvalidArgument(f"this node knows no beacon for epoch {epoch} yet (epoch "
                                  f"{epoch - BEACON_LAG} is not final here)")
        if self.ctx.peer_id not in drawn:
            raise InvalidArgument(f"the beacon did not draw this node to audit "
                                  f"{manifest.cid} in epoch {epoch}")
        for report in offered:
            try:
                self._offer(report, manifest.cid)
            except InvalidArgument as exc:
                self.ctx.log.info("a promise handed over was refused", extra={
                    "peer_id": event.peer, "holder": report.provider, "error": str(exc)})
        self.askers.setdefault(manifest.cid, set()).add(event.peer)
        self.askers.move_to_end(manifest.cid)
        while len(self.askers) > FILES_KEPT:
            self.askers.popitem(last=False)
        if (manifest.cid, epoch) in self.audited:
            return b'{"auditing": false}'
        if self._auditing.available_tokens == 0:
            raise InvalidArgument(f"busy: {AUDITS_AT_ONCE} drawn audits are running")
        self.audited = {a for a in self.audited if a[1] >= now - 1} | {(manifest.cid, epoch)}
        self.ctx.spawn(lambda: self._audit(manifest, epoch), name="storage drawn audit")
        return b'{"auditing": true}'

    async def _audit(self, manifest: Manifest, epoch: int) -> None:
        async with self._auditing:
            try:
                await self._audit_file(manifest, epoch)
            except MeshError as exc:
                self.ctx.log.info("a drawn audit failed", extra={"file": manifest.cid,
                                                                 "error": str(exc)})

    def countersigned(self, report: TaskReport) -> None:
        """As a drawn auditor: hand a promise just countersigned to the file's keepers that
        asked, so that the next auditor drawn can hold the holder to it."""
        try:
            file = file_of(report)
        except (IndexError, UnicodeDecodeError):
            return
        data = json.dumps(report_json(report)).encode()
        for keeper in self.askers.get(file, ()):
            async def hand(keeper: str = keeper) -> None:
                try:
                    await self.ctx.request(keeper, PROMISE, data, timeout=PIECE_TIMEOUT)
                except MeshError as exc:
                    self.ctx.log.info("a keeper did not take a promise", extra={
                        "peer_id": keeper, "file": file, "error": str(exc)})
            self.ctx.spawn(hand, name="storage promise handed back")

    async def promised(self, event: Event) -> bytes:
        """As a keeper: a promise a drawn auditor of one of this node's files countersigned."""
        try:
            report = report_from_json(json.loads(event.data))
            file, epoch = file_of(report), epoch_of(report)
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            raise InvalidArgument(f"{PROMISE} takes a KEEP report as JSON") from None
        if not await trio.to_thread.run_sync(self.holding.manifests.get, file):
            raise InvalidArgument(f"this node keeps no manifest of {file}")
        if event.peer not in (self.drawn(file, epoch) or ()):
            raise InvalidArgument(f"{event.peer} was not drawn to audit {file} in epoch "
                                  f"{epoch}")
        if self._offer(report, file):  # a replayed promise is no second pass
            self.verdicts.files.reputation.record(report.provider, passed=True)
        return b""

    def _offer(self, report: TaskReport, file: str) -> bool:
        """Keep a promise another node countersigned if it is the holder's own word, of
        ``file``, and newer than the one this node holds it to (whether it was);
        InvalidArgument if it is not the holder's word of that file."""
        try:
            if report.kind != KEEP or file_of(report) != file:
                raise InvalidArgument(f"not a KEEP report of {file}")
        except (IndexError, UnicodeDecodeError):
            raise InvalidArgument("not a KEEP report: its detail is no AUDIT") from None
        self.ctx.check_report(report)  # the holder's signature over exactly this
        return self.verdicts.offer(report)
