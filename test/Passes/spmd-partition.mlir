// Stage 4 → Stage 5: hand-written training steps (what build-train-step
// produces) partitioned over W devices. Each output is parsed and verified
// again before it is checked.
//
// RUN: split-file %s %t
//
// RUN: flexmoe-opt %t/dense.mlir -spmd-partition="world-size=2" -o %t/dense.w2.mlir
// RUN: flexmoe-opt %t/dense.w2.mlir | FileCheck %t/dense.mlir
// RUN: FileCheck %t/dense.mlir --check-prefix=LOCAL < %t/dense.w2.mlir
// RUN: flexmoe-opt %t/dense.mlir -spmd-partition="world-size=1" | flexmoe-opt | FileCheck %t/dense.mlir --check-prefix=SINGLE
//
// RUN: flexmoe-opt %t/moe-round-robin.mlir -spmd-partition="world-size=4" -o %t/moe-round-robin.w4.mlir
// RUN: flexmoe-opt %t/moe-round-robin.w4.mlir | FileCheck %t/moe-round-robin.mlir
// RUN: FileCheck %t/moe-round-robin.mlir --check-prefix=LOCAL < %t/moe-round-robin.w4.mlir
//
// RUN: flexmoe-opt %t/moe-replicated.mlir -spmd-partition="world-size=2" | flexmoe-opt | FileCheck %t/moe-replicated.mlir
// RUN: flexmoe-opt %t/moe-capacity.mlir -spmd-partition="world-size=2" | flexmoe-opt | FileCheck %t/moe-capacity.mlir
// RUN: flexmoe-opt %t/zero-fills.mlir -build-train-step -spmd-partition="world-size=2" | flexmoe-opt | FileCheck %t/zero-fills.mlir
// RUN: flexmoe-opt %t/moe-update-order.mlir -spmd-partition="world-size=2" | flexmoe-opt | FileCheck %t/moe-update-order.mlir

//--- dense.mlir
// A dense MLP language model at batch 8, on 2 devices: activations carry 4
// sequences, parameters keep their shapes, every gradient is averaged over
// the devices right after the op that finishes it, so that the rest of the
// backward pass can run while the all-reduce is in flight.

// LOCAL-NOT: tensor<8x4x{{[0-9]}}
// LOCAL-NOT: tensor<32x

// CHECK-LABEL: module attributes {flexmoe.world_size = 2 : i64}
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[TOKENS:[^:]+]]: tensor<4x4xi32> {nn.input = "tokens"}
// CHECK-SAME: %[[LABELS:[^:]+]]: tensor<4x4xi32> {nn.input = "labels"}
// CHECK-SAME: %[[WTE:[^:]+]]: tensor<16x8xf32> {{{[^}]*}}nn.param = "wte"}
// CHECK-SAME: %[[W1:[^:]+]]: tensor<8x16xf32> {{{[^}]*}}nn.param = "fc.weight"}
// CHECK-SAME: %[[B1:[^:]+]]: tensor<16xf32> {{{[^}]*}}nn.param = "fc.bias"}
// CHECK-SAME: %[[WHEAD:[^:]+]]: tensor<16x16xf32> {{{[^}]*}}nn.param = "head.weight"}
// CHECK-SAME: %[[WTE_M:[^:]+]]: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"}
// CHECK-SAME: %[[W1_M:[^:]+]]: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "fc.weight"}
// CHECK-SAME: %[[B1_M:[^:]+]]: tensor<16xf32> {nn.opt_state = "adam_m", nn.state_of = "fc.bias"}
// CHECK-SAME: %[[WHEAD_M:[^:]+]]: tensor<16x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head.weight"}
// CHECK-SAME: %[[WTE_V:[^:]+]]: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"}
// CHECK-SAME: %[[W1_V:[^:]+]]: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "fc.weight"}
// CHECK-SAME: %[[B1_V:[^:]+]]: tensor<16xf32> {nn.opt_state = "adam_v", nn.state_of = "fc.bias"}
// CHECK-SAME: %[[WHEAD_V:[^:]+]]: tensor<16x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head.weight"})
// CHECK-SAME: -> (tensor<f32> {nn.output = "loss"}, tensor<16x8xf32> {nn.updates = 2 : i64}, tensor<8x16xf32> {nn.updates = 3 : i64}
// CHECK: %[[H:.*]] = nn.embedding %[[TOKENS]], %[[WTE]] : (tensor<4x4xi32>, tensor<16x8xf32>) -> tensor<4x4x8xf32>
// CHECK-NEXT: %[[HT:.*]] = nn.reshape %[[H]] : (tensor<4x4x8xf32>) -> tensor<16x8xf32>
// CHECK-NEXT: %[[Z:.*]] = nn.linear %[[HT]], %[[W1]], %[[B1]] : (tensor<16x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<16x16xf32>
// CHECK-NEXT: %[[G:.*]] = nn.gelu %[[Z]] : (tensor<16x16xf32>) -> tensor<16x16xf32>
// CHECK-NEXT: %[[G3:.*]] = nn.reshape %[[G]] : (tensor<16x16xf32>) -> tensor<4x4x16xf32>
// CHECK-NEXT: %[[LOGITS:.*]] = nn.linear %[[G3]], %[[WHEAD]] : (tensor<4x4x16xf32>, tensor<16x16xf32>) -> tensor<4x4x16xf32>
// CHECK-NEXT: %[[LOSS:.*]] = nn.cross_entropy %[[LOGITS]], %[[LABELS]] : (tensor<4x4x16xf32>, tensor<4x4xi32>) -> tensor<f32>
// The loss seed stays a scalar; the zero accumulator follows the activation.
// CHECK-NEXT: %[[ONE:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// CHECK-NEXT: %[[DLOGITS:.*]] = nn.cross_entropy_grad %[[LOGITS]], %[[LABELS]], %[[ONE]] : (tensor<4x4x16xf32>, tensor<4x4xi32>, tensor<f32>) -> tensor<4x4x16xf32>
// CHECK-NEXT: %[[DG3:.*]], %[[DWHEAD:.*]] = nn.linear_grad %[[G3]], %[[WHEAD]], %[[DLOGITS]] : {{.*}} -> (tensor<4x4x16xf32>, tensor<16x16xf32>)
// CHECK-NEXT: %[[GWHEAD:.*]] = moe.all_reduce %[[DWHEAD]] {reduction = "mean"} : (tensor<16x16xf32>) -> tensor<16x16xf32>
// CHECK-NEXT: %[[DG:.*]] = nn.reshape %[[DG3]] : (tensor<4x4x16xf32>) -> tensor<16x16xf32>
// CHECK-NEXT: %[[DZ:.*]] = nn.gelu_grad %[[Z]], %[[DG]] : (tensor<16x16xf32>, tensor<16x16xf32>) -> tensor<16x16xf32>
// CHECK-NEXT: %[[DHT:.*]], %[[DW1:.*]] = nn.linear_grad %[[HT]], %[[W1]], %[[DZ]] : {{.*}} -> (tensor<16x8xf32>, tensor<8x16xf32>)
// CHECK-NEXT: %[[GW1:.*]] = moe.all_reduce %[[DW1]] {reduction = "mean"} : (tensor<8x16xf32>) -> tensor<8x16xf32>
// CHECK-NEXT: %[[DB1:.*]] = nn.reduce_sum %[[DZ]] {dims = array<i64: 0>} : (tensor<16x16xf32>) -> tensor<16xf32>
// CHECK-NEXT: %[[GB1:.*]] = moe.all_reduce %[[DB1]] {reduction = "mean"} : (tensor<16xf32>) -> tensor<16xf32>
// CHECK-NEXT: %[[DH:.*]] = nn.reshape %[[DHT]] : (tensor<16x8xf32>) -> tensor<4x4x8xf32>
// CHECK-NEXT: %[[ZERO:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<4x4x8xf32>
// CHECK-NEXT: %[[DHSUM:.*]] = nn.add %[[ZERO]], %[[DH]] : (tensor<4x4x8xf32>, tensor<4x4x8xf32>) -> tensor<4x4x8xf32>
// CHECK-NEXT: %[[DWTE:.*]] = nn.embedding_grad %[[TOKENS]], %[[DHSUM]] {vocab_size = 16 : i64} : (tensor<4x4xi32>, tensor<4x4x8xf32>) -> tensor<16x8xf32>
// CHECK-NEXT: %[[GWTE:.*]] = moe.all_reduce %[[DWTE]] {reduction = "mean"} : (tensor<16x8xf32>) -> tensor<16x8xf32>
// The updates keep their order, after every collective.
// CHECK-NEXT: %[[NWTE:.*]], %[[NWTE_M:.*]], %[[NWTE_V:.*]] = nn.adamw %[[WTE]], %[[GWTE]], %[[WTE_M]], %[[WTE_V]]
// CHECK-NEXT: %[[NW1:.*]], %[[NW1_M:.*]], %[[NW1_V:.*]] = nn.adamw %[[W1]], %[[GW1]], %[[W1_M]], %[[W1_V]]
// CHECK-NEXT: %[[NB1:.*]], %[[NB1_M:.*]], %[[NB1_V:.*]] = nn.adamw %[[B1]], %[[GB1]], %[[B1_M]], %[[B1_V]]
// CHECK-NEXT: %[[NWHEAD:.*]], %[[NWHEAD_M:.*]], %[[NWHEAD_V:.*]] = nn.adamw %[[WHEAD]], %[[GWHEAD]], %[[WHEAD_M]], %[[WHEAD_V]]
// The local loss is returned as is.
// CHECK-NEXT: return %[[LOSS]], %[[NWTE]], %[[NW1]], %[[NB1]], %[[NWHEAD]], %[[NWTE_M]], %[[NW1_M]], %[[NB1_M]], %[[NWHEAD_M]], %[[NWTE_V]], %[[NW1_V]], %[[NB1_V]], %[[NWHEAD_V]] :

