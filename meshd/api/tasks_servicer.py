"""mesh.tasks.v1.TasksService: forwards to the node's TaskRouter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, TypeAlias

import grpc

from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshd import errors
from meshd.api.convert import timestamp
from meshd.plugin.api import TaskOptions
from meshd.rpc.bridge import TrioBridge
from meshd.rpc.status import server_stream, unary
from meshd.tasks.receipt_audits import Audited, ReceiptAuditor
from meshd.tasks.router import TaskRecord, TaskRouter

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
DEFAULT_TIMEOUT_MS, DEFAULT_ATTEMPTS = 30_000, 3


class TasksServicer(tasks_pb2_grpc.TasksServiceServicer):
    def __init__(self, bridge: TrioBridge, router: TaskRouter,
                 audits: ReceiptAuditor | None = None) -> None:
        self._bridge = bridge
        self._router = router
        self._audits = audits

    async def SubmitTask(self, request: tasks_pb2.SubmitTaskRequest,
                         context: Context) -> tasks_pb2.SubmitTaskResponse:
        async def submit() -> TaskRecord:
            options = TaskOptions(
                redundancy=request.redundancy or 1, capabilities=tuple(request.capabilities),
                timeout=(request.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000,
                attempts=request.attempts or DEFAULT_ATTEMPTS,
                providers=tuple(request.providers),
                max_price=_amount(request.max_price, "max_price"))
            return await self._router.submit(request.plugin, request.kind, request.payload,
                                             options, request.wait)
        record = await unary(context, self._bridge, submit)
        return tasks_pb2.SubmitTaskResponse(task=task_pb(record, with_result=True))

    async def ListTasks(self, request: tasks_pb2.ListTasksRequest,
                        context: Context) -> tasks_pb2.ListTasksResponse:
        records = await unary(context, self._bridge, self._router.recent)
        return tasks_pb2.ListTasksResponse(tasks=[task_pb(r) for r in records])

    async def GetTask(self, request: tasks_pb2.GetTaskRequest,
                      context: Context) -> tasks_pb2.GetTaskResponse:
        record = await unary(context, self._bridge, self._router.get, request.task_id)
        return tasks_pb2.GetTaskResponse(task=task_pb(record, with_result=True))

    async def CancelTask(self, request: tasks_pb2.CancelTaskRequest,
                         context: Context) -> tasks_pb2.CancelTaskResponse:
        record = await unary(context, self._bridge, self._router.cancel, request.task_id)
        return tasks_pb2.CancelTaskResponse(task=task_pb(record))

    async def WatchTasks(self, request: tasks_pb2.WatchTasksRequest,
                         context: Context) -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
        async def changes() -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
            # Converted on the trio loop: the router changes records there.
            async with contextlib.aclosing(self._router.watch()) as records:
                async for record in records:
                    yield tasks_pb2.WatchTasksResponse(task=task_pb(record, with_result=True))

        async for change in server_stream(context, self._bridge, changes):
            yield change


    async def ListReceiptAudits(self, request: tasks_pb2.ListReceiptAuditsRequest,
                                context: Context) -> tasks_pb2.ListReceiptAuditsResponse:
        auditor = self._audits

        async def read() -> tasks_pb2.ListReceiptAuditsResponse:  # on the trio loop
            if auditor is None:
                return tasks_pb2.ListReceiptAuditsResponse()
            return tasks_pb2.ListReceiptAuditsResponse(
                audits=[receipt_audit_pb(a) for a in auditor.recent],
                **asdict(auditor.counts))
        return await unary(context, self._bridge, read)


def receipt_audit_pb(audited: Audited) -> tasks_pb2.ReceiptAudit:
    return tasks_pb2.ReceiptAudit(
        epoch=audited.epoch, receipt=audited.receipt, plugin=audited.plugin,
        provider=audited.provider, requester=audited.requester, outcome=audited.outcome,
        detail=audited.detail, verdicts=audited.verdicts, audited_at=timestamp(audited.at))


def task_pb(record: TaskRecord, with_result: bool = False) -> tasks_pb2.Task:
    return tasks_pb2.Task(
        task_id=record.task_id, plugin=record.plugin, kind=record.kind, state=record.state,
        error=record.error, payload_size=record.payload_size,
        redundancy=record.options.redundancy, capabilities=record.options.capabilities,
        submitted_at=timestamp(record.submitted_at),
        finished_at=timestamp(record.finished_at),
        result=record.result if with_result else b"", providers=record.providers,
        attempts=[tasks_pb2.Attempt(
            provider=a.provider, state=a.state, error=a.error, result_digest=a.result_digest,
            units=a.units, started_at=timestamp(a.started_at),
            finished_at=timestamp(a.finished_at), receipt=a.receipt, verdicts=a.verdicts,
            price=str(a.price))
            for a in record.attempts],
        max_price=str(record.options.max_price), lock=record.lock)


def _amount(text: str, what: str) -> int:
    """A decimal amount of base units from the API ("" is 0)."""
    if not text:
        return 0
    if not text.isascii() or not text.isdigit():
        raise errors.InvalidArgument(f"{what} is a whole number of base units, not {text!r}")
    return int(text)
