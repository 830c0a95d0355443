"""Spot checks on five real daemons in one process: a provider that lies is caught at
the rate docs/compute.md §4 predicts, and slashed; honest results are never judged wrong."""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from mesh_compute.plugin import ComputePlugin
from mesh_compute.runs import RunRequest, RunResult, parse_result

from mesh.tasks.v1 import tasks_pb2
from meshcore.genesis import MarketPolicy
from meshd.plugin import Context, TaskOptions, TaskRequest, TaskResult
from meshd.testing import Network, Node, eventually, open_network, plugin_under_test
from tests.integration.test_plugins import Instances
from tests.integration.test_task_reports import bonded, bonded_of, receipt_audits, stake

EXAMPLES = Path(__file__).parents[2] / "plugins" / "compute" / "examples"
LIE_RATE = 0.2  # q: the share of its results the liar forges
SPOT_CHECK_RATE = 0.5  # p: the share of results the requester runs itself
TASKS = 120
STAKE = 1_000_000


class LyingComputePlugin(ComputePlugin):
    """Runs every module, then forges the output of LIE_RATE of its results."""

    lied: set[bytes] = set()  # SHA-256 of the payloads it lied about
    rng = random.Random(20)

    async def run_task(self, task: TaskRequest) -> TaskResult:
        honest = await super().run_task(task)
        if self.rng.random() >= LIE_RATE:
            return honest
        LyingComputePlugin.lied.add(hashlib.sha256(task.payload).digest())
        run = parse_result(honest.result)
        forged = RunResult(run.fuel, bytes(b ^ 0xFF for b in run.output))
        return TaskResult(forged.encode(), units=forged.units)


class Factory(Instances):
    """The second node to start gets the liar."""

    def __call__(self) -> ComputePlugin:
        plugin = LyingComputePlugin() if len(self.made) == 1 else ComputePlugin()
        self.made.append(plugin)
        return plugin


async def test_a_liar_is_caught_at_the_spot_check_rate_and_slashed(tmp_path: Path) -> None:
    factory = Factory(ComputePlugin)
    # The network's rate, from the genesis (governance could change it).
    market = MarketPolicy(spot_check_bps=int(SPOT_CHECK_RATE * 10_000))
    module = (EXAMPLES / "fnv1a.wat").read_bytes()
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("compute", factory)],
                                market=market, epoch_seconds=5) as net:
            requester, liar_node = net.nodes[0], net.nodes[1]
            plugins = {p.ctx.peer_id: p for p in factory.made}
            ctx = plugins[requester.peer_id].ctx
            assert isinstance(plugins[liar_node.peer_id], LyingComputePlugin)
            assert plugins[requester.peer_id].spot_check_rate() == SPOT_CHECK_RATE
            await eventually(lambda: len(ctx.peers()) == 4, timeout=30,
                             what="the requester to see every node")
            await trio.to_thread.run_sync(stake, liar_node, STAKE)
            await eventually(lambda: bonded(requester, liar_node, STAKE), timeout=60,
                             what="the liar's stake bonded")

            caught, accepted_lies, judged_honest = 0, 0, 0
            for index in range(TASKS):
                payload = RunRequest(module, index.to_bytes(4, "big")).encode()
                outcome = await ctx.submit_task("RUN", payload, TaskOptions(
                    providers=(liar_node.peer_id,), attempts=1))
                lie = hashlib.sha256(payload).digest() in LyingComputePlugin.lied
                if outcome.state == "done":
                    accepted_lies += lie
                else:
                    assert "rejected the result" in outcome.error, outcome
                    caught += lie
                    judged_honest += not lie
            lies = len(LyingComputePlugin.lied)

            # Never an honest result judged wrong; each lie caught with probability p.
            assert judged_honest == 0
            assert caught + accepted_lies == lies
            assert lies >= 10, lies  # q = 0.2 of 120: 24 expected
            spread = 4 * math.sqrt(lies * SPOT_CHECK_RATE * (1 - SPOT_CHECK_RATE))
            assert abs(caught - lies * SPOT_CHECK_RATE) <= spread, (caught, lies)

            # Two verdicts (the requester's, and an honest provider's that ran it
            # itself) slash the liar once per caught result: 10 % of its stake at
            # the settlement each (docs/ledger.md §7.2), so at least 1 - 0.9^caught.
            most = STAKE * 0.9 ** caught + caught  # whole tokens: rounding per slash

            async def slashed() -> bool:
                return await trio.to_thread.run_sync(bonded_of, requester, liar_node) <= most
            await eventually(slashed, timeout=90, what=f"the liar slashed for {caught} lies")


class TrustingComputePlugin(ComputePlugin):
    """A requester that colludes with its provider: it accepts every result unchecked."""

    async def check_run(self, task: TaskRequest, result: TaskResult) -> bool:
        return True


class AlternatingLiar(ComputePlugin):
    """Forges every other result: those of even inputs."""

    async def run_task(self, task: TaskRequest) -> TaskResult:
        honest = await super().run_task(task)
        if task.payload[-1] % 2:  # the input, last in the payload: an odd one is honest
            return honest
        run = parse_result(honest.result)
        forged = RunResult(run.fuel, bytes(b ^ 0xFF for b in run.output))
        return TaskResult(forged.encode(), units=forged.units)


class CollusionFactory(Instances):
    """The first node requests and trusts; the second lies; the rest are honest."""

    def __call__(self) -> ComputePlugin:
        kinds = [TrustingComputePlugin, AlternatingLiar]
        plugin = kinds[len(self.made)]() if len(self.made) < len(kinds) else ComputePlugin()
        self.made.append(plugin)
        return plugin