// One device: the same program shape, collectives included.
// SINGLE-LABEL: module attributes {flexmoe.world_size = 1 : i64}
// SINGLE: func.func @train_step(%{{[^:]+}}: tensor<8x4xi32> {nn.input = "tokens"}, %{{[^:]+}}: tensor<8x4xi32> {nn.input = "labels"}
// SINGLE: nn.embedding {{.*}} -> tensor<8x4x8xf32>
// SINGLE: nn.reshape {{.*}} -> tensor<32x8xf32>
// SINGLE-COUNT-4: moe.all_reduce
// SINGLE: return

func.func @train_step(
    %tokens: tensor<8x4xi32> {nn.input = "tokens"},
    %labels: tensor<8x4xi32> {nn.input = "labels"},
    %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
    %w1: tensor<8x16xf32> {nn.param = "fc.weight", nn.init = "normal", nn.init_std = 0.02 : f32},
    %b1: tensor<16xf32> {nn.param = "fc.bias", nn.init = "zeros"},
    %whead: tensor<16x16xf32> {nn.param = "head.weight", nn.init = "normal", nn.init_std = 0.02 : f32},
    %wte_m: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"},
    %w1_m: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "fc.weight"},
    %b1_m: tensor<16xf32> {nn.opt_state = "adam_m", nn.state_of = "fc.bias"},
    %whead_m: tensor<16x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head.weight"},
    %wte_v: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"},
    %w1_v: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "fc.weight"},
    %b1_v: tensor<16xf32> {nn.opt_state = "adam_v", nn.state_of = "fc.bias"},
    %whead_v: tensor<16x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head.weight"})
    -> (tensor<f32> {nn.output = "loss"},
        tensor<16x8xf32> {nn.updates = 2 : i64}, tensor<8x16xf32> {nn.updates = 3 : i64},
        tensor<16xf32> {nn.updates = 4 : i64}, tensor<16x16xf32> {nn.updates = 5 : i64},
        tensor<16x8xf32> {nn.updates = 6 : i64}, tensor<8x16xf32> {nn.updates = 7 : i64},
        tensor<16xf32> {nn.updates = 8 : i64}, tensor<16x16xf32> {nn.updates = 9 : i64},
        tensor<16x8xf32> {nn.updates = 10 : i64}, tensor<8x16xf32> {nn.updates = 11 : i64},
        tensor<16xf32> {nn.updates = 12 : i64}, tensor<16x16xf32> {nn.updates = 13 : i64}) {
  // Forward.
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  %ht = nn.reshape %h : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %z = nn.linear %ht, %w1, %b1 : (tensor<32x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<32x16xf32>
  %g = nn.gelu %z : (tensor<32x16xf32>) -> tensor<32x16xf32>
  %g3 = nn.reshape %g : (tensor<32x16xf32>) -> tensor<8x4x16xf32>
  %logits = nn.linear %g3, %whead : (tensor<8x4x16xf32>, tensor<16x16xf32>) -> tensor<8x4x16xf32>
  %loss = nn.cross_entropy %logits, %labels : (tensor<8x4x16xf32>, tensor<8x4xi32>) -> tensor<f32>
  // Backward.
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  %dlogits = nn.cross_entropy_grad %logits, %labels, %one : (tensor<8x4x16xf32>, tensor<8x4xi32>, tensor<f32>) -> tensor<8x4x16xf32>
  %dg3, %dwhead = nn.linear_grad %g3, %whead, %dlogits : (tensor<8x4x16xf32>, tensor<16x16xf32>, tensor<8x4x16xf32>) -> (tensor<8x4x16xf32>, tensor<16x16xf32>)
  %dg = nn.reshape %dg3 : (tensor<8x4x16xf32>) -> tensor<32x16xf32>
  %dz = nn.gelu_grad %z, %dg : (tensor<32x16xf32>, tensor<32x16xf32>) -> tensor<32x16xf32>
  %dht, %dw1 = nn.linear_grad %ht, %w1, %dz : (tensor<32x8xf32>, tensor<8x16xf32>, tensor<32x16xf32>) -> (tensor<32x8xf32>, tensor<8x16xf32>)
  %db1 = nn.reduce_sum %dz {dims = array<i64: 0>} : (tensor<32x16xf32>) -> tensor<16xf32>
  %dh = nn.reshape %dht : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  // A zero accumulator of the activation's shape: partitioned like %dh.
  %zero = nn.fill {value = 0.0 : f32} : () -> tensor<8x4x8xf32>
  %dh_sum = nn.add %zero, %dh : (tensor<8x4x8xf32>, tensor<8x4x8xf32>) -> tensor<8x4x8xf32>
  %dwte = nn.embedding_grad %tokens, %dh_sum {vocab_size = 16 : i64} : (tensor<8x4xi32>, tensor<8x4x8xf32>) -> tensor<16x8xf32>
  // AdamW.
  %wte1, %wte_m1, %wte_v1 = nn.adamw %wte, %dwte, %wte_m, %wte_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  %w11, %w1_m1, %w1_v1 = nn.adamw %w1, %dw1, %w1_m, %w1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>)
  %b11, %b1_m1, %b1_v1 = nn.adamw %b1, %db1, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>)
  %wh1, %wh_m1, %wh_v1 = nn.adamw %whead, %dwhead, %whead_m, %whead_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>) -> (tensor<16x16xf32>, tensor<16x16xf32>, tensor<16x16xf32>)
  return %loss, %wte1, %w11, %b11, %wh1, %wte_m1, %w1_m1, %b1_m1, %wh_m1, %wte_v1, %w1_v1, %b1_v1, %wh_v1
      : tensor<f32>, tensor<16x8xf32>, tensor<8x16xf32>, tensor<16xf32>, tensor<16x16xf32>,
        tensor<16x8xf32>, tensor<8x16xf32>, tensor<16xf32>, tensor<16x16xf32>,
        tensor<16x8xf32>, tensor<8x16xf32>, tensor<16xf32>, tensor<16x16xf32>
}

//--- moe-round-robin.mlir
// One MoE layer with 4 experts, one per device (round-robin), on 4 devices.
// Expert parameters and their AdamW state hold the device's single slot.

