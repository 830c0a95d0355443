"""What a provider offers (measured at start) and what a requester requires.

A provider's offer is measured, not declared: its cores and memory from the
operating system, its architecture, and a benchmark score, the fuel per
second this machine runs a fixed loop at (``measure``). The operator may
offer less than the machine has (``cores``, ``max_memory_bytes``,
``max_fuel`` in ``[plugins.settings.compute]``), never more; and it sets
its price (``price_per_mfuel``, ``start_fee``; 0 and 0 by default: free). A
requester's requirements (``meshctl compute run --cores 2 --min-memory
256MiB --max-price 50``) are matched against offers, and the reason each
provider is left out is kept, so that a task no one can run is refused with
why.

Pure apart from ``measure`` (which runs the benchmark): no meshd.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh_compute.sandbox import Limits, Sandbox

# A loop of 1,000,000 iterations (a few fuel each): the benchmark's module.
BENCHMARK = """(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "run") (param i32 i32) (result i64) (local $i i32) (local $x i32)
    (loop $l
      (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 31)) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000000))))
    (i32.store (i32.const 0) (local.get $x))
    (i64.const 4)))
"""
FEATURES = ("simd", "bulk-memory", "multi-value", "reference-types")  # on; threads are off
STORED_MODULES = "stored-modules"  # a feature: reads modules by CID from its storage plugin


@dataclass(frozen=True)
class Offer:
    peer_id: str
    cores: int  # the runs this provider takes at once
    memory_bytes: int  # the linear memory one run may use
    max_fuel: int  # per run
    arch: str
    score: int  # fuel per second of the benchmark (measured at start)
    features: tuple[str, ...] = FEATURES
    busy: int = 0  # runs in progress when it answered
    price_per_mfuel: int = 0  # base units per million fuel (a paid task's)
    start_fee: int = 0  # base units per run, whatever its fuel

    def quote(self, fuel: int, base_price: int = 0) -> int:
        """What a run of ``fuel`` fuel costs here: the start fee plus the fuel at the
        network's base price (burned) and this provider's own price (its tip)."""
        return price_of(fuel, base_price + self.price_per_mfuel, self.start_fee)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "features": list(self.features)}


def price_of(fuel: int, price_per_mfuel: int, start_fee: int) -> int:
    """The start fee plus ``fuel`` at ``price_per_mfuel`` base units per million, rounded up."""
    return start_fee + -(-fuel * price_per_mfuel // 1_000_000)


@dataclass(frozen=True)
class Requirements:
    cores: int = 0
    memory_bytes: int = 0
    fuel: int = 0
    arch: str = ""
    max_price: int = 0  # per run, base units; 0: unpaid (only free providers)
    base_price: int = 0  # the network's, per million fuel (docs/ledger.md §12.4)
    stored_module: bool = False  # the run names its module by CID (the storage plugin's)

    def problem(self, offer: Offer) -> str | None:
        """Why ``offer`` does not meet these requirements; None if it does."""
        # An unpaid run pays no base fee either: only free providers take one.
        quote = offer.quote(self.fuel, self.base_price if self.max_price else 0)
        if quote > self.max_price:
            base = f" + the base price {self.base_price}" if self.base_price else ""
            return (f"asks {quote} for {self.fuel} fuel ({offer.start_fee} to start, "
                    f"{offer.price_per_mfuel}{base} per million fuel), over the "
                    f"{self.max_price} offered" + ("" if self.max_price else " (--max-price)"))
        if offer.cores < self.cores:
            return f"offers {offer.cores} cores, not {self.cores}"
        if offer.memory_bytes < self.memory_bytes:
            return (f"offers {offer.memory_bytes >> 20} MiB of memory per run, not "
                    f"{self.memory_bytes >> 20} MiB")
        if offer.max_fuel < self.fuel:
            return f"runs at most {offer.max_fuel} fuel, not {self.fuel}"
        if self.arch and offer.arch != self.arch:
            return f"is {offer.arch}, not {self.arch}"
        if self.stored_module and STORED_MODULES not in offer.features:
            return "runs no storage plugin, so it cannot read a module by CID"
        return None


def offer_from_json(peer_id: str, data: Mapping[str, Any]) -> Offer:
    """A peer's OFFER answer; ValueError if it is not one."""
    try:
        numbers = [data[k] for k in ("cores", "memory_bytes", "max_fuel", "score", "busy",
                                     "price_per_mfuel", "start_fee")]
        arch, features = data["arch"], data["features"]
    except (KeyError, TypeError):
        raise ValueError("an offer is a JSON object with cores, memory_bytes, max_fuel, "
                         "score, busy, price_per_mfuel, start_fee, arch and "
                         "features") from None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers) \
            or not isinstance(arch, str) or not isinstance(features, list) \
            or not all(isinstance(f, str) for f in features):
        raise ValueError("an offer's numbers are whole and its arch and features are text")
    cores, memory, max_fuel, score, busy, price_per_mfuel, start_fee = numbers
    return Offer(peer_id, cores, memory, max_fuel, arch[:32], score,
                 tuple(f[:32] for f in features[:16]), busy, price_per_mfuel, start_fee)


def rank(offers: Iterable[Offer], required: Requirements,
         success: Mapping[str, float] | None = None, *,
         uptime: Mapping[str, float] | None = None,
         age: Mapping[str, int] | None = None) -> tuple[list[Offer], dict[str, str]]:
    """The offers that meet ``required``: the least busy per core first, then the
    cheapest, then those with the best record (``success``: peer -> success rate,
    0.5 for one nobody knows, by tenths), then the best uptime (``uptime``: the
    share of its epochs in the ledger its uptime earned, by tenths, 0.5 unknown),
    then the longest in the network (``age``: epochs since its first settlement,
    by doublings), then the fastest; and, for each left out, why."""
    rates, uptimes, ages = success or {}, uptime or {}, age or {}
    fit, why = [], {}
    for offer in offers:
        problem = required.problem(offer)
        if problem is None:
            fit.append(offer)
        else:
            why[offer.peer_id] = problem
    fit.sort(key=lambda o: (o.busy / max(1, o.cores), o.quote(required.fuel),
                            -round(rates.get(o.peer_id, 0.5), 1),
                            -round(uptimes.get(o.peer_id, 0.5), 1),
                            -max(0, ages.get(o.peer_id, 0)).bit_length(), -o.score, o.peer_id))
    return fit, why


def measure(config: Mapping[str, Any], limits: Limits) -> Offer:
    """This machine's offer (peer_id left empty): measured, then capped by ``config``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    started = time.perf_counter()
    fuel = Sandbox().run(BENCHMARK, b"").fuel_used  # whatever the operator's limits
    score = int(fuel / max(time.perf_counter() - started, 1e-6))
    return Offer(peer_id="", cores=min(cores, setting(config, "cores", cores)),
                 memory_bytes=min(limits.memory_bytes, physical), max_fuel=limits.fuel,
                 arch=platform.machine() or "unknown", score=score,
                 price_per_mfuel=setting(config, "price_per_mfuel", 0, least=0),
                 start_fee=setting(config, "start_fee", 0, least=0))


def setting(config: Mapping[str, Any], key: str, default: int, least: int = 1) -> int:
    """A whole-number setting of ``[plugins.settings.compute]``, at least ``least``;
    ValueError naming it otherwise."""
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"plugins.settings.compute {key} is a whole number of at least "
                         f"{least}, not {value!r}")
    return value
