// RUN: flexmoe-opt %s -split-input-file -lower-to-exec | FileCheck %s

// A hand-written Stage 5 step (docs/IR.md) on 2 devices: tied embedding, one
// MoE layer (E = 4, 2 slots per device, k = 1), cross entropy plus the aux
// loss, the backward pass and AdamW on the embedding and w1.

// CHECK-LABEL: exec.program @train_step
// CHECK-SAME: arena_size = 17472 : i64
// CHECK-SAME: lr = 1.000000e-03 : f32
// CHECK-SAME: world_size = 2 : i64
// CHECK: exec.moe_layer @moe1 {activation = "gelu", capacity = 0 : i64, d_model = 8 : i64, ffn_hidden = 16 : i64, num_experts = 4 : i64, replicas = [array<i64: 0>, array<i64: 1>, array<i64: 0>, array<i64: 1>], slots_per_device = 2 : i64, top_k = 1 : i64, world_size = 2 : i64}
// Parameters first (optimizer state names them), each at its own offset.
// CHECK: %[[WTE:.*]] = exec.buffer parameter "wte" offset 0 size 512 {init = "normal", init_std = 2.000000e-02 : f32, param = "wte"} : !exec.buffer<16x8xf32>
// CHECK: %[[WG:.*]] = exec.buffer parameter "moe1.gate_weight" offset 512 size 128 {init = "zeros", param = "moe1.gate_weight"}
// CHECK: %[[W1:.*]] = exec.buffer parameter "moe1.w1" offset 640 size 1024 {{{.*}}layer = @moe1{{.*}}} : !exec.buffer<2x8x16xf32>
// CHECK: %[[TOK:.*]] = exec.buffer input_tokens "tokens" offset 2880 size 32 : !exec.buffer<2x4xi32>
// CHECK: %[[LAB:.*]] = exec.buffer input_labels "labels"
// CHECK: %[[WTEM:.*]] = exec.buffer adam_m "wte.m" of %[[WTE]]
// CHECK: %[[WTEV:.*]] = exec.buffer adam_v "wte.v" of %[[WTE]]
// CHECK: %[[W1M:.*]] = exec.buffer adam_m "moe1.w1.m" of %[[W1]] : !exec.buffer<2x8x16xf32> offset 4032 size 1024 {layer = @moe1}
// CHECK: %[[W1V:.*]] = exec.buffer adam_v "moe1.w1.v" of %[[W1]]
// One instruction per op, in order; a buffer for each result.
// CHECK: %[[X:.*]] = exec.buffer activation "embedding.0" offset 6080 size 256 : !exec.buffer<2x4x8xf32>
// CHECK-NEXT: exec.kernel embedding ins(%[[TOK]], %[[WTE]] : {{.*}}) outs(%[[X]] : !exec.buffer<2x4x8xf32>)
// The reshape is a view, not a copy.
// CHECK-NEXT: %[[XT:.*]] = exec.view %[[X]] "reshape.1" : !exec.buffer<2x4x8xf32> -> !exec.buffer<8x8xf32>
// CHECK: exec.kernel gate layer @moe1 ins(%[[XT]], %[[WG]] : {{.*}}) outs(%[[PROBS:.*]], %[[IDS:.*]], %[[CW:.*]] : {{.*}}) {top_k = 1 : i64}
// CHECK: exec.kernel aux_loss layer @moe1 ins(%[[PROBS]], %[[IDS]] : {{.*}}) outs(%[[AUX:.*]] : !exec.buffer<f32>) {coef = 0.00999999977 : f32}
// CHECK: exec.kernel dispatch layer @moe1 ins(%[[XT]], %[[IDS]] : {{.*}}) outs(%[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] : {{.*}}) {capacity = 0 : i64, num_experts = 4 : i64}
// CHECK: exec.collective all_to_all_dispatch layer @moe1 ins(%[[ROUTED]], %[[COUNTS]] : {{.*}}) outs(%[[RECV:.*]], %[[SC:.*]] : !exec.buffer<16x8xf32>, !exec.buffer<2xi32>)
// CHECK: exec.kernel experts layer @moe1 ins(%[[RECV]], %[[SC]], %[[W1]], {{.*}}) outs(%{{.*}} : !exec.buffer<16x8xf32>) {activation = "gelu", capacity = 0 : i64}
// CHECK: exec.collective all_to_all_combine layer @moe1
// CHECK: exec.kernel combine layer @moe1
// Defaulted attributes are spelled out.
// CHECK: exec.kernel matmul ins({{.*}}) outs(%[[LOGITS:.*]] : !exec.buffer<2x4x16xf32>) {transpose_lhs = false, transpose_rhs = true}
// CHECK: exec.kernel cross_entropy ins(%[[LOGITS]], %[[LAB]] : {{.*}}) outs(%[[CE:.*]] : !exec.buffer<f32>) {ignore_index = -100 : i64}
// CHECK: %[[LOSS:.*]] = exec.buffer loss "add.12" offset 9280 size 4 : !exec.buffer<f32>
// CHECK-NEXT: exec.kernel add ins(%[[CE]], %[[AUX]] : !exec.buffer<f32>, !exec.buffer<f32>) outs(%[[LOSS]] : !exec.buffer<f32>)
// Backward values are gradients, their i32 counts are not.
// CHECK: exec.buffer gradient "fill.13"
// CHECK: exec.buffer gradient "all_to_all.18.0" {{.*}} : !exec.buffer<16x8xf32>
// CHECK-NEXT: exec.buffer activation "all_to_all.18.1" {{.*}} : !exec.buffer<2xi32>
// Expert gradients that AdamW consumes belong to the layer, back to
// experts_grad; db1 (no AdamW here) does not.
// CHECK: exec.buffer gradient "experts_grad.19.1" {{.*}} {layer = @moe1} : !exec.buffer<2x8x16xf32>
// CHECK-NEXT: exec.buffer gradient "experts_grad.19.2" offset {{[0-9]+}} size 128 : !exec.buffer<2x16xf32>
// CHECK: %[[DWTE:.*]] = exec.buffer gradient "embedding_grad.23"
// CHECK: %[[DWTER:.*]] = exec.buffer gradient "all_reduce.24"
// CHECK-NEXT: exec.collective all_reduce_mean ins(%[[DWTE]] : !exec.buffer<16x8xf32>) outs(%[[DWTER]] : !exec.buffer<16x8xf32>)
// CHECK: exec.buffer gradient "scale.25" {{.*}} {layer = @moe1}
// CHECK: exec.kernel scale ins(%{{.*}}) outs(%[[DW1S:.*]] : !exec.buffer<2x8x16xf32>) {factor = 5.000000e-01 : f32}
// The expert gradient that reaches AdamW belongs to the layer.
// CHECK: %[[DW1R:.*]] = exec.buffer gradient "replica_grad_sync.26" {{.*}} {layer = @moe1}
// CHECK-NEXT: exec.collective replica_grad_sync layer @moe1 ins(%[[DW1S]] : !exec.buffer<2x8x16xf32>) outs(%[[DW1R]] : !exec.buffer<2x8x16xf32>)
// AdamW writes parameter and state in place.
// CHECK: exec.kernel adamw ins(%[[WTE]], %[[DWTER]], %[[WTEM]], %[[WTEV]] : {{.*}}) outs(%[[WTE]], %[[WTEM]], %[[WTEV]] : {{.*}}) {beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32, epsilon = 9.99999993E-9 : f32, lr = 1.000000e-03 : f32, weight_decay = 0.00999999977 : f32}
// CHECK-NEXT: exec.kernel adamw ins(%[[W1]], %[[DW1R]], %[[W1M]], %[[W1V]] : {{.*}}) outs(%[[W1]], %[[W1M]], %[[W1V]] : {{.*}})
// CHECK-NEXT: {{^ *}$}}
// CHECK-NOT: func.func

