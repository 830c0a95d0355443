"""The provider side of tasks: advertise, execute, sign, and confirm wrong results.

Serves four direct protocols (docs/tasks.md §2): ``task-caps`` (what this
node executes), ``task`` (TASK_REQUEST → TASK_RESPONSE: run the plugin's
handler, sign the claim), ``task-verdict`` (confirm that another
provider's result is wrong, and record a verdict) and ``task-execution``
(an execution, or a report, this node signed a claim for, from its journal,
to a validator auditing the receipt: docs/tasks.md §5d).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts
from meshcore.ledger.evidence_rules import parse_claim
from meshcore.tasks import claims
from meshd import errors
from meshd.ledger.ledger import Ledger
from meshd.p2p.host import P2PHost
from meshd.plugin.api import TaskRequest, TaskResult, check_name
from meshd.plugin_host.context import TaskKind
from meshd.plugin_host.runtime import PluginRuntime
from meshd.tasks.executions import ExecutionJournal

log = logging.getLogger(__name__)

CAPS_PROTOCOL, TASK_PROTOCOL, VERDICT_PROTOCOL = "task-caps", "task", "task-verdict"
EXECUTION_PROTOCOL = "task-execution"
MAX_TASK_TIMEOUT = 300.0
MAX_PAYLOAD = 1 << 20  # a TASK_REQUEST's payload, with the request's own fields under 1 MiB
MAX_RESULT = (4 << 20) - 4096  # a TASK_RESPONSE fits the 4 MiB answer limit
NONCE_BYTES = 16
REMEMBERED = 4096  # executions whose result digest is kept, to confirm verdicts
LOCK_WAIT = 10.0  # seconds a paid task's lock entry has to reach this node


class TaskProvider:
    """Executes tasks for peers through the plugins' handlers; lives on the trio loop."""

    def __init__(self, host: P2PHost, ledger: Ledger, plugins: PluginRuntime,
                 capabilities: tuple[str, ...], max_running: int,
                 journal: ExecutionJournal) -> None:
        self._host = host
        self._journal = journal  # executions kept for receipt audits
        self._ledger = ledger
        self._plugins = plugins
        self.capabilities = capabilities
        self.max_running = max_running
        self.running = 0
        self.executed_total = 0
        self.last_executed_at = 0.0  # trio.current_time()
        # base_id -> digest of the result this node gave (its executions, newest last).
        self._executed: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Serve capability queries, tasks and verdicts until cancelled."""
        direct = self._host.direct
        with direct.serving(CAPS_PROTOCOL, self._serve_caps, max_request=16), \
                direct.serving(TASK_PROTOCOL, self._serve_task, max_request=MAX_PAYLOAD + 4096,
                               timeout=MAX_TASK_TIMEOUT + 5), \
                direct.serving(VERDICT_PROTOCOL, self._serve_verdict,
                               max_request=MAX_PAYLOAD + MAX_RESULT + 8192, timeout=60), \
                direct.serving(EXECUTION_PROTOCOL, self._serve_execution, max_request=64):
            task_status.started()
            await trio.sleep_forever()

    def advertised(self) -> wire_pb2.TaskCapabilities:
        return wire_pb2.TaskCapabilities(
            kinds=[wire_pb2.TaskKindRef(plugin=p, kind=k) for p, k in self._plugins.task_kinds()],
            capabilities=self.capabilities, running=self.running,
            max_running=self.max_running)

    async def _serve_caps(self, peer_id: str, payload: bytes) -> bytes:
        return self.advertised().SerializeToString()

    async def _serve_task(self, peer_id: str, payload: bytes) -> bytes:
        request = _parse(wire_pb2.TaskRequest, payload, "TaskRequest")
        check_name(request.kind, "task kind")
        if len(request.nonce) != NONCE_BYTES:
            raise errors.InvalidArgument(f"a task nonce is {NONCE_BYTES} bytes")
        kind = self._plugins.task_kind(request.plugin, request.kind)
        if kind is None:
            raise errors.Unavailable(f"this node does not execute {request.plugin}/"
                                     f"{request.kind} now")
        # The epoch is the requester's business (its receipt must be of that
        # epoch); the claim names this execution only, so it cannot be replayed.
        if self.running >= self.max_running:
            raise errors.Unavailable(f"busy: executing {self.running} tasks already")
        requester = accounts.key_of(peer_id)
        base = claims.base_id(requester, request.plugin, request.kind, request.payload,
                              request.nonce)
        if request.escrow and (request.escrow != base or request.max_price < 1):
            raise errors.InvalidArgument("a paid task's escrow is its own task ID, with a "
                                         "max_price of at least 1")
        task_id = claims.execution_id(base, self._ledger.key)
        timeout = min(request.timeout_ms / 1000 or MAX_TASK_TIMEOUT, MAX_TASK_TIMEOUT)
        self.running += 1  # before waiting for a lock: a slot is taken while it waits
        try:
            if request.escrow:  # its refusals reach the requester as they are
                await self._check_lock(request, requester, base)
            answer = await self._execute(kind, request, task_id, peer_id, timeout)
        finally:
            self.running -= 1
        result = _checked(answer, request.plugin, request.kind)
        # A paid task's price, at most what the requester offered; none asked: free.
        price = min(result.price, request.max_price) if request.escrow else 0
        claim = claims.make_claim(
            network_id=self._ledger.network_id, task_id=task_id, plugin=request.plugin,
            requester=requester, provider=self._ledger.key, epoch=request.epoch,
            units=result.units, result=result.result, price=price,
            escrow=request.escrow if price else b"")
        self._remember(base, claims.result_digest(result.result))
        self.executed_total += 1
        self.last_executed_at = trio.current_time()
        signature = self._ledger.sign_claim(claim)
        # What a validator auditing the receipt will ask for: durable before the claim
        # leaves (an audited execution not shown is judged).
        journaled = wire_pb2.TaskExecutionAnswer(execution=wire_pb2.TaskVerdictRequest(
            task=request, requester=requester, result=result.result, proof=result.proof,
            claim=claim, provider_signature=signature)).SerializeToString()
        await self._journal.keep(task_id, self._ledger.clock_epoch(), journaled)
        return wire_pb2.TaskResponse(
            result=result.result, proof=result.proof, units=result.units, claim=claim,
            provider_signature=signature).SerializeToString()

    async def _execute(self, kind: TaskKind, request: wire_pb2.TaskRequest, task_id: bytes,
                       peer_id: str, timeout: float) -> object:
        """The plugin handler's answer; its failures as the requester should see them."""
        try:
            with trio.fail_after(timeout):
                return await kind.handler(TaskRequest(
                    task_id.hex(), request.kind, request.payload, peer_id,
                    max_price=request.max_price if request.escrow else 0))
        except trio.TooSlowError:
            raise errors.Unavailable(f"the task did not finish within {timeout:g} s") from None
        except errors.InvalidArgument:
            raise
        except Exception as exc:
            log.warning("task handler failed", exc_info=exc, extra={
                "plugin": request.plugin, "kind": request.kind, "peer_id": peer_id})
            raise errors.Unavailable(f"{request.plugin}/{request.kind} failed on this node "
                                     f"({type(exc).__name__}; see its log)") from None

    async def _check_lock(self, request: wire_pb2.TaskRequest, requester: bytes,
                          base: bytes) -> None:
        """Work on a paid task only once its lock is here: the requester's entry,
        stored (so valid: the tokens were there), locking at least max_price for
        this task past the receipt's epoch (docs/ledger.md §12.1)."""
        if len(request.lock) != 32:
            raise errors.InvalidArgument("a paid task names the hash of its lock entry")
        item = await self._ledger.stored_within(request.lock, LOCK_WAIT)
        if item is None:
            raise errors.Unavailable(f"the task's lock {request.lock.hex()[:16]} did not reach "
                                     f"this node within {LOCK_WAIT:g} s; it works on paid "
                                     "tasks only once their tokens are locked")
        lock = item.body.lock
        if not item.body.HasField("lock") or item.author != requester or lock.task != base:
            raise errors.InvalidArgument("the task's lock entry is not the requester's lock "
                                         "of this task")
        if lock.amount < request.max_price or lock.until <= request.epoch:
            raise errors.InvalidArgument(
                f"the task's lock holds {lock.amount} until epoch {lock.until}: not the "
                f"{request.max_price} offered, past the receipt's epoch {request.epoch}")

    def _remember(self, base: bytes, digest: bytes) -> None:
        self._executed[base] = digest
        self._executed.move_to_end(base)
        while len(self._executed) > REMEMBERED:
            self._executed.popitem(last=False)

    async def _serve_execution(self, peer_id: str, payload: bytes) -> bytes:
        """An execution this node signed a claim for, to a validator (its payload is
        the requester's data: validators audit receipts, nobody else needs it)."""
        request = _parse(wire_pb2.TaskExecutionRequest, payload, "TaskExecutionRequest")
        found = await self._journal.find(request.task_id)
        asker = accounts.key_of(peer_id)
        # A validator of the receipt's epoch audits it, maybe after the set changed.
        if not await trio.to_thread.run_sync(
                self._validator_around, asker, found[0] if found else None):
            raise errors.InvalidArgument("only the network's validators audit executions")
        if found is None:
            raise errors.InvalidArgument(f"this node keeps no execution "
                                         f"{request.task_id.hex()[:16]}")
        return found[1]

    def _validator_around(self, key: bytes, epoch: int | None) -> bool:
        """Whether ``key`` validates now, or validated around ``epoch`` (blocks: it may
        read old settlements)."""
        settled = self._ledger.settled
        if key in {v for v, _ in (*settled.validators, *settled.validators_after)}:
            return True
        near = () if epoch is None else (self._ledger.settled_at(e)
                                         for e in range(epoch - 2, epoch + 2))
        return any(key in {v for v, _ in old.validators} for old in near if old is not None)

    async def _serve_verdict(self, peer_id: str, payload: bytes) -> bytes:
        request = _parse(wire_pb2.TaskVerdictRequest, payload, "TaskVerdictRequest")
        task = request.task
        claim = parse_claim(request.claim)
        if claim is None:
            raise errors.InvalidArgument("the claim is not a canonical TaskClaim")
        base = claims.base_id(request.requester, task.plugin, task.kind, task.payload,
                              task.nonce)
        if claim.task_id != claims.execution_id(base, claim.provider) \
                or claim.requester != request.requester or claim.plugin != task.plugin:
            raise errors.InvalidArgument("the claim is not for this task")
        if claim.provider == self._ledger.key:
            raise errors.InvalidArgument("this node is the provider of that claim")
        if claim.result_digest != claims.result_digest(request.result):
            raise errors.InvalidArgument("the result does not match the claim")
        if not claims.signature_valid(claim.provider, request.claim,
                                      request.provider_signature):
            raise errors.InvalidArgument("the provider's signature does not verify")
        expected = await self._judge(base, claim, request)
        if expected is None:
            raise errors.InvalidArgument("this node does not find the result wrong")
        item = await self._ledger.write(task_verdict=ledger_pb2.TaskVerdict(
            claim=request.claim, provider_signature=request.provider_signature,
            expected_digest=expected))
        log.info("recorded a failed-task verdict", extra={
            "provider": accounts.peer_id_of(claim.provider), "asked_by": peer_id,
            "entry": item.hash.hex()})
        return wire_pb2.TaskVerdictAnswer(verdict_entry=item.hash).SerializeToString()

    async def _judge(self, base: bytes, claim: ledger_pb2.TaskClaim,
                     request: wire_pb2.TaskVerdictRequest) -> bytes | None:
        """The digest this node expected instead of the claim's, or None if it agrees."""
        own = self._executed.get(base)
        if own is not None:
            return own if own != claim.result_digest else None
        kind = self._plugins.task_kind(request.task.plugin, request.task.kind)
        if kind is None or kind.verify is None:
            return None
        task = request.task
        verdict = await kind.verify(
            TaskRequest(claim.task_id.hex(), task.kind, task.payload,
                        accounts.peer_id_of(request.requester)),
            TaskResult(request.result, request.proof, claim.units))
        return None if verdict else claims.rejected_digest(request.claim)