@contextlib.asynccontextmanager
async def audited_network(tmp_path: Path, factory: Instances,
                          ) -> AsyncIterator[tuple[Network, Node, Node, Context]]:
    """Five nodes that audit every receipt (p = 1): (the network, the requester, its
    provider, staked, and the requester's plugin context)."""
    market = MarketPolicy(spot_check_bps=10_000)
    with trio.fail_after(240):
        async with open_network(tmp_path, 5, plugins=[plugin_under_test("compute", factory)],
                                market=market, epoch_seconds=5) as net:
            requester, provider = net.nodes[0], net.nodes[1]
            ctx = {p.ctx.peer_id: p for p in factory.made}[requester.peer_id].ctx
            await eventually(lambda: len(ctx.peers()) == 4, timeout=30,
                             what="the requester to see every node")
            await trio.to_thread.run_sync(stake, provider, STAKE)
            await eventually(lambda: bonded(requester, provider, STAKE), timeout=60,
                             what="the provider's stake bonded")
            yield net, requester, provider, ctx


async def run_accepted(ctx: Context, provider: Node, tasks: int) -> None:
    """Run the example hash on ``tasks`` inputs on ``provider``: each result accepted."""
    module = (EXAMPLES / "fnv1a.wat").read_bytes()
    for index in range(tasks):
        payload = RunRequest(module, index.to_bytes(4, "big")).encode()
        outcome = await ctx.submit_task("RUN", payload, TaskOptions(
            providers=(provider.peer_id,), attempts=1))
        assert outcome.state == "done", outcome


async def slashed_to(requester: Node, provider: Node, most: float, what: str) -> None:
    async def slashed() -> bool:
        return await trio.to_thread.run_sync(bonded_of, requester, provider) <= most
    await eventually(slashed, timeout=120, what=what)


async def test_validators_drawn_from_the_beacon_catch_a_lie_a_colluding_requester_accepted(
        tmp_path: Path) -> None:
    """A requester that accepts its provider's forged results unchecked writes receipts
    for them; the validators the beacon draws audit every receipt (p = 1 here) from the
    provider's journal, and two of their verdicts slash it (docs/tasks.md §5d); its
    honest results pass."""
    factory = CollusionFactory(ComputePlugin)
    async with audited_network(tmp_path, factory) as (net, requester, liar_node, ctx):
        liar = {p.ctx.peer_id: p for p in factory.made}[liar_node.peer_id]
        assert isinstance(liar, AlternatingLiar)
        await run_accepted(ctx, liar_node, 4)  # two forged, two honest: all accepted
        # The requester wrote no verdict: only the validators' audits can slash.
        # Each forged receipt is judged by two validators: 10 % of the stake
        # at its settlement (of the stake the settlement began with: 20 % when
        # both are in one, 19 % when in two).
        await slashed_to(requester, liar_node, STAKE * 0.9 ** 2 + 2,
                         "the liar slashed for its 2 lies")
        assert await trio.to_thread.run_sync(bonded_of, requester, liar_node) \
            >= STAKE * 0.8  # its 2 honest receipts passed: not slashed for them

        # What the validators say they did (`meshctl tasks audits`): each of the
        # 4 receipts audited once, by a validator neither party is.
        async def all_audited() -> list[tasks_pb2.ListReceiptAuditsResponse]:
            return [await trio.to_thread.run_sync(receipt_audits, n) for n in net.nodes]
        listed = await eventually(all_audited, lambda got: sum(a.drawn for a in got) == 4,
                                  timeout=60, what="the 4 receipts audited")
        assert [a.drawn for a in listed[:2]] == [0, 0]  # requester and provider
        outcomes = sorted(a.outcome for got in listed for a in got.audits)
        assert outcomes == ["failed", "failed", "passed", "passed"], listed
        for audited in (a for got in listed for a in got.audits):
            assert (audited.provider, audited.requester, audited.plugin) == (
                liar_node.peer_id, requester.peer_id, "compute")
            assert len(audited.verdicts) == (2 if audited.outcome == "failed" else 0)


async def test_a_provider_that_answers_but_does_not_show_an_audited_execution_is_slashed(
        tmp_path: Path) -> None:
    """A provider that cannot show the work behind its receipts (its journal emptied
    here, as a colluding pair would rather than show a forgery) is asked at two final
    epochs while it answers PINGs, then judged by its auditor; the next validator,
    asked on receipt-audit/1.0.0, asks it itself and writes the second verdict
    (docs/tasks.md §5d)."""
    async with audited_network(tmp_path, Instances(ComputePlugin)) as (
            net, requester, provider, ctx):
        await run_accepted(ctx, provider, 2)  # honest results, checked and accepted
        # Before the receipts' epoch is final: nothing is left to show the auditors.
        await trio.to_thread.run_sync(forget_executions, provider)
        await slashed_to(requester, provider, STAKE * 0.9 ** 2 + 2,
                         "the provider slashed for 2 receipts")

        listed = [a for n in net.nodes
                  for a in (await trio.to_thread.run_sync(receipt_audits, n)).audits]
        own = [a for a in listed if not a.detail.startswith("asked by")]
        confirming = [a for a in listed if a.detail.startswith("asked by")]
        assert sorted(a.outcome for a in own) == ["failed", "failed"], listed
        assert all("not shown to 2 asks while the provider answered" in a.detail
                   and "keeps no execution" in a.detail and len(a.verdicts) == 2
                   for a in own), own
        assert [a.outcome for a in confirming] == ["failed", "failed"], listed
        assert {v for a in confirming for v in a.verdicts} == {a.verdicts[1] for a in own}


def forget_executions(node: Node) -> None:
    with contextlib.closing(sqlite3.connect(node.data_dir / "executions.sqlite")) as db, db:
        assert db.execute("DELETE FROM execution").rowcount == 2
