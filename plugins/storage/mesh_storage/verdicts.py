"""Failed audits as ledger evidence: a holder that said it keeps a piece and
then shows it does not is slashed.

A KEEP receipt (audit.py) rests on the holder's signed claim, whose detail
is the AUDIT request it passed: it names the file and the bytes of it the
holder keeps, so it is the holder's promise to keep its pieces of that
file. The auditor keeps the last such report per (holder, file)
(:meth:`Verdicts.kept`). When a later audit of a piece of that file fails
the way only a holder that lost it fails (it sent a segment or Merkle path
that does not check, or says it no longer holds a piece it claimed and shows
no removal signed by the file's owner, tombstones.py), the auditor records
a failure verdict on that claim (``ctx.report_failure``) and asks the other
nodes that keep the file's manifest, one after another, to
``CONFIRM_AUDIT``: each audits the holder for that piece itself, if the
holder claimed it (HAVE, or the signed claim names it), and, if it fails
too, records its own verdict. A node judges a (holder, piece) once,
whether by its own audit or a confirmation, so a lost piece costs one slash,
not one per keeper.
Verdicts of two eligible nodes are the failed-task offence (docs/ledger.md
§7): the holder loses 10 % of its stake, once per claim; a holder that
passes again later makes a new promise, which a new failure breaks.

Silence is evidence only with time: a holder that does not answer may be
offline or slow, so one unproven challenge is not a verdict. A holder that
says it holds a piece and leaves it unproven in STRIKES epochs with no pass between
(containment.py) has failed as provably, and is judged the same way; a
keeper asked to confirm such a failure contains the holder itself and
writes its verdict after its own STRIKES epochs. A holder never audited
since it took its pieces of a file has made no promise to judge yet.
Promises are kept on disk (promises.py), so an auditor that restarted still
holds each holder to its last one.

``CONFIRM_AUDIT``: JSON ``{"piece": CID, "report": {provider, kind, detail,
units, claim, signature}}``, bytes in hex; the answer is the confirmer's
verdict entry hash (hex), or an error saying why not (the holder passed, or
left the piece unproven here too and is now contained here).
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections.abc import Awaitable, Callable

import trio

from mesh_storage.containment import STRIKES, Containment
from mesh_storage.deliveries import KEEP
from mesh_storage.files import PIECE_TIMEOUT, Audit, Files
from mesh_storage.holding import file_cid, file_key
from mesh_storage.manifest import ManifestError, parse_manifest
from mesh_storage.pieces import CidError, digest_hex
from mesh_storage.promises import PromiseStore, report_from_json, report_json
from meshd.plugin import Context, Event, InvalidArgument, MeshError, TaskReport

CONFIRM = "CONFIRM_AUDIT"
CONFIRM_TIMEOUT = 2 * PIECE_TIMEOUT + 10  # the confirmer's own audit, then its verdict
CONFIRMERS = 3  # keepers of the manifest asked, one after another, until one confirms
CLAIMS_KEPT = 65536  # (holder, file) claims kept, and (holder, piece) judged; oldest go first
CONFIRMS_AT_ONCE = 4  # CONFIRM_AUDITs judged at once; more are refused as busy
MAX_KEEPERS = 20

# (manifest, holder, piece CID, epoch, claimed=) -> the audit's result (audit.py)
AuditPiece = Callable[..., Awaitable[Audit]]


class Verdicts:
    def __init__(self, ctx: Context, files: Files, containment: Containment,
                 audit: AuditPiece) -> None:
        self.ctx = ctx
        self.files = files
        self.containment = containment
        self._audit = audit
        self.claims = PromiseStore(ctx.data_dir / "promises.jsonl", CLAIMS_KEPT)
        # (holder, piece) this node has judged failed, by its own audit or a
        # confirmation: one lost piece costs its holder one slash, not one per keeper.
        self.judged: collections.OrderedDict[tuple[str, str], None] = \
            collections.OrderedDict()
        self._confirming = trio.CapacityLimiter(CONFIRMS_AT_ONCE)
        ctx.on(CONFIRM, self.confirm, timeout=CONFIRM_TIMEOUT + 5)

    def offer(self, report: TaskReport) -> bool:
        """A KEEP report another auditor countersigned (drawn.py), checked as the
        holder's: its promise if no newer one is known (whether it is now)."""
        key = (report.provider, file_of(report))
        known = self.claims.promises.get(key)
        if known is not None and epoch_of(known) >= epoch_of(report):
            return False
        self.claims.add(key, report)
        return True

    def kept(self, report: TaskReport) -> None:
        """A KEEP report this node countersigned: the holder's latest promise."""
        try:
            key = (report.provider, file_of(report))
        except (IndexError, UnicodeDecodeError):  # not an AUDIT this node asked
            return
        self.claims.add(key, report)

    async def failed(self, file: str, audit: Audit, cid: str,
                     claim: TaskReport | None = None) -> tuple[str, ...]:
        """The verdicts recorded for ``audit``, a provable failure of piece ``cid`` of
        ``file``: this node's and a confirmer's, on ``claim`` (default: the holder's
        latest promise of the file); () when there is no claim to judge."""
        if (audit.holder, cid) in self.judged:
            return ()
        latest = self.claims.pop((audit.holder, file))  # spent either way
        report = claim or latest
        if report is None:
            return ()
        self._judged(audit.holder, cid)
        try:
            verdicts = [await self.ctx.report_failure(report, _reason(audit.reason))]
        except MeshError as exc:
            self.ctx.log.warning("could not record a failed audit", extra={
                "peer_id": audit.holder, "piece": cid, "error": str(exc)})
            return ()
        ask = json.dumps({"piece": cid, "report": report_json(report)}).encode()
        for keeper in (await self._keepers(file, audit.holder))[:CONFIRMERS]:
            try:
                answer = await self.ctx.request(keeper, CONFIRM, ask, timeout=CONFIRM_TIMEOUT)
            except MeshError as exc:
                self.ctx.log.info("a keeper did not confirm a failed audit", extra={
                    "peer_id": keeper, "holder": audit.holder, "error": str(exc)})
                continue
            verdicts.append(answer.decode("ascii", "replace"))
            break
        self.ctx.log.warning("a holder failed the audit of a piece it had promised to keep",
                             extra={"peer_id": audit.holder, "piece": cid,
                                    "verdicts": verdicts})
        return tuple(verdicts)

    def _judged(self, holder: str, cid: str) -> None:
        self.judged[(holder, cid)] = None
        while len(self.judged) > CLAIMS_KEPT:
            self.judged.popitem(last=False)

    async def confirmed(self, report: TaskReport, holder: str, cid: str,
                        reason: str) -> tuple[str, ...]:
        """This node's own verdict on ``report``, the claim another node asked it to
        confirm a failure of, now that its own audits found the failure too."""
        if (holder, cid) in self.judged:
            return ()
        self._judged(holder, cid)
        try:
            verdict = await self.ctx.report_failure(report, _reason(f"confirmed: {reason}"))
        except MeshError as exc:
            self.ctx.log.warning("could not record a confirmed failure", extra={
                "peer_id": holder, "piece": cid, "error": str(exc)})
            return ()
        self.ctx.log.warning("confirmed a holder's failure of a piece it had promised to keep",
                             extra={"peer_id": holder, "piece": cid, "verdict": verdict})
        return (verdict,)

    async def _keepers(self, file: str, holder: str) -> list[str]:
        try:
            found = await self.ctx.dht.find_providers(file_key(file), MAX_KEEPERS)
        except MeshError:
            return []
        return [p for p in dict.fromkeys(f.peer_id for f in found)
                if p not in (self.ctx.peer_id, holder)]

    async def confirm(self, event: Event) -> bytes:
        """Another auditor's failed audit: audit the holder for that piece here."""
        try:
            asked = json.loads(event.data)
            cid, report = str(asked["piece"]), report_from_json(asked["report"])
            digest_hex(cid)
            file = file_cid(file_of(report).encode())
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, CidError,
                InvalidArgument):
            raise InvalidArgument(f"{CONFIRM} takes JSON {{piece, report}}, the report a "
                                  "KEEP one") from None
        if report.kind != KEEP or report.provider in (event.peer, self.ctx.peer_id):
            raise InvalidArgument(f"{CONFIRM} confirms another holder's KEEP report")
        raw = await trio.to_thread.run_sync(self.files.holding.manifests.get, file)
        if raw is None:
            raise InvalidArgument(f"this node keeps no manifest of {file}")
        try:
            manifest = parse_manifest(raw)
        except ManifestError as exc:
            raise InvalidArgument(str(exc)) from None
        if not any(cid in stripe.pieces for stripe in manifest.stripes):
            raise InvalidArgument(f"piece {cid} is not part of file {file}")
        holder = report.provider
        if (holder, cid) in self.judged:
            raise InvalidArgument(f"this node has judged {holder}'s failure of {cid} already")
        if self._confirming.available_tokens == 0:
            raise InvalidArgument(f"busy: confirming {CONFIRMS_AT_ONCE} audits already")
        async with self._confirming:
            # Only a holder that said it has the piece can be caught without it
            # (now, or to this node lately, or in the signed claim itself):
            # anyone can name a piece a holder never held, as the claims are
            # public. Asked now in any case: only a holder that claims the piece
            # now is held to it for silence.
            claimed = False
            with contextlib.suppress(MeshError):
                if (await self.ctx.request(holder, "HAVE", cid.encode(),
                                           timeout=PIECE_TIMEOUT))[:1] == b"\x01":
                    self.files.saw(holder, cid)
                    claimed = True
            if not self.files.saw_holding(holder, cid) and not _names(report, cid, self.ctx):
                raise InvalidArgument(f"{holder} has not said it holds {cid}: nothing to judge")
            audit = await self._audit(manifest, holder, cid, self.ctx.ledger.clock_epoch(),
                                      claimed=claimed)
            if audit.ok:
                raise InvalidArgument(f"{holder} passed this node's audit of {cid}")
            contained = self.containment.get(holder, cid)
            if not audit.provable and contained is not None:
                # Left unproven here too: judged here after this node's own strikes.
                self.containment.hold_to(holder, cid, report_json(report))
                raise InvalidArgument(
                    f"this node's audit of {cid} proved nothing yet ({audit.reason}); it "
                    f"holds {holder} to the piece and judges it after {STRIKES} epochs")
            if not audit.provable:
                raise InvalidArgument(f"this node's audit of {cid} proved nothing: "
                                      f"{audit.reason}")
            self.containment.release(holder, cid)
            verdicts = await self.confirmed(report, holder, cid, audit.reason)
            if not verdicts:
                raise InvalidArgument(f"this node could not record its verdict on {holder}")
            return verdicts[0].encode("ascii")


def file_of(report: TaskReport) -> str:
    """The file a KEEP report's detail (the AUDIT request) names."""
    return report.detail.split(b" ")[5].decode("ascii")


def _names(report: TaskReport, cid: str, ctx: Context) -> bool:
    """Whether ``report`` is its holder's signed claim of piece ``cid`` (it passed an
    audit of it): its word that it held the piece, whoever hands the report over."""
    if piece_of(report) != cid:
        return False
    try:
        ctx.check_report(report)
    except MeshError:
        return False
    return True


def piece_of(report: TaskReport) -> str:
    """The piece a KEEP report's detail (the AUDIT request) names; "" if none."""
    return report.detail.split(b" ")[0].decode("ascii", "replace")


def epoch_of(report: TaskReport) -> int:
    """The epoch a KEEP report's detail (the AUDIT request) names; -1 if none."""
    try:
        return int(report.detail.split(b" ")[3])
    except (IndexError, ValueError):
        return -1


def _reason(text: str) -> str:
    return text[:200] or "failed an audit"
