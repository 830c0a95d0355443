"""Tasks without a network: claims, the router's decisions, the provider's checks.

Each node here is a TaskRouter and a TaskProvider (meshd/tasks/) on a fake
host: a direct request runs the other node's handler in this trio process,
with the messenger's error mapping. Ledgers are fakes that sign claims for
real and keep what is written. Time is trio's autojump clock, so a provider
that never answers times out at once; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from mesh.ledger.v1 import ledger_pb2
from mesh.wire.v1 import wire_pb2
from meshcore.ledger import accounts, evidence_rules
from meshcore.ledger.entry import public_key
from meshcore.tasks import claims
from meshd import errors
from meshd.p2p.direct import Code, DirectRequestFailed
from meshd.plugin.api import TaskOptions, TaskRequest, TaskResult
from meshd.plugin_host.context import TaskKind
from meshd.tasks import provider, router
from meshd.tasks.participation import ParticipationWatch
from meshd.tasks.provider import MAX_PAYLOAD, MAX_RESULT, NONCE_BYTES, TASK_PROTOCOL
from meshd.tasks.router import CANCELLED, DONE, FAILED, TaskRecord, TaskRouter

NETWORK = "net_tasksaaaaaaaaaaaaaaaaaaaaa"
PLUGIN = "square"
EPOCH = 7

Handler = Callable[[str, bytes], Awaitable[bytes]]


# --- claims (pure) ---------------------------------------------------------------------------

def seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


REQUESTER, PROVIDER = public_key(seed("requester")), public_key(seed("provider"))
NONCE = bytes(range(NONCE_BYTES))


def claim_of(**changes: Any) -> dict[str, Any]:
    """What a provider claims of one execution: task ID, parties, epoch, units, result."""
    base = claims.base_id(REQUESTER, PLUGIN, "square", b"12", NONCE)
    fields = {"network_id": NETWORK, "task_id": claims.execution_id(base, PROVIDER),
              "plugin": PLUGIN, "requester": REQUESTER, "provider": PROVIDER, "epoch": EPOCH,
              "units": 3, "result": b"144"}
    return {**fields, **changes}


def test_a_task_has_one_name_and_one_execution_id_per_provider() -> None:
    base = claims.base_id(REQUESTER, PLUGIN, "square", b"12", NONCE)
    assert len(base) == 32 and base == claims.base_id(REQUESTER, PLUGIN, "square", b"12", NONCE)
    others = [claims.base_id(PROVIDER, PLUGIN, "square", b"12", NONCE),
              claims.base_id(REQUESTER, "cube", "square", b"12", NONCE),
              claims.base_id(REQUESTER, PLUGIN, "digest", b"12", NONCE),
              claims.base_id(REQUESTER, PLUGIN, "square", b"13", NONCE),
              claims.base_id(REQUESTER, PLUGIN, "square", b"12", bytes(NONCE_BYTES)),
              # plugin and kind are separated: moving a character across differs
              claims.base_id(REQUESTER, PLUGIN + "s", "quare", b"12", NONCE)]
    assert len({base, *others}) == 7
    by_provider = claims.execution_id(base, PROVIDER)
    assert by_provider == claims.execution_id(base, PROVIDER)
    assert len({base, by_provider, claims.execution_id(base, REQUESTER)}) == 3
    report = claims.report_id(REQUESTER, PROVIDER, PLUGIN, "square", b"12")
    assert report == claims.report_id(REQUESTER, PROVIDER, PLUGIN, "square", b"12")
    assert report not in {base, by_provider}
    assert report != claims.report_id(PROVIDER, REQUESTER, PLUGIN, "square", b"12")


def test_a_claim_that_says_exactly_what_happened_has_no_problem() -> None:
    made = claims.make_claim(**claim_of())
    parsed = evidence_rules.parse_claim(made)
    assert parsed is not None
    assert (parsed.units, parsed.epoch, parsed.result_digest) == (
        3, EPOCH, hashlib.sha256(b"144").digest())
    signature = evidence_rules.sign_claim(seed("provider"), made)
    assert claims.signature_valid(PROVIDER, made, signature)
    assert claims.claim_problem(made, signature, **claim_of()) is None


@pytest.mark.parametrize(("name", "expected"), [
    ("network_id", "net_otherrrrrrrrrrrrrrrrrrrrrr"), ("task_id", bytes(32)),
    ("plugin", "cube"), ("requester", PROVIDER), ("provider", REQUESTER), ("epoch", EPOCH + 1),
    ("units", 4), ("result", b"145")])
def test_every_field_of_a_claim_is_checked_against_the_task(name: str, expected: Any) -> None:
    made = claims.make_claim(**claim_of())
    signature = evidence_rules.sign_claim(seed("provider"), made)
    field_name = "result_digest" if name == "result" else name
    assert claims.claim_problem(made, signature, **claim_of(**{name: expected})) == \
        f"the claim's {field_name} does not match the task"


@pytest.mark.parametrize("units", [0, claims.MAX_UNITS + 1])
def test_units_are_bounded(units: int) -> None:
    made = claims.make_claim(**claim_of(units=units))
    signature = evidence_rules.sign_claim(seed("provider"), made)
    assert claims.claim_problem(made, signature, **claim_of(units=units)) == \
        f"units must be 1 to {claims.MAX_UNITS}, not {units}"


def test_a_claim_must_be_canonical_and_signed_by_its_provider() -> None:
    made = claims.make_claim(**claim_of())
    by_requester = evidence_rules.sign_claim(seed("requester"), made)
    assert claims.claim_problem(made, by_requester, **claim_of()) == \
        "the provider's signature over the claim does not verify"
    assert claims.claim_problem(made, b"short", **claim_of()) == \
        "the provider's signature over the claim does not verify"
    unknown_field = made + b"\xf8\x01\x01"  # field 127, varint 1: parses, not canonical
    for raw in (unknown_field, b"\xff\xff"):
        signature = evidence_rules.sign_claim(seed("provider"), raw)
        assert claims.claim_problem(raw, signature, **claim_of()) == \
            "the claim is not a canonical TaskClaim"


def test_a_paid_claim_names_the_lock_and_a_price_up_to_the_offer() -> None:
    lock = bytes([7]) * 32

    def problem(price: int, escrow: bytes, asked_escrow: bytes, max_price: int) -> str | None:
        fields = claim_of()
        made = claims.make_claim(**fields, price=price, escrow=escrow)
        return claims.claim_problem(made, evidence_rules.sign_claim(seed("provider"), made),
                                    **fields, escrow=asked_escrow, max_price=max_price)

    assert problem(40, lock, lock, 50) is None
    assert problem(0, b"", lock, 50) is None  # a provider may work a paid task for free
    assert problem(51, lock, lock, 50) == "the claim's price 51 is not 1 to the 50 offered"
    assert problem(40, bytes(32), lock, 50) == "the claim's escrow is not the task's lock"
    assert problem(40, lock, b"", 0) == "the claim asks for payment for a task that is not paid"


def test_a_rejection_names_the_claim() -> None:
    made = claims.make_claim(**claim_of())
    other = claims.make_claim(**claim_of(result=b"145"))
    assert claims.rejected_digest(made) == hashlib.sha256(
        b"mesh/task-rejected/v1\x00" + evidence_rules.claim_hash(made)).digest()
    assert claims.rejected_digest(made) != claims.rejected_digest(other)
    assert claims.rejected_digest(made) != claims.result_digest(b"144")


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("plugin", "kind", "payload", "options", "message"), [
    (PLUGIN, "square", b"", TaskOptions(redundancy=0), "redundancy must be 1 to 16"),
    (PLUGIN, "square", b"", TaskOptions(redundancy=17), "redundancy must be 1 to 16"),
    (PLUGIN, "square", b"", TaskOptions(attempts=0), "attempts must be 1 to 16"),
    (PLUGIN, "square", b"", TaskOptions(attempts=17), "attempts must be 1 to 16"),
    (PLUGIN, "square", b"", TaskOptions(timeout=0), "timeout must be over 0 and at most 300 s"),
    (PLUGIN, "square", b"", TaskOptions(timeout=300.5),
     "timeout must be over 0 and at most 300 s"),
    (PLUGIN, "square", bytes(MAX_PAYLOAD + 1), TaskOptions(),
     f"a task payload is at most {MAX_PAYLOAD} bytes, not {MAX_PAYLOAD + 1}"),
    ("", "square", b"", TaskOptions(), "name the plugin whose task this is"),
    (PLUGIN, "no spaces", b"", TaskOptions(), "task kind 'no spaces' is not a name")])
def test_bad_options_are_refused(plugin: str, kind: str, payload: bytes, options: TaskOptions,
                                 message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        router._check(plugin, kind, payload, options)
    assert str(refused.value).startswith(message)


def test_the_limits_themselves_are_accepted() -> None:
    router._check(PLUGIN, "square", bytes(MAX_PAYLOAD),
                  TaskOptions(redundancy=16, attempts=16, timeout=300.0))
    router._check(PLUGIN, "square", b"", TaskOptions(redundancy=1, attempts=1, timeout=0.001))


# --- nodes on a fake network -----------------------------------------------------------------

class FakeNetwork:
    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.names: dict[str, str] = {}  # peer ID -> node name
        self.entries: dict[bytes, SimpleNamespace] = {}  # every node's writes, by hash

    def order(self, peers: list[str]) -> None:
        """shuffle_providers made deterministic: by node name."""
        peers.sort(key=lambda p: self.names[p])


class FakeDirect:
    """DirectMessenger's contract: the peer's handler, its errors as the requester sees them."""

    def __init__(self, network: FakeNetwork, peer_id: str) -> None:
        self._network, self._peer_id = network, peer_id

    @contextlib.contextmanager
    def serving(self, name: str, handler: Handler, **limits: Any) -> Iterator[None]:
        self._network.handlers[(self._peer_id, name)] = handler
        try:
            yield
        finally:
            del self._network.handlers[(self._peer_id, name)]

    async def request(self, peer_id: str, name: str, payload: bytes, *, timeout: float,
                      max_response: int = 0) -> bytes:
        handler = self._network.handlers[(peer_id, name)]
        try:
            with trio.fail_after(timeout):
                return await handler(self._peer_id, payload)
        except trio.TooSlowError:
            raise errors.DeadlineExceeded(f"peer {peer_id} did not answer {name!r} within "
                                          f"{timeout:g} s") from None
        except errors.InvalidArgument as exc:
            raise DirectRequestFailed(Code.CODE_INVALID,
                                      f"peer {peer_id} refused {name!r}: {exc}") from None
        except errors.Unavailable as exc:
            raise DirectRequestFailed(Code.CODE_UNAVAILABLE,
                                      f"peer {peer_id} refused {name!r}: {exc}") from None


class FakeJournal:
    """The provider's execution journal (executions.py), in memory."""

    def __init__(self) -> None:
        self.kept: dict[bytes, tuple[int, bytes]] = {}

    async def keep(self, task_id: bytes, epoch: int, answer: bytes) -> None:
        self.kept[task_id] = (epoch, answer)

    async def find(self, task_id: bytes) -> tuple[int, bytes] | None:
        return self.kept.get(task_id)


