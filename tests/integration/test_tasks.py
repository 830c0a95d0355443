"""The task router on five real daemons in one trio process.

a submits; b and c are honest; d lies; e never finishes a square. Each
advertises capabilities (config tasks.capabilities) so that a test can pick
who may serve a task. Each test is one scenario on five fresh nodes (the
``cluster`` fixture).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from mesh.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from meshd.daemon import DaemonInfo
from meshd.plugin import Event
from meshd.plugin_host.loader import available
from meshd.tasks import router
from meshd.testing import eventually
from tests.integration.test_plugins import Instances, open_node, write_genesis
from tests.plugin_fixtures import LyingSquarePlugin, SlowSquarePlugin, SquarePlugin

CAPABILITIES = {"a": (), "b": ("honest", "x", "y"), "c": ("honest", "x"),
                "d": ("x", "d-only"), "e": ("y", "e-only")}
PLUGINS = {"a": SquarePlugin, "b": SquarePlugin, "c": SquarePlugin, "d": LyingSquarePlugin,
           "e": SlowSquarePlugin}


class Cluster:
    def __init__(self) -> None:
        self.nodes: dict[str, DaemonInfo] = {}
        self.plugins: dict[str, Instances] = {}

    def call(self, method: str, request: Any) -> Any:
        with grpc.insecure_channel(f"unix:{self.nodes['a'].api.socket}") as channel:
            return getattr(tasks_pb2_grpc.TasksServiceStub(channel), method)(request, timeout=60)

    async def submit(self, kind: str, payload: bytes, *capabilities: str,
                     **options: Any) -> tasks_pb2.Task:
        request = tasks_pb2.SubmitTaskRequest(plugin="square", kind=kind, payload=payload,
                                              capabilities=capabilities, wait=True, **options)
        response = await trio.to_thread.run_sync(self.call, "SubmitTask", request)
        return response.task

    def name_of(self, peer_id: str) -> str:
        return next(name for name, info in self.nodes.items() if info.peer_id == peer_id)


@contextlib.asynccontextmanager
async def open_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    genesis = write_genesis(tmp_path, "square")
    cluster = Cluster()
    async with contextlib.AsyncExitStack() as stack:
        for name, plugin in PLUGINS.items():
            instances = cluster.plugins[name] = Instances(plugin)
            bootstrap = (cluster.nodes["a"].listen_addrs[0],) if cluster.nodes else ()
            cluster.nodes[name] = await stack.enter_async_context(open_node(
                tmp_path, name, genesis, [available("square", instances, "1.0.0")],
                bootstrap=bootstrap, **{"tasks.capabilities": CAPABILITIES[name]}))
        ctx = cluster.plugins["a"].last.ctx
        await eventually(lambda: len(ctx.peers()) == 4, timeout=20, interval=0.02,
                         what="a to see the 4 other nodes")
        yield cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Five fresh nodes for one scenario; starting them and the scenario take
    120 s at most."""
    with trio.fail_after(120):
        async with open_cluster(tmp_path) as started:
            yield started


def _attempts(cluster: Cluster, task: tasks_pb2.Task) -> list[tuple[str, str]]:
    return [(cluster.name_of(a.provider), a.state) for a in task.attempts]


async def test_a_square_is_served_by_one_honest_provider_with_one_receipt(
        cluster: Cluster) -> None:
    # A square, by the plugin's rule: one honest provider, one receipt.
    task = await cluster.submit("square", b"12", "honest")
    assert (task.state, task.result, task.error) == ("done", b"144", "")
    assert len(task.providers) == 1 and cluster.name_of(task.providers[0]) in "bc"
    (attempt,) = task.attempts
    assert attempt.state == "done" and attempt.units == 3
    assert len(attempt.receipt) == 64 and not attempt.verdicts


async def test_a_liar_among_redundant_executions_is_outvoted_and_its_result_recorded(
        cluster: Cluster) -> None:
    # Three redundant executions, one of them by the liar: outvoted,
    # and its wrong result is recorded by a and confirmed by an honest node.
    task = await cluster.submit("digest", b"payload", "x", redundancy=3)
    assert task.state == "done"
    assert sorted(cluster.name_of(p) for p in task.providers) == ["b", "c"]
    states = dict(_attempts(cluster, task))
    assert states == {"b": "done", "c": "done", "d": "wrong"}
    liar = next(a for a in task.attempts if cluster.name_of(a.provider) == "d")
    assert "differs from the majority's (2 of 3)" in liar.error
    assert len(liar.verdicts) == 2 and not liar.receipt
    assert all(len(a.receipt) == 64 for a in task.attempts if a.state == "done")
    # Each provider's track record here, as plugins read it (ctx.provider_record).
    ctx = cluster.plugins["a"].last.ctx
    record = ctx.provider_record(cluster.nodes["d"].peer_id)
    assert (record.done, record.failed, record.wrong) == (0, 0, 1)
    assert ctx.provider_record(cluster.nodes["b"].peer_id).done == 1
    assert ctx.provider_record(cluster.nodes["e"].peer_id) is None  # never asked


