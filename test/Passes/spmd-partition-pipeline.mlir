// RUN: flexmoe-opt %s -nn-shape-inference -moe-initial-placement=world-size=4 -moe-expand-layers -build-train-step -spmd-partition=world-size=4 | flexmoe-opt | FileCheck %s

// A Stage 0 model with two MoE layers through the training pipeline up to
// Stage 5 on 4 devices: 'moe1' has 4 experts (one per device), 'moe2' has 2
// (devices 2 and 3 hold an empty slot). Each layer gets its own all-to-alls
// and its own replica gradient sync; every dense gradient is averaged.

// CHECK-DAG: #[[P1:.+]] = #moe.placement<world_size = 4, slots_per_device = 1, replicas = {{\[\[0\], \[1\], \[2\], \[3\]\]}}>
// CHECK-DAG: #[[P2:.+]] = #moe.placement<world_size = 4, slots_per_device = 1, replicas = {{\[\[0\], \[1\]\]}}>
// CHECK-LABEL: module attributes {flexmoe.model = "two-moe-layers", flexmoe.world_size = 4 : i64}
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME: %[[TOKENS:[^:]*]]: tensor<1x4xi32> {nn.input = "tokens"}
// CHECK-SAME: %[[LABELS:[^:]*]]: tensor<1x4xi32> {nn.input = "labels"}
// CHECK-SAME: tensor<1x8x16xf32> {moe.layer = "moe1", nn.param = "moe1.w1"}
// CHECK-SAME: tensor<1x8x16xf32> {moe.layer = "moe2", nn.param = "moe2.w1"}
// CHECK-SAME: tensor<1x8xf32> {moe.layer = "moe2", nn.opt_state = "adam_v", nn.state_of = "moe2.b2"}

// Forward: 4 tokens per device, 8 routed rows, 32 received by the slot.
// CHECK: moe.dispatch {{.*}}layer = "moe1"{{.*}} -> (tensor<8x8xf32>, tensor<4x2xi32>, tensor<4xi32>)
// CHECK-NEXT: %[[RECV1:.*]], %[[SLOTS1:.*]] = moe.all_to_all {{.*}} {direction = "dispatch", layer = "moe1", placement = #[[P1]]} : (tensor<8x8xf32>, tensor<4xi32>) -> (tensor<32x8xf32>, tensor<1xi32>)
// CHECK-NEXT: moe.experts %[[RECV1]], %[[SLOTS1]], {{.*}} -> tensor<32x8xf32>
// CHECK-NEXT: moe.all_to_all {{.*}} {direction = "combine", layer = "moe1", placement = #[[P1]]} : (tensor<32x8xf32>, tensor<1xi32>) -> (tensor<8x8xf32>, tensor<4xi32>)
// CHECK: moe.dispatch {{.*}}layer = "moe2"{{.*}} -> (tensor<8x8xf32>, tensor<4x2xi32>, tensor<2xi32>)
// CHECK-NEXT: %[[RECV2:.*]], %[[SLOTS2:.*]] = moe.all_to_all {{.*}} {direction = "dispatch", layer = "moe2", placement = #[[P2]]} : (tensor<8x8xf32>, tensor<2xi32>) -> (tensor<32x8xf32>, tensor<1xi32>)
// CHECK-NEXT: moe.experts %[[RECV2]], %[[SLOTS2]], {{.*}} -> tensor<32x8xf32>
// CHECK-NEXT: moe.all_to_all {{.*}} {direction = "combine", layer = "moe2", placement = #[[P2]]} : (tensor<32x8xf32>, tensor<1xi32>) -> (tensor<8x8xf32>, tensor<2xi32>)

// Backward, last layer first; the gradients reuse what the forward received.
// CHECK: %[[DLOCAL2:.*]], %{{.*}} = moe.all_to_all {{.*}} {direction = "dispatch", layer = "moe2", placement = #[[P2]]}
// CHECK-NEXT: %[[DRECV2:.*]], %[[DW1_2:.*]], %[[DB1_2:.*]], %[[DW2_2:.*]], %[[DB2_2:.*]] = moe.experts_grad %[[RECV2]], %[[SLOTS2]], {{.*}}, %[[DLOCAL2]] {capacity = 0 : i64, layer = "moe2", placement = #[[P2]]}
// CHECK-NEXT: moe.all_to_all %[[DRECV2]], %[[SLOTS2]] {direction = "combine", layer = "moe2", placement = #[[P2]]}
// CHECK: %[[DLOCAL1:.*]], %{{.*}} = moe.all_to_all {{.*}} {direction = "dispatch", layer = "moe1", placement = #[[P1]]}
// CHECK-NEXT: %[[DRECV1:.*]], %[[DW1_1:.*]], %[[DB1_1:.*]], %[[DW2_1:.*]], %[[DB2_1:.*]] = moe.experts_grad %[[RECV1]], %[[SLOTS1]], {{.*}}, %[[DLOCAL1]] {capacity = 0 : i64, layer = "moe1", placement = #[[P1]]}
// CHECK-NEXT: moe.all_to_all %[[DRECV1]], %[[SLOTS1]] {direction = "combine", layer = "moe1", placement = #[[P1]]}