// LOCAL-NOT: tensor<8x4x{{[0-9]}}
// LOCAL-NOT: tensor<32x
// LOCAL-NOT: tensor<4x8x16xf32>

// CHECK: #[[P:.*]] = #moe.placement<world_size = 4, slots_per_device = 1, replicas = {{\[\[0\], \[1\], \[2\], \[3\]\]}}>
// CHECK-LABEL: module attributes {flexmoe.world_size = 4 : i64}
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[TOKENS:[^:]+]]: tensor<2x4xi32> {nn.input = "tokens"}
// CHECK-SAME: %[[LABELS:[^:]+]]: tensor<2x4xi32> {nn.input = "labels"}
// CHECK-SAME: %[[WTE:[^:]+]]: tensor<16x8xf32> {{{[^}]*}}nn.param = "wte"}
// CHECK-SAME: %[[GATE:[^:]+]]: tensor<8x4xf32> {{{[^}]*}}nn.param = "gate"}
// CHECK-SAME: %[[W1:[^:]+]]: tensor<1x8x16xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.w1"}
// CHECK-SAME: %[[B1:[^:]+]]: tensor<1x16xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.b1"}
// CHECK-SAME: %[[W2:[^:]+]]: tensor<1x16x8xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.w2"}
// CHECK-SAME: %[[B2:[^:]+]]: tensor<1x8xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.b2"}
// CHECK-SAME: %[[HEAD:[^:]+]]: tensor<8x16xf32> {{{[^}]*}}nn.param = "head"}
// CHECK-SAME: %[[WTE_M:[^:]+]]: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"}
// CHECK-SAME: %[[GATE_M:[^:]+]]: tensor<8x4xf32> {nn.opt_state = "adam_m", nn.state_of = "gate"}
// CHECK-SAME: %[[W1_M:[^:]+]]: tensor<1x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w1"}
// CHECK-SAME: %[[B1_M:[^:]+]]: tensor<1x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.b1"}
// CHECK-SAME: %[[W2_M:[^:]+]]: tensor<1x16x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w2"}
// CHECK-SAME: %[[B2_M:[^:]+]]: tensor<1x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.b2"}
// CHECK-SAME: %[[HEAD_M:[^:]+]]: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head"}
// CHECK-SAME: %[[WTE_V:[^:]+]]: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"}
// CHECK-SAME: %[[GATE_V:[^:]+]]: tensor<8x4xf32> {nn.opt_state = "adam_v", nn.state_of = "gate"}
// CHECK-SAME: %[[W1_V:[^:]+]]: tensor<1x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.w1"}
// CHECK-SAME: %[[B1_V:[^:]+]]: tensor<1x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b1"}
// CHECK-SAME: %[[W2_V:[^:]+]]: tensor<1x16x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.w2"}
// CHECK-SAME: %[[B2_V:[^:]+]]: tensor<1x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b2"}
// CHECK-SAME: %[[HEAD_V:[^:]+]]: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head"})
// CHECK-SAME: -> (tensor<f32> {nn.output = "loss"}, tensor<16x8xf32> {nn.updates = 2 : i64}, tensor<8x4xf32> {nn.updates = 3 : i64},
// CHECK-SAME: tensor<1x8x16xf32> {nn.updates = 4 : i64}, tensor<1x16xf32> {nn.updates = 5 : i64}, tensor<1x16x8xf32> {nn.updates = 6 : i64}, tensor<1x8xf32> {nn.updates = 7 : i64},

// Forward: gate, aux loss, dispatch and combine see the device's 8 tokens.
// CHECK: %[[H:.*]] = nn.embedding %[[TOKENS]], %[[WTE]] : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[X:.*]] = nn.reshape %[[H]] : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
// CHECK-NEXT: %[[PROBS:.*]], %[[IDS:.*]], %[[CW:.*]] = moe.gate %[[X]], %[[GATE]] {layer = "moe1", placement = #[[P]], top_k = 2 : i64} : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
// CHECK-NEXT: %[[AUX:.*]] = moe.aux_loss %[[PROBS]], %[[IDS]] {{.*}} : (tensor<8x4xf32>, tensor<8x2xi32>) -> tensor<f32>
// CHECK-NEXT: %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch %[[X]], %[[IDS]] {capacity = 0 : i64, layer = "moe1", num_experts = 4 : i64, placement = #[[P]]} : (tensor<8x8xf32>, tensor<8x2xi32>) -> (tensor<16x8xf32>, tensor<8x2xi32>, tensor<4xi32>)
// CHECK-NEXT: %[[RECV:.*]], %[[SLOTS:.*]] = moe.all_to_all %[[ROUTED]], %[[COUNTS]] {direction = "dispatch", layer = "moe1", placement = #[[P]]} : (tensor<16x8xf32>, tensor<4xi32>) -> (tensor<64x8xf32>, tensor<1xi32>)
// CHECK-NEXT: %[[OUT_LOCAL:.*]] = moe.experts %[[RECV]], %[[SLOTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]] {capacity = 0 : i64, layer = "moe1", placement = #[[P]]} : (tensor<64x8xf32>, tensor<1xi32>, tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>) -> tensor<64x8xf32>
// CHECK-NEXT: %[[OUT:.*]], %{{.*}} = moe.all_to_all %[[OUT_LOCAL]], %[[SLOTS]] {direction = "combine", layer = "moe1", placement = #[[P]]} : (tensor<64x8xf32>, tensor<1xi32>) -> (tensor<16x8xf32>, tensor<4xi32>)
// CHECK-NEXT: %[[Y:.*]] = moe.combine %[[OUT]], %[[POS]], %[[CW]] {layer = "moe1", placement = #[[P]]} : (tensor<16x8xf32>, tensor<8x2xi32>, tensor<8x2xf32>) -> tensor<8x8xf32>
// CHECK-NEXT: nn.reshape %[[Y]] : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
// CHECK: %[[CE:.*]] = nn.cross_entropy %{{.*}}, %[[LABELS]] : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
// CHECK-NEXT: %[[LOSS:.*]] = nn.add %[[CE]], %[[AUX]] : (tensor<f32>, tensor<f32>) -> tensor<f32>

// Backward: the head's gradient is averaged as soon as it is final; the
// expert gradient runs on what the forward received.
// CHECK: %{{.*}}, %[[DHEAD:.*]] = nn.linear_grad {{.*}} -> (tensor<2x4x8xf32>, tensor<8x16xf32>)
// CHECK-NEXT: %[[GHEAD:.*]] = moe.all_reduce %[[DHEAD]] {reduction = "mean"} : (tensor<8x16xf32>) -> tensor<8x16xf32>
// CHECK-NEXT: %[[DY:.*]] = nn.reshape %{{.*}} : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
// CHECK-NEXT: %[[DOUT:.*]], %[[DCW:.*]] = moe.combine_grad %[[OUT]], %[[POS]], %[[CW]], %[[DY]] {{.*}} -> (tensor<16x8xf32>, tensor<8x2xf32>)
// CHECK-NEXT: %[[DLOCAL:.*]], %{{.*}} = moe.all_to_all %[[DOUT]], %[[COUNTS]] {direction = "dispatch", layer = "moe1", placement = #[[P]]} : (tensor<16x8xf32>, tensor<4xi32>) -> (tensor<64x8xf32>, tensor<1xi32>)
// CHECK-NEXT: %[[DRECV:.*]], %[[DW1:.*]], %[[DB1:.*]], %[[DW2:.*]], %[[DB2:.*]] = moe.experts_grad %[[RECV]], %[[SLOTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]], %[[DLOCAL]] {capacity = 0 : i64, layer = "moe1", placement = #[[P]]}
// CHECK-SAME: -> (tensor<64x8xf32>, tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>)
// CHECK-NEXT: %[[DROUTED:.*]], %{{.*}} = moe.all_to_all %[[DRECV]], %[[SLOTS]] {direction = "combine", layer = "moe1", placement = #[[P]]} : (tensor<64x8xf32>, tensor<1xi32>) -> (tensor<16x8xf32>, tensor<4xi32>)
// CHECK-NEXT: %[[DXR:.*]] = moe.dispatch_grad %[[DROUTED]], %[[POS]] {{.*}} : (tensor<16x8xf32>, tensor<8x2xi32>) -> tensor<8x8xf32>
// CHECK-NEXT: %[[DPROBS:.*]] = moe.aux_loss_grad %[[PROBS]], %[[IDS]], %{{.*}} -> tensor<8x4xf32>
// CHECK-NEXT: %{{.*}}, %[[DGATE:.*]] = moe.gate_grad %[[X]], %[[GATE]], %[[PROBS]], %[[IDS]], %[[DCW]], %[[DPROBS]] {{.*}} -> (tensor<8x8xf32>, tensor<8x4xf32>)
// CHECK-NEXT: %[[GGATE:.*]] = moe.all_reduce %[[DGATE]] {reduction = "mean"} : (tensor<8x4xf32>) -> tensor<8x4xf32>

