"""The compute plugin: WebAssembly modules run for peers, as tasks of kind RUN.

Wiring only; each part is its own module:

* sandbox.py: wasmtime, fuel-metered and without host calls;
* runs.py: a RUN task's payload and result as bytes;
* offers.py: what this node offers (measured at start) and the matching of
  a requester's requirements against peers' offers.

Events:

* ``OFFER`` (from any peer): this node's offer, as JSON (offers.py).
* ``PLAN`` (from this node only: ``meshctl compute run|providers``): JSON
  requirements ``{cores, memory_bytes, fuel, arch, max_price, stored_module}``
  (``stored_module``: the run names its module by CID); the answer is the
  connected peers that meet them, best first, and why each other one does
  not: ``{"providers": [offer, ...], "excluded": {peer: why}}``. meshctl
  then submits the task to those providers (TaskOptions.providers).

Task kind ``RUN`` (docs/compute.md): the provider runs the module on the
input with the fuel asked for; the result says what came out and what fuel
it spent, units are thousands of fuel. A module named by CID (stored with
``meshctl storage put``) is read from this node's storage plugin
(``ctx.call``), which checks it against the CID; offers of nodes that can
do so name the feature ``stored-modules``. A run that traps or runs out of fuel
is a result too (paid for its fuel); a module that cannot run is refused.
A provider with a price (``price_per_mfuel``, ``start_fee``) asks the start
fee plus the fuel spent at its price, at most the task's ``max_price``, paid
out of the requester's lock when the receipt settles (docs/ledger.md §12),
and refuses tasks that offer less than its start fee, or nothing.
The rule a requester applies (``check_run``) checks the result's form and,
at the network's spot-check rate, runs the module itself and compares; a
node asked to confirm a verdict always runs it.

Configuration (``ctx.config``: the genesis's settings of the plugin,
overridden key by key by ``[plugins.settings.compute]`` in meshd's config):
``max_fuel`` per run (default 100,000,000), ``max_memory_bytes`` of a run's
linear memory (64 MiB), ``cores``: runs at once (default: the cores this
process may use), ``spot_check_rate``: a share of results this node re-runs
as a requester above the network's (genesis ``market.spot_check_bps``,
10 % unless set, changeable by governance; default 0: the network's);
``price_per_mfuel`` and ``start_fee``, this node's price in base units
(default 0 and 0: it runs modules for free).
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import threading
from collections.abc import Mapping
from typing import Any

import trio
import wasmtime

from mesh_compute.offers import (
    STORED_MODULES,
    Offer,
    Requirements,
    measure,
    offer_from_json,
    rank,
    setting,
)
from mesh_compute.runs import RunFormatError, RunRequest, RunResult, parse_request, parse_result
from mesh_compute.sandbox import Limits, ModuleRefused, OutOfFuel, Sandbox, Trapped
from meshd.plugin import (
    Context,
    Event,
    InvalidArgument,
    LedgerStanding,
    MeshError,
    NotFound,
    Plugin,
    ProviderRecord,
    TaskRequest,
    TaskResult,
)

RUN = "RUN"
OFFER_TIMEOUT = 5.0  # seconds a peer has to answer OFFER
OFFERS_TTL = 5.0  # seconds a peer's offer is trusted
MODULES_KEPT = 32  # compiled modules kept, by SHA-256 or CID
STORAGE = "storage"  # the plugin a module named by CID is read from
STORAGE_TTL = 30.0  # seconds whether the storage plugin runs here is trusted
READ_TIMEOUT = 60.0  # seconds to read a stored module
CHECKS_KEPT = 256  # this node's own results of payloads it checked, by SHA-256


class ComputePlugin(Plugin):
    async def init(self, ctx: Context) -> None:
        defaults = Limits()
        self.limits = Limits(fuel=setting(ctx.config, "max_fuel", defaults.fuel),
                             memory_bytes=setting(ctx.config, "max_memory_bytes",
                                                 defaults.memory_bytes))
        self.own_spot_check_rate = _rate(ctx.config, "spot_check_rate", 0.0)
        self.ctx = ctx
        self.sandbox = Sandbox(self.limits)
        self.offer = await trio.to_thread.run_sync(measure, ctx.config, self.limits)
        self.slots = trio.CapacityLimiter(self.offer.cores)
        self.busy = 0
        self._modules: collections.OrderedDict[str, wasmtime.Module] = \
            collections.OrderedDict()
        self._modules_lock = threading.Lock()
        self._checked: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._offers: dict[str, tuple[float, Offer | str]] = {}  # peer -> (at, offer or why)
        self._storage = (-STORAGE_TTL, False)  # (when asked, whether storage runs here)
        ctx.log.info("compute offer measured", extra={
            "cores": self.offer.cores, "memory_bytes": self.offer.memory_bytes,
            "arch": self.offer.arch, "score": self.offer.score})
        ctx.on("OFFER", self.offered)
        ctx.on("PLAN", self.plan, timeout=2 * OFFER_TIMEOUT + 5)
        ctx.handle_task(RUN, self.run_task, verify=self.check_run)

    # --- the provider's side ------------------------------------------------

    async def offered(self, event: Event) -> bytes:
        features = list(self.offer.features)
        if await self._reads_stored_modules():
            features.append(STORED_MODULES)
        offer = self.offer.to_json() | {"peer_id": self.ctx.peer_id, "busy": self.busy,
                                        "features": features}
        return json.dumps(offer).encode()

    async def _reads_stored_modules(self) -> bool:
        """Whether this node runs the storage plugin, so it can read a module by CID
        (asked again after STORAGE_TTL: plugins start and stop on their own)."""
        at, runs = self._storage
        if trio.current_time() - at > STORAGE_TTL:
            try:
                await self.ctx.call(STORAGE, "LAYOUT", timeout=OFFER_TIMEOUT)
                runs = True
            except NotFound:
                runs = False
            except MeshError:  # busy, starting: ask again next time
                return self._storage[1]
            self._storage = (trio.current_time(), runs)
        return runs

    async def run_task(self, task: TaskRequest) -> TaskResult:
        request = _request(task.payload)
        offer, base = self.offer, self.ctx.ledger.base_price()
        if offer.quote(0) > task.max_price or (offer.quote(request.fuel) and not task.max_price):
            raise InvalidArgument(
                f"this node runs modules for {offer.start_fee} to start and "
                f"{offer.price_per_mfuel} per million fuel, plus the base price {base} (up "
                f"to {offer.quote(request.fuel, base)} for this one); the task offers "
                f"{task.max_price}")
        result = await self.execute(request)
        # Paid for the fuel it spent, at most what the requester offered.
        return TaskResult(result.encode(), units=result.units,
                          price=min(offer.quote(result.fuel, base), task.max_price))

    async def execute(self, request: RunRequest) -> RunResult:
        """Run ``request`` here; InvalidArgument if its module cannot run at all."""
        if request.fuel > self.limits.fuel:
            raise InvalidArgument(f"this node runs at most {self.limits.fuel} fuel, not "
                                  f"{request.fuel}")
        source = request.module
        if request.module_cid and request.module_key not in self._modules:
            source = await self._read_stored(request.module_cid)  # before taking a core
        async with self.slots:
            self.busy += 1
            try:
                return await trio.to_thread.run_sync(self._run, request, source)
            except ModuleRefused as exc:
                raise InvalidArgument(f"the module cannot run: {exc}") from None
            finally:
                self.busy -= 1

    async def _read_stored(self, cid: str) -> bytes:
        """Module ``cid`` from this node's storage plugin, checked against its CID there."""
        ask = json.dumps({"file": cid, "max_bytes": self.limits.module_bytes}).encode()
        try:
            return await self.ctx.call(STORAGE, "READ", ask, timeout=READ_TIMEOUT)
        except MeshError as exc:
            raise ModuleUnreadable(f"cannot read module {cid} from this node's storage "
                                   f"plugin: {exc}") from None

    def _run(self, request: RunRequest, source: bytes) -> RunResult:  # in a worker thread
        module = self._module(request, source)
        try:
            outcome = self.sandbox.run(module, request.data, fn=request.fn, fuel=request.fuel)
        except OutOfFuel as exc:
            return RunResult(exc.fuel_used, error="out_of_fuel", message=str(exc))
        except Trapped as exc:
            return RunResult(exc.fuel_used, error="trapped", message=str(exc))
        return RunResult(outcome.fuel_used, outcome.output)

    def _module(self, request: RunRequest, source: bytes) -> wasmtime.Module:
        """The compiled module (in a worker thread; runs share the cache, so it is
        changed under a lock, and compiling happens outside it)."""
        key = request.module_key
        with self._modules_lock:
            module = self._modules.get(key)
            if module is not None:
                self._modules.move_to_end(key)
                return module
        if not source:  # a stored module that left the cache since it was looked for
            source = trio.from_thread.run(self._read_stored, request.module_cid)
        module = self.sandbox.compile(source)
        with self._modules_lock:
            self._modules[key] = module
            while len(self._modules) > MODULES_KEPT:
                self._modules.popitem(last=False)
        return module

    # --- the requester's side -----------------------------------------------

    async def check_run(self, task: TaskRequest, result: TaskResult) -> bool:
        """A result of the form a RUN has, for at most the fuel asked; and, at the
        spot-check rate (always when confirming another node's verdict), the
        result this node gets running the module itself."""
        request = _request(task.payload)
        try:
            run = parse_result(result.result)
        except RunFormatError:
            return False
        if run.fuel > request.fuel or result.units != run.units \
                or (run.error == "out_of_fuel" and run.fuel != request.fuel):
            return False
        confirming = task.requester != self.ctx.peer_id
        if not confirming and random.random() >= self.spot_check_rate():
            return True
        try:
            own = await self._own_result(task.payload, request)
        except ModuleUnreadable as exc:
            if confirming:
                raise  # no verdict can be confirmed on a module this node cannot read
            # This node cannot read the module (no storage plugin, say): it cannot
            # check, so the result stands as it would have without a spot check.
            self.ctx.log.warning("spot check skipped", extra={"task_id": task.task_id,
                                                              "why": str(exc)})
            return True
        return own == result.result

    def spot_check_rate(self) -> float:
        """The share of results this node runs again: the network's rate (genesis
        ``market.spot_check_bps``, which governance may change), or the operator's
        own ``spot_check_rate`` if higher."""
        return max(self.ctx.ledger.spot_check_rate(), self.own_spot_check_rate)

    async def _own_result(self, payload: bytes, request: RunRequest) -> bytes:
        key = hashlib.sha256(payload).digest()
        own = self._checked.get(key)
        if own is None:
            own = (await self.execute(request)).encode()
            self._checked[key] = own
            while len(self._checked) > CHECKS_KEPT:
                self._checked.popitem(last=False)
        return own

    async def plan(self, event: Event) -> bytes:
        if event.peer != self.ctx.peer_id:
            raise InvalidArgument("PLAN is asked by this node's own meshctl")
        try:
            asked = json.loads(event.data or b"{}")
            required = Requirements(**{k: asked.get(k, default) for k, default in
                                       (("cores", 0), ("memory_bytes", 0), ("fuel", 0),
                                        ("arch", ""), ("max_price", 0),
                                        ("stored_module", False))},
                                    base_price=self.ctx.ledger.base_price())
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in (required.cores, required.memory_bytes, required.fuel,
                                 required.max_price)) \
                    or not isinstance(required.arch, str) \
                    or not isinstance(required.stored_module, bool):
                raise TypeError
        except (ValueError, TypeError, AttributeError):
            raise InvalidArgument("PLAN takes JSON {cores, memory_bytes, fuel, arch, "
                                  "max_price, stored_module}: whole numbers, text and "
                                  "true/false") from None
        offers, why = await self.offers()
        records = {o.peer_id: self.ctx.provider_record(o.peer_id) for o in offers}
        standings = {o.peer_id: await self.ctx.ledger.standing(o.peer_id) for o in offers}
        fit, left_out = rank(offers, required, {p: success(r, standings[p])
                                                for p, r in records.items()},
                             uptime={p: uptime(s) for p, s in standings.items()},
                             age={p: age(s) for p, s in standings.items()})
        return json.dumps({"providers": [o.to_json() | {
            "record": _record_json(records[o.peer_id], standings[o.peer_id]),
            "standing": _standing_json(standings[o.peer_id])} for o in fit],
                           "excluded": why | left_out}).encode()

    async def offers(self) -> tuple[list[Offer], dict[str, str]]:
        """Connected peers' offers (asked again after OFFERS_TTL), and why a peer has none."""
        now = trio.current_time()
        peers = self.ctx.peers()
        self._offers = {p: v for p, v in self._offers.items() if p in peers}

        async def ask(peer: str) -> None:
            try:
                raw = await self.ctx.request(peer, "OFFER", timeout=OFFER_TIMEOUT)
                self._offers[peer] = (now, offer_from_json(peer, json.loads(raw)))
            except MeshError as exc:
                self._offers[peer] = (now, f"made no offer: {exc}")
            except ValueError as exc:
                self._offers[peer] = (now, f"made an offer that is not one: {exc}")

        async with trio.open_nursery() as nursery:
            for peer in peers:
                if peer not in self._offers or now - self._offers[peer][0] > OFFERS_TTL:
                    nursery.start_soon(ask, peer)
        offers = [v for _, v in self._offers.values() if isinstance(v, Offer)]
        why = {p: v for p, (_, v) in self._offers.items() if isinstance(v, str)}
        return offers, why


