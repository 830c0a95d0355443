"""Epoch settlement on validators in one trio process (docs/ledger.md §5)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore import genesis as genesis_module
from meshcore.genesis import Genesis
from meshcore.ledger import entry
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.entry import Verified
from meshcore.ledger.stateroot import state_root
from meshd.ledger import ledger as ledger_module
from meshd.ledger.equivocation import EquivocationReporter
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.ledger.replication import Replicator
from meshd.ledger.settlement_driver import SettlementDriver
from meshd.ledger.settlements import Settlements
from meshd.ledger.store import LedgerStore
from meshd.ledger.sync_server import SyncServer
from meshd.ledger.uptime import UptimeAttester
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.host import peer_id_of as host_peer_id
from meshd.testing import eventually
from tests.integration.p2p_helpers import LOOPBACK

ALLOCATION = 1_000_000
EPOCH_SECONDS = 2


@dataclass
class Validator:
    host: P2PHost
    ledger: Ledger
    driver: SettlementDriver
    replicator: Replicator

    @property
    def account(self) -> str:
        return peer_id_of(self.ledger.key)


def make_genesis(seeds: list[bytes], start: dt.datetime, others: list[bytes]) -> Genesis:
    ids = [host_peer_id(s) for s in seeds]
    allocations = ", ".join(f'{{ account = "{i}", amount = {ALLOCATION} }}'
                            for i in ids + [host_peer_id(o) for o in others])
    validators = "\n".join(f'[[validators]]\npeer_id = "{i}"\n' for i in ids)
    return genesis_module.loads(f"""
