;; An image filter: every byte of the input (8-bit grey pixels, say) inverted, 255 - b.
;; The ABI (mesh_compute/sandbox.py): memory, alloc(len) -> ptr, run(ptr, len) -> ptr << 32 | len.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 0))
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
    (local $i i32)
    (block $done
      (loop $pixel
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (i32.store8 (i32.add (local.get $ptr) (local.get $i))
          (i32.sub (i32.const 255)
                   (i32.load8_u (i32.add (local.get $ptr) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $pixel)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