class FakeLedger:
    network_id = NETWORK

    def __init__(self, name: str, entries: dict[bytes, SimpleNamespace] | None = None) -> None:
        self._entries = {} if entries is None else entries  # replicated at once
        self._seed = seed(name)
        self.key = public_key(self._seed)
        self.unavailable = ""  # why a receipt written now would not count, if so
        self.refuse_writes = ""  # why a write is refused now (UNAVAILABLE), if so
        self.written: list[tuple[int | None, dict[str, Any]]] = []

    def entry_epoch(self, *, strict: bool = True) -> int:
        if strict and self.unavailable:
            raise errors.Unavailable(self.unavailable)
        return EPOCH

    def sign_claim(self, claim: bytes) -> bytes:
        return evidence_rules.sign_claim(self._seed, claim)

    def clock_epoch(self) -> int:
        return EPOCH

    async def write(self, deps: tuple[bytes, ...] = (), at_epoch: int | None = None,
                    **kind: Any) -> SimpleNamespace:
        if self.refuse_writes:
            raise errors.Unavailable(self.refuse_writes)
        self.written.append((at_epoch, kind))
        item = SimpleNamespace(hash=hashlib.sha256(self.key + bytes([len(self.written)]))
                               .digest(), author=self.key, body=ledger_pb2.EntryBody(**kind))
        self._entries[item.hash] = item
        return item

    async def stored_within(self, entry_hash: bytes, seconds: float) -> Any:
        item = self._entries.get(entry_hash)
        if item is None:
            await trio.sleep(seconds)
        return item

    async def write_many(self, kinds: list[dict[str, Any]],
                         at_epoch: int | None = None) -> list[SimpleNamespace]:
        return [await self.write(at_epoch=at_epoch, **kind) for kind in kinds]

    def kinds(self, name: str) -> list[Any]:
        return [kind[name] for _, kind in self.written if name in kind]


