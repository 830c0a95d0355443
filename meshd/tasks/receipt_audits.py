"""Receipt audits: validators drawn from the beacon check receipts nobody else checked.

A requester checks the results it receives (the plugin's rule, redundancy,
its spot checks), but a requester and a provider that collude can write
receipts for work never done, or done wrong, and share the tasks pool's
emission. So, after each final epoch E, every validator looks at the receipts
that E's settlement counted (its record's tasks lines) and audits a share p of
them: a receipt is drawn when ``H(domain ‖ beacon(E) ‖ claim hash) < p · 2²⁵⁶``
(p: the genesis's ``market.spot_check_bps``, which governance may change),
and audited by the validator ranked first by ``H(domain ‖ beacon(E) ‖ claim
hash ‖ validator key)`` among E's validators, the receipt's provider and
requester left out. The beacon is fixed by E's decision, after the receipts
were written: neither party could know which receipts would be drawn, nor by
whom. docs/tasks.md §5d.

The auditor asks the provider for the execution (``task-execution/1.0.0``,
its journal: executions.py), checks it is the one the claim names (execution
ID from the requester, plugin, kind, payload and nonce; the result's digest),
and runs the plugin's rule on it as a third party (compute runs the module
again). Reported work (a storage holder's KEEP, say) shows its report
instead, checked against the claim the same way: its plugin's rule ran on
the requester's side with what only the requester knows, so it is counted
and left. A result the rule rejects gets this validator's verdict and, as a
requester's would, a confirmation from the next validators in the draw's
order on ``task-verdict/1.0.0``: two verdicts slash the provider
(docs/ledger.md §7.1). A provider that does not show the execution (offline,
or it kept none) is logged and counted, not judged: an honest provider may be
down when asked.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.entry import Verified
from meshcore.ledger.evidence_rules import claim_hash, parse_claim
from meshcore.ledger.state import Settled
from meshcore.tasks import claims
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.host import P2PHost
from meshd.plugin.api import TaskRequest, TaskResult
from meshd.plugin_host.context import beacon
from meshd.plugin_host.runtime import PluginRuntime
from meshd.tasks.provider import EXECUTION_PROTOCOL, confirmed_by

log = logging.getLogger(__name__)

DRAW_DOMAIN = b"mesh/receipt-audit/v1\x00"
AUDITS_AT_ONCE = 4
EPOCHS_BEHIND = 4  # final epochs audited at most after this node fell behind
KEPT = 1000  # audits listed by ListReceiptAudits
CONFIRMERS = 3  # validators asked, in the draw's order, until one confirms
ASK_TIMEOUT = 30.0
VERIFY_TIMEOUT = 300.0  # seconds for the plugin's rule (a task's own longest run)


def drawn(seed: bytes, claim_digest: bytes, bps: int) -> bool:
    """Whether the receipt of claim ``claim_digest`` is drawn at ``bps`` (of 10,000)."""
    value = int.from_bytes(hashlib.sha256(DRAW_DOMAIN + seed + claim_digest).digest(), "big")
    return value * 10_000 < bps << 256


def ranked(seed: bytes, claim_digest: bytes, validators: Iterable[bytes]) -> list[bytes]:
    """``validators`` in the order they audit that receipt (first: the auditor)."""
    return sorted(validators, key=lambda v: hashlib.sha256(
        DRAW_DOMAIN + seed + claim_digest + v).digest())


@dataclass
class AuditCounts:
    """What this node's receipt audits came to since it started."""

    drawn: int = 0  # receipts drawn for this node to audit
    passed: int = 0
    failed: int = 0  # rejected by the rule: verdict written
    unshown: int = 0  # the provider did not show the execution, or showed another
    reported: int = 0  # work reported outside the router: nothing to run again
    unchecked: int = 0  # no rule here to check it with, or the rule could not run


@dataclass
class Audited:
    """One receipt audit, as ``meshctl tasks audits`` shows it."""

    epoch: int
    receipt: str  # the task_receipt entry's hash (hex)
    plugin: str
    provider: str
    requester: str
    outcome: str = ""  # passed, failed, unshown, reported, unchecked
    detail: str = ""
    verdicts: list[str] = field(default_factory=list)
    at: float = 0.0  # Unix time


