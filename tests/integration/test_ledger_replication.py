"""Ledger replication between nodes in one trio process (docs/ledger.md §8)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from mesh.ledger.v1 import ledger_pb2, sync_pb2
from meshcore import genesis as genesis_module
from meshcore.genesis import Genesis
from meshcore.ledger import entry
from meshcore.ledger.accounts import peer_id_of
from meshd import errors
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.ledger.own_chain import CONNECT_SETTLE
from meshd.ledger.replication import TOPIC, Replicator
from meshd.ledger.store import Head
from meshd.ledger.sync_server import HEADS, MAX_REQUEST, RANGE, SyncServer
from meshd.p2p.direct import Code, DirectRequestFailed
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.host import peer_id_of as host_peer_id
from meshd.testing import eventually
from tests.integration.p2p_helpers import LOOPBACK, wait_until

ALLOCATION = 1_000_000


@dataclass
class Node:
    host: P2PHost
    ledger: Ledger
    replicator: Replicator
    seed: bytes
    sync_server: SyncServer

    @property
    def account(self) -> str:
        return peer_id_of(self.ledger.key)

    def heads(self) -> list[Head]:
        return self.ledger.store.heads()


def make_genesis(seeds: list[bytes], validators: int = 0) -> Genesis:
    """Each seed's node with an allocation; the first ``validators`` validate."""
    allocations = ", ".join(f'{{ account = "{host_peer_id(s)}", amount = {ALLOCATION} }}'
                            for s in seeds)
    listed = "\n".join(f'[[validators]]\npeer_id = "{host_peer_id(s)}"\n'
                       for s in seeds[:validators])
    return genesis_module.loads(f"""
name = "Replication"
genesis_time = 2026-01-01T00:00:00Z
[token]
name = "Test"
symbol = "TST"
allocations = [{allocations}]
{listed}
""")


@contextlib.asynccontextmanager
async def open_nodes(tmp_path: Path, count: int, *, sync_interval: float = 3600.0,
                     seeds: list[bytes] | None = None, sync_only: tuple[int, ...] = (),
                     ) -> AsyncIterator[list[Node]]:
    """``count`` nodes of one network, each with a ledger and a replicator (the
    periodic sync is off unless asked: tests drive syncs themselves). Nodes
    in ``sync_only`` do not gossip: what they get came by sync."""
    seeds = seeds or [os.urandom(32) for _ in range(count)]
    genesis = make_genesis(seeds)
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for index, seed in enumerate(seeds[:count]):
            data_dir = tmp_path / f"n{index}"
            data_dir.mkdir(exist_ok=True)
            host = await stack.enter_async_context(
                open_p2p_host(seed, LOOPBACK, genesis.network_id))
            ledger = await stack.enter_async_context(open_ledger(data_dir, seed, genesis))
            # Each replicator stops before its ledger and host (the stack unwinds
            # in reverse), as in the daemon.
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            replicator = Replicator(ledger, host, sync_interval=sync_interval,
                                    gossip=index not in sync_only)
            await nursery.start(replicator.run)
            sync_server = SyncServer(ledger, host)
            await nursery.start(sync_server.run)
            nodes.append(Node(host, ledger, replicator, seed, sync_server))
        yield nodes