class FakePlugins:
    def __init__(self, kinds: dict[tuple[str, str], TaskKind]) -> None:
        self._kinds = kinds

    def task_kinds(self) -> list[tuple[str, str]]:
        return sorted(self._kinds)

    def task_kind(self, plugin: str, kind: str) -> TaskKind | None:
        return self._kinds.get((plugin, kind))


def square_plugin(*, lie: bool = False, slow: bool = False, price: int = 0
                  ) -> dict[tuple[str, str], TaskKind]:
    """tests/plugin_fixtures.py's SquarePlugin: "square" has a rule, "digest" none;
    ``price``: what a square costs, when the task is paid."""
    async def square(task: TaskRequest) -> TaskResult:
        if slow:
            await trio.sleep_forever()
        n = int(task.payload)
        return TaskResult(str(n * n + (1 if lie else 0)).encode(), proof=b"p", units=3,
                          price=price if task.max_price else 0)

    async def check_square(task: TaskRequest, result: TaskResult) -> bool:
        return result.result == str(int(task.payload) ** 2).encode() and result.units == 3

    async def digest(task: TaskRequest) -> TaskResult:
        data = task.payload + (b"lie" if lie else b"")
        return TaskResult(hashlib.sha256(data).digest(), units=len(task.payload))

    return {(PLUGIN, "square"): TaskKind(square, check_square),
            (PLUGIN, "digest"): TaskKind(digest, None)}


@dataclass
class Node:
    name: str
    ledger: FakeLedger
    host: SimpleNamespace
    provider: provider.TaskProvider
    cluster: dict[str, Node]  # every node of the test, this one too
    router: TaskRouter = field(init=False)

    @property
    def peer_id(self) -> str:
        return str(self.host.peer_id)