async def confirmed_by(host: P2PHost, peers: Iterable[str],
                       ask: wire_pb2.TaskVerdictRequest | wire_pb2.ReceiptAuditRequest,
                       timeout: float, *, protocol: str = VERDICT_PROTOCOL,
                       **context: str) -> str | None:
    """Ask ``peers`` in turn to confirm a verdict: on ``task-verdict``, a wrong result
    (``ask``: the execution); on ``receipt-audit``, an execution its provider did not
    show (``ask``: the receipt). The first confirmer's verdict entry (hex), or None
    when none confirmed."""
    raw = ask.SerializeToString()
    for peer in peers:
        try:
            answer = wire_pb2.TaskVerdictAnswer.FromString(
                await host.direct.request(peer, protocol, raw, timeout=timeout))
        except (errors.MeshError, DecodeError) as exc:
            log.info("a node did not confirm a verdict", extra={
                **context, "peer_id": peer, "protocol": protocol, "error": str(exc)})
            continue
        return answer.verdict_entry.hex()
    return None


M = TypeVar("M", wire_pb2.TaskRequest, wire_pb2.TaskVerdictRequest,
            wire_pb2.TaskExecutionRequest)


def _parse(cls: type[M], payload: bytes, name: str) -> M:
    try:
        return cls.FromString(payload)
    except DecodeError:
        raise errors.InvalidArgument(f"not a {name}") from None


def _checked(answer: object, plugin: str, kind: str) -> TaskResult:
    """The handler's answer if it is a well-formed TaskResult, else Unavailable."""
    if not isinstance(answer, TaskResult) or not isinstance(answer.result, bytes) \
            or not isinstance(answer.proof, bytes) or isinstance(answer.units, bool) \
            or not isinstance(answer.units, int) or isinstance(answer.price, bool) \
            or not isinstance(answer.price, int) or answer.price < 0:
        raise errors.Unavailable(f"{plugin}/{kind} answered something other than a "
                                 "TaskResult (a bug in the plugin)")
    if not 1 <= answer.units <= claims.MAX_UNITS:
        raise errors.Unavailable(f"{plugin}/{kind} claimed {answer.units} units "
                                 f"(1 to {claims.MAX_UNITS})")
    if len(answer.result) + len(answer.proof) > MAX_RESULT:
        raise errors.Unavailable(f"{plugin}/{kind}'s result is over {MAX_RESULT} bytes")
    return answer
