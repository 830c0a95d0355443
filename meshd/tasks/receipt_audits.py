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
(docs/ledger.md §7.1).

A provider that does not show the execution is asked again at each later
final epoch, for SHOW_EPOCHS epochs after the receipt's (its journal keeps
every execution longer). An ask counts against it only when it answered a
PING at the time: down is not denying. After DENIALS such asks it is judged
(a verdict with the unshown digest) and the next validators in the draw's
order are asked, on ``receipt-audit/1.0.0``, to audit the receipt
themselves: one that finds the provider reachable and still not showing it
(twice, CONFIRM_GAP apart) writes the second verdict; one it shows the
execution to checks it as above. A provider never reachable within the
window is counted ``unshown`` and not judged.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

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
from meshd.tasks.executions import SHOWN_EPOCHS
from meshd.tasks.pending_audits import Kept, PendingAuditFile
from meshd.tasks.provider import EXECUTION_PROTOCOL, confirmed_by

log = logging.getLogger(__name__)
T = TypeVar("T")

DRAW_DOMAIN = b"mesh/receipt-audit/v1\x00"
AUDITS_AT_ONCE = 4  # of all epochs' audits (a compute rule may run for minutes)
EPOCHS_BEHIND = 4  # final epochs audited at most after this node fell behind
KEPT = 1000  # audits listed by ListReceiptAudits
CONFIRMERS = 3  # validators asked, in the draw's order, until one confirms
ASK_TIMEOUT = 30.0
PING_TIMEOUT = 10.0
VERIFY_TIMEOUT = 300.0  # seconds for the plugin's rule (a task's own longest run)
SHOW_EPOCHS = 12  # epochs (the clock's) after the receipt's in which its provider must show it
DENIALS = 2  # asks, at different final epochs, a reachable provider did not answer: judged
CONFIRM_GAP = 5.0  # seconds between a confirmer's two asks
CONFIRM_TIMEOUT = 2 * (ASK_TIMEOUT + PING_TIMEOUT) + CONFIRM_GAP + VERIFY_TIMEOUT + 10
RECEIPT_AUDIT_PROTOCOL = "receipt-audit"
# A confirmer asks within 2 epochs of the window's end: its provider still keeps it.
assert SHOW_EPOCHS + 2 < SHOWN_EPOCHS


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
    failed: int = 0  # rejected by the rule, or not shown while reachable: verdict written
    unshown: int = 0  # the provider was not reachable to show it within the window
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
    outcome: str = ""  # pending, passed, failed, unshown, reported, unchecked
    detail: str = ""
    verdicts: list[str] = field(default_factory=list)
    at: float = 0.0  # Unix time


@dataclass(frozen=True)
class Drawn:
    receipt: Verified
    claim: ledger_pb2.TaskClaim
    confirmers: list[bytes]  # the validators after this one, in the draw's order


@dataclass(frozen=True)
class Shown:
    """What one ask of the provider came to."""

    answer: wire_pb2.TaskExecutionAnswer | None  # the claim's execution or report, if shown
    reachable: bool  # it answered a PING when it did not show it
    why: str = ""  # why it was not shown


@dataclass
class Pending:
    """An audit whose provider has not shown the execution yet."""

    found: Drawn
    audited: Audited
    denials: int = 0  # asks it did not answer while it answered a PING
    last_ask: int = -1  # the final epoch of the last ask
    asking: bool = False  # an ask is under way


