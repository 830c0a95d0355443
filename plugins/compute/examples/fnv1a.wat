;; FNV-1a, 64 bits, of the input: 8 bytes, little-endian.
;; The ABI (mesh_compute/sandbox.py): memory, alloc(len) -> ptr, run(ptr, len) -> ptr << 32 | len.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))  ;; bytes 0-7: the output
  (func (export "alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (if (i32.gt_u (i32.add (local.get $at) (local.get $len))
                  (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow
        (i32.add (i32.div_u (local.get $len) (i32.const 65536)) (i32.const 1))))))
    (global.set $next (i32.add (local.get $at) (local.get $len)))
    (local.get $at))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $h i64) (local $i i32)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $h (i64.mul
          (i64.xor (local.get $h) (i64.load8_u (i32.add (local.get $ptr) (local.get $i))))
          (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $byte)))
    (i64.store (i32.const 0) (local.get $h))
    (i64.const 8)))
