// Stages 0 to 3 of docs/IR.md on a model whose intermediates start unranked.
// RUN: flexmoe-opt %s --nn-shape-inference --moe-initial-placement="world-size=2" --moe-expand-layers | FileCheck %s

// CHECK: #[[P:.*]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[}}[0], [1], [0], [1]]>
// CHECK: module attributes {flexmoe.world_size = 2 : i64}
// CHECK-LABEL: func.func @forward
// CHECK-SAME: %[[W1:[^:]*]]: tensor<4x16x32xf32> {moe.layer = "moe1", nn.param = "w1"}
// CHECK-SAME: -> (tensor<2x8x16xf32>, tensor<f32>)
// CHECK-NOT: moe.layer %
// CHECK: %[[H:.*]] = nn.add
// CHECK: %[[FLAT:.*]] = nn.reshape %[[H]] : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
// CHECK: moe.gate %[[FLAT]], {{.*}}placement = #[[P]]
// CHECK: moe.aux_loss {{.*}}placement = #[[P]]
// CHECK: moe.dispatch %[[FLAT]], {{.*}}placement = #[[P]]{{.*}} -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
// CHECK: moe.experts {{.*}}, %[[W1]], {{.*}}placement = #[[P]]
// CHECK: moe.combine {{.*}}placement = #[[P]]
// CHECK: nn.reshape %{{.*}} : (tensor<16x16xf32>) -> tensor<2x8x16xf32>
func.func @forward(%x: tensor<2x8x16xf32> {nn.input = "tokens"}, %wg: tensor<16x4xf32> {nn.param = "wg"},
                   %w1: tensor<4x16x32xf32> {nn.param = "w1"}, %b1: tensor<4x32xf32> {nn.param = "b1"},
                   %w2: tensor<4x32x16xf32> {nn.param = "w2"}, %b2: tensor<4x16xf32> {nn.param = "b2"})
    -> (tensor<*xf32>, tensor<*xf32>) {
  %h = nn.add %x, %x : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<*xf32>
  %y, %aux = moe.layer %h, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<*xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  return %y, %aux : tensor<*xf32>, tensor<*xf32>
}