class ReceiptAuditor:
    """Audits the receipts the beacon draws for this node, and confirms other
    validators' audits of receipts whose provider did not show them; lives on the
    trio loop."""

    def __init__(self, host: P2PHost, ledger: Ledger, plugins: PluginRuntime,
                 pending_file: PendingAuditFile) -> None:
        self._host = host
        self._ledger = ledger
        self._plugins = plugins
        self.counts = AuditCounts()
        self.recent: collections.deque[Audited] = collections.deque(maxlen=KEPT)
        self._pending: dict[bytes, Pending] = {}  # by receipt hash
        self._pending_file = pending_file  # ... and on disk, across restarts
        self._saving = trio.Lock()
        self._limit = trio.CapacityLimiter(AUDITS_AT_ONCE)
        # Receipts other validators asked this node to audit (receipt-audit), by hash.
        self._confirmed: collections.OrderedDict[bytes, Audited] = collections.OrderedDict()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        await self.resume()
        with self._host.direct.serving(RECEIPT_AUDIT_PROTOCOL, self._serve_confirm,
                                       max_request=64, timeout=CONFIRM_TIMEOUT):
            task_status.started()
            after = self._ledger.final_epoch
            # Each final epoch's audits in the background: one that waits minutes for
            # a rule or a confirmer does not hold back the next epochs' draws.
            async with trio.open_nursery() as nursery:
                while True:
                    final = await self._ledger.next_final(after)
                    nursery.start_soon(self.catch_up, after, final)
                    after = final

    async def catch_up(self, after: int, final: int) -> None:
        """Audit final epochs after ``after`` up to ``final`` (the last EPOCHS_BEHIND at
        most), and ask again the providers of pending audits."""
        for epoch in range(max(after + 1, final - EPOCHS_BEHIND + 1), final + 1):
            try:
                await self.audit_epoch(epoch)
            except errors.MeshError as exc:  # the ledger is busy: that epoch goes unaudited
                log.info("receipt audits skipped", extra={"epoch": epoch, "error": str(exc)})
        await self.ask_again(final)

    def mine(self, seed: bytes, settled: Settled, receipts: list[Verified]) -> list[Drawn]:
        """The ``receipts`` of final epoch ``settled`` the beacon (``seed``) draws for this
        node to audit."""
        found = []
        for item in receipts:
            drawn_one = self._drawn(seed, settled, item)
            if drawn_one is not None and drawn_one[0] == self._ledger.key:
                found.append(drawn_one[1])
        return found

    def _drawn(self, seed: bytes, settled: Settled, item: Verified,
               ) -> tuple[bytes, Drawn] | None:
        """(its auditor, the draw) if the beacon draws receipt ``item``."""
        claim = parse_claim(item.body.task_receipt.claim)
        digest = claim_hash(item.body.task_receipt.claim)
        if claim is None or not drawn(seed, digest, settled.params.market.spot_check_bps):
            return None
        order = [v for v in ranked(seed, digest, (key for key, _ in settled.validators))
                 if v not in (claim.provider, claim.requester)]
        return (order[0], Drawn(item, claim, order[1:])) if order else None

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
        await self._each(self.audit, mine)

    async def ask_again(self, final: int) -> None:
        """Ask again the providers of pending audits (one ask per final epoch each)."""
        due = [p for p in self._pending.values() if not p.asking and p.last_ask < final]
        for pending in due:  # taken now: another epoch's round does not ask them too
            pending.asking = True
        await self._each(self._attempt, due)

    async def resume(self) -> None:
        """Take up the audits pending when this node stopped (pending_audits.py), those
        the ledger still shows drawn for it."""
        for kept in await trio.to_thread.run_sync(self._pending_file.load):
            item = await trio.to_thread.run_sync(self._ledger.store.get, kept.receipt)
            if item is None or item.kind != "task_receipt":
                continue
            seed = beacon(self._ledger, item.body.epoch)
            settled = await trio.to_thread.run_sync(self._ledger.settled_at, item.body.epoch)
            drawn_one = None if seed is None or settled is None \
                else self._drawn(seed, settled, item)
            if drawn_one is None or drawn_one[0] != self._ledger.key:
                continue
            audited = self._audited(drawn_one[1])
            audited.outcome = "pending"
            audited.detail = f"taken up again after a restart ({kept.denials} of {DENIALS} " \
                             "asks the provider answered a PING for)"
            self.recent.appendleft(audited)
            self._pending[kept.receipt] = Pending(drawn_one[1], audited, kept.denials,
                                                  kept.last_ask)
        if self._pending:
            log.info("receipt audits taken up again", extra={"pending": len(self._pending)})

    async def _save(self) -> None:
        async with self._saving:  # in trio's order: the last snapshot is written last
            kept = [Kept(key, p.denials, p.last_ask) for key, p in self._pending.items()]
            await trio.to_thread.run_sync(self._pending_file.save, kept)

    async def _each(self, audit: Callable[[T], Awaitable[object]], items: list[T]) -> None:
        async def one(item: T) -> None:
            async with self._limit:
                await audit(item)

        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(one, item)

    def _receipts(self, settled: Settled) -> list[Verified]:
        """The task receipts ``settled``'s record counted (blocks: reads the store)."""
        hashes = dict.fromkeys(e.entry for line in settled.record.lines if line.pool == "tasks"
                               for e in line.evidence)
        found = [self._ledger.store.get(h) for h in hashes]
        return [item for item in found if item is not None and item.kind == "task_receipt"]

    async def audit(self, found: Drawn) -> Audited:
        """Audit one drawn receipt; what came of it so far (also in :attr:`recent`):
        ``pending`` while its provider has not shown it."""
        pending = Pending(found, self._audited(found))
        self.recent.appendleft(pending.audited)
        await self._attempt(pending)
        return pending.audited

    def _audited(self, found: Drawn) -> Audited:
        claim = found.claim
        return Audited(found.receipt.body.epoch, found.receipt.hash.hex(), claim.plugin,
                       accounts.peer_id_of(claim.provider),
                       accounts.peer_id_of(claim.requester), at=time.time())

    async def _attempt(self, pending: Pending) -> None:
        """Ask the provider once; check what it shows, judge it if it denied too often,
        or leave the audit pending (kept on disk either way)."""
        pending.asking = True
        try:
            await self._ask(pending)
        finally:
            pending.asking = False
        await self._save()

    async def _ask(self, pending: Pending) -> None:
        found, audited = pending.found, pending.audited
        where = _where(audited)
        pending.last_ask = self._ledger.final_epoch
        shown = await self._show(found, where)
        if shown.answer is not None:
            outcome, detail = await self._check(found, shown.answer, audited, where)
        elif shown.reachable and pending.denials + 1 >= DENIALS:
            audited.verdicts = await self._judged(found, None, where)
            outcome, detail = "failed", f"not shown to {DENIALS} asks while the provider " \
                                        f"answered: {shown.why}"
        elif self._ledger.clock_epoch() >= found.receipt.body.epoch + SHOW_EPOCHS:
            outcome, detail = "unshown", f"not shown within {SHOW_EPOCHS} epochs: {shown.why}"
        else:
            pending.denials += shown.reachable
            audited.outcome = "pending"
            audited.detail = f"not shown yet ({pending.denials} of {DENIALS} asks the " \
                             f"provider answered a PING for): {shown.why}"
            self._pending[found.receipt.hash] = pending
            return
        self._pending.pop(found.receipt.hash, None)
        audited.outcome, audited.detail, audited.at = outcome, detail, time.time()
        setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)

    async def _show(self, found: Drawn, where: dict[str, str]) -> Shown:
        """Ask the provider for the execution (or report) behind ``found``'s receipt."""
        claim, provider = found.claim, accounts.peer_id_of(found.claim.provider)
        try:
            # Any provider of the network, not only this node's peers: dialled at
            # the DHT's addresses first (one not found is not reachable).
            await self._host.reach(provider, ASK_TIMEOUT)
            raw = await self._host.direct.request(
                provider, EXECUTION_PROTOCOL,
                wire_pb2.TaskExecutionRequest(task_id=claim.task_id).SerializeToString(),
                timeout=ASK_TIMEOUT)
            answer = wire_pb2.TaskExecutionAnswer.FromString(raw)
        except (errors.MeshError, DecodeError) as exc:
            why = str(exc) or type(exc).__name__
            reachable = await self._reachable(provider)
            log.info("a provider did not show an audited execution", extra={
                **where, "error": why, "reachable": reachable})
            return Shown(None, reachable, why)
        if answer.WhichOneof("shown") == "report" and is_report(answer.report, claim):
            return Shown(answer, True)
        problem = "no execution" if not answer.HasField("execution") \
            else mismatch(answer.execution, found.receipt.body.task_receipt.claim, claim)
        if problem is not None:
            log.warning("a provider showed an execution that is not its receipt's", extra={
                **where, "problem": problem})
            return Shown(None, True, f"the provider showed {problem}")
        return Shown(answer, True)

    async def _reachable(self, peer_id: str) -> bool:
        try:
            await self._host.reach(peer_id, PING_TIMEOUT)
            await self._host.direct.ping(peer_id, timeout=PING_TIMEOUT)
        except errors.MeshError:
            return False
        return True

    async def _check(self, found: Drawn, answer: wire_pb2.TaskExecutionAnswer,
                     audited: Audited, where: dict[str, str]) -> tuple[str, str]:
        """(outcome, detail) of checking the execution or report the provider showed."""
        claim = found.claim
        if answer.WhichOneof("shown") == "report":
            # Its plugin's rule ran on the requester's side, with what only it knows.
            return "reported", f"{answer.report.kind} reported outside the router"
        shown = answer.execution
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
        audited.verdicts = await self._judged(found, shown, where)
        return "failed", f"{task.plugin}'s rule rejected the result of {task.kind}"

    async def _verdict(self, found: Drawn, expected: bytes, where: dict[str, str],
                       ) -> str | None:
        """This node's verdict on ``found``'s claim (hex), or None if it could not write it."""
        receipt = found.receipt.body.task_receipt
        try:
            item = await self._ledger.write(task_verdict=ledger_pb2.TaskVerdict(
                claim=receipt.claim, provider_signature=receipt.provider_signature,
                expected_digest=expected))
        except errors.MeshError as exc:
            log.warning("could not record an audited receipt's verdict", extra={
                **where, "error": str(exc)})
            return None
        return item.hash.hex()

    async def _judged(self, found: Drawn, shown: wire_pb2.TaskVerdictRequest | None,
                      where: dict[str, str]) -> list[str]:
        """This validator's verdict on a result its plugin's rule rejected (``shown``:
        the execution), or on an execution not shown (None); then a confirmation by
        the next validators in the draw's order, who check the execution shown
        (``task-verdict``) or audit the receipt themselves (``receipt-audit``). The
        verdict entries (hex)."""
        claim = found.receipt.body.task_receipt.claim
        mine = await self._verdict(found, claims.rejected_digest(claim) if shown is not None
                                   else claims.unshown_digest(claim), where)
        if mine is None:
            return []
        confirmers = [accounts.peer_id_of(v) for v in found.confirmers[:CONFIRMERS]]
        if shown is not None:
            confirmed = await confirmed_by(self._host, confirmers, shown, ASK_TIMEOUT * 2,
                                           **where)
        else:
            confirmed = await confirmed_by(
                self._host, confirmers, wire_pb2.ReceiptAuditRequest(receipt=found.receipt.hash),
                CONFIRM_TIMEOUT, protocol=RECEIPT_AUDIT_PROTOCOL, **where)
        verdicts = [mine] if confirmed is None else [mine, confirmed]
        log.warning("an audited receipt's result is wrong" if shown is not None else
                    "a provider did not show an audited execution while it answered",
                    extra={**where, "verdicts": verdicts})
        return verdicts

    async def _serve_confirm(self, peer_id: str, payload: bytes) -> bytes:
        """Audit a receipt whose auditor (``peer_id``) says its provider did not show
        the execution: a verdict of this node's own, or why not."""
        try:
            request = wire_pb2.ReceiptAuditRequest.FromString(payload)
        except DecodeError:
            raise errors.InvalidArgument("not a ReceiptAuditRequest") from None
        found = await self._to_confirm(request.receipt, accounts.key_of(peer_id))
        # Once per receipt: an auditor asking again gets the same answer, not
        # another run of the provider's work (or another verdict).
        audited = self._confirmed.get(request.receipt)
        if audited is None:
            audited = self._confirmed[request.receipt] = self._audited(found)
            while len(self._confirmed) > KEPT:
                self._confirmed.popitem(last=False)
            self.recent.appendleft(audited)
            outcome, detail = await self._confirm(found, audited)
            audited.outcome = outcome
            audited.detail = f"asked by its auditor {peer_id}: {detail}"
            audited.at = time.time()
            setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
        elif not audited.outcome:
            raise errors.Unavailable("this node is auditing that receipt already")
        if audited.outcome == "failed" and audited.verdicts:
            return wire_pb2.TaskVerdictAnswer(
                verdict_entry=bytes.fromhex(audited.verdicts[0])).SerializeToString()
        if audited.outcome in ("failed", "unshown"):
            raise errors.Unavailable(f"this node did not judge it ({audited.detail})")
        raise errors.InvalidArgument(f"the provider showed the execution to this node: "
                                     f"{audited.outcome} ({audited.detail})")

    async def _confirm(self, found: Drawn, audited: Audited) -> tuple[str, str]:
        """(outcome, detail) of this node's own audit of ``found``: two asks, CONFIRM_GAP
        apart, unless the provider shows it or is not reachable at the first."""
        where = _where(audited)
        shown = await self._show(found, where)
        if shown.answer is None and shown.reachable:
            await trio.sleep(CONFIRM_GAP)
            shown = await self._show(found, where)
        if shown.answer is not None:  # this node's verdict only, if wrong: no confirmers
            outcome, detail = await self._check(
                Drawn(found.receipt, found.claim, []), shown.answer, audited, where)
            return outcome, detail or "the provider showed it"
        if not shown.reachable:
            return "unshown", f"the provider is not reachable from this node: {shown.why}"
        verdict = await self._verdict(
            found, claims.unshown_digest(found.receipt.body.task_receipt.claim), where)
        if verdict is None:
            return "unshown", "this node could not write its verdict"
        audited.verdicts = [verdict]
        return "failed", f"not shown to 2 asks while the provider answered: {shown.why}"

    async def _to_confirm(self, receipt_hash: bytes, auditor: bytes) -> Drawn:
        """The draw of receipt ``receipt_hash`` if ``auditor`` audits it and this node
        is among its next validators, within the window; else why not."""
        item = await trio.to_thread.run_sync(self._ledger.store.get, receipt_hash)
        if item is None or item.kind != "task_receipt":
            raise errors.InvalidArgument("this node has no task receipt by that hash")
        epoch = item.body.epoch
        seed = beacon(self._ledger, epoch)
        settled = await trio.to_thread.run_sync(self._ledger.settled_at, epoch)
        if seed is None or settled is None:
            raise errors.Unavailable(f"epoch {epoch} is not final on this node yet")
        if self._ledger.clock_epoch() > epoch + SHOW_EPOCHS + 2:
            raise errors.InvalidArgument(f"the receipt of epoch {epoch} is past its audits")
        if receipt_hash not in {e.entry for line in settled.record.lines
                                if line.pool == "tasks" for e in line.evidence}:
            raise errors.InvalidArgument(f"epoch {epoch}'s settlement did not count that "
                                         "receipt")
        drawn_one = self._drawn(seed, settled, item)
        if drawn_one is None or drawn_one[0] != auditor:
            raise errors.InvalidArgument("the beacon did not draw that receipt for the asker "
                                         "to audit")
        if self._ledger.key not in drawn_one[1].confirmers[:CONFIRMERS]:
            raise errors.InvalidArgument("this node is not among that audit's confirmers")
        return drawn_one[1]


def _where(audited: Audited) -> dict[str, str]:
    return {"provider": audited.provider, "receipt": audited.receipt,
            "plugin": audited.plugin}


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