class Cluster:
    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.nodes: dict[str, Node] = {}

    def add(self, name: str, kinds: dict[tuple[str, str], TaskKind], *capabilities: str,
            rewarded: tuple[str, ...] = (PLUGIN,), max_running: int = 4,
            signer: str | None = None) -> Node:
        """A node; ``signer``: sign claims with that name's key, not this node's own."""
        ledger = FakeLedger(signer or name, self.network.entries)
        peer_id = accounts.peer_id_of(public_key(seed(name)))
        self.network.names[peer_id] = name
        membership = SimpleNamespace(peers=lambda: [
            SimpleNamespace(peer_id=p) for p in sorted(self.network.names) if p != peer_id])
        host = SimpleNamespace(peer_id=peer_id, membership=membership,
                               direct=FakeDirect(self.network, peer_id))
        plugins = FakePlugins(kinds)
        node = Node(name, ledger, host,
                    provider.TaskProvider(host, ledger, plugins, capabilities,  # type: ignore[arg-type]
                                          max_running, FakeJournal()), self.nodes)
        node.router = TaskRouter(host, ledger, plugins, rewarded)  # type: ignore[arg-type]
        self.nodes[name] = node
        return node

    def name_of(self, peer_id: str) -> str:
        return self.network.names[peer_id]

    def attempts(self, record: TaskRecord) -> list[tuple[str, str]]:
        return [(self.name_of(a.provider), a.state) for a in record.attempts]


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    network = FakeNetwork()
    monkeypatch.setattr(router, "shuffle_providers", network.order)
    return Cluster(network)


@contextlib.asynccontextmanager
async def running(node: Node) -> AsyncIterator[TaskRouter]:
    """``node``'s router, with every node of the test serving tasks."""
    async with trio.open_nursery() as nursery:
        for each in node.cluster.values():
            await nursery.start(each.provider.run)
        await nursery.start(node.router.run)
        yield node.router
        nursery.cancel_scope.cancel()


def receipt_claim(ledger: FakeLedger, index: int = 0) -> Any:
    receipt = ledger.kinds("task_receipt")[index]
    return evidence_rules.parse_claim(receipt.claim)


async def test_a_task_goes_to_one_provider_and_earns_one_receipt(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    b = cluster.add("b", square_plugin(), "honest")
    cluster.add("c", square_plugin())  # without the capability asked for
    autojump_clock.jump(100)
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "square", b"12", TaskOptions(
            capabilities=("honest",)))
    assert (record.state, record.result, record.error) == (DONE, b"144", "")
    assert record.providers == (b.peer_id,) and record.epoch == EPOCH
    (attempt,) = record.attempts
    assert (attempt.state, attempt.units, attempt.error) == (DONE, 3, "")
    assert attempt.result_digest == hashlib.sha256(b"144").hexdigest()
    ((at_epoch, written),) = a.ledger.written
    assert at_epoch == EPOCH and attempt.receipt == \
        hashlib.sha256(a.ledger.key + b"\x01").hexdigest()
    claim = receipt_claim(a.ledger)
    assert claim.task_id == claims.execution_id(bytes.fromhex(record.task_id), b.ledger.key)
    assert (claim.requester, claim.provider, claim.epoch, claim.units) == (
        a.ledger.key, b.ledger.key, EPOCH, 3)
    assert claims.signature_valid(b.ledger.key, written["task_receipt"].claim,
                                  written["task_receipt"].provider_signature)
    assert b.provider.executed_total == 1 and b.provider.last_executed_at == 100
    assert a.router.last_done_at == 100  # no time passed: nothing waited
    # The provider journaled what it signed, for a validator auditing the receipt.
    _, journaled = b.provider._journal.kept[claim.task_id]  # type: ignore[attr-defined]
    shown = wire_pb2.TaskExecutionAnswer.FromString(journaled).execution
    assert (shown.claim, shown.result) == (written["task_receipt"].claim, b"144")
    assert record.outcome().providers == (b.peer_id,)


async def test_a_liar_among_redundant_executions_is_outvoted_and_confirmed_wrong(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    b = cluster.add("b", square_plugin(), "x")
    c = cluster.add("c", square_plugin(), "x")
    d = cluster.add("d", square_plugin(lie=True), "x")
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "digest", b"payload", TaskOptions(
            redundancy=3, capabilities=("x",)))
    honest = hashlib.sha256(b"payload").digest()  # the digest task's result
    assert record.state == DONE and record.result == honest
    assert sorted(cluster.name_of(p) for p in record.providers) == ["b", "c"]
    assert sorted(cluster.attempts(record)) == [("b", DONE), ("c", DONE), ("d", "wrong")]
    liar = next(x for x in record.attempts if x.provider == d.peer_id)
    assert liar.error == "its result differs from the majority's (2 of 3)"
    assert not liar.receipt
    # a's verdict names the majority's digest; b, which agreed, confirms it with its own.
    (verdict,) = a.ledger.kinds("task_verdict")
    assert verdict.expected_digest == claims.result_digest(honest)
    (confirmed,) = b.ledger.kinds("task_verdict")
    assert confirmed.claim == verdict.claim and not c.ledger.written
    assert confirmed.expected_digest == claims.result_digest(honest)
    # Wrong results are recorded first, then the receipts.
    assert [list(kind) for _, kind in a.ledger.written] == [
        ["task_verdict"], ["task_receipt"], ["task_receipt"]]
    assert liar.verdicts == [hashlib.sha256(a.ledger.key + b"\x01").hexdigest(),
                             hashlib.sha256(b.ledger.key + b"\x01").hexdigest()]
    assert sorted(claim.provider for claim in (receipt_claim(a.ledger, 0),
                                               receipt_claim(a.ledger, 1))) == \
        sorted([b.ledger.key, c.ledger.key])