name = "Settlement"
genesis_time = {start.strftime("%Y-%m-%dT%H:%M:%SZ")}
[token]
name = "Test"
symbol = "TST"
allocations = [{allocations}]
[rewards]
epoch_seconds = {EPOCH_SECONDS}
{validators}
""")


@contextlib.asynccontextmanager
async def open_validator(data_dir: Path, seed: bytes, genesis: Genesis, *,
                         check_own_chain: bool = False) -> AsyncIterator[Validator]:
    """One validator wired as the daemon wires it."""
    await trio.Path(data_dir).mkdir(exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(
            open_p2p_host(seed, LOOPBACK, genesis.network_id))
        ledger = await stack.enter_async_context(
            open_ledger(data_dir, seed, genesis, check_own_chain=check_own_chain))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        replicator = Replicator(ledger, host, sync_interval=2.0)
        await nursery.start(replicator.run)
        await nursery.start(SyncServer(ledger, host).run)
        driver = SettlementDriver(ledger, close_wait=0.5)
        await nursery.start(driver.run)
        await nursery.start(UptimeAttester(ledger, host).run)
        await nursery.start(EquivocationReporter(ledger).run)
        yield Validator(host, ledger, driver, replicator)


async def connect_all(nodes: list[Validator]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b and not a.host.membership.is_admitted(b.host.peer_id):
                await a.host.connect(b.host.listen_addrs()[0])


@contextlib.asynccontextmanager
async def open_validators(tmp_path: Path, count: int, others: list[bytes] | None = None,
                          ) -> AsyncIterator[list[Validator]]:
    """``count`` validators (each with an allocation; ``others`` get one too)."""
    seeds = [os.urandom(32) for _ in range(count)]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    genesis = make_genesis(seeds, start, others or [])
    async with contextlib.AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_validator(tmp_path / f"v{i}", seed, genesis))
                 for i, seed in enumerate(seeds)]
        await connect_all(nodes)
        yield nodes


async def test_four_validators_settle_epochs_and_agree_on_the_state_root(
        tmp_path: Path) -> None:
    async with open_validators(tmp_path, 4) as nodes:
        alice, bob = nodes[0], nodes[1]
        paid = await alice.ledger.transfer(bob.account, 1234)
        await eventually(lambda: all(n.ledger.final_epoch >= 2 for n in nodes), timeout=60,
                         interval=0.1, what="epoch 2 to be final on every node")
        roots = {state_root(n.ledger.settled_at(2)) for n in nodes}  # type: ignore[arg-type]
        assert len(roots) == 1
        # The state-root API says how far alice's chain took effect and is stored.
        info = await bob.ledger.state_root(2, alice.account)
        assert info.root in roots and len(info.heads_digest) == 32
        assert paid.seq <= info.canonical_seq <= info.stored_seq
        for node in nodes:
            settled = node.ledger.settled_at(2)
            assert settled is not None
            assert settled.account(bob.ledger.key).liquid >= ALLOCATION + 1234
            assert settled.account(alice.ledger.key).liquid >= ALLOCATION - 1234
        balance = await bob.ledger.balance()
        assert balance.settled >= ALLOCATION + 1234 and balance.pending_in == 0
        # Every validator attested its peers' uptime; a later epoch paid for it.
        await eventually(lambda: all(n.ledger.final_epoch >= 4 for n in nodes), timeout=60,
                         interval=0.1, what="epoch 4 to be final on every node")
        record = nodes[2].ledger.settled_at(4).record  # type: ignore[union-attr]
        assert record.minted > 0, record


def signed(seed: bytes, ledger: Ledger, seq: int, prev: bytes, **kind: object) -> Verified:
    """An entry of ``seed``'s author built on ``ledger``'s newest certificate."""
    decision = ledger.settlements.decision(ledger.final_epoch)
    assert decision is not None
    body = ledger_pb2.EntryBody(
        network_id=ledger.genesis.network_id, author=entry.public_key(seed), seq=seq,
        prev=prev, deps=[decision.certificate], epoch=decision.epoch + 1,
        **kind)  # type: ignore[arg-type]
    return entry.verify(entry.sign(seed, body), ledger.genesis.network_id)


async def test_an_equivocating_staker_is_slashed_and_jailed_once(tmp_path: Path) -> None:
    cheat = os.urandom(32)
    key = entry.public_key(cheat)
    async with open_validators(tmp_path, 4, others=[cheat]) as nodes:
        ledger = nodes[0].ledger
        await eventually(lambda: ledger.final_epoch >= 0, timeout=30, interval=0.1,
                         what="epoch 0 to be final")
        stake = signed(cheat, ledger, 1, b"", stake=ledger_pb2.Stake(amount=400_000))
        await ledger.committer.append(stake)
        await eventually(lambda: all(n.ledger.settled.account(key).bonded == 400_000
                                     for n in nodes), timeout=30, interval=0.1,
                         what="the stake to be settled on every node")
        # Two bodies for seq 2: each valid against its own past.
        pay_b = signed(cheat, ledger, 2, stake.hash, transfer=ledger_pb2.Transfer(
            to=nodes[1].ledger.key, amount=500_000))
        pay_c = signed(cheat, ledger, 2, stake.hash, transfer=ledger_pb2.Transfer(
            to=nodes[2].ledger.key, amount=500_000))
        assert await ledger.committer.append_many([pay_b, pay_c]) == [None, None]
        await eventually(lambda: all(n.ledger.settled.account(key).jailed for n in nodes),
                         timeout=30, interval=0.1, what="the cheat to be jailed on every node")
        for node in nodes:
            account = node.ledger.settled.account(key)
            assert account.bonded == 200_000  # SLASH_EQUIVOCATION_BPS: half
            assert account.frozen and account.liquid == ALLOCATION - 400_000  # no branch paid
        assert len({state_root(n.ledger.settled_at(nodes[0].ledger.final_epoch) or
                               nodes[0].ledger.settled) for n in nodes}) == 1
        final = nodes[0].ledger.settled
        assert final.slashed_total == 200_000
        # Evidence written once per offender by each node that saw the fork; applied once.
        epoch_after = final.epoch + 2
        await eventually(lambda: all(n.ledger.final_epoch >= epoch_after for n in nodes),
                         timeout=30, interval=0.1,
                         what=f"epoch {epoch_after} to be final on every node")
        assert nodes[0].ledger.settled.account(key).bonded == 200_000
        assert nodes[0].ledger.settled.slashed_total == 200_000


async def test_a_node_storing_everything_in_one_batch_settles_alike(tmp_path: Path) -> None:
    """A catching-up node judges a cut, its certificate and the next epoch's
    votes in one batch; the batch must count as stored when a precommit's
    settlement is computed (regression: it refused honest precommits)."""
    async with open_validators(tmp_path, 4) as nodes:
        source = nodes[0].ledger
        await eventually(lambda: source.final_epoch >= 1, timeout=60, interval=0.1,
                         what="epoch 1 to be final")
        # Evidence dated ahead (as when settlement lags the clock): it lands in
        # the next cut but counts for a later epoch, whose settlement must
        # find it among the earlier cut's entries.
        # Two attesters report node 3 down, which moves its lower median.
        ahead = source.final_epoch + 3
        for attester in nodes[:2]:
            await attester.ledger.write(at_epoch=ahead, attestation=ledger_pb2.UptimeAttestation(
                observations=[ledger_pb2.Observation(subject=nodes[3].ledger.key, probes=3,
                                                     answered=0)]))
        await eventually(lambda: all(n.ledger.final_epoch >= ahead for n in nodes),
                         timeout=60, interval=0.1, what=f"epoch {ahead} to be final on every node")
        everything = [entry.decode_stored(raw) for _, _, raw in source.store.rows()]
        genesis = source.genesis
        last = source.final_epoch
    settlements = Settlements(genesis)
    (tmp_path / "fresh").mkdir()
    fresh = LedgerStore.in_dir(tmp_path / "fresh", genesis.network_id, settlements)
    results = fresh.insert(everything)
    refused = [str(r) for r in results if r is not None]
    assert refused == []
    record = source.settlements.at(ahead).record  # type: ignore[union-attr]
    assert [line.points for line in record.lines if line.pool == "uptime"
            and line.account == nodes[3].ledger.key] == [0]
    for epoch in range(0, last + 1):
        assert state_root(settlements.at(epoch)) == state_root(  # type: ignore[arg-type]
            source.settlements.at(epoch))  # type: ignore[arg-type]
    fresh.close()


async def test_a_restarted_validator_that_meets_one_validator_writes_once_an_epoch_settles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ledger.md §11 "Writing", rule 4 of meshd/ledger/own_chain.py: one
    validator's answer is not a quorum (2 of 4 with its own), but an epoch
    that ended after the start and is final holds closes of a quorum written
    since, so the restarted validator writes then, on top of its chain. Its
    settlement driver waits meanwhile: a close refused after OWN_CHAIN_WAIT
    used to end the daemon (the chaos campaign found it)."""
    monkeypatch.setattr(ledger_module, "OWN_CHAIN_WAIT", 0.5)
    seeds = [os.urandom(32) for _ in range(4)]
    genesis = make_genesis(seeds, dt.datetime.now(dt.UTC).replace(microsecond=0), [])
    dirs = [tmp_path / f"v{i}" for i in range(4)]
    with trio.fail_after(90):
        async with contextlib.AsyncExitStack() as stack:
            others = [await stack.enter_async_context(open_validator(d, s, genesis))
                      for d, s in zip(dirs[:3], seeds[:3], strict=True)]
            async with open_validator(dirs[3], seeds[3], genesis) as dave:
                await connect_all([*others, dave])
                await dave.ledger.transfer(others[0].account, 5)
                await eventually(lambda: all(n.ledger.final_epoch >= 1 for n in others),
                                 timeout=30, interval=0.1, what="epoch 1 to be final")
                before = dave.ledger.store.last_seq(dave.ledger.key)
            async with open_validator(dirs[3], seeds[3], genesis, check_own_chain=True) as dave:
                await dave.host.connect(others[0].host.listen_addrs()[0])
                assert not dave.ledger.writing_allowed
                # Up to two epochs, and a round whose leader is dave times out.
                await eventually(lambda: dave.ledger.writing_allowed, timeout=40,
                                 interval=0.05, what="dave to write again")
                # Rule 4's epoch, not a quorum: one validator answered, 2 of 4.
                assert dave.ledger.final_epoch > dave.replicator._own_chain.start_epoch
                assert dave.host.membership.count() == 1  # no other validator answered
                paid = await dave.ledger.transfer(others[1].account, 7)
                assert paid.seq > before
                await eventually(lambda: others[1].ledger.store.known([paid.hash]),
                                 lambda known: bool(known), timeout=20, interval=0.1,
                                 what="the transfer to reach the others")