@dataclass(frozen=True)
class Drawn:
    receipt: Verified
    claim: ledger_pb2.TaskClaim
    confirmers: list[bytes]  # the validators after this one, in the draw's order


class ReceiptAuditor:
    """Audits the receipts the beacon draws for this node; lives on the trio loop."""

    def __init__(self, host: P2PHost, ledger: Ledger, plugins: PluginRuntime) -> None:
        self._host = host
        self._ledger = ledger
        self._plugins = plugins
        self.counts = AuditCounts()
        self.recent: collections.deque[Audited] = collections.deque(maxlen=KEPT)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        task_status.started()
        after = self._ledger.final_epoch
        while True:
            final = await self._ledger.next_final(after)
            for epoch in range(max(after + 1, final - EPOCHS_BEHIND + 1), final + 1):
                try:
                    await self.audit_epoch(epoch)
                except errors.MeshError as exc:  # the ledger is busy: that epoch goes unaudited
                    log.info("receipt audits skipped", extra={"epoch": epoch,
                                                              "error": str(exc)})
            after = final

    def mine(self, seed: bytes, settled: Settled, receipts: list[Verified]) -> list[Drawn]:
        """The ``receipts`` of final epoch ``settled`` the beacon (``seed``) draws for this
        node to audit."""
        validators = [key for key, _ in settled.validators]
        bps = settled.params.market.spot_check_bps
        found = []
        for item in receipts:
            claim = parse_claim(item.body.task_receipt.claim)
            digest = claim_hash(item.body.task_receipt.claim)
            if claim is None or not drawn(seed, digest, bps):
                continue
            order = [v for v in ranked(seed, digest, validators)
                     if v not in (claim.provider, claim.requester)]
            if order and order[0] == self._ledger.key:
                found.append(Drawn(item, claim, order[1:]))
        return found

    async def audit_epoch(self, epoch: int) -> None:
        seed = beacon(self._ledger, epoch)
        settled = await trio.to_thread.run_sync(self._ledger.settled_at, epoch)
        # Only a validator of the epoch is drawn: the others read no receipts.
        if seed is None or settled is None \
                or self._ledger.key not in (key for key, _ in settled.validators):
            return
        receipts = await trio.to_thread.run_sync(self._receipts, settled)
        mine = self.mine(seed, settled, receipts)
        if not mine:
            return
        self.counts.drawn += len(mine)
        log.info("auditing receipts", extra={"epoch": epoch, "receipts": len(mine),
                                             "of": len(receipts)})
        limit = trio.CapacityLimiter(AUDITS_AT_ONCE)

        async def one(found: Drawn) -> None:
            async with limit:
                await self.audit(found)

        async with trio.open_nursery() as nursery:
            for found in mine:
                nursery.start_soon(one, found)

    def _receipts(self, settled: Settled) -> list[Verified]:
        """The task receipts ``settled``'s record counted (blocks: reads the store)."""
        hashes = dict.fromkeys(e.entry for line in settled.record.lines if line.pool == "tasks"
                               for e in line.evidence)
        found = [self._ledger.store.get(h) for h in hashes]
        return [item for item in found if item is not None and item.kind == "task_receipt"]

    async def audit(self, found: Drawn) -> Audited:
        """Audit one drawn receipt; what came of it (also kept in :attr:`recent`)."""
        claim = found.claim
        audited = Audited(found.receipt.body.epoch, found.receipt.hash.hex(), claim.plugin,
                          accounts.peer_id_of(claim.provider),
                          accounts.peer_id_of(claim.requester))
        audited.outcome, audited.detail = await self._judge(found, audited)
        audited.at = time.time()
        setattr(self.counts, audited.outcome, getattr(self.counts, audited.outcome) + 1)
        self.recent.appendleft(audited)
        return audited

    async def _judge(self, found: Drawn, audited: Audited) -> tuple[str, str]:
        """(outcome, detail) of the audit of ``found``."""
        claim, receipt = found.claim, found.receipt.body.task_receipt
        where = {"provider": audited.provider, "receipt": audited.receipt,
                 "plugin": claim.plugin}
        try:
            raw = await self._host.direct.request(
                audited.provider, EXECUTION_PROTOCOL,
                wire_pb2.TaskExecutionRequest(task_id=claim.task_id).SerializeToString(),
                timeout=ASK_TIMEOUT)
            answer = wire_pb2.TaskExecutionAnswer.FromString(raw)
        except (errors.MeshError, DecodeError) as exc:
            log.info("a provider did not show an audited execution", extra={
                **where, "error": str(exc)})
            return "unshown", str(exc) or type(exc).__name__
        if answer.WhichOneof("shown") == "report" and is_report(answer.report, claim):
            # Its plugin's rule ran on the requester's side, with what only it knows.
            return "reported", f"{answer.report.kind} reported outside the router"
        shown = answer.execution
        problem = "no execution" if not answer.HasField("execution") \
            else mismatch(shown, receipt.claim, claim)
        if problem is not None:
            log.warning("a provider showed an execution that is not its receipt's", extra={
                **where, "problem": problem})
            return "unshown", f"the provider showed {problem}"
        task = shown.task
        kind = self._plugins.task_kind(task.plugin, task.kind)
        if kind is None or kind.verify is None:
            return "unchecked", f"this node has no rule for {task.plugin}/{task.kind}"
        try:
            with trio.fail_after(VERIFY_TIMEOUT):
                ok = await kind.verify(
                    TaskRequest(claim.task_id.hex(), task.kind, task.payload,
                                audited.requester),
                    TaskResult(shown.result, shown.proof, claim.units))
        except Exception as exc:  # a rule that cannot run here (in time) judges nothing
            why = str(exc) or type(exc).__name__
            log.info("a receipt audit could not run the plugin's rule", extra={
                **where, "error": why})
            return "unchecked", f"the rule could not run: {why}"
        if ok:
            log.debug("an audited receipt passed", extra=where)
            return "passed", ""
        audited.verdicts = await self._record_wrong(found, shown, where)
        return "failed", f"{task.plugin}'s rule rejected the result of {task.kind}"

    async def _record_wrong(self, found: Drawn, shown: wire_pb2.TaskVerdictRequest,
                            where: dict[str, str]) -> list[str]:
        """This validator's verdict, then the next validators' confirmation: the
        verdict entries (hex)."""
        receipt = found.receipt.body.task_receipt
        verdicts = []
        try:
            item = await self._ledger.write(task_verdict=ledger_pb2.TaskVerdict(
                claim=receipt.claim, provider_signature=receipt.provider_signature,
                expected_digest=claims.rejected_digest(receipt.claim)))
            verdicts.append(item.hash.hex())
        except errors.MeshError as exc:
            log.warning("could not record an audited receipt's verdict", extra={
                **where, "error": str(exc)})
            return verdicts
        confirmed = await confirmed_by(
            self._host, [accounts.peer_id_of(v) for v in found.confirmers[:CONFIRMERS]],
            shown, ASK_TIMEOUT * 2, **where)
        if confirmed is not None:
            verdicts.append(confirmed)
        log.warning("an audited receipt's result is wrong", extra={
            **where, "verdicts": verdicts})
        return verdicts


def is_report(report: wire_pb2.TaskReport, claim: ledger_pb2.TaskClaim) -> bool:
    """Whether ``report`` is the reported work (docs/tasks.md §5a) ``claim`` names."""
    return report.plugin == claim.plugin and claims.report_id(
        claim.requester, claim.provider, report.plugin, report.kind, report.detail,
    ) == claim.task_id and claims.result_digest(report.detail) == claim.result_digest


def mismatch(shown: wire_pb2.TaskVerdictRequest, claim_bytes: bytes,
             claim: ledger_pb2.TaskClaim) -> str | None:
    """Why ``shown`` is not the execution the receipt's claim names; None if it is."""
    task = shown.task
    if shown.claim != claim_bytes:
        return "another claim"
    if shown.requester != claim.requester or task.plugin != claim.plugin:
        return "another requester or plugin"
    base = claims.base_id(shown.requester, task.plugin, task.kind, task.payload, task.nonce)
    if claims.execution_id(base, claim.provider) != claim.task_id:
        return "its payload, kind or nonce is not the claim's task"
    if claims.result_digest(shown.result) != claim.result_digest:
        return "its result is not the claim's"
    return None