async def test_a_result_the_rule_rejects_fails_the_task_with_a_confirmed_verdict(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    b = cluster.add("b", square_plugin())
    d = cluster.add("d", square_plugin(lie=True), "d-only")
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "square", b"5", TaskOptions(
            capabilities=("d-only",)))
    assert record.state == FAILED and cluster.attempts(record) == [("d", "wrong")]
    assert record.error == (f"0 of 1 executions succeeded after 1 attempts: {d.peer_id[-8:]}: "
                            "wrong (the plugin's verification rule rejected the result)")
    assert not a.ledger.kinds("task_receipt")
    # No correct result is known: the verdicts name the rejection of the claim,
    # b's after applying the same rule (it never executed the task).
    (verdict,) = a.ledger.kinds("task_verdict")
    assert verdict.expected_digest == claims.rejected_digest(verdict.claim)
    (confirmed,) = b.ledger.kinds("task_verdict")
    assert confirmed.expected_digest == verdict.expected_digest
    assert len(record.attempts[0].verdicts) == 2


async def test_a_provider_that_does_not_answer_in_time_is_given_up_and_another_tried(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin(), "y")
    cluster.add("_e", square_plugin(slow=True), "y")  # first by name
    async with running(a) as tasks:
        started = trio.current_time()
        record = await tasks.submit(PLUGIN, "square", b"9", TaskOptions(
            capabilities=("y",), timeout=1, attempts=2))
        assert trio.current_time() - started == pytest.approx(1)
        assert record.state == DONE and record.result == b"81"
        assert cluster.attempts(record) == [("_e", "timed_out"), ("b", DONE)]
        assert record.attempts[0].error == "no answer within 1 s"

        once = await tasks.submit(PLUGIN, "square", b"9", TaskOptions(
            capabilities=("y",), timeout=1, attempts=1))
    assert once.state == FAILED and cluster.attempts(once) == [("_e", "timed_out")]
    assert once.error == (f"0 of 1 executions succeeded after 1 attempts: "
                          f"{once.attempts[0].provider[-8:]}: timed_out (no answer within 1 s)")


async def test_a_claim_that_does_not_match_the_task_is_invalid(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin())
    cluster.add("_m", square_plugin(), signer="mallory")  # claims with another key
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "square", b"4", TaskOptions())
    assert cluster.attempts(record) == [("_m", "invalid"), ("b", DONE)]
    assert record.attempts[0].error == "the claim's task_id does not match the task"
    assert record.result == b"16" and len(a.ledger.kinds("task_receipt")) == 1


async def test_too_few_providers_fail_the_task_before_any_attempt(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    for name in "bcd":
        cluster.add(name, square_plugin(), "x")
    cluster.add("e", {})  # executes nothing
    async with running(a) as tasks:
        four = await tasks.submit(PLUGIN, "digest", b"z", TaskOptions(
            redundancy=4, capabilities=("x",)))
        five = await tasks.submit(PLUGIN, "square", b"z", TaskOptions(redundancy=5))
    assert four.state == FAILED and not four.attempts
    assert four.error == "3 connected peers execute square/digest with x; the task needs 4"
    assert five.error == "3 connected peers execute square/square; the task needs 5"


async def test_executions_without_a_majority_fail_the_task_and_nobody_is_judged(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin())
    cluster.add("d", square_plugin(lie=True))
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "digest", b"payload", TaskOptions(redundancy=2))
    assert record.state == FAILED
    assert record.error == "the providers disagree: no result has a majority of the 2 executions"
    assert sorted(cluster.attempts(record)) == [("b", DONE), ("d", DONE)]
    assert not a.ledger.written and not record.providers


async def test_a_receipt_is_written_only_when_it_can_count(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin(), rewarded=())
    cluster.add("b", square_plugin())
    async with running(a) as tasks:
        unrewarded = await tasks.submit(PLUGIN, "square", b"2", TaskOptions())
    assert unrewarded.state == DONE
    assert unrewarded.attempts[0].error == "no receipt: the genesis does not require this plugin"

    late = cluster.add("late", square_plugin())
    late.ledger.unavailable = "epoch 7 is settled already"
    async with running(late) as tasks:
        record = await tasks.submit(PLUGIN, "square", b"3", TaskOptions())
    assert record.state == DONE and record.result == b"9" and record.epoch == EPOCH
    assert record.no_receipt == "epoch 7 is settled already"
    assert record.attempts[0].error == "no receipt: epoch 7 is settled already"
    assert not a.ledger.written and not late.ledger.written


async def test_a_receipt_refused_by_the_ledger_leaves_the_task_done(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    # After a restart, own writes wait for the own-chain check and are then
    # refused with UNAVAILABLE: the work was done, so the task is not failed.
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin())
    a.ledger.refuse_writes = "this node's own chain is not checked yet"
    async with running(a) as tasks:
        record = await tasks.submit(PLUGIN, "square", b"4", TaskOptions())
    assert record.state == DONE and record.result == b"16"
    assert record.attempts[0].error == ("receipt not recorded: this node's own chain is "
                                        "not checked yet")
    assert not a.ledger.written