async def connect_all(nodes: list[Node]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b and not a.host.membership.is_admitted(b.host.peer_id):
                await a.host.connect(b.host.listen_addrs()[0])


async def wait_converged(nodes: list[Node], timeout: float = 20) -> None:
    """Until every node stores the same heads (so the same entries)."""
    await eventually(lambda: [n.heads() for n in nodes],
                     lambda heads: all(h == heads[0] for h in heads),
                     timeout=timeout, interval=0.05, what="every node to store the same heads")


async def test_a_transfer_reaches_every_node_by_gossip(tmp_path: Path) -> None:
    async with open_nodes(tmp_path, 4) as nodes:
        await connect_all(nodes)
        await eventually(lambda: all(len(n.host.broadcast.topic_peers(TOPIC)) == 3
                                     for n in nodes), timeout=15, interval=0.02,
                         what="every node to see the 3 others on the ledger topic")
        alice, bob = nodes[0], nodes[1]
        made = await alice.ledger.transfer(bob.account, 250, "rent")
        await wait_converged(nodes)
        for node in nodes:
            assert await trio.to_thread.run_sync(node.ledger.store.get, made.hash) == made
            balance = await node.ledger.balance(bob.account)
            assert balance.pending_in == 250
        assert all(n.replicator.counters.syncs_failed == 0 for n in nodes)
        assert nodes[2].replicator.counters.invalid == 0


async def test_a_late_joiner_catches_up_by_sync(tmp_path: Path) -> None:
    async with open_nodes(tmp_path, 3, sync_only=(2,)) as nodes:
        early, other, late = nodes
        await early.host.connect(other.host.listen_addrs()[0])
        for index in range(30):
            await early.ledger.transfer(other.account, index + 1)
            await other.ledger.transfer(early.account, 1)
        await wait_converged([early, other])
        assert late.heads() == []
        await late.host.connect(early.host.listen_addrs()[0])  # admission starts a sync
        await wait_converged(nodes)
        assert late.ledger.store.count() == 60
        assert late.replicator.counters.synced == 60, late.replicator.counters
        checked, bad = await late.ledger.verify()
        assert (checked, bad) == (60, None)


async def test_what_a_sync_fetched_is_not_gossiped_again(tmp_path: Path) -> None:
    # Republishing fetched entries flooded the peers that were fetching the same
    # entries by their own sync after a partition healed. (The early node does
    # not gossip, so that all of its entries reach the late one by sync.)
    async with open_nodes(tmp_path, 2, sync_only=(0,)) as nodes:
        early, late = nodes
        for index in range(20):
            await early.ledger.transfer(late.account, index + 1)
        await late.host.connect(early.host.listen_addrs()[0])  # admission starts a sync
        await wait_converged(nodes)
        assert late.replicator.counters.synced == 20
        assert late.replicator.counters.published == 0
        await late.ledger.transfer(early.account, 5)  # its own entries are gossiped
        await eventually(lambda: late.replicator.counters.published == 1, timeout=10,
                         interval=0.02, what="the late node to gossip its own entry")


async def test_an_entry_waits_for_its_past_and_is_stored_when_it_comes(tmp_path: Path) -> None:
    async with open_nodes(tmp_path, 2) as nodes:
        writer, reader = nodes
        first = await writer.ledger.transfer(reader.account, 1)
        second = await writer.ledger.transfer(reader.account, 2)
        # Offer the second alone, from a sender that is not connected: it waits.
        await reader.replicator.admit([entry.verify(second.raw, writer.ledger.genesis.network_id)],
                                      "12D3KooWnobody")
        assert second.hash in reader.replicator.waiting
        await reader.replicator.admit([first], "12D3KooWnobody")
        await eventually(lambda: reader.ledger.store.count() == 2, timeout=10, interval=0.02,
                         what="the reader to store both entries")
        assert len(reader.replicator.waiting) == 0


async def test_an_invalid_entry_is_not_stored_nor_forwarded_and_its_sender_is_blocked(
        tmp_path: Path) -> None:
    async with open_nodes(tmp_path, 3) as nodes:
        honest, hostile, third = nodes
        await connect_all(nodes)
        await eventually(lambda: all(len(n.host.broadcast.topic_peers(TOPIC)) == 2
                                     for n in nodes), timeout=15, interval=0.02,
                         what="every node to see the 2 others on the ledger topic")
        # A local API client cannot publish on the ledger's topic: meshd would
        # forward unchecked bytes and be blocked by its peers.
        with pytest.raises(errors.InvalidArgument, match="reserved"):
            await honest.host.broadcast.publish(TOPIC, b"junk")
        # The hostile node signs an overspend with its own key, and gossips it.
        body = ledger_pb2.EntryBody(
            network_id=honest.ledger.genesis.network_id, author=hostile.ledger.key, seq=1,
            epoch=0, transfer=ledger_pb2.Transfer(to=honest.ledger.key,
                                                  amount=ALLOCATION + 1))
        overspend = entry.sign(hostile.seed, body)
        message = sync_pb2.LedgerEntries(entries=[overspend]).SerializeToString()
        await hostile.host.broadcast.publish_relayed(TOPIC, message)
        await wait_until(honest.host,
                         lambda: hostile.host.peer_id in honest.host.membership.blocked())
        assert honest.ledger.store.count() == 0 and third.ledger.store.count() == 0
        assert honest.replicator.counters.invalid >= 1
        assert honest.replicator.counters.published == 0  # never forwarded
        await wait_until(honest.host,
                         lambda: not honest.host.membership.is_admitted(hostile.host.peer_id))


async def test_sync_serves_ranges_in_pages_and_refuses_bad_requests(tmp_path: Path) -> None:
    async with open_nodes(tmp_path, 2, sync_only=(1,)) as nodes:
        writer, asker = nodes
        for _ in range(600):  # more than one range page (512)
            await writer.ledger.transfer(asker.account, 1)
        await asker.host.connect(writer.host.listen_addrs()[0])
        await wait_converged(nodes, timeout=60)
        assert asker.ledger.store.count() == 600
        assert asker.replicator.counters.synced == 600
        for name, payload in [("ledger-range", b"\xff\xff"),
                              ("ledger-range", sync_pb2.LedgerRangeRequest(
                                  head=b"short").SerializeToString()),
                              ("ledger-get", sync_pb2.LedgerGetRequest(
                                  hashes=[bytes(32)] * 257).SerializeToString())]:
            try:
                await asker.host.direct.request(writer.host.peer_id, name, payload)
            except DirectRequestFailed as exc:
                assert exc.code == Code.CODE_INVALID, exc
            except errors.MeshError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            else:
                raise AssertionError(f"{name} accepted a bad request")
        assert writer.host.membership.is_admitted(asker.host.peer_id)


@contextlib.asynccontextmanager
async def open_node(data_dir: Path, seed: bytes, genesis: Genesis, *,
                    check_own_chain: bool = False, own_chain_grace: float = 3600.0,
                    gossip: bool = True) -> AsyncIterator[Node]:
    """One node as the daemon wires it (syncing with a random member every 0.5 s:
    a transfer written right after a connect may be published before the peer's
    subscription is known, and reach it by sync only)."""
    await trio.Path(data_dir).mkdir(exist_ok=True)
    async with open_p2p_host(seed, LOOPBACK, genesis.network_id) as host, \
            open_ledger(data_dir, seed, genesis, check_own_chain=check_own_chain) as ledger, \
            trio.open_nursery() as nursery:
        replicator = Replicator(ledger, host, sync_interval=0.5,
                                own_chain_grace=own_chain_grace, gossip=gossip)
        await nursery.start(replicator.run)
        sync_server = SyncServer(ledger, host)
        await nursery.start(sync_server.run)
        yield Node(host, ledger, replicator, seed, sync_server)
        nursery.cancel_scope.cancel()


async def test_a_node_restored_from_an_old_copy_fetches_its_chain_before_writing(
        tmp_path: Path) -> None:
    """docs/ledger.md §9: a data directory restored from a backup lacks the
    node's newest entries; its next entry must follow them, not fork its chain
    (an equivocation, slashed 50 %)."""
    seeds = [os.urandom(32), os.urandom(32)]
    genesis = make_genesis(seeds)
    dirs = [tmp_path / "a", tmp_path / "b"]
    with trio.fail_after(30):
        async with open_node(dirs[1], seeds[1], genesis) as bob:
            async with open_node(dirs[0], seeds[0], genesis) as alice:
                await alice.host.connect(bob.host.listen_addrs()[0])
                for _ in range(2):
                    await alice.ledger.transfer(bob.account, 1)
                await wait_converged([alice, bob])
            shutil.copytree(dirs[0], tmp_path / "backup")
            async with open_node(dirs[0], seeds[0], genesis) as alice:
                await alice.host.connect(bob.host.listen_addrs()[0])
                newest = [await alice.ledger.transfer(bob.account, 1) for _ in range(3)]
                await wait_converged([alice, bob])
            shutil.rmtree(dirs[0])
            shutil.copytree(tmp_path / "backup", dirs[0])

            async with open_node(dirs[0], seeds[0], genesis, check_own_chain=True) as alice, \
                    trio.open_nursery() as nursery:
                assert alice.ledger.store.last_seq(alice.ledger.key) == 2
                assert not alice.ledger.writing_allowed
                written: list[entry.Verified] = []

                async def pay() -> None:
                    written.append(await alice.ledger.transfer(bob.account, 1))

                nursery.start_soon(pay)  # asked before any peer answered: it waits
                await trio.testing.wait_all_tasks_blocked()
                assert written == []
                await alice.host.connect(bob.host.listen_addrs()[0])
                await eventually(lambda: bool(written), timeout=10, interval=0.02,
                                 what="the waiting transfer to be written")
                assert (written[0].seq, written[0].body.prev) == (6, newest[-1].hash)
                await wait_converged([alice, bob])
                store = bob.ledger.store
                assert [store.count_at(alice.ledger.key, s) for s in range(1, 7)] == [1] * 6


async def test_a_restored_validator_waits_for_a_quorum_of_validators_not_one_peer(
        tmp_path: Path) -> None:
    """docs/reliability.md §4: restored validators that asked one peer, the wrong
    side of a partition from their newest entries, signed second votes and split
    the network. Here alice (one of four validators) is restored; carol, the
    first to answer, never saw alice's newest entries, bob did. One answer
    (carol's) is 2 of 4 weight with alice's own: alice keeps waiting, and writes
    after bob's, on top of her newest entry."""
    seeds = [os.urandom(32) for _ in range(4)]  # dave, the fourth, never starts
    alice_seed, bob_seed, carol_seed = seeds[:3]
    genesis = make_genesis(seeds, validators=4)
    alice_dir = tmp_path / "alice"
    with trio.fail_after(40):
        async with open_node(tmp_path / "bob", bob_seed, genesis) as bob, \
                open_node(tmp_path / "carol", carol_seed, genesis) as carol:
            async with open_node(alice_dir, alice_seed, genesis) as alice:
                await alice.host.connect(bob.host.listen_addrs()[0])
                await alice.ledger.transfer(bob.account, 1)
                await wait_converged([alice, bob])
            shutil.copytree(alice_dir, tmp_path / "backup")
            async with open_node(alice_dir, alice_seed, genesis) as alice:
                await alice.host.connect(bob.host.listen_addrs()[0])
                newest = [await alice.ledger.transfer(bob.account, 1) for _ in range(2)]
                await wait_converged([alice, bob])
            shutil.rmtree(alice_dir)
            shutil.copytree(tmp_path / "backup", alice_dir)

            async with open_node(alice_dir, alice_seed, genesis, check_own_chain=True) as alice, \
                    trio.open_nursery() as nursery:
                written: list[entry.Verified] = []

                async def pay() -> None:
                    written.append(await alice.ledger.transfer(carol.account, 1))

                nursery.start_soon(pay)
                await alice.host.connect(carol.host.listen_addrs()[0])
                await eventually(lambda: alice.ledger.own_chain_problem,
                                 lambda problem: "2 of 4 weight" in problem, timeout=10,
                                 interval=0.02, what="carol's answer to count 2 of 4")
                assert written == [] and not alice.ledger.writing_allowed
                assert host_peer_id(bob_seed) in alice.ledger.own_chain_problem
                await alice.host.connect(bob.host.listen_addrs()[0])
                await eventually(lambda: bool(written), timeout=10, interval=0.02,
                                 what="the waiting transfer to be written")
                assert (written[0].seq, written[0].body.prev) == (4, newest[-1].hash)
                await wait_converged([alice, bob, carol])
                store = carol.ledger.store
                assert [store.count_at(alice.ledger.key, s) for s in range(1, 5)] == [1] * 4


@contextlib.asynccontextmanager
async def restored_alice(tmp_path: Path,
                         ) -> AsyncIterator[tuple[list[Node], list[entry.Verified], bytes]]:
    """Four validators; alice wrote two entries only bob saw, then her data
    directory (tmp_path/alice) was restored from a copy older than them.
    Yields bob, carol, dave (running, not connected to alice), alice's two
    lost entries and her seed."""
    seeds = [os.urandom(32) for _ in range(4)]
    genesis = make_genesis(seeds, validators=4)
    names = ["alice", "bob", "carol", "dave"]
    async with contextlib.AsyncExitStack() as stack:
        bob, carol, dave = [await stack.enter_async_context(
            open_node(tmp_path / name, seed, genesis))
            for name, seed in zip(names[1:], seeds[1:], strict=True)]
        async with open_node(tmp_path / "alice", seeds[0], genesis) as alice:
            await connect_all([alice, bob, carol, dave])
            await alice.ledger.transfer(bob.account, 1)
            await wait_converged([alice, bob, carol, dave])
        shutil.copytree(tmp_path / "alice", tmp_path / "backup")
        for other in (carol, dave):  # they will not see alice's next entries
            await other.host.membership.block(bob.host.peer_id)  # py-libp2p redials
        async with open_node(tmp_path / "alice", seeds[0], genesis) as alice:
            await alice.host.connect(bob.host.listen_addrs()[0])
            newest = [await alice.ledger.transfer(bob.account, 1) for _ in range(2)]
            await wait_converged([alice, bob])
        shutil.rmtree(tmp_path / "alice")
        shutil.copytree(tmp_path / "backup", tmp_path / "alice")
        yield [bob, carol, dave], newest, seeds[0]


async def test_a_restored_node_waits_for_peers_that_connect_late_and_answer_late(
        tmp_path: Path) -> None:
    """Carol and dave answer first: with alice's own weight, 3 of 4, a quorum.
    Bob, who saw alice's newest entries, connects a moment later (within
    CONNECT_SETTLE) and answers later still: alice waits for him, and writes
    on top of his copy of her chain."""
    with trio.fail_after(50):
        async with restored_alice(tmp_path) as ([bob, carol, dave], newest, seed):
            answer_now = trio.Event()

            async def slow_heads(peer_id: str, payload: bytes) -> bytes:
                await answer_now.wait()  # bob answers when the test says so
                return await bob.sync_server.serve_heads(peer_id, payload)

            with bob.host.direct.serving(HEADS, slow_heads, max_request=MAX_REQUEST):
                genesis = bob.ledger.genesis
                async with open_node(tmp_path / "alice", seed, genesis,
                                     check_own_chain=True) as alice, \
                        trio.open_nursery() as nursery:
                    written: list[entry.Verified] = []

                    async def pay() -> None:
                        written.append(await alice.ledger.transfer(carol.account, 1))

                    nursery.start_soon(pay)
                    for other in (carol, dave):
                        await alice.host.connect(other.host.listen_addrs()[0])
                    await eventually(lambda: alice.ledger.own_chain_problem,
                                     lambda problem: "for peers to connect" in problem,
                                     timeout=10, interval=0.02, what="carol's or dave's answer")
                    await alice.host.connect(bob.host.listen_addrs()[0])
                    await eventually(lambda: alice.ledger.own_chain_problem,
                                     lambda problem: "waiting for 1 connected peers" in problem,
                                     timeout=15, interval=0.02, what="the settle to end, bob "
                                     "connected and not answering")
                    assert written == []
                    answer_now.set()
                    await eventually(lambda: bool(written), timeout=15, interval=0.02,
                                     what="the waiting transfer to be written")
                    assert (written[0].seq, written[0].body.prev) == (4, newest[-1].hash)


async def test_a_sync_that_fails_while_fetching_own_entries_keeps_writes_held(
        tmp_path: Path) -> None:
    """Bob shows alice's heads, then fails to send the range: his answer still
    says alice lacks her seq 3, whatever a quorum says, until she has it."""
    with trio.fail_after(60):
        async with restored_alice(tmp_path) as ([bob, carol, dave], newest, seed):
            async def broken_range(peer_id: str, payload: bytes) -> bytes:
                raise errors.Unavailable("not now")

            with bob.host.direct.serving(RANGE, broken_range, max_request=MAX_REQUEST):
                # No gossip: bob's gossipsub would offer alice's recent entries
                # from its message cache, and the sync's failure would not matter.
                async with open_node(tmp_path / "alice", seed, bob.ledger.genesis,
                                     check_own_chain=True, gossip=False) as alice:
                    for other in (carol, dave, bob):
                        await alice.host.connect(other.host.listen_addrs()[0])
                    await eventually(lambda: alice.ledger.own_chain_problem,
                                     lambda problem: "up to seq 3" in problem, timeout=10,
                                     interval=0.02, what="bob's heads to show seq 3")
                    check = alice.replicator._own_chain
                    await eventually(lambda: bob.host.peer_id in check.failed_at
                                     and check.first_answer_at is not None
                                     and trio.current_time() >= check.first_answer_at
                                     + CONNECT_SETTLE, timeout=20, interval=0.05,
                                     what="the settle to end with bob's sync failed")
                    assert not alice.ledger.writing_allowed
                    assert "up to seq 3" in alice.ledger.own_chain_problem
                    with bob.host.direct.serving(RANGE, bob.sync_server.serve_range,
                                                 max_request=MAX_REQUEST):
                        await eventually(lambda: alice.ledger.writing_allowed, timeout=30,
                                         interval=0.05, what="bob's range to come on a retry")
                        made = await alice.ledger.transfer(carol.account, 1)
                        assert (made.seq, made.body.prev) == (4, newest[-1].hash)


async def test_a_node_with_no_one_to_ask_writes_after_the_grace(tmp_path: Path) -> None:
    seed = os.urandom(32)
    with trio.fail_after(10):
        async with open_node(tmp_path / "a", seed, make_genesis([seed]), check_own_chain=True,
                             own_chain_grace=0.2) as alone:
            made = await alone.ledger.transfer(host_peer_id(os.urandom(32)), 1)
    assert made.seq == 1