// Updates: dense gradients averaged; expert gradients scaled by 1/4 and
// synchronised over the replicas in one op, before the first expert update.
// CHECK: %[[DWTE:.*]] = nn.embedding_grad %[[TOKENS]], %{{.*}} -> tensor<16x8xf32>
// CHECK-NEXT: %[[GWTE:.*]] = moe.all_reduce %[[DWTE]] {reduction = "mean"} : (tensor<16x8xf32>) -> tensor<16x8xf32>
// CHECK-NEXT: %[[SW1:.*]] = nn.scale %[[DW1]] {factor = 2.500000e-01 : f32} : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %[[SB1:.*]] = nn.scale %[[DB1]] {factor = 2.500000e-01 : f32} : (tensor<1x16xf32>) -> tensor<1x16xf32>
// CHECK-NEXT: %[[SW2:.*]] = nn.scale %[[DW2]] {factor = 2.500000e-01 : f32} : (tensor<1x16x8xf32>) -> tensor<1x16x8xf32>
// CHECK-NEXT: %[[SB2:.*]] = nn.scale %[[DB2]] {factor = 2.500000e-01 : f32} : (tensor<1x8xf32>) -> tensor<1x8xf32>
// CHECK-NEXT: %[[SYNC:.*]]:4 = moe.replica_grad_sync %[[SW1]], %[[SB1]], %[[SW2]], %[[SB2]] {layer = "moe1", placement = #[[P]]} : (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>) -> (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>)
// CHECK-NEXT: nn.adamw %[[WTE]], %[[GWTE]], %[[WTE_M]], %[[WTE_V]]
// CHECK-NEXT: nn.adamw %[[GATE]], %[[GGATE]], %[[GATE_M]], %[[GATE_V]]
// CHECK-NEXT: nn.adamw %[[W1]], %[[SYNC]]#0, %[[W1_M]], %[[W1_V]] {{.*}} -> (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>)
// CHECK-NEXT: nn.adamw %[[B1]], %[[SYNC]]#1, %[[B1_M]], %[[B1_V]]
// CHECK-NEXT: nn.adamw %[[W2]], %[[SYNC]]#2, %[[W2_M]], %[[W2_V]]
// CHECK-NEXT: nn.adamw %[[B2]], %[[SYNC]]#3, %[[B2_M]], %[[B2_V]]
// CHECK-NEXT: nn.adamw %[[HEAD]], %[[GHEAD]], %[[HEAD_M]], %[[HEAD_V]]
// CHECK-NEXT: return %[[LOSS]],

#placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1], [2], [3]]>
module attributes {flexmoe.world_size = 4 : i64} {
func.func @train_step(
    %tokens: tensor<8x4xi32> {nn.input = "tokens"},
    %labels: tensor<8x4xi32> {nn.input = "labels"},
    %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
    %gate: tensor<8x4xf32> {nn.param = "gate", nn.init = "normal", nn.init_std = 0.02 : f32},
    %w1: tensor<4x8x16xf32> {nn.param = "moe1.w1", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b1: tensor<4x16xf32> {nn.param = "moe1.b1", nn.init = "zeros", moe.layer = "moe1"},
    %w2: tensor<4x16x8xf32> {nn.param = "moe1.w2", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b2: tensor<4x8xf32> {nn.param = "moe1.b2", nn.init = "zeros", moe.layer = "moe1"},
    %head: tensor<8x16xf32> {nn.param = "head", nn.init = "normal", nn.init_std = 0.02 : f32},
    %wte_m: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"},
    %gate_m: tensor<8x4xf32> {nn.opt_state = "adam_m", nn.state_of = "gate"},
    %w1_m: tensor<4x8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_m: tensor<4x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_m: tensor<4x16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_m: tensor<4x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_m: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head"},
    %wte_v: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"},
    %gate_v: tensor<8x4xf32> {nn.opt_state = "adam_v", nn.state_of = "gate"},
    %w1_v: tensor<4x8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_v: tensor<4x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_v: tensor<4x16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_v: tensor<4x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_v: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head"})
    -> (tensor<f32> {nn.output = "loss"},
        tensor<16x8xf32> {nn.updates = 2 : i64},
        tensor<8x4xf32> {nn.updates = 3 : i64},
        tensor<4x8x16xf32> {nn.updates = 4 : i64},
        tensor<4x16xf32> {nn.updates = 5 : i64},
        tensor<4x16x8xf32> {nn.updates = 6 : i64},
        tensor<4x8xf32> {nn.updates = 7 : i64},
        tensor<8x16xf32> {nn.updates = 8 : i64},
        tensor<16x8xf32> {nn.updates = 9 : i64},
        tensor<8x4xf32> {nn.updates = 10 : i64},
        tensor<4x8x16xf32> {nn.updates = 11 : i64},
        tensor<4x16xf32> {nn.updates = 12 : i64},
        tensor<4x16x8xf32> {nn.updates = 13 : i64},
        tensor<4x8xf32> {nn.updates = 14 : i64},
        tensor<8x16xf32> {nn.updates = 15 : i64},
        tensor<16x8xf32> {nn.updates = 16 : i64},
        tensor<8x4xf32> {nn.updates = 17 : i64},
        tensor<4x8x16xf32> {nn.updates = 18 : i64},
        tensor<4x16xf32> {nn.updates = 19 : i64},
        tensor<4x16x8xf32> {nn.updates = 20 : i64},
        tensor<4x8xf32> {nn.updates = 21 : i64},
        tensor<8x16xf32> {nn.updates = 22 : i64}) {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  %x = nn.reshape %h : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x4xf32>) -> (tensor<32x4xf32>, tensor<32x2xi32>, tensor<32x2xf32>)
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x4xf32>, tensor<32x2xi32>) -> tensor<f32>
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", placement = #placement, num_experts = 4 : i64, capacity = 0 : i64} : (tensor<32x8xf32>, tensor<32x2xi32>) -> (tensor<64x8xf32>, tensor<32x2xi32>, tensor<4xi32>)
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", placement = #placement, activation = "gelu", capacity = 0 : i64} : (tensor<64x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>) -> tensor<64x8xf32>
  %y = moe.combine %out, %pos, %cw {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>) -> tensor<32x8xf32>
  %y3 = nn.reshape %y : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %logits = nn.linear %y3, %head : (tensor<8x4x8xf32>, tensor<8x16xf32>) -> tensor<8x4x16xf32>
  %ce = nn.cross_entropy %logits, %labels : (tensor<8x4x16xf32>, tensor<8x4xi32>) -> tensor<f32>
  %loss = nn.add %ce, %aux : (tensor<f32>, tensor<f32>) -> tensor<f32>
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  %dlogits = nn.cross_entropy_grad %logits, %labels, %one : (tensor<8x4x16xf32>, tensor<8x4xi32>, tensor<f32>) -> tensor<8x4x16xf32>
  %dy3, %dhead = nn.linear_grad %y3, %head, %dlogits : (tensor<8x4x8xf32>, tensor<8x16xf32>, tensor<8x4x16xf32>) -> (tensor<8x4x8xf32>, tensor<8x16xf32>)
  %dy = nn.reshape %dy3 : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %dout, %dcw = moe.combine_grad %out, %pos, %cw, %dy {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x8xf32>) -> (tensor<64x8xf32>, tensor<32x2xf32>)
  %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %dout {layer = "moe1", placement = #placement, activation = "gelu", capacity = 0 : i64} : (tensor<64x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<64x8xf32>) -> (tensor<64x8xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>)
  %dx_routed = moe.dispatch_grad %drouted, %pos {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>) -> tensor<32x8xf32>
  %dprobs = moe.aux_loss_grad %probs, %ids, %one {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x4xf32>, tensor<32x2xi32>, tensor<f32>) -> tensor<32x4xf32>
  %dx_gate, %dgate = moe.gate_grad %x, %gate, %probs, %ids, %dcw, %dprobs {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x4xf32>, tensor<32x4xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x4xf32>) -> (tensor<32x8xf32>, tensor<8x4xf32>)
  %dx = nn.add %dx_routed, %dx_gate : (tensor<32x8xf32>, tensor<32x8xf32>) -> tensor<32x8xf32>
  %dh = nn.reshape %dx : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %dwte = nn.embedding_grad %tokens, %dh {vocab_size = 16 : i64} : (tensor<8x4xi32>, tensor<8x4x8xf32>) -> tensor<16x8xf32>
  %wte1, %wte_m1, %wte_v1 = nn.adamw %wte, %dwte, %wte_m, %wte_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  %gate1, %gate_m1, %gate_v1 = nn.adamw %gate, %dgate, %gate_m, %gate_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>)
  %w11, %w1_m1, %w1_v1 = nn.adamw %w1, %dw1, %w1_m, %w1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>)
  %b11, %b1_m1, %b1_v1 = nn.adamw %b1, %db1, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>)
  %w21, %w2_m1, %w2_v1 = nn.adamw %w2, %dw2, %w2_m, %w2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>) -> (tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>)
  %b21, %b2_m1, %b2_v1 = nn.adamw %b2, %db2, %b2_m, %b2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>)
  %head1, %head_m1, %head_v1 = nn.adamw %head, %dhead, %head_m, %head_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>)
  return %loss, %wte1, %gate1, %w11, %b11, %w21, %b21, %head1, %wte_m1, %gate_m1, %w1_m1, %b1_m1, %w2_m1, %b2_m1, %head_m1, %wte_v1, %gate_v1, %w1_v1, %b1_v1, %w2_v1, %b2_v1, %head_v1
      : tensor<f32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>
}
}

