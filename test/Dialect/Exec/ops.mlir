// RUN: flexmoe-opt %s | FileCheck %s
// RUN: flexmoe-opt %s | flexmoe-opt | FileCheck %s
// RUN: flexmoe-opt -mlir-print-op-generic %s | flexmoe-opt | FileCheck %s

// A one-layer MoE step on 2 devices: every kind of buffer, a view, a MoE
// layer, kernels, collectives and an in-place AdamW update.

// CHECK-LABEL: exec.program @train_step
// CHECK-SAME: arena_size = 8192 : i64
// CHECK-SAME: compute_dtype = "f32"
// CHECK-SAME: world_size = 2 : i64
exec.program @train_step attributes {world_size = 2 : i64, compute_dtype = "f32",
                                     arena_size = 8192 : i64, lr = 1.0e-03 : f32} {
  // CHECK: exec.moe_layer @moe1 {
  // CHECK-SAME: replicas = [array<i64: 0>, array<i64: 1>, array<i64: 0, 1>, array<i64: 1>]
  exec.moe_layer @moe1 {num_experts = 4 : i64, top_k = 1 : i64, d_model = 8 : i64,
                        ffn_hidden = 16 : i64, capacity = 0 : i64, activation = "gelu",
                        world_size = 2 : i64, slots_per_device = 3 : i64,
                        replicas = [array<i64: 0>, array<i64: 1>, array<i64: 0, 1>, array<i64: 1>]}
  // CHECK: %[[TOK:.*]] = exec.buffer input_tokens "tokens" offset 0 size 32 : !exec.buffer<2x4xi32>
  %tokens = exec.buffer input_tokens "tokens" offset 0 size 32 : !exec.buffer<2x4xi32>
  %labels = exec.buffer input_labels "labels" offset 64 size 32 : !exec.buffer<8xi32>
  // CHECK: %[[WTE:.*]] = exec.buffer parameter "wte" offset 128 size 512 {init = "normal", init_std = 2.000000e-02 : f32, param = "wte"} : !exec.buffer<16x8xf32>
  %wte = exec.buffer parameter "wte" offset 128 size 512
      {param = "wte", init = "normal", init_std = 0.02 : f32} : !exec.buffer<16x8xf32>
  %gate_w = exec.buffer parameter "gate_w" offset 640 size 128
      {param = "moe1.gate_weight", init = "zeros"} : !exec.buffer<8x4xf32>
  // CHECK: %[[W1:.*]] = exec.buffer parameter "moe1.w1" offset 768 size 1536 {{{.*}}layer = @moe1{{.*}}} : !exec.buffer<3x8x16xf32>
  %w1 = exec.buffer parameter "moe1.w1" offset 768 size 1536
      {param = "moe1.w1", init = "normal", init_std = 0.02 : f32, layer = @moe1} : !exec.buffer<3x8x16xf32>
  // CHECK: exec.buffer adam_m "moe1.w1.m" of %[[W1]] : !exec.buffer<3x8x16xf32> offset 2304 size 1536 {layer = @moe1} : !exec.buffer<3x8x16xf32>
  %w1_m = exec.buffer adam_m "moe1.w1.m" of %w1 : !exec.buffer<3x8x16xf32> offset 2304 size 1536 {layer = @moe1} : !exec.buffer<3x8x16xf32>
  %w1_v = exec.buffer adam_v "moe1.w1.v" of %w1 : !exec.buffer<3x8x16xf32> offset 3840 size 1536 {layer = @moe1} : !exec.buffer<3x8x16xf32>
  %dw1 = exec.buffer gradient "moe1.w1.grad" offset 5376 size 1536 {layer = @moe1} : !exec.buffer<3x8x16xf32>
  %x = exec.buffer activation "x" offset 6912 size 256 : !exec.buffer<2x4x8xf32>
  // CHECK: %[[FLAT:.*]] = exec.view %{{.*}} "x.flat" : !exec.buffer<2x4x8xf32> -> !exec.buffer<8x8xf32>
  %flat = exec.view %x "x.flat" : !exec.buffer<2x4x8xf32> -> !exec.buffer<8x8xf32>
  %probs = exec.buffer activation "probs" offset 7168 size 128 : !exec.buffer<8x4xf32>
  %ids = exec.buffer activation "ids" offset 7296 size 32 : !exec.buffer<8x1xi32>
  %cw = exec.buffer activation "cw" offset 7360 size 32 : !exec.buffer<8x1xf32>
  %counts = exec.buffer scratch "counts" offset 7424 size 16 : !exec.buffer<4xi32>
  %slot_counts = exec.buffer scratch "slot_counts" offset 7488 size 12 : !exec.buffer<3xi32>
  %loss = exec.buffer loss "loss" offset 7552 size 4 : !exec.buffer<f32>

  // CHECK: exec.kernel embedding ins(%[[TOK]], %[[WTE]] : !exec.buffer<2x4xi32>, !exec.buffer<16x8xf32>) outs(%{{.*}} : !exec.buffer<2x4x8xf32>)
  exec.kernel embedding ins(%tokens, %wte : !exec.buffer<2x4xi32>, !exec.buffer<16x8xf32>)
      outs(%x : !exec.buffer<2x4x8xf32>)
  // CHECK: exec.kernel gate layer @moe1 ins(%[[FLAT]], %{{.*}} : {{.*}}) outs({{.*}}) {top_k = 1 : i64}
  exec.kernel gate layer @moe1 ins(%flat, %gate_w : !exec.buffer<8x8xf32>, !exec.buffer<8x4xf32>)
      outs(%probs, %ids, %cw : !exec.buffer<8x4xf32>, !exec.buffer<8x1xi32>, !exec.buffer<8x1xf32>)
      {top_k = 1 : i64}
  // CHECK: exec.collective all_to_all_dispatch layer @moe1
  exec.collective all_to_all_dispatch layer @moe1 ins(%flat, %counts : !exec.buffer<8x8xf32>, !exec.buffer<4xi32>)
      outs(%flat, %slot_counts : !exec.buffer<8x8xf32>, !exec.buffer<3xi32>)
  // CHECK: exec.kernel cross_entropy ins({{.*}}) outs(%{{.*}} : !exec.buffer<f32>) {ignore_index = -100 : i64}
  exec.kernel cross_entropy ins(%flat, %labels : !exec.buffer<8x8xf32>, !exec.buffer<8xi32>)
      outs(%loss : !exec.buffer<f32>) {ignore_index = -100 : i64}
  // CHECK: exec.kernel fill ins() outs(%{{.*}} : !exec.buffer<3x8x16xf32>) {value = 0.000000e+00 : f32}
  exec.kernel fill ins() outs(%dw1 : !exec.buffer<3x8x16xf32>) {value = 0.0 : f32}
  // CHECK: exec.collective replica_grad_sync layer @moe1 ins(%[[DW1:.*]] : !exec.buffer<3x8x16xf32>) outs(%[[DW1]] : !exec.buffer<3x8x16xf32>)
  exec.collective replica_grad_sync layer @moe1 ins(%dw1 : !exec.buffer<3x8x16xf32>)
      outs(%dw1 : !exec.buffer<3x8x16xf32>)
  // CHECK: exec.kernel adamw ins(%[[W1]], %{{.*}}, %{{.*}}, %{{.*}} : {{.*}}) outs(%[[W1]], %{{.*}}, %{{.*}} : {{.*}})
  exec.kernel adamw ins(%w1, %dw1, %w1_m, %w1_v : !exec.buffer<3x8x16xf32>, !exec.buffer<3x8x16xf32>, !exec.buffer<3x8x16xf32>, !exec.buffer<3x8x16xf32>)
      outs(%w1, %w1_m, %w1_v : !exec.buffer<3x8x16xf32>, !exec.buffer<3x8x16xf32>, !exec.buffer<3x8x16xf32>)
      {lr = 1.0e-03 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.01 : f32}
}
