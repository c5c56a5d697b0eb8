// RUN: flexmoe-opt %S/lower-to-exec.mlir -split-input-file -lower-to-exec -exec-buffer-reuse | FileCheck %s

// The MoE step of lower-to-exec.mlir: lower-to-exec gives it a 17472-byte
// arena of disjoint buffers; with reuse the persistent 6080 bytes stay put
// and the activations and gradients share the rest.

// CHECK-LABEL: exec.program @train_step
// CHECK-SAME: arena_size = 10048 : i64
// CHECK: exec.buffer parameter "wte" offset 0 size 512
// CHECK: exec.buffer adam_v "moe1.w1.v" of %{{.*}} offset 5056 size 1024
// The first activation starts right after the persistent buffers.
// CHECK: exec.buffer activation "embedding.0" offset 6080 size 256
// CHECK: exec.buffer activation "experts.6" offset 6080 size 512
// The loss keeps a slot of its own until the end of the step.
// CHECK: exec.buffer loss "add.12" offset 9920 size 4