#p = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>
module attributes {flexmoe.world_size = 2 : i64} {
func.func @train_step(
    %tokens: tensor<2x4xi32> {nn.input = "tokens"},
    %labels: tensor<2x4xi32> {nn.input = "labels"},
    %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
    %wg: tensor<8x4xf32> {nn.param = "moe1.gate_weight", nn.init = "zeros"},
    %w1: tensor<2x8x16xf32> {nn.param = "moe1.w1", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b1: tensor<2x16xf32> {nn.param = "moe1.b1", nn.init = "zeros", moe.layer = "moe1"},
    %w2: tensor<2x16x8xf32> {nn.param = "moe1.w2", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b2: tensor<2x8xf32> {nn.param = "moe1.b2", nn.init = "zeros", moe.layer = "moe1"},
    %wte_m: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"},
    %wte_v: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"},
    %w1_m: tensor<2x8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %w1_v: tensor<2x8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w1", moe.layer = "moe1"})
    -> (tensor<f32> {nn.output = "loss"},
        tensor<16x8xf32> {nn.updates = 2 : i64}, tensor<16x8xf32> {nn.updates = 8 : i64},
        tensor<16x8xf32> {nn.updates = 9 : i64}, tensor<2x8x16xf32> {nn.updates = 4 : i64},
        tensor<2x8x16xf32> {nn.updates = 10 : i64}, tensor<2x8x16xf32> {nn.updates = 11 : i64}) {
  %x = nn.embedding %tokens, %wte : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  %xt = nn.reshape %x : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
  %probs, %ids, %cw = moe.gate %xt, %wg {layer = "moe1", top_k = 1 : i64, placement = #p}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x1xi32>, tensor<8x1xf32>)
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32, placement = #p}
      : (tensor<8x4xf32>, tensor<8x1xi32>) -> tensor<f32>
  %routed, %pos, %counts = moe.dispatch %xt, %ids {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64, placement = #p}
      : (tensor<8x8xf32>, tensor<8x1xi32>) -> (tensor<8x8xf32>, tensor<8x1xi32>, tensor<4xi32>)
  %recv, %sc = moe.all_to_all %routed, %counts {layer = "moe1", direction = "dispatch", placement = #p}
      : (tensor<8x8xf32>, tensor<4xi32>) -> (tensor<16x8xf32>, tensor<2xi32>)
  %ol = moe.experts %recv, %sc, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = 0 : i64, placement = #p}
      : (tensor<16x8xf32>, tensor<2xi32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>) -> tensor<16x8xf32>
  %out, %oc = moe.all_to_all %ol, %sc {layer = "moe1", direction = "combine", placement = #p}
      : (tensor<16x8xf32>, tensor<2xi32>) -> (tensor<8x8xf32>, tensor<4xi32>)
  %y = moe.combine %out, %pos, %cw {layer = "moe1", placement = #p}
      : (tensor<8x8xf32>, tensor<8x1xi32>, tensor<8x1xf32>) -> tensor<8x8xf32>
  %y3 = nn.reshape %y : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %logits = nn.matmul %y3, %wte {transpose_rhs = true} : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  %ce = nn.cross_entropy %logits, %labels : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  %loss = nn.add %ce, %aux : (tensor<f32>, tensor<f32>) -> tensor<f32>
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  %dlogits = nn.cross_entropy_grad %logits, %labels, %one : (tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<f32>) -> tensor<2x4x16xf32>
  %dy3 = nn.matmul %dlogits, %wte : (tensor<2x4x16xf32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  %dy = nn.reshape %dy3 : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
  %dout, %dcw = moe.combine_grad %out, %pos, %cw, %dy {layer = "moe1", placement = #p}
      : (tensor<8x8xf32>, tensor<8x1xi32>, tensor<8x1xf32>, tensor<8x8xf32>) -> (tensor<8x8xf32>, tensor<8x1xf32>)
  %dlocal, %dsc = moe.all_to_all %dout, %counts {layer = "moe1", direction = "dispatch", placement = #p}
      : (tensor<8x8xf32>, tensor<4xi32>) -> (tensor<16x8xf32>, tensor<2xi32>)
  %drecv, %dw1, %db1, %dw2, %db2 = moe.experts_grad %recv, %sc, %w1, %b1, %w2, %b2, %dlocal {layer = "moe1", capacity = 0 : i64, placement = #p}
      : (tensor<16x8xf32>, tensor<2xi32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>, tensor<16x8xf32>)
      -> (tensor<16x8xf32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>)
  %drouted, %dc = moe.all_to_all %drecv, %sc {layer = "moe1", direction = "combine", placement = #p}
      : (tensor<16x8xf32>, tensor<2xi32>) -> (tensor<8x8xf32>, tensor<4xi32>)
  %dxt = moe.dispatch_grad %drouted, %pos {layer = "moe1", placement = #p}
      : (tensor<8x8xf32>, tensor<8x1xi32>) -> tensor<8x8xf32>
  %dx = nn.reshape %dxt : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %dwte = nn.embedding_grad %tokens, %dx {vocab_size = 16 : i64} : (tensor<2x4xi32>, tensor<2x4x8xf32>) -> tensor<16x8xf32>
  %dwte_r = moe.all_reduce %dwte {reduction = "mean"} : (tensor<16x8xf32>) -> tensor<16x8xf32>
  %dw1s = nn.scale %dw1 {factor = 0.5 : f32} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %dw1r = moe.replica_grad_sync %dw1s {layer = "moe1", placement = #p} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %wte2, %wte_m2, %wte_v2 = nn.adamw %wte, %dwte_r, %wte_m, %wte_v
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  %w1n, %w1_m2, %w1_v2 = nn.adamw %w1, %dw1r, %w1_m, %w1_v
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>)
  return %loss, %wte2, %wte_m2, %wte_v2, %w1n, %w1_m2, %w1_v2
      : tensor<f32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>
}
}

// -----

// A parameter still read after the op that computes its new value cannot be
// overwritten there: the new value gets its own buffer and is copied back at
// the end. A non-elementwise producer reading the parameter gets a copy too.

// CHECK-LABEL: exec.program @train_step
// CHECK: %[[P:.*]] = exec.buffer parameter "p"
// CHECK: %[[Q:.*]] = exec.buffer parameter "q"
// CHECK: %[[NEWP:.*]] = exec.buffer activation "add.0"
// CHECK-NEXT: exec.kernel add ins(%[[P]], %[[P]] : {{.*}}) outs(%[[NEWP]] : !exec.buffer<4x4xf32>)
// CHECK: exec.kernel matmul ins(%[[P]], %[[P]] : {{.*}}) outs(%[[L:.*]] : !exec.buffer<4x4xf32>)
// CHECK: %[[NEWQ:.*]] = exec.buffer activation "matmul.3"
// CHECK-NEXT: exec.kernel matmul ins(%[[Q]], %[[Q]] : {{.*}}) outs(%[[NEWQ]] : {{.*}})
// CHECK: exec.kernel copy ins(%[[NEWP]] : !exec.buffer<4x4xf32>) outs(%[[P]] : !exec.buffer<4x4xf32>)
// CHECK-NEXT: exec.kernel copy ins(%[[NEWQ]] : !exec.buffer<4x4xf32>) outs(%[[Q]] : !exec.buffer<4x4xf32>)
// CHECK-NEXT: {{^ *}$}}
func.func @train_step(%p: tensor<4x4xf32> {nn.param = "p", nn.init = "ones"},
                      %q: tensor<4x4xf32> {nn.param = "q", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}, tensor<4x4xf32> {nn.updates = 0 : i64},
        tensor<4x4xf32> {nn.updates = 1 : i64}) {
  %p2 = nn.add %p, %p : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %l = nn.matmul %p, %p : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  %loss = nn.reduce_sum %l {dims = array<i64: 0, 1>} : (tensor<4x4xf32>) -> tensor<f32>
  %q2 = nn.matmul %q, %q : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
  return %loss, %p2, %q2 : tensor<f32>, tensor<4x4xf32>, tensor<4x4xf32>
}

// -----

// A reshape whose result is the loss gets a buffer of its own: a view of the
// source with the loss's shape, copied into the loss buffer.

// CHECK-LABEL: exec.program @train_step
// CHECK: %[[S:.*]] = exec.buffer activation "reduce_sum.0" {{.*}} : !exec.buffer<1xf32>
// CHECK: %[[L:.*]] = exec.buffer loss "reshape.1" {{.*}} : !exec.buffer<f32>
// CHECK-NEXT: %[[V:.*]] = exec.view %[[S]] "reshape.1.in" : !exec.buffer<1xf32> -> !exec.buffer<f32>
// CHECK-NEXT: exec.kernel copy ins(%[[V]] : !exec.buffer<f32>) outs(%[[L]] : !exec.buffer<f32>)
func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}) {
  %s = nn.reduce_sum %p {dims = array<i64: 0>, keep_dims = true} : (tensor<4xf32>) -> tensor<1xf32>
  %loss = nn.reshape %s : (tensor<1xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}
