"""ctx.dht: plugins use the network's DHT, each in its own key space (real nodes, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import trio
from libp2p.kad_dht.kad_dht import _encode_key
from libp2p.peer.id import ID

from meshd.plugin import Context, Event, FailedPrecondition, InvalidArgument, NotFound, Plugin
from meshd.testing import eventually, open_network, plugin_under_test
from tests.integration.test_plugins import Instances


class DhtPlugin(Plugin):
    """Events over ctx.dht: PROVIDE key, FIND key (JSON of providers), PUT key\\nvalue, GET key."""

    async def init(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.on("PROVIDE", self.provide, timeout=40)
        ctx.on("FIND", self.find, timeout=40)
        ctx.on("PUT", self.put, timeout=40)
        ctx.on("GET", self.get, timeout=40)

    async def provide(self, event: Event) -> bytes:
        await self.ctx.dht.provide(event.data.decode())
        return b"ok"

    async def find(self, event: Event) -> bytes:
        found = await self.ctx.dht.find_providers(event.data.decode(), count=10)
        return json.dumps([{"peer_id": p.peer_id, "addrs": list(p.addrs)}
                           for p in found]).encode()

    async def put(self, event: Event) -> bytes:
        key, _, value = event.data.partition(b"\n")
        await self.ctx.dht.put(key.decode(), value)
        return b"ok"

    async def get(self, event: Event) -> bytes:
        try:
            return await self.ctx.dht.get(event.data.decode())
        except NotFound as exc:  # an event handler refuses with InvalidArgument
            raise InvalidArgument(str(exc)) from None


async def test_plugins_provide_find_put_and_get_across_the_network(tmp_path: Path) -> None:
    plugins = [plugin_under_test("maps", DhtPlugin), plugin_under_test("other", DhtPlugin)]
    with trio.fail_after(90):
        async with open_network(tmp_path, 3, plugins=plugins) as net:
            a, b, c = net.nodes
            # A provider record announced by one node is found from another.
            assert await a.call("maps", "PROVIDE", b"tile/12/2048/1361") == b"ok"
            found = json.loads(await c.call("maps", "FIND", b"tile/12/2048/1361"))
            assert a.peer_id in {p["peer_id"] for p in found}
            assert all(p["addrs"] for p in found if p["peer_id"] == a.peer_id)
            # A value put by one node is read by another.
            assert await b.call("maps", "PUT", b"index\n" + b"v1" * 100) == b"ok"
            assert await c.call("maps", "GET", b"index") == b"v1" * 100

            # Another plugin's key space: the same key is not there.
            with pytest.raises(grpc.RpcError) as missing:
                await c.call("other", "GET", b"index", timeout=40)
            assert "no value" in (missing.value.details() or "")
            assert json.loads(await c.call("other", "FIND", b"tile/12/2048/1361")) == []

            # Bad input is refused with the reason, and the plugin goes on.
            for event, data, reason in (("GET", b"", "1 to 184 bytes"),
                                        ("GET", b"k" * 185, "1 to 184 bytes"),
                                        ("PUT", b"big\n" + b"x" * (64 * 1024 + 1), "limit")):
                with pytest.raises(grpc.RpcError) as refused:
                    await a.call("maps", event, data)
                assert reason in (refused.value.details() or ""), refused.value.details()
            assert await a.call("maps", "GET", b"index") == b"v1" * 100


async def test_find_providers_asks_the_network_even_with_a_local_record(tmp_path: Path) -> None:
    # docs/py-libp2p.md#found-find-providers-stops-at-local-records
    factory = Instances(DhtPlugin)
    made = factory.made

    with trio.fail_after(90):
        async with open_network(tmp_path, 3, plugins=[plugin_under_test("maps", factory)]) as net:
            a, b, _ = net.nodes
            for node in (a, b):
                assert await node.call("maps", "PROVIDE", b"holders") == b"ok"
            plugin_a = next(p for p in made if p.ctx.peer_id == a.peer_id)
            kad = plugin_a.ctx.dht._dht._dht
            key = "plugin/maps/holders"
            # a keeps its own record; b's is only on the other nodes now.
            kad.provider_store.providers[_encode_key(key)].pop(b.peer_id, None)
            upstream = await kad.find_providers(key, 10)
            assert {str(p.peer_id) for p in upstream} == {a.peer_id}  # the trap
            found = json.loads(await a.call("maps", "FIND", b"holders"))
            assert {p["peer_id"] for p in found} == {a.peer_id, b.peer_id}


async def test_a_plugin_reaches_a_member_it_is_not_connected_to(tmp_path: Path) -> None:
    factory = Instances(DhtPlugin)
    made = factory.made

    # Nodes dial only below two peers: with four, a connection closed stays closed.
    with trio.fail_after(90):
        async with open_network(tmp_path, 4, plugins=[plugin_under_test("maps", factory)],
                                config={"p2p.low_watermark": 2}) as net:
            assert await net.nodes[2].call("maps", "PUT", b"index\nhere") == b"ok"
            a, c = made[0], next(p for p in made if p.ctx.peer_id == net.nodes[2].peer_id)
            host = a.ctx._host  # the node a's plugin runs on
            await host.membership.close_connections(ID.from_base58(c.ctx.peer_id))
            await eventually(lambda: c.ctx.peer_id not in a.ctx.peers(), timeout=10,
                             what="a and c to be apart")
            assert await a.ctx.request(c.ctx.peer_id, "GET", b"index", timeout=30) == b"here"
            assert c.ctx.peer_id in a.ctx.peers()  # dialled at the DHT's address, admitted
            # A peer the operator disconnected is not dialled behind their back.
            await host.membership.disconnect(c.ctx.peer_id)
            with pytest.raises(FailedPrecondition, match="operator blocked or disconnected"):
                await a.ctx.request(c.ctx.peer_id, "GET", b"index", timeout=30)
