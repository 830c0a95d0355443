"""Epoch settlement on a validator: closes, rounds, certificates (docs/ledger.md §5).

The protocol itself is the sans-IO :class:`EpochConsensus`; this module runs
it. Once the clock has left epoch S (the first not final) and CLOSE_DELAY has
passed, a validator of V(S) writes its close of S naming every head it stores.
The round leader waits for closes of a quorum (and up to CLOSE_WAIT for the
rest), then proposes a cut naming every head and those closes. Proposals and
votes are ledger entries: they replicate like any other, and every stored
one is fed to the state machine. Its actions become own entries (a precommit
carries the state root of the settlement it votes for) or timers. On a
decision the validator writes a certificate naming the quorum's precommits;
any stored certificate makes S final (meshd/ledger/settlements.py), and the
driver moves on to S + 1.

Nodes outside V(S) do not run it: they learn finality from certificates.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from mesh.ledger.v1 import ledger_pb2
from meshcore.ledger import consensus
from meshcore.ledger.consensus import (
    Action,
    Conflict,
    Decided,
    EpochConsensus,
    OwnEntry,
    Precommit,
    Prevote,
    Propose,
    Schedule,
    Step,
)
from meshcore.ledger.entry import DEPS_MAX, Verified
from meshd import errors
from meshd.ledger.ledger import Ledger

log = logging.getLogger(__name__)

# After a quorum of closes, wait this long for the rest of V(S). Shorter than
# the first propose timeout (4 s), or a round 1 with a validator down would
# time out while its leader still waits.
CLOSE_WAIT = 2.0
INBOX = 4096


def close_delay(epoch_seconds: float) -> float:
    """Wait after an epoch ends before closing it: clamp(epoch/30, 1 s, 60 s)."""
    return min(60.0, max(1.0, epoch_seconds / 30))


class SettlementDriver:
    """Runs settlement for every epoch; see the module docstring. On the trio loop."""

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float] | None = None,
                 close_wait: float = CLOSE_WAIT) -> None:
        self._ledger = ledger
        self._store = ledger.store
        self._clock = clock or ledger._clock
        self._close_wait = close_wait
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[
            Verified | tuple[Step, int] | None](INBOX)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        with self._ledger.committer.listening(self._on_stored):
            task_status.started()
            # A restarted validator takes part once peers have vouched for its
            # chain (meshd/ledger/own_chain.py): a vote before that could be its
            # second in a round. Meanwhile it learns finality from certificates.
            await self._ledger.own_chain_ready()
            while True:
                target = self._ledger.final_epoch + 1
                await self._wait_until_closable(target)
                if self._ledger.final_epoch >= target:
                    continue  # a certificate came while waiting
                await self._settle(target)

    def _on_stored(self, stored: list[Verified]) -> None:
        """Committer listener (on trio): consensus entries, and certificates
        (which end the wait for a final epoch)."""
        for item in stored:
            if item.kind in ("close", "proposal", "prevote", "precommit", "certificate"):
                self._post(item)

    def _post(self, message: Verified | tuple[Step, int] | None) -> None:
        try:
            self._inbox_send.send_nowait(message)
        except trio.WouldBlock:
            log.warning("settlement inbox full; an input is dropped (rounds recover by timeout)")

    async def _wait_until_closable(self, target: int) -> None:
        genesis = self._ledger.genesis
        seconds = genesis.rewards.epoch_seconds
        end = genesis.genesis_time.timestamp() + (target + 1) * seconds + close_delay(seconds)
        while self._ledger.final_epoch < target:
            wait = end - self._clock()
            if wait <= 0:
                return
            with trio.move_on_after(wait):
                await self._inbox_receive.receive()  # a certificate may end the wait

    async def _settle(self, target: int) -> None:
        """Take part in settling ``target`` until a certificate makes it final."""
        prev = self._ledger.settlements.settled(target - 1)
        validators = prev.validators_of(target)
        me = self._ledger.key if self._ledger.key in dict(validators) else None
        if me is None:
            while self._ledger.final_epoch < target:
                await self._inbox_receive.receive()
            return
        machine = EpochConsensus(target, validators, me, self._acceptable_for(target,
                                                                              validators))
        run = _Run(self, machine, target, validators)
        await run.go()


    def _acceptable_for(self, epoch: int, validators: consensus.Validators,
                        ) -> Callable[[bytes], bool]:
        """docs/ledger.md §5.1: a stored original proposal for ``epoch`` (so valid,
        with ``fin_p = epoch - 1``) that names closes of ``epoch`` from a quorum."""
        weights = dict(validators)
        total = sum(weights.values())
        store = self._store

        def acceptable(value: bytes) -> bool:
            proposal = store.get(value)
            if proposal is None or proposal.kind != "proposal" \
                    or proposal.body.proposal.epoch != epoch or proposal.body.proposal.origin:
                return False
            closers = set()
            for dep in proposal.body.deps:
                item = store.get(dep)
                if item is not None and item.kind == "close" \
                        and item.body.close.epoch == epoch:
                    closers.add(item.author)
            own = store.votes(proposal.author, "close", epoch, 0)
            if any((e := store.get(h)) is not None and e.seq < proposal.seq for h in own):
                closers.add(proposal.author)
            return consensus.is_quorum(sum(weights.get(a, 0) for a in closers), total)
        return acceptable


class _Run:
    """One validator's settlement of one epoch."""

    def __init__(self, driver: SettlementDriver, machine: EpochConsensus, epoch: int,
                 validators: consensus.Validators) -> None:
        self.driver = driver
        self.ledger = driver._ledger
        self.machine = machine
        self.epoch = epoch
        self.validators = validators
        self.weights = dict(validators)
        self.total = sum(self.weights.values())
        self.closers: set[bytes] = set()
        self.closes_told = False  # the machine knows it may propose
        self.close_timer = False  # CLOSE_WAIT started after a quorum of closes
        self.nursery: trio.Nursery | None = None
        self.fed: set[bytes] = set()

    async def go(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            stored = await trio.to_thread.run_sync(self.ledger.store.consensus_entries,
                                                   self.epoch)
            own = [e for e in stored if e.author == self.ledger.key]
            if not any(e.kind == "close" for e in own):
                await self._write_close()
            await self._act(self.machine.restore(_own_entries(own, self.epoch)))
            for item in stored:
                await self._feed(item)
            while self.ledger.final_epoch < self.epoch:
                message = await self.driver._inbox_receive.receive()
                if isinstance(message, Verified):
                    await self._feed(message)
                elif isinstance(message, tuple):
                    await self._act(self.machine.on_timeout(*message))
                elif message is None:
                    self.closes_told = True
                    await self._act(self.machine.on_closes_quorum())
            nursery.cancel_scope.cancel()

    async def _feed(self, item: Verified) -> None:
        if item.hash in self.fed or item.kind == "certificate":
            return
        self.fed.add(item.hash)
        kind, body = item.kind, getattr(item.body, item.kind)
        if kind == "close":
            if body.epoch == self.epoch and item.author in self.weights:
                self.closers.add(item.author)
                await self._closes_changed()
            return
        if body.epoch != self.epoch:
            return
        if kind == "proposal":
            actions = self.machine.on_proposal(item.author, body.round, item.hash, body.origin,
                                               body.valid_round)
        elif kind == "prevote":
            actions = self.machine.on_prevote(item.author, body.round, body.value)
        else:
            actions = self.machine.on_precommit(item.author, body.round, body.value)
        await self._act(actions)

    async def _closes_changed(self) -> None:
        if self.closes_told:
            return
        weight = sum(self.weights[a] for a in self.closers)
        if weight == self.total:
            self.closes_told = True
            await self._act(self.machine.on_closes_quorum())
        elif consensus.is_quorum(weight, self.total) and not self.close_timer:
            self.close_timer = True
            self._start(self._after, self.driver._close_wait, None)

    def _start(self, timer: Callable[[float, tuple[Step, int] | None], Awaitable[None]],
               seconds: float, message: tuple[Step, int] | None) -> None:
        assert self.nursery is not None, "timers run inside go()"
        self.nursery.start_soon(timer, seconds, message)

    async def _after(self, seconds: float, message: tuple[Step, int] | None) -> None:
        await trio.sleep(seconds)
        self.driver._post(message)

    async def _act(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                await self._do(action)
            except errors.MeshError as exc:
                log.warning("settlement step failed", extra={
                    "epoch": self.epoch, "action": type(action).__name__, "error": str(exc)})

    async def _do(self, action: Action) -> None:
        epoch = self.epoch
        if isinstance(action, Schedule):
            self._start(self._after, action.seconds, (action.step, action.round))
        elif isinstance(action, Propose):
            deps = await self._heads_and_closes()
            if action.origin:
                deps |= set(await self._votes("prevote", action.valid_round, action.origin))
            await self.ledger.write(_limited(deps), proposal=ledger_pb2.SettlementProposal(
                epoch=epoch, round=action.round, origin=action.origin,
                valid_round=action.valid_round))
        elif isinstance(action, Prevote):
            await self.ledger.write(self._naming(action.value), prevote=ledger_pb2.Prevote(
                epoch=epoch, round=action.round, value=action.value))
        elif isinstance(action, Precommit):
            root = b""
            if action.value:
                root = await trio.to_thread.run_sync(
                    self.ledger.settlements.root, epoch, action.round, action.value)
            await self.ledger.write(
                self._naming(action.value), precommit=ledger_pb2.SettlementSignature(
                    epoch=epoch, round=action.round, value=action.value, state_root=root))
        elif isinstance(action, Decided):
            precommits = await self._votes("precommit", action.round, action.value)
            await self.ledger.write(precommits, certificate=ledger_pb2.Certificate(
                epoch=epoch, round=action.round, value=action.value))
        elif isinstance(action, Conflict):
            log.warning("a validator sent two different votes for one round (a fork of its "
                        "chain)", extra={"epoch": epoch, "round": action.round,
                                         "step": str(action.step)})

    def _naming(self, value: bytes) -> list[bytes]:
        """A vote names the proposal it votes for (unless it is this node's own)."""
        if not value:
            return []
        proposal = self.ledger.store.get(value)
        return [value] if proposal is not None and proposal.author != self.ledger.key else []

    async def _heads_and_closes(self) -> set[bytes]:
        def collect() -> set[bytes]:
            heads = {h.hash for h in self.ledger.store.heads() if h.author != self.ledger.key}
            closes = {e.hash for e in self.ledger.store.consensus_entries(self.epoch)
                      if e.kind == "close" and e.author != self.ledger.key}
            return heads | closes
        return await trio.to_thread.run_sync(collect)

    async def _votes(self, kind: str, round_: int, value: bytes) -> list[bytes]:
        """Other validators' ``kind`` votes of this epoch for (round, value)."""
        stored = await trio.to_thread.run_sync(self.ledger.store.consensus_entries, self.epoch)
        return [e.hash for e in stored if e.kind == kind and e.author != self.ledger.key
                and getattr(e.body, kind).round == round_
                and getattr(e.body, kind).value == value]

    async def _write_close(self) -> None:
        deps = await self._heads_and_closes()
        try:
            await self.ledger.write(_limited(deps),
                                    close=ledger_pb2.EpochClose(epoch=self.epoch))
        except errors.MeshError as exc:  # the others' closes may make a quorum
            log.warning("close not written", extra={"epoch": self.epoch, "error": str(exc)})


def _limited(deps: set[bytes]) -> list[bytes]:
    if len(deps) > DEPS_MAX:
        # ledger-v1 would chain anchors here; until then the cut names the
        # first DEPS_MAX heads and the rest settle in a later epoch.
        log.warning("more heads than one entry may name; some settle later",
                    extra={"heads": len(deps)})
    return sorted(deps)[:DEPS_MAX]


def _own_entries(own: list[Verified], epoch: int) -> list[OwnEntry]:
    found: list[OwnEntry] = []
    for item in own:
        body = getattr(item.body, item.kind)
        if item.kind == "proposal" and body.epoch == epoch:
            found.append(Propose(body.round, body.origin, body.valid_round))
        elif item.kind == "prevote" and body.epoch == epoch:
            found.append(Prevote(body.round, body.value))
        elif item.kind == "precommit" and body.epoch == epoch:
            found.append(Precommit(body.round, body.value))
    return found