async def test_a_task_is_found_by_a_unique_prefix_and_cancelled_once(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    cluster.add("e", square_plugin(slow=True))
    async with running(a) as tasks:
        stuck = await tasks.submit(PLUGIN, "square", b"3", TaskOptions(), wait=False)
        assert stuck.state == "running"
        assert await tasks.get(stuck.task_id[:8].upper()) is stuck
        with pytest.raises(errors.InvalidArgument, match="at least 8 characters"):
            await tasks.get(stuck.task_id[:7])
        unknown = ("1" if stuck.task_id[0] == "0" else "0") + stuck.task_id[1:8]
        with pytest.raises(errors.NotFound, match=f"no task {unknown} was submitted"):
            await tasks.get(unknown)
        cancelled = await tasks.cancel(stuck.task_id[:10])
        assert cancelled is stuck
        assert (stuck.state, stuck.error) == (CANCELLED, "cancelled by the operator")
        with pytest.raises(errors.FailedPrecondition,
                           match=rf"task {stuck.task_id[:12]} already finished \(cancelled\)"):
            await tasks.cancel(stuck.task_id)
        # Two IDs with the same start: the prefix is ambiguous.
        twin = TaskRecord(stuck.task_id[:8] + "0" * 56, PLUGIN, "square", 1, TaskOptions())
        tasks._tasks[twin.task_id] = twin
        with pytest.raises(errors.InvalidArgument, match="is the start of 2 task IDs"):
            await tasks.get(stuck.task_id[:8])


async def test_the_history_keeps_the_newest_finished_tasks(
        cluster: Cluster, autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router, "HISTORY", 2)
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin())
    async with running(a) as tasks:
        done = [await tasks.submit(PLUGIN, "square", str(n).encode(), TaskOptions())
                for n in range(4)]
        assert await tasks.recent() == [done[3], done[2]]
        with pytest.raises(errors.NotFound, match="the last 2 are kept"):
            await tasks.get(done[0].task_id)


async def test_a_running_task_is_never_forgotten(
        cluster: Cluster, autojump_clock: trio.testing.MockClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router, "HISTORY", 2)
    a = cluster.add("a", square_plugin())
    cluster.add("b", square_plugin(), "fast")
    cluster.add("e", square_plugin(slow=True), "slow")
    async with running(a) as tasks:
        stuck = await tasks.submit(PLUGIN, "square", b"1", TaskOptions(capabilities=("slow",)),
                                   wait=False)
        done = [await tasks.submit(PLUGIN, "square", str(n).encode(),
                                   TaskOptions(capabilities=("fast",))) for n in range(2)]
        assert await tasks.recent() == [*reversed(done), stuck]  # over the bound: stuck runs
        await tasks.cancel(stuck.task_id)
        last = await tasks.submit(PLUGIN, "square", b"5", TaskOptions(capabilities=("fast",)))
        assert await tasks.recent() == [last, done[1]]