async def test_a_result_the_rule_rejects_fails_the_task_with_a_confirmed_verdict(
        cluster: Cluster) -> None:
    # Only the liar may serve: its result fails the rule, the task fails,
    # and the verdict is confirmed by another node applying the same rule.
    task = await cluster.submit("square", b"5", "d-only")
    assert task.state == "failed"
    assert _attempts(cluster, task) == [("d", "wrong")]
    assert "0 of 1 executions succeeded" in task.error
    assert "rejected the result" in task.error
    assert len(task.attempts[0].verdicts) == 2


async def test_a_provider_that_does_not_answer_in_time_is_given_up_and_the_task_retried(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # A provider that does not answer in time is given up, and the task
    # is retried on another one (e is tried first here).
    monkeypatch.setattr(router, "shuffle_providers", _first(cluster, "e"))
    task = await cluster.submit("square", b"9", "y", timeout_ms=1000, attempts=2)
    assert task.state == "done" and task.result == b"81"
    assert _attempts(cluster, task) == [("e", "timed_out"), ("b", "done")]
    assert "no answer within 1 s" in task.attempts[0].error


async def test_too_few_providers_fail_the_task_and_bad_requests_are_refused(
        cluster: Cluster) -> None:
    # Not enough providers, and bad requests.
    task = await cluster.submit("digest", b"z", "x", redundancy=4)
    assert task.state == "failed"
    assert "3 connected peers execute square/digest with x; the task needs 4" in task.error
    # Providers named by the submitter: only those, in its order; too few usable fails.
    named = [cluster.nodes[n].peer_id for n in "cb"]
    task = await cluster.submit("square", b"4", providers=named, attempts=2)
    assert task.state == "done" and _attempts(cluster, task) == [("c", "done")]
    task = await cluster.submit("square", b"4", "honest", redundancy=2,
                                providers=[cluster.nodes[n].peer_id for n in "bd"])
    assert task.state == "failed"
    assert "1 of the 2 providers named are connected and execute square/square with " \
        "honest; the task needs 2" in task.error
    for bad, message in [({"redundancy": 17}, "redundancy must be 1 to 16"),
                         ({"providers": ["p"] * 65}, "name at most 64 providers"),
                         ({"attempts": 99}, "attempts must be 1 to 16"),
                         ({"timeout_ms": 301_000}, "at most 300 s"),
                         ({"kind": "no spaces"}, "is not a name"),
                         ({"payload": bytes(2 << 20)}, "at most 1048576 bytes")]:
        fields = {"plugin": "square", "kind": "square", "payload": b"1", **bad}
        with pytest.raises(grpc.RpcError) as refused:
            await trio.to_thread.run_sync(cluster.call, "SubmitTask",
                                          tasks_pb2.SubmitTaskRequest(**fields))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in refused.value.details()


async def test_a_plugin_submits_a_task_through_its_own_context(cluster: Cluster) -> None:
    square_a = cluster.plugins["a"].last
    assert await square_a.submit(Event(cluster.nodes["a"].peer_id, "SUBMIT", b"7")) \
        == b"done 49 1"


async def test_a_stuck_task_is_cancelled_and_tasks_are_listed_newest_first(
        cluster: Cluster) -> None:
    # A finished task first, so that the list shows both, the newest first.
    done = await cluster.submit("square", b"12", "honest")
    assert done.state == "done"
    # Cancel a task stuck on the slow provider.
    slow = tasks_pb2.SubmitTaskRequest(plugin="square", kind="square", payload=b"3",
                                       capabilities=["e-only"], timeout_ms=60_000)
    started = await trio.to_thread.run_sync(cluster.call, "SubmitTask", slow)
    assert started.task.state == "running"
    cancelled = await trio.to_thread.run_sync(
        cluster.call, "CancelTask", tasks_pb2.CancelTaskRequest(task_id=started.task.task_id[:10]))
    assert cancelled.task.state == "cancelled"
    with pytest.raises(grpc.RpcError) as again:
        await trio.to_thread.run_sync(
            cluster.call, "CancelTask", tasks_pb2.CancelTaskRequest(task_id=started.task.task_id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    listed = await trio.to_thread.run_sync(cluster.call, "ListTasks",
                                           tasks_pb2.ListTasksRequest())
    assert [t.state for t in listed.tasks][:2] == ["cancelled", "done"]
    assert len(listed.tasks) == 2 and not any(t.result for t in listed.tasks)
    with pytest.raises(grpc.RpcError) as unknown:
        await trio.to_thread.run_sync(cluster.call, "GetTask",
                                      tasks_pb2.GetTaskRequest(task_id="00" * 8))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def _first(cluster: Cluster, name: str) -> Callable[[list[str]], None]:
    def order(peers: list[str]) -> None:
        peers.sort(key=lambda p: (cluster.name_of(p) != name, p))
    return order
