"""Epoch settlement on validators in one trio process (docs/ledger.md §5)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio

from meshcore import genesis as genesis_module
from meshcore.genesis import Genesis
from meshcore.ledger.accounts import peer_id_of
from meshcore.ledger.stateroot import state_root
from meshd.ledger.driver import EpochDriver
from meshd.ledger.ledger import Ledger, open_ledger
from meshd.ledger.replication import Replicator
from meshd.ledger.uptime import UptimeAttester
from meshd.p2p.host import P2PHost, open_p2p_host
from meshd.p2p.host import peer_id_of as host_peer_id
from tests.integration.p2p_helpers import LOOPBACK, poll_until

ALLOCATION = 1_000_000
EPOCH_SECONDS = 2


@dataclass
class Validator:
    host: P2PHost
    ledger: Ledger
    driver: EpochDriver

    @property
    def account(self) -> str:
        return peer_id_of(self.ledger.key)


def make_genesis(seeds: list[bytes], start: dt.datetime) -> Genesis:
    ids = [host_peer_id(s) for s in seeds]
    allocations = ", ".join(f'{{ account = "{i}", amount = {ALLOCATION} }}' for i in ids)
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
async def open_validators(tmp_path: Path, count: int) -> AsyncIterator[list[Validator]]:
    seeds = [os.urandom(32) for _ in range(count)]
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    genesis = make_genesis(seeds, start)
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for index, seed in enumerate(seeds):
            data_dir = tmp_path / f"v{index}"
            data_dir.mkdir()
            host = await stack.enter_async_context(
                open_p2p_host(seed, LOOPBACK, genesis.network_id))
            ledger = await stack.enter_async_context(open_ledger(data_dir, seed, genesis))
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            await nursery.start(Replicator(ledger, host, sync_interval=2.0).run)
            driver = EpochDriver(ledger, close_wait=0.5)
            await nursery.start(driver.run)
            await nursery.start(UptimeAttester(ledger, host).run)
            nodes.append(Validator(host, ledger, driver))
        for a in nodes:
            for b in nodes:
                if a is not b and not a.host.membership.is_admitted(b.host.peer_id):
                    await a.host.connect(b.host.listen_addrs()[0])
        yield nodes


async def test_four_validators_settle_epochs_and_agree_on_the_state_root(
        tmp_path: Path) -> None:
    async with open_validators(tmp_path, 4) as nodes:
        alice, bob = nodes[0], nodes[1]
        await alice.ledger.transfer(bob.account, 1234)
        await poll_until(lambda: all(n.ledger.final_epoch >= 2 for n in nodes), timeout=60,
                         interval=0.1)
        roots = {state_root(n.ledger.settled_at(2)) for n in nodes}  # type: ignore[arg-type]
        assert len(roots) == 1
        for node in nodes:
            settled = node.ledger.settled_at(2)
            assert settled is not None
            assert settled.account(bob.ledger.key).liquid >= ALLOCATION + 1234
            assert settled.account(alice.ledger.key).liquid >= ALLOCATION - 1234
        balance = await bob.ledger.balance()
        assert balance.settled >= ALLOCATION + 1234 and balance.pending_in == 0
        # Every validator attested its peers' uptime; a later epoch paid for it.
        await poll_until(lambda: all(n.ledger.final_epoch >= 4 for n in nodes), timeout=60,
                         interval=0.1)
        record = nodes[2].ledger.settled_at(4).record  # type: ignore[union-attr]
        assert record.minted > 0, record