//--- moe-replicated.mlir
// Three experts on 2 devices with 2 slots each; expert 2 is replicated on
// both devices (device 0 holds experts 0 and 2, device 1 experts 1 and 2).

// CHECK: #[[P:.*]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[\[0\], \[1\], \[0, 1\]\]}}>
// CHECK-LABEL: module attributes {flexmoe.world_size = 2 : i64}
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[TOKENS:[^:]+]]: tensor<4x4xi32> {nn.input = "tokens"}
// CHECK-SAME: %[[LABELS:[^:]+]]: tensor<4x4xi32> {nn.input = "labels"}
// CHECK-SAME: %[[GATE:[^:]+]]: tensor<8x3xf32> {{{[^}]*}}nn.param = "gate"}
// CHECK-SAME: %[[W1:[^:]+]]: tensor<2x8x16xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.w1"}
// CHECK-SAME: %[[B1:[^:]+]]: tensor<2x16xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.b1"}
// CHECK-SAME: %[[W2:[^:]+]]: tensor<2x16x8xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.w2"}
// CHECK-SAME: %[[B2:[^:]+]]: tensor<2x8xf32> {moe.layer = "moe1", {{[^}]*}}nn.param = "moe1.b2"}
// CHECK-SAME: %[[W1_M:[^:]+]]: tensor<2x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w1"}
// CHECK-SAME: %[[B2_V:[^:]+]]: tensor<2x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b2"}

// CHECK: %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch {{.*}} : (tensor<16x8xf32>, tensor<16x2xi32>) -> (tensor<32x8xf32>, tensor<16x2xi32>, tensor<3xi32>)
// CHECK-NEXT: %[[RECV:.*]], %[[SLOTS:.*]] = moe.all_to_all %[[ROUTED]], %[[COUNTS]] {direction = "dispatch", layer = "moe1", placement = #[[P]]} : (tensor<32x8xf32>, tensor<3xi32>) -> (tensor<64x8xf32>, tensor<2xi32>)
// CHECK-NEXT: %[[OUT_LOCAL:.*]] = moe.experts %[[RECV]], %[[SLOTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]] {capacity = 0 : i64, {{.*}}} : (tensor<64x8xf32>, tensor<2xi32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>) -> tensor<64x8xf32>
// CHECK-NEXT: %[[OUT:.*]], %{{.*}} = moe.all_to_all %[[OUT_LOCAL]], %[[SLOTS]] {direction = "combine", {{.*}}} : (tensor<64x8xf32>, tensor<2xi32>) -> (tensor<32x8xf32>, tensor<3xi32>)
// CHECK-NEXT: moe.combine %[[OUT]], %[[POS]]
// CHECK: %[[DOUT:.*]], %{{.*}} = moe.combine_grad %[[OUT]], %[[POS]]
// CHECK-NEXT: %[[DLOCAL:.*]], %{{.*}} = moe.all_to_all %[[DOUT]], %[[COUNTS]] {direction = "dispatch", {{.*}}} : (tensor<32x8xf32>, tensor<3xi32>) -> (tensor<64x8xf32>, tensor<2xi32>)
// CHECK-NEXT: %[[DRECV:.*]], %[[DW1:.*]], %[[DB1:.*]], %[[DW2:.*]], %[[DB2:.*]] = moe.experts_grad %[[RECV]], %[[SLOTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]], %[[DLOCAL]]
// CHECK-NEXT: %[[DROUTED:.*]], %{{.*}} = moe.all_to_all %[[DRECV]], %[[SLOTS]] {direction = "combine", {{.*}}} : (tensor<64x8xf32>, tensor<2xi32>) -> (tensor<32x8xf32>, tensor<3xi32>)
// CHECK-NEXT: moe.dispatch_grad %[[DROUTED]], %[[POS]]
// CHECK: %[[SW1:.*]] = nn.scale %[[DW1]] {factor = 5.000000e-01 : f32} : (tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
// CHECK-NEXT: %[[SB1:.*]] = nn.scale %[[DB1]] {factor = 5.000000e-01 : f32}
// CHECK-NEXT: %[[SW2:.*]] = nn.scale %[[DW2]] {factor = 5.000000e-01 : f32}
// CHECK-NEXT: %[[SB2:.*]] = nn.scale %[[DB2]] {factor = 5.000000e-01 : f32}
// CHECK-NEXT: %[[SYNC:.*]]:4 = moe.replica_grad_sync %[[SW1]], %[[SB1]], %[[SW2]], %[[SB2]] {layer = "moe1", placement = #[[P]]} : (tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>) -> (tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>)
// CHECK: nn.adamw %[[W1]], %[[SYNC]]#0, %[[W1_M]], %{{[^ ]*}} {{.*}} -> (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>)
// CHECK-NEXT: nn.adamw %[[B1]], %[[SYNC]]#1
// CHECK-NEXT: nn.adamw %[[W2]], %[[SYNC]]#2
// CHECK-NEXT: nn.adamw %[[B2]], %[[SYNC]]#3, %{{[^ ]*}}, %[[B2_V]]
// CHECK-NOT: moe.replica_grad_sync
// CHECK: return

#placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0, 1]]>
module attributes {flexmoe.world_size = 2 : i64} {
func.func @train_step(
    %tokens: tensor<8x4xi32> {nn.input = "tokens"},
    %labels: tensor<8x4xi32> {nn.input = "labels"},
    %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
    %gate: tensor<8x3xf32> {nn.param = "gate", nn.init = "normal", nn.init_std = 0.02 : f32},
    %w1: tensor<3x8x16xf32> {nn.param = "moe1.w1", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b1: tensor<3x16xf32> {nn.param = "moe1.b1", nn.init = "zeros", moe.layer = "moe1"},
    %w2: tensor<3x16x8xf32> {nn.param = "moe1.w2", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b2: tensor<3x8xf32> {nn.param = "moe1.b2", nn.init = "zeros", moe.layer = "moe1"},
    %head: tensor<8x16xf32> {nn.param = "head", nn.init = "normal", nn.init_std = 0.02 : f32},
    %wte_m: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"},
    %gate_m: tensor<8x3xf32> {nn.opt_state = "adam_m", nn.state_of = "gate"},
    %w1_m: tensor<3x8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_m: tensor<3x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_m: tensor<3x16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_m: tensor<3x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_m: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head"},
    %wte_v: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"},
    %gate_v: tensor<8x3xf32> {nn.opt_state = "adam_v", nn.state_of = "gate"},
    %w1_v: tensor<3x8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_v: tensor<3x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_v: tensor<3x16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_v: tensor<3x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_v: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head"})
    -> (tensor<f32> {nn.output = "loss"},
        tensor<16x8xf32> {nn.updates = 2 : i64},
        tensor<8x3xf32> {nn.updates = 3 : i64},
        tensor<3x8x16xf32> {nn.updates = 4 : i64},
        tensor<3x16xf32> {nn.updates = 5 : i64},
        tensor<3x16x8xf32> {nn.updates = 6 : i64},
        tensor<3x8xf32> {nn.updates = 7 : i64},
        tensor<8x16xf32> {nn.updates = 8 : i64},
        tensor<16x8xf32> {nn.updates = 9 : i64},
        tensor<8x3xf32> {nn.updates = 10 : i64},
        tensor<3x8x16xf32> {nn.updates = 11 : i64},
        tensor<3x16xf32> {nn.updates = 12 : i64},
        tensor<3x16x8xf32> {nn.updates = 13 : i64},
        tensor<3x8xf32> {nn.updates = 14 : i64},
        tensor<8x16xf32> {nn.updates = 15 : i64},
        tensor<16x8xf32> {nn.updates = 16 : i64},
        tensor<8x3xf32> {nn.updates = 17 : i64},
        tensor<3x8x16xf32> {nn.updates = 18 : i64},
        tensor<3x16xf32> {nn.updates = 19 : i64},
        tensor<3x16x8xf32> {nn.updates = 20 : i64},
        tensor<3x8xf32> {nn.updates = 21 : i64},
        tensor<8x16xf32> {nn.updates = 22 : i64}) {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  %x = nn.reshape %h : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x3xf32>) -> (tensor<32x3xf32>, tensor<32x2xi32>, tensor<32x2xf32>)
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x3xf32>, tensor<32x2xi32>) -> tensor<f32>
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", placement = #placement, num_experts = 3 : i64, capacity = 0 : i64} : (tensor<32x8xf32>, tensor<32x2xi32>) -> (tensor<64x8xf32>, tensor<32x2xi32>, tensor<3xi32>)
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", placement = #placement, activation = "gelu", capacity = 0 : i64} : (tensor<64x8xf32>, tensor<3xi32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>) -> tensor<64x8xf32>
  %y = moe.combine %out, %pos, %cw {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>) -> tensor<32x8xf32>
  %y3 = nn.reshape %y : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %logits = nn.linear %y3, %head : (tensor<8x4x8xf32>, tensor<8x16xf32>) -> tensor<8x4x16xf32>
  %ce = nn.cross_entropy %logits, %labels : (tensor<8x4x16xf32>, tensor<8x4xi32>) -> tensor<f32>
  %loss = nn.add %ce, %aux : (tensor<f32>, tensor<f32>) -> tensor<f32>
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  %dlogits = nn.cross_entropy_grad %logits, %labels, %one : (tensor<8x4x16xf32>, tensor<8x4xi32>, tensor<f32>) -> tensor<8x4x16xf32>
  %dy3, %dhead = nn.linear_grad %y3, %head, %dlogits : (tensor<8x4x8xf32>, tensor<8x16xf32>, tensor<8x4x16xf32>) -> (tensor<8x4x8xf32>, tensor<8x16xf32>)
  %dy = nn.reshape %dy3 : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %dout, %dcw = moe.combine_grad %out, %pos, %cw, %dy {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x8xf32>) -> (tensor<64x8xf32>, tensor<32x2xf32>)
  %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %dout {layer = "moe1", placement = #placement, activation = "gelu", capacity = 0 : i64} : (tensor<64x8xf32>, tensor<3xi32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>, tensor<64x8xf32>) -> (tensor<64x8xf32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>)
  %dx_routed = moe.dispatch_grad %drouted, %pos {layer = "moe1", placement = #placement} : (tensor<64x8xf32>, tensor<32x2xi32>) -> tensor<32x8xf32>
  %dprobs = moe.aux_loss_grad %probs, %ids, %one {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x3xf32>, tensor<32x2xi32>, tensor<f32>) -> tensor<32x3xf32>
  %dx_gate, %dgate = moe.gate_grad %x, %gate, %probs, %ids, %dcw, %dprobs {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x3xf32>, tensor<32x3xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x3xf32>) -> (tensor<32x8xf32>, tensor<8x3xf32>)
  %dx = nn.add %dx_routed, %dx_gate : (tensor<32x8xf32>, tensor<32x8xf32>) -> tensor<32x8xf32>
  %dh = nn.reshape %dx : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %dwte = nn.embedding_grad %tokens, %dh {vocab_size = 16 : i64} : (tensor<8x4xi32>, tensor<8x4x8xf32>) -> tensor<16x8xf32>
  %wte1, %wte_m1, %wte_v1 = nn.adamw %wte, %dwte, %wte_m, %wte_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  %gate1, %gate_m1, %gate_v1 = nn.adamw %gate, %dgate, %gate_m, %gate_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x3xf32>, tensor<8x3xf32>, tensor<8x3xf32>, tensor<8x3xf32>) -> (tensor<8x3xf32>, tensor<8x3xf32>, tensor<8x3xf32>)
  %w11, %w1_m1, %w1_v1 = nn.adamw %w1, %dw1, %w1_m, %w1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<3x8x16xf32>, tensor<3x8x16xf32>, tensor<3x8x16xf32>, tensor<3x8x16xf32>) -> (tensor<3x8x16xf32>, tensor<3x8x16xf32>, tensor<3x8x16xf32>)
  %b11, %b1_m1, %b1_v1 = nn.adamw %b1, %db1, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<3x16xf32>, tensor<3x16xf32>, tensor<3x16xf32>, tensor<3x16xf32>) -> (tensor<3x16xf32>, tensor<3x16xf32>, tensor<3x16xf32>)
  %w21, %w2_m1, %w2_v1 = nn.adamw %w2, %dw2, %w2_m, %w2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<3x16x8xf32>, tensor<3x16x8xf32>, tensor<3x16x8xf32>, tensor<3x16x8xf32>) -> (tensor<3x16x8xf32>, tensor<3x16x8xf32>, tensor<3x16x8xf32>)
  %b21, %b2_m1, %b2_v1 = nn.adamw %b2, %db2, %b2_m, %b2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<3x8xf32>, tensor<3x8xf32>, tensor<3x8xf32>, tensor<3x8xf32>) -> (tensor<3x8xf32>, tensor<3x8xf32>, tensor<3x8xf32>)
  %head1, %head_m1, %head_v1 = nn.adamw %head, %dhead, %head_m, %head_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>)
  return %loss, %wte1, %gate1, %w11, %b11, %w21, %b21, %head1, %wte_m1, %gate_m1, %w1_m1, %b1_m1, %w2_m1, %b2_m1, %head_m1, %wte_v1, %gate_v1, %w1_v1, %b1_v1, %w2_v1, %b2_v1, %head_v1
      : tensor<f32>, tensor<16x8xf32>, tensor<8x3xf32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x3xf32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x3xf32>, tensor<3x8x16xf32>, tensor<3x16xf32>, tensor<3x16x8xf32>, tensor<3x8xf32>, tensor<8x16xf32>
}
}

//--- moe-capacity.mlir
// With a token capacity: 20 per expert for 32 tokens becomes
// ceil(20 / 2) = 10 per expert for each device's 16 tokens; the experts run
// packed on what the all-to-all delivers.

