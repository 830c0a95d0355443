"""A module stored with the storage plugin runs by its CID on four real daemons: providers
read it through ``ctx.call`` (the storage plugin's READ, checked against the CID), keep it
compiled, and refuse with why when it cannot be read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio
from mesh_compute.offers import STORED_MODULES
from mesh_compute.plugin import ComputePlugin
from mesh_compute.runs import RunRequest, parse_result
from mesh_compute.sandbox import Sandbox
from mesh_storage.plugin import StoragePlugin

from meshd.plugin import InvalidArgument, MeshError, NotFound, TaskOptions
from meshd.testing import eventually, open_network, plugin_under_test
from tests.integration.test_plugins import Instances
from tests.integration.test_storage_audits import store

EXAMPLES = Path(__file__).parents[2] / "plugins" / "compute" / "examples"
UNSTORED = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # no node has it


def read(cid: str, most: int) -> bytes:
    return json.dumps({"file": cid, "max_bytes": most}).encode()


async def test_a_stored_module_runs_by_its_cid_and_an_unreadable_one_is_refused(
        tmp_path: Path) -> None:
    storage, compute = Instances(StoragePlugin), Instances(ComputePlugin)
    with trio.fail_after(240):
        async with open_network(tmp_path, 4, plugins=[plugin_under_test("storage", storage),
                                                      plugin_under_test("compute", compute)]
                                ) as net:
            owner = net.nodes[0]
            stores = {p.ctx.peer_id: p for p in storage.made}
            computes = {p.ctx.peer_id: p for p in compute.made}
            ctx = computes[owner.peer_id].ctx
            others = tuple(n.peer_id for n in net.nodes[1:])

            async def all_announced() -> bool:
                return len(await stores[owner.peer_id].files.candidates(fresh=True)) == 3
            await eventually(all_announced, timeout=60, what="every holder announced")
            module = (EXAMPLES / "fnv1a.wat").read_bytes()
            cid = (await store(owner, module)).cid

            # READ hands another plugin the whole file, checked against its CID, and
            # says why when it will not.
            assert await ctx.call("storage", "READ", read(cid, 1 << 20), timeout=60) == module
            with pytest.raises(InvalidArgument, match=f"{len(module)} bytes, over the 100"):
                await ctx.call("storage", "READ", read(cid, 100), timeout=60)
            with pytest.raises(InvalidArgument, match="READ takes JSON"):
                await ctx.call("storage", "READ", b'{"file": 1}\n', timeout=60)
            with pytest.raises(NotFound, match="nope"):
                await ctx.call("nope", "READ", timeout=5)
            with pytest.raises(InvalidArgument, match="its own handlers"):
                await ctx.call("compute", "PLAN", timeout=5)
            # The storage plugin's operator events are not open to other plugins.
            with pytest.raises(InvalidArgument, match="does not take 'REMOVE' from other"):
                await ctx.call("storage", "REMOVE", cid.encode(), timeout=5)
            with pytest.raises(MeshError, match="not for peers"):
                await stores[owner.peer_id].ctx.request(others[0], "READ", read(cid, 1 << 20))

            # Every provider offers to read modules by CID: it runs the storage plugin.
            plan = json.loads(await owner.call("compute", "PLAN", b'{"stored_module": true}',
                                               timeout=30))
            assert sorted(p["peer_id"] for p in plan["providers"]) == sorted(others), plan
            assert all(STORED_MODULES in p["features"] for p in plan["providers"])

            # The module by CID on two providers: the output wasmtime gives here, and a
            # payload that carries the input only.
            data = os.urandom(50_000)
            payload = RunRequest(b"", data, module_cid=cid).encode()
            assert len(payload) < 200 + len(data)
            outcome = await ctx.submit_task("RUN", payload, TaskOptions(
                redundancy=2, providers=others[:2], timeout=60))
            assert outcome.state == "done", outcome
            local = Sandbox().run(module.decode(), data)
            ran = parse_result(outcome.result)
            assert (ran.output, ran.fuel) == (local.output, local.fuel_used)
            for provider in outcome.providers:  # kept compiled, by CID
                assert cid in computes[provider]._modules

            # A CID no node stores: each provider says it cannot read it.
            outcome = await ctx.submit_task("RUN", RunRequest(b"", data,
                                                              module_cid=UNSTORED).encode(),
                                            TaskOptions(providers=others[:1], attempts=1,
                                                        timeout=90))
            assert outcome.state == "failed", outcome
            assert f"cannot read module {UNSTORED}" in outcome.error, outcome.error