// Updates: one sync per layer, on the gradients scaled by 1/4.
// CHECK: nn.scale %[[DW1_1]] {factor = 2.500000e-01 : f32}
// CHECK: moe.replica_grad_sync {{.*}} {layer = "moe1", placement = #[[P1]]} : (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>)
// CHECK: nn.scale %[[DW1_2]] {factor = 2.500000e-01 : f32}
// CHECK: moe.replica_grad_sync {{.*}} {layer = "moe2", placement = #[[P2]]} : (tensor<1x8x16xf32>, tensor<1x16xf32>, tensor<1x16x8xf32>, tensor<1x8xf32>)
// CHECK-NOT: moe.replica_grad_sync
// CHECK: return

// Dense parameters: wte, two gate weights, head.
// RUN: flexmoe-opt %s -nn-shape-inference -moe-initial-placement=world-size=4 -moe-expand-layers -build-train-step -spmd-partition=world-size=4 | FileCheck %s --check-prefix=DENSE
// DENSE-COUNT-4: moe.all_reduce {{.*}} {reduction = "mean"}
// DENSE-NOT: moe.all_reduce

module attributes {flexmoe.model = "two-moe-layers"} {
  func.func @forward(%tokens: tensor<4x4xi32> {nn.input = "tokens"},
                     %labels: tensor<4x4xi32> {nn.input = "labels"},
                     %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
                     %wg1: tensor<8x4xf32> {nn.param = "moe1.gate_weight"},
                     %w11: tensor<4x8x16xf32> {nn.param = "moe1.w1"},
                     %b11: tensor<4x16xf32> {nn.param = "moe1.b1"},
                     %w21: tensor<4x16x8xf32> {nn.param = "moe1.w2"},
                     %b21: tensor<4x8xf32> {nn.param = "moe1.b2"},
                     %wg2: tensor<8x2xf32> {nn.param = "moe2.gate_weight"},
                     %w12: tensor<2x8x16xf32> {nn.param = "moe2.w1"},
                     %b12: tensor<2x16xf32> {nn.param = "moe2.b1"},
                     %w22: tensor<2x16x8xf32> {nn.param = "moe2.w2"},
                     %b22: tensor<2x8xf32> {nn.param = "moe2.b2"},
                     %head: tensor<8x16xf32> {nn.param = "head"}) -> tensor<*xf32> {
    %x = nn.embedding %tokens, %wte : (tensor<4x4xi32>, tensor<16x8xf32>) -> tensor<*xf32>
    %y1, %aux1 = moe.layer %x, %wg1, %w11, %b11, %w21, %b21
        {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 16 : i64,
         capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
        : (tensor<*xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>,
           tensor<4x16x8xf32>, tensor<4x8xf32>) -> (tensor<*xf32>, tensor<*xf32>)
    %y2, %aux2 = moe.layer %y1, %wg2, %w12, %b12, %w22, %b22
        {name = "moe2", num_experts = 2 : i64, top_k = 2 : i64, ffn_hidden = 16 : i64,
         capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
        : (tensor<*xf32>, tensor<8x2xf32>, tensor<2x8x16xf32>, tensor<2x16xf32>,
           tensor<2x16x8xf32>, tensor<2x8xf32>) -> (tensor<*xf32>, tensor<*xf32>)
    %logits = nn.linear %y2, %head : (tensor<*xf32>, tensor<8x16xf32>) -> tensor<*xf32>
    %ce = nn.cross_entropy %logits, %labels : (tensor<*xf32>, tensor<4x4xi32>) -> tensor<*xf32>
    %aux = nn.add %aux1, %aux2 : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
    %loss = nn.add %ce, %aux : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
    return %loss : tensor<*xf32>
  }
}
