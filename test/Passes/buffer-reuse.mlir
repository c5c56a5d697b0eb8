// RUN: flexmoe-opt %s -split-input-file -exec-buffer-reuse | FileCheck %s

// A chain of four 1 KiB activations: each is dead once the next is computed,
// so two slots suffice. Persistent buffers come first and keep their own
// space; the arena shrinks from 2 x 64 + 4 x 1024 + 64 = 4288 bytes (what
// lower-to-exec assigns) to 2 x 64 + 2 x 1024 = 2176.

// CHECK-LABEL: exec.program @chain
// CHECK-SAME: arena_size = 2176 : i64
// CHECK: exec.buffer parameter "w" offset 0 size 16
// CHECK: exec.buffer input_tokens "tokens" offset 64 size 16
// CHECK: %[[A:.*]] = exec.buffer activation "a" offset 128 size 1024
// CHECK: %[[B:.*]] = exec.buffer activation "b" offset 1152 size 1024
// CHECK: %[[C:.*]] = exec.buffer activation "c" offset 128 size 1024
// CHECK: %[[D:.*]] = exec.buffer activation "d" offset 1152 size 1024
// CHECK: %[[L:.*]] = exec.buffer loss "loss" offset 128 size 4
exec.program @chain attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 4288 : i64} {
  %w = exec.buffer parameter "w" offset 0 size 16 {param = "w", init = "ones"} : !exec.buffer<4xf32>
  %tokens = exec.buffer input_tokens "tokens" offset 64 size 16 : !exec.buffer<4xi32>
  %a = exec.buffer activation "a" offset 128 size 1024 : !exec.buffer<256xf32>
  %b = exec.buffer activation "b" offset 1152 size 1024 : !exec.buffer<256xf32>
  %c = exec.buffer activation "c" offset 2176 size 1024 : !exec.buffer<256xf32>
  %d = exec.buffer activation "d" offset 3200 size 1024 : !exec.buffer<256xf32>
  %loss = exec.buffer loss "loss" offset 4224 size 4 : !exec.buffer<f32>
  exec.kernel fill ins() outs(%a : !exec.buffer<256xf32>) {value = 1.0 : f32}
  exec.kernel scale ins(%a : !exec.buffer<256xf32>) outs(%b : !exec.buffer<256xf32>) {factor = 2.0 : f32}
  exec.kernel scale ins(%b : !exec.buffer<256xf32>) outs(%c : !exec.buffer<256xf32>) {factor = 2.0 : f32}
  exec.kernel scale ins(%c : !exec.buffer<256xf32>) outs(%d : !exec.buffer<256xf32>) {factor = 2.0 : f32}
  exec.kernel reduce_sum ins(%d : !exec.buffer<256xf32>) outs(%loss : !exec.buffer<f32>) {dims = array<i64: 0>, keep_dims = false}
}

// -----

// A view keeps its source alive: %a is read through %v by the last
// instruction, so %c cannot take its place (and %b and %c are both live at
// the instruction that reads %b and writes %c). The small buffers fill the
// slot %b leaves; the loss lives to the end of the step.

// CHECK-LABEL: exec.program @views
// CHECK-SAME: arena_size = 3072 : i64
// CHECK: exec.buffer activation "a" offset 0 size 1024
// CHECK: exec.buffer activation "b" offset 1024 size 1024
// CHECK: exec.buffer activation "c" offset 2048 size 1024
// CHECK: exec.buffer activation "small" offset 1024 size 4
// CHECK: exec.buffer loss "loss" offset 1024 size 4
exec.program @views attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 8192 : i64} {
  %a = exec.buffer activation "a" offset 0 size 1024 : !exec.buffer<256xf32>
  %v = exec.view %a "v" : !exec.buffer<256xf32> -> !exec.buffer<16x16xf32>
  %b = exec.buffer activation "b" offset 1024 size 1024 : !exec.buffer<256xf32>
  %c = exec.buffer activation "c" offset 2048 size 1024 : !exec.buffer<256xf32>
  %small = exec.buffer activation "small" offset 3072 size 4 : !exec.buffer<f32>
  %loss = exec.buffer loss "loss" offset 3136 size 4 : !exec.buffer<f32>
  exec.kernel fill ins() outs(%a : !exec.buffer<256xf32>) {value = 1.0 : f32}
  exec.kernel scale ins(%a : !exec.buffer<256xf32>) outs(%b : !exec.buffer<256xf32>) {factor = 2.0 : f32}
  exec.kernel scale ins(%b : !exec.buffer<256xf32>) outs(%c : !exec.buffer<256xf32>) {factor = 2.0 : f32}
  exec.kernel reduce_sum ins(%c : !exec.buffer<256xf32>) outs(%small : !exec.buffer<f32>) {dims = array<i64: 0>, keep_dims = false}
  exec.kernel reduce_sum ins(%v : !exec.buffer<16x16xf32>) outs(%loss : !exec.buffer<f32>) {dims = array<i64: 0, 1>, keep_dims = false}
}