async def test_a_watcher_sees_kept_tasks_then_each_change_of_a_new_one(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", square_plugin())
    cluster.add("_e", square_plugin(slow=True), "slow", "y")  # first by name
    cluster.add("b", square_plugin(), "fast", "y")
    seen: list[tuple[str, str, list[tuple[str, str]]]] = []
    async with running(a) as tasks, trio.open_nursery() as nursery:
        first = await tasks.submit(PLUGIN, "square", b"2", TaskOptions(capabilities=("fast",)))

        async def watch() -> None:
            async for record in tasks.watch():
                seen.append((record.task_id, record.state, cluster.attempts(record)))

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [(first.task_id, DONE, [("b", DONE)])]  # what it keeps, at once
        # The slow provider times out, then the fast one answers. Steps with no
        # checkpoint between them reach the watcher as one (here: b started, b done).
        second = await tasks.submit(PLUGIN, "square", b"3", TaskOptions(
            capabilities=("y",), timeout=1.0))
        await trio.testing.wait_all_tasks_blocked()
        assert second.state == DONE
        steps = [(state, attempts) for task_id, state, attempts in seen[1:]
                 if task_id == second.task_id]
        assert steps[0] == ("running", [])
        assert ("running", [("_e", "running")]) in steps
        assert steps[-1] == (DONE, [("_e", "timed_out"), ("b", DONE)])
        cancelled = await tasks.submit(PLUGIN, "square", b"4", TaskOptions(
            capabilities=("slow",), timeout=100), wait=False)
        await tasks.cancel(cancelled.task_id)
        await trio.testing.wait_all_tasks_blocked()
        assert seen[-1][:2] == (cancelled.task_id, CANCELLED)
        nursery.cancel_scope.cancel()


async def test_a_watcher_that_reads_slowly_misses_no_change(cluster: Cluster) -> None:
    """Records that change while the watcher is between two items come again,
    with their newest state (the reader is slow: the bridge's credits)."""
    tasks = cluster.add("a", square_plugin()).router
    first, second = (TaskRecord(f"{n:064x}", PLUGIN, "square", 1, TaskOptions()) for n in (1, 2))
    for record in (first, second):
        tasks._tasks[record.task_id] = record
        tasks._touch(record)
    watcher = tasks.watch()
    assert await anext(watcher) is first
    first.finish(DONE)
    tasks._touch(first)  # both change while the watcher waits to send `second`
    second.finish(FAILED, "no provider")
    tasks._touch(second)
    third = TaskRecord(f"{3:064x}", PLUGIN, "square", 1, TaskOptions())
    tasks._tasks[third.task_id] = third
    tasks._touch(third)
    with trio.fail_after(5):  # a lost change would leave the watcher waiting
        sent = [await anext(watcher) for _ in range(4)]
    assert sent == [second, first, second, third]
    assert [r.state for r in sent[1:]] == [DONE, FAILED, "running"]
    await watcher.aclose()


async def test_a_router_that_is_not_running_refuses_tasks(cluster: Cluster) -> None:
    a = cluster.add("a", square_plugin())
    with pytest.raises(errors.Unavailable, match="the task router is not running yet"):
        await a.router.submit(PLUGIN, "square", b"1", TaskOptions())
    with pytest.raises(errors.InvalidArgument, match="redundancy must be 1 to 16"):
        await a.router.submit(PLUGIN, "square", b"1", TaskOptions(redundancy=0))
    assert await a.router.recent() == []


# --- the provider's checks -------------------------------------------------------------------

def task_request(**changes: Any) -> bytes:
    fields = {"nonce": NONCE, "plugin": PLUGIN, "kind": "square", "payload": b"6",
              "epoch": EPOCH, "timeout_ms": 1000, **changes}
    return wire_pb2.TaskRequest(**fields).SerializeToString()


async def test_a_provider_refuses_what_it_cannot_serve(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", {})
    b = cluster.add("b", square_plugin(), max_running=0)
    c = cluster.add("c", square_plugin(), "gpu")
    async with running(a):  # every node serves tasks while a's router runs
        serve_b = cluster.network.handlers[(b.peer_id, TASK_PROTOCOL)]
        serve_c = cluster.network.handlers[(c.peer_id, TASK_PROTOCOL)]
        for serve, payload, refusal, message in [
                (serve_c, b"\xff", errors.InvalidArgument, "not a TaskRequest"),
                (serve_c, task_request(nonce=b"short"), errors.InvalidArgument,
                 f"a task nonce is {NONCE_BYTES} bytes"),
                (serve_c, task_request(kind="no spaces"), errors.InvalidArgument, "is not a name"),
                (serve_c, task_request(kind="cube"), errors.Unavailable,
                 "this node does not execute square/cube now"),
                (serve_b, task_request(), errors.Unavailable, "busy: executing 0 tasks already")]:
            with pytest.raises(refusal) as refused:
                await serve(a.peer_id, payload)
            assert message in str(refused.value)
        answer = wire_pb2.TaskResponse.FromString(await serve_c(a.peer_id, task_request()))
        assert (answer.result, answer.proof, answer.units) == (b"36", b"p", 3)
        base = claims.base_id(a.ledger.key, PLUGIN, "square", b"6", NONCE)
        assert claims.claim_problem(
            answer.claim, answer.provider_signature, network_id=NETWORK,
            task_id=claims.execution_id(base, c.ledger.key), plugin=PLUGIN,
            requester=a.ledger.key, provider=c.ledger.key, epoch=EPOCH, units=3,
            result=b"36") is None
        advertised = c.provider.advertised()
        assert [(k.plugin, k.kind) for k in advertised.kinds] == [(PLUGIN, "digest"),
                                                                  (PLUGIN, "square")]
        assert list(advertised.capabilities) == ["gpu"] and advertised.max_running == 4
        assert (c.provider.running, c.provider.executed_total) == (0, 1)


async def test_a_provider_works_on_a_paid_task_only_once_its_lock_is_here(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", {})
    b = cluster.add("b", square_plugin(price=40))
    c = cluster.add("c", square_plugin(price=40), max_running=1)
    async with running(a) as tasks:
        # The router locks redundancy times the price offered, then asks: b finds
        # the lock and signs its price out of it.
        record = await tasks.submit(PLUGIN, "square", b"12", TaskOptions(max_price=50))
        assert (record.state, record.result) == (DONE, b"144"), record.error
        (lock,) = a.ledger.kinds("lock")
        assert (lock.task.hex(), lock.amount) == (record.task_id, 50)
        claim = receipt_claim(a.ledger)
        assert (claim.price, claim.escrow.hex()) == (40, record.task_id)

        # A request naming a lock b never received, not a lock, another task's lock
        # or too small a lock: refused before any work.
        serve_b = cluster.network.handlers[(b.peer_id, TASK_PROTOCOL)]
        base = claims.base_id(a.ledger.key, PLUGIN, "square", b"6", NONCE)
        transfer = await a.ledger.write(transfer=ledger_pb2.Transfer(amount=1))
        other = await a.ledger.write(lock=ledger_pb2.EscrowLock(task=bytes(32), amount=99,
                                                                until=EPOCH + 3))
        small = await a.ledger.write(lock=ledger_pb2.EscrowLock(task=base, amount=10,
                                                                until=EPOCH + 3))
        ended = await a.ledger.write(lock=ledger_pb2.EscrowLock(task=base, amount=99,
                                                                until=EPOCH))
        at = trio.current_time()
        for lock_hash, refusal, message in [
                (b"", errors.InvalidArgument, "names the hash of its lock entry"),
                (bytes(32), errors.Unavailable, "did not reach this node within 10 s"),
                (transfer.hash, errors.InvalidArgument, "not the requester's lock of this"),
                (other.hash, errors.InvalidArgument, "not the requester's lock of this"),
                (small.hash, errors.InvalidArgument, "holds 10 until epoch 10: not the 50"),
                (ended.hash, errors.InvalidArgument, "past the receipt's epoch 7")]:
            with pytest.raises(refusal, match=message):
                await serve_b(a.peer_id, task_request(escrow=base, max_price=50,
                                                      lock=lock_hash))
        assert trio.current_time() - at == provider.LOCK_WAIT  # waited once, for the missing
        assert b.provider.executed_total == 1 and b.provider.running == 0

        # A wait for a lock takes one of the provider's slots: more are refused as busy.
        serve_c = cluster.network.handlers[(c.peer_id, TASK_PROTOCOL)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_c, a.peer_id,
                               task_request(escrow=base, max_price=50, lock=bytes(32)))
            await trio.testing.wait_all_tasks_blocked()
            assert c.provider.running == 1
            with pytest.raises(errors.Unavailable, match="busy: executing 1 tasks already"):
                await serve_c(a.peer_id, task_request())
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("answer", "message"), [
    (b"144", "answered something other than a TaskResult"),
    (TaskResult("144", units=1), "answered something other than a TaskResult"),  # type: ignore[arg-type]
    (TaskResult(b"144", units=True), "answered something other than a TaskResult"),
    (TaskResult(b"144", units=0), f"claimed 0 units (1 to {claims.MAX_UNITS})"),
    (TaskResult(b"144", units=claims.MAX_UNITS + 1),
     f"claimed {claims.MAX_UNITS + 1} units (1 to {claims.MAX_UNITS})"),
    (TaskResult(bytes(MAX_RESULT), proof=b"p", units=1), f"result is over {MAX_RESULT} bytes")])
def test_a_handler_answer_is_checked(answer: object, message: str) -> None:
    with pytest.raises(errors.Unavailable) as refused:
        provider._checked(answer, PLUGIN, "square")
    assert str(refused.value).startswith("square/square") and message in str(refused.value)


def test_a_well_formed_answer_passes_as_it_is() -> None:
    answer = TaskResult(bytes(MAX_RESULT - 1), proof=b"p", units=claims.MAX_UNITS)
    assert provider._checked(answer, PLUGIN, "square") is answer


async def test_a_verdict_is_confirmed_only_on_a_result_this_node_finds_wrong(
        cluster: Cluster, autojump_clock: trio.testing.MockClock) -> None:
    a = cluster.add("a", {})
    b = cluster.add("b", square_plugin())
    c = cluster.add("c", square_plugin())
    request = wire_pb2.TaskRequest.FromString(task_request())
    base = claims.base_id(a.ledger.key, PLUGIN, "square", b"6", NONCE)

    def asked(result: bytes, by: Node) -> bytes:
        claim = claims.make_claim(network_id=NETWORK, task_id=claims.execution_id(
            base, by.ledger.key), plugin=PLUGIN, requester=a.ledger.key,
            provider=by.ledger.key, epoch=EPOCH, units=3, result=result)
        return wire_pb2.TaskVerdictRequest(
            task=request, requester=a.ledger.key, result=result, proof=b"p", claim=claim,
            provider_signature=by.ledger.sign_claim(claim)).SerializeToString()

    async with running(a):  # every node serves tasks while its router runs
        confirm = cluster.network.handlers[(b.peer_id, provider.VERDICT_PROTOCOL)]
        for payload, message in [
                (asked(b"36", c), "this node does not find the result wrong"),
                (asked(b"37", b), "this node is the provider of that claim")]:
            with pytest.raises(errors.InvalidArgument, match=message):
                await confirm(a.peer_id, payload)
        assert not b.ledger.written
        answer = wire_pb2.TaskVerdictAnswer.FromString(await confirm(a.peer_id, asked(b"37", c)))
        (verdict,) = b.ledger.kinds("task_verdict")
        assert answer.verdict_entry == hashlib.sha256(b.ledger.key + b"\x01").digest()
        assert verdict.expected_digest == claims.rejected_digest(verdict.claim)
        assert isinstance(verdict, ledger_pb2.TaskVerdict)


# --- participation ---------------------------------------------------------------------------

async def test_a_node_participates_for_a_minute_after_task_work(
        autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.jump(1000)
    provider_side = SimpleNamespace(last_executed_at=0.0)
    router_side = SimpleNamespace(last_done_at=0.0)
    watch = ParticipationWatch(provider_side, router_side, None)  # type: ignore[arg-type]
    assert not watch.participating()
    now = trio.current_time()
    provider_side.last_executed_at = now - 59.9
    assert watch.participating()
    provider_side.last_executed_at = now - 60
    assert not watch.participating()
    router_side.last_done_at = now
    assert watch.participating()