// CHECK-LABEL: func.func @train_step(
// CHECK: %[[ROUTED:.*]], %{{.*}}, %[[COUNTS:.*]] = moe.dispatch %{{.*}} {capacity = 10 : i64, {{.*}}} : (tensor<16x8xf32>, tensor<16x2xi32>) -> (tensor<40x8xf32>, tensor<16x2xi32>, tensor<4xi32>)
// CHECK-NEXT: %[[RECV:.*]], %[[SLOTS:.*]] = moe.all_to_all %[[ROUTED]], %[[COUNTS]] {direction = "dispatch", {{.*}}} : (tensor<40x8xf32>, tensor<4xi32>) -> (tensor<80x8xf32>, tensor<2xi32>)
// CHECK-NEXT: moe.experts %[[RECV]], %[[SLOTS]], {{.*}} {capacity = 0 : i64, {{.*}}} : (tensor<80x8xf32>, tensor<2xi32>, {{.*}}) -> tensor<80x8xf32>
// CHECK: moe.experts_grad %[[RECV]], %[[SLOTS]], {{.*}} {capacity = 0 : i64, {{.*}}}

#placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [0], [1], [1]]>
module attributes {flexmoe.world_size = 2 : i64} {
func.func @train_step(
    %tokens: tensor<8x4xi32> {nn.input = "tokens"},
    %labels: tensor<8x4xi32> {nn.input = "labels"},
    %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
    %gate: tensor<8x4xf32> {nn.param = "gate", nn.init = "normal", nn.init_std = 0.02 : f32},
    %w1: tensor<4x8x16xf32> {nn.param = "moe1.w1", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b1: tensor<4x16xf32> {nn.param = "moe1.b1", nn.init = "zeros", moe.layer = "moe1"},
    %w2: tensor<4x16x8xf32> {nn.param = "moe1.w2", nn.init = "normal", nn.init_std = 0.02 : f32, moe.layer = "moe1"},
    %b2: tensor<4x8xf32> {nn.param = "moe1.b2", nn.init = "zeros", moe.layer = "moe1"},
    %head: tensor<8x16xf32> {nn.param = "head", nn.init = "normal", nn.init_std = 0.02 : f32},
    %wte_m: tensor<16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "wte"},
    %gate_m: tensor<8x4xf32> {nn.opt_state = "adam_m", nn.state_of = "gate"},
    %w1_m: tensor<4x8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_m: tensor<4x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_m: tensor<4x16x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_m: tensor<4x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_m: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "head"},
    %wte_v: tensor<16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "wte"},
    %gate_v: tensor<8x4xf32> {nn.opt_state = "adam_v", nn.state_of = "gate"},
    %w1_v: tensor<4x8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_v: tensor<4x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w2_v: tensor<4x16x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w2", moe.layer = "moe1"},
    %b2_v: tensor<4x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b2", moe.layer = "moe1"},
    %head_v: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head"})
    -> (tensor<f32> {nn.output = "loss"},
        tensor<16x8xf32> {nn.updates = 2 : i64},
        tensor<8x4xf32> {nn.updates = 3 : i64},
        tensor<4x8x16xf32> {nn.updates = 4 : i64},
        tensor<4x16xf32> {nn.updates = 5 : i64},
        tensor<4x16x8xf32> {nn.updates = 6 : i64},
        tensor<4x8xf32> {nn.updates = 7 : i64},
        tensor<8x16xf32> {nn.updates = 8 : i64},
        tensor<16x8xf32> {nn.updates = 9 : i64},
        tensor<8x4xf32> {nn.updates = 10 : i64},
        tensor<4x8x16xf32> {nn.updates = 11 : i64},
        tensor<4x16xf32> {nn.updates = 12 : i64},
        tensor<4x16x8xf32> {nn.updates = 13 : i64},
        tensor<4x8xf32> {nn.updates = 14 : i64},
        tensor<8x16xf32> {nn.updates = 15 : i64},
        tensor<16x8xf32> {nn.updates = 16 : i64},
        tensor<8x4xf32> {nn.updates = 17 : i64},
        tensor<4x8x16xf32> {nn.updates = 18 : i64},
        tensor<4x16xf32> {nn.updates = 19 : i64},
        tensor<4x16x8xf32> {nn.updates = 20 : i64},
        tensor<4x8xf32> {nn.updates = 21 : i64},
        tensor<8x16xf32> {nn.updates = 22 : i64}) {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  %x = nn.reshape %h : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x4xf32>) -> (tensor<32x4xf32>, tensor<32x2xi32>, tensor<32x2xf32>)
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x4xf32>, tensor<32x2xi32>) -> tensor<f32>
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", placement = #placement, num_experts = 4 : i64, capacity = 20 : i64} : (tensor<32x8xf32>, tensor<32x2xi32>) -> (tensor<80x8xf32>, tensor<32x2xi32>, tensor<4xi32>)
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", placement = #placement, activation = "gelu", capacity = 20 : i64} : (tensor<80x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>) -> tensor<80x8xf32>
  %y = moe.combine %out, %pos, %cw {layer = "moe1", placement = #placement} : (tensor<80x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>) -> tensor<32x8xf32>
  %y3 = nn.reshape %y : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %logits = nn.linear %y3, %head : (tensor<8x4x8xf32>, tensor<8x16xf32>) -> tensor<8x4x16xf32>
  %ce = nn.cross_entropy %logits, %labels : (tensor<8x4x16xf32>, tensor<8x4xi32>) -> tensor<f32>
  %loss = nn.add %ce, %aux : (tensor<f32>, tensor<f32>) -> tensor<f32>
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  %dlogits = nn.cross_entropy_grad %logits, %labels, %one : (tensor<8x4x16xf32>, tensor<8x4xi32>, tensor<f32>) -> tensor<8x4x16xf32>
  %dy3, %dhead = nn.linear_grad %y3, %head, %dlogits : (tensor<8x4x8xf32>, tensor<8x16xf32>, tensor<8x4x16xf32>) -> (tensor<8x4x8xf32>, tensor<8x16xf32>)
  %dy = nn.reshape %dy3 : (tensor<8x4x8xf32>) -> tensor<32x8xf32>
  %dout, %dcw = moe.combine_grad %out, %pos, %cw, %dy {layer = "moe1", placement = #placement} : (tensor<80x8xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x8xf32>) -> (tensor<80x8xf32>, tensor<32x2xf32>)
  %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %dout {layer = "moe1", placement = #placement, activation = "gelu", capacity = 20 : i64} : (tensor<80x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<80x8xf32>) -> (tensor<80x8xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>)
  %dx_routed = moe.dispatch_grad %drouted, %pos {layer = "moe1", placement = #placement} : (tensor<80x8xf32>, tensor<32x2xi32>) -> tensor<32x8xf32>
  %dprobs = moe.aux_loss_grad %probs, %ids, %one {layer = "moe1", placement = #placement, coef = 0.01 : f32} : (tensor<32x4xf32>, tensor<32x2xi32>, tensor<f32>) -> tensor<32x4xf32>
  %dx_gate, %dgate = moe.gate_grad %x, %gate, %probs, %ids, %dcw, %dprobs {layer = "moe1", placement = #placement, top_k = 2 : i64} : (tensor<32x8xf32>, tensor<8x4xf32>, tensor<32x4xf32>, tensor<32x2xi32>, tensor<32x2xf32>, tensor<32x4xf32>) -> (tensor<32x8xf32>, tensor<8x4xf32>)
  %dx = nn.add %dx_routed, %dx_gate : (tensor<32x8xf32>, tensor<32x8xf32>) -> tensor<32x8xf32>
  %dh = nn.reshape %dx : (tensor<32x8xf32>) -> tensor<8x4x8xf32>
  %dwte = nn.embedding_grad %tokens, %dh {vocab_size = 16 : i64} : (tensor<8x4xi32>, tensor<8x4x8xf32>) -> tensor<16x8xf32>
  %wte1, %wte_m1, %wte_v1 = nn.adamw %wte, %dwte, %wte_m, %wte_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>) -> (tensor<16x8xf32>, tensor<16x8xf32>, tensor<16x8xf32>)
  %gate1, %gate_m1, %gate_v1 = nn.adamw %gate, %dgate, %gate_m, %gate_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>)
  %w11, %w1_m1, %w1_v1 = nn.adamw %w1, %dw1, %w1_m, %w1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> (tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>)
  %b11, %b1_m1, %b1_v1 = nn.adamw %b1, %db1, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>)
  %w21, %w2_m1, %w2_v1 = nn.adamw %w2, %dw2, %w2_m, %w2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>) -> (tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x16x8xf32>)
  %b21, %b2_m1, %b2_v1 = nn.adamw %b2, %db2, %b2_m, %b2_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>)
  %head1, %head_m1, %head_v1 = nn.adamw %head, %dhead, %head_m, %head_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32} : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>)
  return %loss, %wte1, %gate1, %w11, %b11, %w21, %b21, %head1, %wte_m1, %gate_m1, %w1_m1, %b1_m1, %w2_m1, %b2_m1, %head_m1, %wte_v1, %gate_v1, %w1_v1, %b1_v1, %w2_v1, %b2_v1, %head_v1
      : tensor<f32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>, tensor<16x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>, tensor<8x16xf32>
}
}

