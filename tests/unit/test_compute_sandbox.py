"""The compute template's sandbox: deterministic, fuel-metered, capped, and clear about refusals."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from mesh_compute.sandbox import (
    PAGE,
    Limits,
    ModuleRefused,
    OutOfFuel,
    Sandbox,
    Trapped,
)

EXAMPLES = Path(__file__).parents[2] / "plugins" / "compute" / "examples"
ALLOC = '''
  (global $next (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (local.get $at) (local.get $len)))
    (local.get $at))'''


def module(body: str, head: str = "", pages: int = 1) -> str:
    return f'(module {head} (memory (export "memory") {pages}) {ALLOC} {body})'


def fnv1a(data: bytes) -> bytes:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & (2**64 - 1)
    return h.to_bytes(8, "little")


def test_the_examples_compute_what_they_say_with_the_same_fuel_each_time() -> None:
    sandbox = Sandbox()
    data = bytes(range(256)) * 40
    first = sandbox.run((EXAMPLES / "fnv1a.wat").read_text(), data)
    again = Sandbox().run((EXAMPLES / "fnv1a.wat").read_text(), data)
    assert first.output == fnv1a(data)
    assert first == again and first.fuel_used > len(data)  # deterministic, per instruction
    inverted = sandbox.run((EXAMPLES / "invert.wat").read_text(), b"\x00\x10\xff")
    assert inverted.output == b"\xff\xef\x00"


def test_the_matrix_multiply_example_multiplies_and_traps_on_a_wrong_input() -> None:
    rng = random.Random(3)
    n = 7
    a = [[rng.randint(-1000, 1000) for _ in range(n)] for _ in range(n)]
    b = [[rng.randint(-1000, 1000) for _ in range(n)] for _ in range(n)]
    packed = bytes([n]) + b"".join(struct.pack("<i", x) for m in (a, b) for r in m for x in r)
    module = (EXAMPLES / "matmul.wat").read_text()
    out = Sandbox().run(module, packed).output
    product = [sum(a[i][k] * b[k][j] for k in range(n)) for i in range(n) for j in range(n)]
    assert list(struct.unpack(f"<{n * n}i", out)) == product
    with pytest.raises(Trapped):
        Sandbox().run(module, packed[:-1])


def test_an_endless_loop_stops_at_its_fuel_and_says_what_it_spent() -> None:
    spin = module('(func (export "run") (param i32 i32) (result i64) (loop (br 0)) '
                  "(i64.const 0))")
    with pytest.raises(OutOfFuel, match="spent all of its 50000 fuel") as caught:
        Sandbox().run(spin, b"", fuel=50_000)
    assert caught.value.fuel_used == 50_000
    with pytest.raises(OutOfFuel):  # never above the node's own limit
        Sandbox(Limits(fuel=1000)).run(spin, b"", fuel=10**9)


def test_memory_past_the_cap_is_not_given_and_a_module_that_needs_it_is_refused() -> None:
    limits = Limits(memory_bytes=4 * PAGE)
    grow = module('(func (export "run") (param i32 i32) (result i64) '
                  "(i32.store (i32.const 0) (memory.grow (i32.const 10))) (i64.const 4))")
    out = Sandbox(limits).run(grow, b"").output
    assert struct.unpack("<i", out) == (-1,)  # refused, as Wasm says, not a trap
    big = module('(func (export "run") (param i32 i32) (result i64) (i64.const 0))', pages=64)
    with pytest.raises(ModuleRefused, match="cannot start here"):
        Sandbox(limits).run(big, b"")


@pytest.mark.parametrize(("source", "why"), [
    (b"\x00asm\x01\x00\x00\x00\xff", "not a valid WebAssembly module"),
    ("(module (func", "not a valid WebAssembly module"),
    (b"", "the module is empty"),
    (module('(func (export "run") (param i32 i32) (result i64) (i64.const 0))',
            '(import "env" "clock" (func))'), "imports env.clock"),
    ('(module (func (export "run") (param i32 i32) (result i64) (i64.const 0)))',
     "does not export memory, alloc"),
])
def test_modules_that_cannot_run_are_refused_saying_why(source: bytes | str, why: str) -> None:
    with pytest.raises(ModuleRefused, match=why) as caught:
        Sandbox().run(source, b"input")
    assert caught.value.fuel_used == 0


def test_a_module_over_the_size_limit_is_refused_before_it_is_compiled() -> None:
    with pytest.raises(ModuleRefused, match="over the limit of 1000"):
        Sandbox(Limits(module_bytes=1000)).run(b"\x00asm" + bytes(2000), b"")


@pytest.mark.parametrize(("body", "why"), [
    ('(func (export "run") (param i32 i32) (result i64) unreachable)', "trapped"),
    ('(func (export "run") (param i32 i32) (result i64) '
     "(i64.extend_i32_u (i32.div_u (i32.const 1) (i32.const 0))))", "trapped"),
    ('(func (export "run") (param i32 i32) (result i64) (i64.const 0x7fff000000000010))',
     "is not in memory"),
    ('(func (export "run") (param i32) (result i64) (i64.const 0))', "could not be called"),
])
def test_a_module_that_traps_or_answers_nonsense_is_a_clear_error(body: str, why: str) -> None:
    with pytest.raises(Trapped, match=why) as caught:
        Sandbox().run(module(body), b"abc")
    assert caught.value.fuel_used >= 0


def test_a_function_the_module_does_not_export_is_named() -> None:
    with pytest.raises(ModuleRefused, match="no function 'main'"):
        Sandbox().run((EXAMPLES / "fnv1a.wat").read_text(), b"", fn="main")


def test_nans_are_canonical_whatever_the_arithmetic_made() -> None:
    # 0/0 gives a NaN whose sign and payload depend on the CPU unless canonicalised.
    nan = module('(func (export "run") (param i32 i32) (result i64) '
                 "(f32.store (i32.const 0) (f32.div (f32.const 0) (f32.const 0))) "
                 "(f32.store (i32.const 4) (f32.sqrt (f32.const -1))) (i64.const 8))")
    out = Sandbox().run(nan, b"").output
    assert struct.unpack("<2I", out) == (0x7FC00000, 0x7FC00000)