class ModuleUnreadable(InvalidArgument):
    """A module named by CID that this node's storage plugin did not hand over."""


def success(record: ProviderRecord | None, standing: LedgerStanding | None = None) -> float:
    """A provider's smoothed success rate, 0 to 1 (0.5 for one nobody knows): what it
    did for this node (``record``) and for the whole network (``standing``: its
    receipts in the ledger, and its failed tasks there, two verdicts each) over all
    attempts, a wrong result counting as five failures."""
    done = (record.done if record else 0) + (standing.receipts if standing else 0)
    failed = record.failed if record else 0
    wrong = (record.wrong if record else 0) + (standing.failed_tasks if standing else 0)
    return (done + 1) / (done + failed + 5 * wrong + 2)


def age(standing: LedgerStanding) -> int:
    """Final epochs since the ledger first named the provider (0: never)."""
    if standing.since_epoch < 0:
        return 0
    return standing.through_epoch - standing.since_epoch + 1


def uptime(standing: LedgerStanding) -> float:
    """The share of the provider's epochs in the ledger its uptime earned (0.5: none yet)."""
    epochs = age(standing)
    return min(1.0, standing.uptime_epochs / epochs) if epochs else 0.5


def _record_json(record: ProviderRecord | None, standing: LedgerStanding) -> dict[str, Any]:
    rate = round(success(record, standing), 3)
    if record is None:
        return {"done": 0, "failed": 0, "wrong": 0, "first_seen": None, "success": rate}
    return {"done": record.done, "failed": record.failed, "wrong": record.wrong,
            "first_seen": record.first_seen, "success": rate}


def _standing_json(standing: LedgerStanding) -> dict[str, Any]:
    return {"receipts": standing.receipts, "failed_tasks": standing.failed_tasks,
            "since_epoch": standing.since_epoch, "uptime_epochs": standing.uptime_epochs,
            "through_epoch": standing.through_epoch}


def _request(payload: bytes) -> RunRequest:
    try:
        return parse_request(payload)
    except RunFormatError as exc:
        raise InvalidArgument(str(exc)) from None


def _rate(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"plugins.settings.compute {key} is a share from 0 to 1, "
                         f"not {value!r}")
    return float(value)
