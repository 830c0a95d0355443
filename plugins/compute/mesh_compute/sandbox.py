"""Running a WebAssembly module on an input: fuel-metered, memory-capped, without host calls.

Pure (no meshd): the compute template's engine (docs/compute.md). wasmtime
compiles and runs the module with:

* **fuel**: every instruction costs fuel, and a run stops with OutOfFuel when
  the limit is spent. The same module, input and fuel stop at the same point
  on every machine, so fuel is what a run is priced and paid by, and
  providers that ran honestly report the same fuel.
* **determinism**: NaNs are canonicalised (the bit pattern of a NaN would
  otherwise depend on the CPU), threads and relaxed SIMD are off, and the
  module may import nothing: no clock, no randomness, no files or network.
  Its only input is the bytes it is given.
* **limits**: the module's size, its linear memory (a ``memory.grow`` past
  the cap fails, as Wasm says, and a module that starts above it is
  refused), and the output's size.

The calling convention (ABI): the module exports its ``memory``, ``alloc(len:
i32) -> i32`` (where to write an input of ``len`` bytes) and the function to
run, ``(ptr: i32, len: i32) -> i64``, whose result packs the output's place
in memory: ``ptr << 32 | len``. Examples in plugins/compute/examples/ are
WebAssembly text (``.wat``), which wasmtime compiles too.

Errors are SandboxError subclasses with a message for people and the fuel
spent: ModuleRefused (before anything ran: malformed, too large, imports,
missing exports), OutOfFuel, and Trapped (the module trapped: unreachable,
out-of-bounds access, division by zero, stack exhausted, or a bad result).
A run that spent fuel is paid for that fuel even when it failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from mesh_compute.runs import DEFAULT_FUEL

PAGE = 65536  # bytes in a Wasm memory page
ABI = ("memory", "alloc")  # exports every module needs, besides the function run


@dataclass(frozen=True)
class Limits:
    fuel: int = DEFAULT_FUEL  # per run, unless a run asks for less
    memory_bytes: int = 64 << 20
    module_bytes: int = 4 << 20
    output_bytes: int = 4 << 20


@dataclass(frozen=True)
class Outcome:
    output: bytes
    fuel_used: int


class SandboxError(Exception):
    """A run that did not produce an output; ``fuel_used`` is what it spent."""

    def __init__(self, message: str, fuel_used: int = 0) -> None:
        super().__init__(message)
        self.fuel_used = fuel_used


class ModuleRefused(SandboxError):
    """The module cannot run here: refused before it ran (no fuel spent)."""


class OutOfFuel(SandboxError):
    """The run spent all its fuel."""


class Trapped(SandboxError):
    """The module trapped, or returned something that is not an output."""


class Sandbox:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        config = wasmtime.Config()
        config.consume_fuel = True
        config.cranelift_nan_canonicalization = True
        config.wasm_threads = False
        config.wasm_relaxed_simd = False
        self._engine = wasmtime.Engine(config)

    def compile(self, module: bytes | str) -> wasmtime.Module:
        """The module (binary Wasm, or WebAssembly text), checked; ModuleRefused if not."""
        size = len(module)
        if size > self.limits.module_bytes:
            raise ModuleRefused(f"the module is {size} bytes, over the limit of "
                                f"{self.limits.module_bytes}")
        if not size:
            raise ModuleRefused("the module is empty")
        try:
            compiled = wasmtime.Module(self._engine, module)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()
            detail = "; ".join(line.strip() for line in first if line.strip())[:300]
            raise ModuleRefused(f"not a valid WebAssembly module: {detail}") from None
        if compiled.imports:
            names = ", ".join(f"{i.module}.{i.name}" for i in compiled.imports[:5])
            raise ModuleRefused(f"the module imports {names}: a sandboxed module may import "
                                "nothing (no clock, randomness, files or network; its input "
                                "is all it gets)")
        exported = {e.name for e in compiled.exports}
        missing = [name for name in ABI if name not in exported]
        if missing:
            raise ModuleRefused(f"the module does not export {', '.join(missing)} "
                                "(the ABI: memory, alloc(len) -> ptr, and the function to "
                                "run, (ptr, len) -> ptr << 32 | len)")
        return compiled

    def run(self, module: bytes | str | wasmtime.Module, data: bytes, *, fn: str = "run",
            fuel: int | None = None) -> Outcome:
        """Run ``fn`` of ``module`` on ``data`` with at most ``fuel`` fuel (default and
        ceiling: the limits')."""
        budget = self.limits.fuel if fuel is None else min(fuel, self.limits.fuel)
        if budget < 1:
            raise ModuleRefused(f"a run needs at least 1 fuel, not {fuel}")
        compiled = module if isinstance(module, wasmtime.Module) else self.compile(module)
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=self.limits.memory_bytes)
        store.set_fuel(budget)
        try:
            instance = wasmtime.Instance(store, compiled, [])
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise ModuleRefused(f"the module cannot start here: {_first_line(exc)} (its "
                                f"memory may start above the cap of "
                                f"{self.limits.memory_bytes // PAGE} pages)",
                                budget - store.get_fuel()) from None
        exports = instance.exports(store)
        memory, alloc, entry = exports.get("memory"), exports.get("alloc"), exports.get(fn)
        if not isinstance(memory, wasmtime.Memory) or not isinstance(alloc, wasmtime.Func):
            raise ModuleRefused("the module's memory and alloc exports are not a memory and "
                                "a function")
        if not isinstance(entry, wasmtime.Func):
            raise ModuleRefused(f"the module exports no function {fn!r}")
        try:
            at = alloc(store, len(data))
            if not isinstance(at, int) or at < 0 or at + len(data) > memory.data_len(store):
                raise Trapped(f"alloc({len(data)}) returned {at!r}, not a place in memory",
                              budget - store.get_fuel())
            memory.write(store, data, at)
            packed = entry(store, at, len(data))
        except wasmtime.Trap as exc:
            used = budget - store.get_fuel()
            if exc.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                raise OutOfFuel(f"the run spent all of its {budget} fuel", used) from None
            raise Trapped(f"the module trapped: {_first_line(exc)}", used) from None
        except wasmtime.WasmtimeError as exc:  # wrong signature, say
            raise Trapped(f"the module could not be called: {_first_line(exc)}",
                          budget - store.get_fuel()) from None
        used = budget - store.get_fuel()
        if not isinstance(packed, int):
            raise Trapped(f"{fn} returned {packed!r}, not an i64 (ptr << 32 | len)", used)
        start, length = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
        if length > self.limits.output_bytes:
            raise Trapped(f"the output is {length} bytes, over the limit of "
                          f"{self.limits.output_bytes}", used)
        if start + length > memory.data_len(store):
            raise Trapped(f"the output ({length} bytes at {start}) is not in memory", used)
        return Outcome(bytes(memory.read(store, start, start + length)), used)


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
