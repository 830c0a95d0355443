"""Reported tasks: work done outside the router, countersigned by the peer it was for.

docs/tasks.md §5. A plugin that served a peer in an event handler (a chunk
retrieved, a frame relayed) calls ``ctx.report_task(peer, kind, detail,
units=...)``: this node signs a TaskClaim and sends it on the ``task-report``
protocol; the peer's plugin judges the report with its rule
(``ctx.accept_reports``) and, if it agrees, the peer records a task_receipt,
the same evidence a routed task earns. Nothing is credited without the
countersignature of the node the work was for.

The claim's epoch must be one the peer can write its receipt in; the provider
signs its own guess, and when the peer's differs, the peer answers the epoch
it wants and the provider signs once more.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.evidence_rules import claim_hash, parse_claim
from meshcore.tasks import claims
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.host import P2PHost
from meshd.plugin.api import MAX_REPORT_DETAIL, ReportRule, TaskReport, check_name
from meshd.plugin_host.runtime import PluginRuntime
from meshd.tasks.executions import ExecutionJournal
from meshd.tasks.notes import ReceiptNotes, check_note

log = logging.getLogger(__name__)

REPORT_PROTOCOL = "task-report"
RULE_TIMEOUT = 30.0  # a plugin's rule answers within this, or the report is refused
MAX_JUDGING = 32  # reports judged at once on this node; more are refused as busy
REMEMBERED = 4096  # countersigned reports kept, so a repeated one gets the same receipt
MAX_REASON = 200  # characters of a failure report's reason (logged, not in the ledger)


class TaskReports:
    """Both sides of reported tasks; lives on the trio loop."""

    def __init__(self, host: P2PHost, ledger: Ledger, plugins: PluginRuntime,
                 rewarded: Iterable[str], notes: ReceiptNotes,
                 journal: ExecutionJournal) -> None:
        self._host = host
        self._journal = journal  # reports this node made, for validators auditing them
        self._ledger = ledger
        self._notes = notes  # what plugins said of the receipts they reported
        self._plugins = plugins
        self._rewarded = frozenset(rewarded)  # receipts count for genesis plugins only
        self._judging = trio.CapacityLimiter(MAX_JUDGING)
        # task_id -> the receipt entry's hash, for reports this node countersigned.
        self._receipts: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        # claim hash -> this node's verdict entry, for reports it found false.
        self._verdicts: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._in_hand: set[bytes] = set()  # task_ids being judged now
        self.countersigned_total = 0
        self.refused_total = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Judge the reports peers send this node until cancelled."""
        with self._host.direct.serving(REPORT_PROTOCOL, self._serve,
                                       max_request=MAX_REPORT_DETAIL + 2048,
                                       timeout=RULE_TIMEOUT + 10):
            task_status.started()
            await trio.sleep_forever()

    # --- the provider's side ------------------------------------------------------

    async def report(self, plugin: str, peer_id: str, kind: str, detail: bytes,
                     units: int, note: str = "") -> str:
        """``ctx.report_task``: the receipt entry's hash (hex) once the peer recorded it,
        with ``note`` kept on it (notes.py)."""
        check_name(kind, "task kind")
        _check_report(detail, units)
        check_note(note)
        try:
            requester = accounts.key_of(peer_id)
        except ValueError:
            raise errors.InvalidArgument(f"{peer_id!r} is not a peer ID") from None
        if requester == self._ledger.key:
            raise errors.InvalidArgument("a node cannot report work done for itself")
        if plugin not in self._rewarded:
            raise errors.FailedPrecondition(f"work for plugin {plugin!r} earns no receipts: "
                                            "the genesis does not require it")
        epoch = self._ledger.entry_epoch()
        for _ in range(2):  # the second time at the epoch the peer asked for
            answer = await self._send(plugin, peer_id, requester, kind, detail, units, epoch)
            if answer.receipt_entry:
                if note:
                    self._notes.add(answer.receipt_entry.hex(), plugin, note)
                return answer.receipt_entry.hex()
            epoch = answer.epoch
        raise errors.Unavailable(f"{peer_id} could not settle on an epoch for the receipt "
                                 "(its ledger is moving on); report again later")

    async def _send(self, plugin: str, peer_id: str, requester: bytes, kind: str,
                    detail: bytes, units: int, epoch: int) -> wire_pb2.TaskReportAnswer:
        task_id = claims.report_id(requester, self._ledger.key, plugin, kind, detail)
        claim = claims.make_claim(
            network_id=self._ledger.network_id, task_id=task_id, plugin=plugin,
            requester=requester, provider=self._ledger.key, epoch=epoch, units=units,
            result=detail)
        report = wire_pb2.TaskReport(plugin=plugin, kind=kind, detail=detail, claim=claim,
                                     provider_signature=self._ledger.sign_claim(claim))
        # What a validator auditing the receipt will ask to see: durable before the
        # peer can write the receipt (an audited report not shown is judged).
        await self._journal.keep(task_id, self._ledger.clock_epoch(),
                                 wire_pb2.TaskExecutionAnswer(report=report).SerializeToString())
        # A refusal raises DirectRequestFailed, a PeerError with the peer's message.
        raw = await self._host.direct.request(peer_id, REPORT_PROTOCOL,
                                              report.SerializeToString(),
                                              timeout=RULE_TIMEOUT + 5)
        try:
            return wire_pb2.TaskReportAnswer.FromString(raw)
        except DecodeError:
            raise errors.PeerError(f"{peer_id} answered something other than a "
                                   "TaskReportAnswer") from None

    async def fail(self, plugin: str, report: TaskReport, reason: str) -> str:
        """``ctx.report_failure``: a failure verdict on a reported task's claim.

        The claim must be the provider's signature over exactly this plugin,
        kind and detail (for whichever requester it was): a plugin cannot
        blame a provider for work the provider never claimed.
        """
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
            raise errors.InvalidArgument(f"a failure's reason is 1 to {MAX_REASON} characters")
        self.check(plugin, report)
        digest = claim_hash(report.claim)
        known = self._verdicts.get(digest)
        if known is not None:
            return known.hex()
        item = await self._ledger.write(task_verdict=ledger_pb2.TaskVerdict(
            claim=report.claim, provider_signature=report.signature,
            expected_digest=claims.rejected_digest(report.claim)))
        self._verdicts[digest] = item.hash
        while len(self._verdicts) > REMEMBERED:
            self._verdicts.popitem(last=False)
        log.info("recorded a failed report", extra={
            "plugin": plugin, "kind": report.kind, "provider": report.provider,
            "reason": reason, "entry": item.hash.hex()})
        return item.hash.hex()

    def check(self, plugin: str, report: TaskReport) -> None:
        """``ctx.check_report``: InvalidArgument (or FailedPrecondition) unless the
        report's claim is its provider's signature over exactly this plugin, kind
        and detail, and the provider is not this node."""
        if plugin not in self._rewarded:
            raise errors.FailedPrecondition(f"plugin {plugin!r} earns no receipts: the genesis "
                                            "does not require it")
        check_name(report.kind, "task kind")
        _check_report(report.detail, report.units)
        try:
            provider = accounts.key_of(report.provider)
        except ValueError:
            raise errors.InvalidArgument(f"{report.provider!r} is not a peer ID") from None
        if provider == self._ledger.key:
            raise errors.InvalidArgument("this node is the provider of that report")
        claim = parse_claim(report.claim)
        if claim is None:
            raise errors.InvalidArgument("the report's claim is not a canonical TaskClaim")
        problem = claims.claim_problem(
            report.claim, report.signature, network_id=self._ledger.network_id,
            task_id=claims.report_id(claim.requester, provider, plugin, report.kind,
                                     report.detail),
            plugin=plugin, requester=claim.requester, provider=provider, epoch=claim.epoch,
            units=report.units, result=report.detail)
        if problem is not None:
            raise errors.InvalidArgument(f"not the provider's claim of this report: {problem}")

    # --- the side the work was for ------------------------------------------------

    async def _serve(self, peer_id: str, payload: bytes) -> bytes:
        # Refusals are InvalidArgument or Unavailable: the direct protocol
        # carries their message to the provider.
        try:
            report = wire_pb2.TaskReport.FromString(payload)
        except DecodeError:
            raise errors.InvalidArgument("not a TaskReport") from None
        claim = self._checked_claim(peer_id, report)
        known = self._receipts.get(claim.task_id)
        if known is not None:  # a repeat (the provider lost our answer): same receipt
            return wire_pb2.TaskReportAnswer(receipt_entry=known).SerializeToString()
        epoch = self._ledger.entry_epoch()
        if claim.epoch != epoch:
            return wire_pb2.TaskReportAnswer(epoch=epoch).SerializeToString()
        rule = self._plugins.report_rule(report.plugin, report.kind)
        if rule is None:
            raise errors.Unavailable(f"this node does not accept reports of "
                                     f"{report.plugin}/{report.kind} now")
        if self._judging.available_tokens == 0:
            raise errors.Unavailable(f"busy: judging {MAX_JUDGING} reports already")
        if claim.task_id in self._in_hand:
            raise errors.Unavailable("the same report is being judged; ask again later")
        self._in_hand.add(claim.task_id)
        try:
            async with self._judging:
                accepted = await self._judge(rule, TaskReport(
                    peer_id, report.kind, report.detail, claim.units, report.claim,
                    report.provider_signature), report.plugin)
            if not accepted:
                self.refused_total += 1
                raise errors.InvalidArgument(f"{report.plugin} on this node does not accept "
                                             f"the report of {report.kind}")
            try:
                item = await self._ledger.write(
                    at_epoch=claim.epoch, task_receipt=ledger_pb2.TaskReceipt(
                        claim=report.claim, provider_signature=report.provider_signature))
            except errors.FailedPrecondition as exc:  # e.g. the epoch became final meanwhile
                raise errors.Unavailable(f"the receipt was not recorded: {exc}") from None
            self._remember(claim.task_id, item.hash)
        finally:
            self._in_hand.discard(claim.task_id)
        self.countersigned_total += 1
        log.info("countersigned a reported task", extra={
            "plugin": report.plugin, "kind": report.kind, "provider": peer_id,
            "units": claim.units, "entry": item.hash.hex()})
        return wire_pb2.TaskReportAnswer(receipt_entry=item.hash).SerializeToString()

    def _checked_claim(self, peer_id: str, report: wire_pb2.TaskReport,
                       ) -> ledger_pb2.TaskClaim:
        """The report's claim if it says exactly what the report does, else InvalidArgument."""
        check_name(report.kind, "task kind")
        claim = parse_claim(report.claim)
        if claim is None:
            raise errors.InvalidArgument("the claim is not a canonical TaskClaim")
        _check_report(report.detail, claim.units)
        if report.plugin not in self._rewarded:
            raise errors.InvalidArgument(f"plugin {report.plugin!r} earns no receipts: "
                                         "the genesis does not require it")
        provider = accounts.key_of(peer_id)
        problem = claims.claim_problem(
            report.claim, report.provider_signature, network_id=self._ledger.network_id,
            task_id=claims.report_id(self._ledger.key, provider, report.plugin, report.kind,
                                     report.detail),
            plugin=report.plugin, requester=self._ledger.key, provider=provider,
            epoch=claim.epoch, units=claim.units, result=report.detail)
        if problem is not None:
            raise errors.InvalidArgument(problem)
        return claim

    async def _judge(self, rule: ReportRule, report: TaskReport, plugin: str) -> bool:
        try:
            with trio.fail_after(RULE_TIMEOUT):
                verdict = await rule(report)
        except trio.TooSlowError:
            raise errors.Unavailable(f"{plugin}'s report rule did not answer within "
                                     f"{RULE_TIMEOUT:g} s") from None
        except errors.MeshError:
            raise
        except Exception as exc:
            log.warning("report rule failed", exc_info=exc, extra={
                "plugin": plugin, "kind": report.kind, "provider": report.provider})
            raise errors.Unavailable(f"{plugin}'s report rule failed on this node "
                                     f"({type(exc).__name__}; see its log)") from None
        return verdict is True

    def _remember(self, task_id: bytes, entry: bytes) -> None:
        self._receipts[task_id] = entry
        while len(self._receipts) > REMEMBERED:
            self._receipts.popitem(last=False)


def _check_report(detail: bytes, units: int) -> None:
    if len(detail) > MAX_REPORT_DETAIL:
        raise errors.InvalidArgument(f"a report's detail is at most {MAX_REPORT_DETAIL} bytes, "
                                     f"not {len(detail)}")
    if isinstance(units, bool) or not isinstance(units, int) \
            or not 1 <= units <= claims.MAX_UNITS:
        raise errors.InvalidArgument(f"units must be 1 to {claims.MAX_UNITS}, not {units!r}")
