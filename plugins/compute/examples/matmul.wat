;; Matrix multiply, C = A x B, of two n x n matrices of 32-bit integers (wrapping).
;; Input: n (one byte, 1-255), then A, then B, row by row, each entry 4 bytes
;; little-endian. Output: C, the same way (n * n * 4 bytes). An input of the
;; wrong length traps. The fuel grows as n^3.
;; The ABI (mesh_compute/sandbox.py): memory, alloc(len) -> ptr, run(ptr, len) -> ptr << 32 | len.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 0))
  (func $grow_to (param $end i32)
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.div_u (i32.sub (local.get $end)
                  (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1)))
                (i32.const -1))
              (then unreachable)))))
  (func $take (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (call $grow_to (i32.add (local.get $at) (local.get $len)))
    (global.set $next (i32.add (local.get $at) (local.get $len)))
    (local.get $at))
  (func (export "alloc") (param $len i32) (result i32)
    (call $take (local.get $len)))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $a i32) (local $b i32) (local $c i32)
    (local $i i32) (local $j i32) (local $k i32) (local $sum i32) (local $size i32)
    (if (i32.eqz (local.get $len)) (then unreachable))
    (local.set $n (i32.load8_u (local.get $ptr)))
    (local.set $size (i32.mul (i32.mul (local.get $n) (local.get $n)) (i32.const 4)))
    ;; 1 + 2 matrices, or the input is not one
    (if (i32.ne (local.get $len) (i32.add (i32.const 1) (i32.mul (local.get $size) (i32.const 2))))
      (then unreachable))
    (local.set $a (i32.add (local.get $ptr) (i32.const 1)))
    (local.set $b (i32.add (local.get $a) (local.get $size)))
    (local.set $c (call $take (local.get $size)))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $j (i32.const 0))
        (block $cols_done
          (loop $cols
            (br_if $cols_done (i32.ge_u (local.get $j) (local.get $n)))
            (local.set $sum (i32.const 0))
            (local.set $k (i32.const 0))
            (block $dot_done
              (loop $dot
                (br_if $dot_done (i32.ge_u (local.get $k) (local.get $n)))
                (local.set $sum (i32.add (local.get $sum) (i32.mul
                  (i32.load (i32.add (local.get $a) (i32.mul (i32.add
                    (i32.mul (local.get $i) (local.get $n)) (local.get $k)) (i32.const 4))))
                  (i32.load (i32.add (local.get $b) (i32.mul (i32.add
                    (i32.mul (local.get $k) (local.get $n)) (local.get $j)) (i32.const 4)))))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br $dot)))
            (i32.store (i32.add (local.get $c) (i32.mul (i32.add
              (i32.mul (local.get $i) (local.get $n)) (local.get $j)) (i32.const 4)))
              (local.get $sum))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cols)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $c)) (i64.const 32))
            (i64.extend_i32_u (local.get $size)))))