//--- moe-update-order.mlir
// An expert gradient that is finished only after the layer's first update:
// the sync goes after the last gradient and the update moves below it.

// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[W1:[^:]+]]: tensor<1x4x8xf32> {moe.layer = "moe1", nn.param = "moe1.w1"}
// CHECK-SAME: %[[B1:[^:]+]]: tensor<1x8xf32> {moe.layer = "moe1", nn.param = "moe1.b1"}
// CHECK: %{{.*}}, %[[DW1:.*]], %[[DB1:.*]], %{{.*}}, %{{.*}} = moe.experts_grad
// CHECK-NOT: nn.adamw
// CHECK: %[[DB1SUM:.*]] = nn.add %[[DB1]], %[[DB1]]
// CHECK-NEXT: %[[SW1:.*]] = nn.scale %[[DW1]] {factor = 5.000000e-01 : f32}
// CHECK-NEXT: %[[SB1:.*]] = nn.scale %[[DB1SUM]] {factor = 5.000000e-01 : f32}
// CHECK-NEXT: %[[SYNC:.*]]:2 = moe.replica_grad_sync %[[SW1]], %[[SB1]] {layer = "moe1", placement = #{{.*}}} : (tensor<1x4x8xf32>, tensor<1x8xf32>)
// CHECK: nn.adamw %[[W1]], %[[SYNC]]#0,
// CHECK-NEXT: nn.adamw %[[B1]], %[[SYNC]]#1,
// CHECK-NEXT: return

#placement = #moe.placement<world_size = 2, slots_per_device = 1, replicas = [[0], [1]]>
func.func @train_step(
    %x: tensor<8x4xf32> {nn.input = "tokens"},
    %ids: tensor<8x1xi32> {nn.input = "labels"},
    %w1: tensor<2x4x8xf32> {nn.param = "moe1.w1", moe.layer = "moe1"},
    %b1: tensor<2x8xf32> {nn.param = "moe1.b1", moe.layer = "moe1"},
    %w2: tensor<2x8x4xf32> {nn.param = "moe1.w2", moe.layer = "moe1"},
    %b2: tensor<2x4xf32> {nn.param = "moe1.b2", moe.layer = "moe1"},
    %w1_m: tensor<2x4x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_m: tensor<2x8xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b1", moe.layer = "moe1"},
    %w1_v: tensor<2x4x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.w1", moe.layer = "moe1"},
    %b1_v: tensor<2x8xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b1", moe.layer = "moe1"})
    -> (tensor<2x4x8xf32> {nn.updates = 2 : i64}, tensor<2x8xf32> {nn.updates = 3 : i64}) {
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", num_experts = 2 : i64, capacity = 0 : i64, placement = #placement}
      : (tensor<8x4xf32>, tensor<8x1xi32>) -> (tensor<8x4xf32>, tensor<8x1xi32>, tensor<2xi32>)
  %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %routed {layer = "moe1", capacity = 0 : i64, placement = #placement}
      : (tensor<8x4xf32>, tensor<2xi32>, tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<2x8x4xf32>, tensor<2x4xf32>, tensor<8x4xf32>)
      -> (tensor<8x4xf32>, tensor<2x4x8xf32>, tensor<2x8xf32>, tensor<2x8x4xf32>, tensor<2x4xf32>)
  %w1n, %w1_mn, %w1_vn = nn.adamw %w1, %dw1, %w1_m, %w1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.0 : f32}
      : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
  %db1_sum = nn.add %db1, %db1 : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %b1n, %b1_mn, %b1_vn = nn.adamw %b1, %db1_sum, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.0 : f32}
      : (tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8xf32>)
  return %w1n, %b1n : tensor<2x4x8xf32>, tensor<2x8xf32>
}

//--- zero-fills.mlir
// Zero fills from build-train-step stand for gradients of forward values:
// the seed stays a scalar, the zeros that broadcast the gradient of a
// reduction over the layer's output and the gradient of the gate
// probabilities (no aux loss here) are split like those values.

// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[X:[^:]+]]: tensor<2x8xf32> {nn.input = "x"}
// CHECK: %[[PROBS:.*]], %[[IDS:.*]], %[[CW:.*]] = moe.gate %[[X]]
// CHECK: moe.dispatch %[[X]], %[[IDS]] {capacity = 1 : i64, {{.*}}} : (tensor<2x8xf32>, tensor<2x1xi32>) -> (tensor<2x8xf32>, tensor<2x1xi32>, tensor<2xi32>)
// CHECK: nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// CHECK: %[[ZEROS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<2x8xf32>
// CHECK-NEXT: %[[DY:.*]] = nn.add %[[ZEROS]], %{{.*}} : (tensor<2x8xf32>, tensor<1x1xf32>) -> tensor<2x8xf32>
// CHECK-NEXT: %{{.*}}, %[[DCW:.*]] = moe.combine_grad %{{.*}}, %{{.*}}, %[[CW]], %[[DY]]
// CHECK: %[[NOPROBS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<2x2xf32>
// CHECK: moe.gate_grad %[[X]], %{{.*}}, %[[PROBS]], %[[IDS]], %[[DCW]], %[[NOPROBS]]

#p = #moe.placement<world_size = 2, slots_per_device = 1, replicas = [[0], [1]]>
module attributes {flexmoe.world_size = 2 : i64} {
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %wg: tensor<8x2xf32> {nn.param = "gate", nn.init = "zeros"},
                   %w1: tensor<2x8x16xf32> {nn.param = "w1", moe.layer = "moe1", nn.init = "zeros"},
                   %b1: tensor<2x16xf32> {nn.param = "b1", moe.layer = "moe1", nn.init = "zeros"},
                   %w2: tensor<2x16x8xf32> {nn.param = "w2", moe.layer = "moe1", nn.init = "zeros"},
                   %b2: tensor<2x8xf32> {nn.param = "b2", moe.layer = "moe1", nn.init = "zeros"}) -> tensor<f32> {
  %probs, %ids, %cw = moe.gate %x, %wg {layer = "moe1", top_k = 1 : i64, placement = #p}
      : (tensor<4x8xf32>, tensor<8x2xf32>) -> (tensor<4x2xf32>, tensor<4x1xi32>, tensor<4x1xf32>)
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", num_experts = 2 : i64, capacity = 2 : i64, placement = #p}
      : (tensor<4x8xf32>, tensor<4x1xi32>) -> (tensor<4x8xf32>, tensor<4x1xi32>, tensor<2xi32>)
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "relu", capacity = 2 : i64, placement = #p}
      : (tensor<4x8xf32>, tensor<2xi32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y = moe.combine %out, %pos, %cw {layer = "moe1", placement = #p}
      : (tensor<4x8xf32>, tensor<4x1xi32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1>} : (tensor<4x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}
}
