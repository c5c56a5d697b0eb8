// RUN: flexmoe-opt %s --moe-expand-layers | FileCheck %s
// The expanded IR verifies and round-trips.
// RUN: flexmoe-opt %s --moe-expand-layers | flexmoe-opt | FileCheck %s
// After placement, every expanded op carries the layer's placement.
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=2" --moe-expand-layers | FileCheck %s --check-prefix=PLACED

// CHECK-LABEL: func.func @dropless
// CHECK-SAME: (%[[X:[^:]*]]: tensor<2x8x16xf32>, %[[WG:[^:]*]]: tensor<16x4xf32>,
// CHECK-SAME: %[[W1:[^:]*]]: tensor<4x16x32xf32> {moe.layer = "moe1", nn.param = "w1"},
// CHECK-SAME: %[[B1:[^:]*]]: tensor<4x32xf32> {moe.layer = "moe1"},
// CHECK-SAME: %[[W2:[^:]*]]: tensor<4x32x16xf32> {moe.layer = "moe1"},
// CHECK-SAME: %[[B2:[^:]*]]: tensor<4x16xf32> {moe.layer = "moe1"})
// CHECK-NOT: moe.layer %
// CHECK: %[[FLAT:.*]] = nn.reshape %[[X]] : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
// CHECK: %[[PROBS:.*]], %[[IDS:.*]], %[[WEIGHTS:.*]] = moe.gate %[[FLAT]], %[[WG]] {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
// CHECK: %[[AUX:.*]] = moe.aux_loss %[[PROBS]], %[[IDS]] {coef = 0.00999999977 : f32, layer = "moe1"} : (tensor<16x4xf32>, tensor<16x2xi32>) -> tensor<f32>
// CHECK: %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch %[[FLAT]], %[[IDS]] {capacity = 0 : i64, layer = "moe1", num_experts = 4 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
// CHECK: %[[OUT:.*]] = moe.experts %[[ROUTED]], %[[COUNTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]] {capacity = 0 : i64, layer = "moe1"} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
// CHECK: %[[Y:.*]] = moe.combine %[[OUT]], %[[POS]], %[[WEIGHTS]] {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
// CHECK: %[[YB:.*]] = nn.reshape %[[Y]] : (tensor<16x16xf32>) -> tensor<2x8x16xf32>
// CHECK: return %[[YB]], %[[AUX]]
func.func @dropless(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>,
                    %w1: tensor<4x16x32xf32> {nn.param = "w1"}, %b1: tensor<4x32xf32>,
                    %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return %y, %aux : tensor<2x8x16xf32>, tensor<f32>
}

// Capacity C = ceil(capacity_factor · T · k / E): T = 20, k = 2, E = 4 and
// factor 1.1 give exactly 11 (not 12, as the f32 rounding of 1.1 would),
// so the routed rows are E·C = 44. The activation is kept.
// CHECK-LABEL: func.func @capacity
// CHECK: nn.reshape %{{.*}} : (tensor<2x10x16xf32>) -> tensor<20x16xf32>
// CHECK: moe.dispatch {{.*}} {capacity = 11 : i64, layer = "moe2", num_experts = 4 : i64} : (tensor<20x16xf32>, tensor<20x2xi32>) -> (tensor<44x16xf32>, tensor<20x2xi32>, tensor<4xi32>)
// CHECK: moe.experts {{.*}} {activation = "relu", capacity = 11 : i64, layer = "moe2"} : {{.*}} -> tensor<44x16xf32>
// CHECK: moe.combine {{.*}} : (tensor<44x16xf32>, tensor<20x2xi32>, tensor<20x2xf32>) -> tensor<20x16xf32>
// CHECK: nn.reshape %{{.*}} : (tensor<20x16xf32>) -> tensor<2x10x16xf32>
func.func @capacity(%x: tensor<2x10x16xf32>, %wg: tensor<16x4xf32>,
                    %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                    %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<2x10x16xf32>, tensor<f32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe2", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 1.1 : f32, aux_loss_coef = 0.01 : f32, activation = "relu"}
      : (tensor<2x10x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x10x16xf32>, tensor<f32>)
  return %y, %aux : tensor<2x10x16xf32>, tensor<f32>
}

// A fractional capacity rounds up: 1.25 · 16 · 1 / 3 = 6.67 -> 7, 3 · 7 = 21 rows.
// Two layers in a row, the second consuming the first's output; the
// aux losses reach the return.
// CHECK-LABEL: func.func @two_layers
// CHECK-SAME: %{{[^:]*}}: tensor<3x16x32xf32> {moe.layer = "moe3"}
// CHECK-SAME: %{{[^:]*}}: tensor<3x16xf32> {moe.layer = "moe3"}
// CHECK-SAME: %{{[^:]*}}: tensor<2x16x8xf32> {moe.layer = "moe4"}
// CHECK: moe.dispatch {{.*}}capacity = 7 : i64, layer = "moe3", num_experts = 3 : i64{{.*}} -> (tensor<21x16xf32>, tensor<16x1xi32>, tensor<3xi32>)
// CHECK: %[[Y3:.*]] = nn.reshape %{{.*}} : (tensor<16x16xf32>) -> tensor<2x8x16xf32>
// CHECK: nn.reshape %[[Y3]] : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
// CHECK: %[[AUX4:.*]] = moe.aux_loss {{.*}} {coef = 1.000000e-01 : f32, layer = "moe4"}
// CHECK: moe.dispatch {{.*}}capacity = 0 : i64, layer = "moe4", num_experts = 2 : i64
// CHECK: moe.experts {{.*}}layer = "moe4"{{.*}} : (tensor<32x16xf32>, tensor<2xi32>, tensor<2x16x8xf32>, tensor<2x8xf32>, tensor<2x8x16xf32>, tensor<2x16xf32>) -> tensor<32x16xf32>
// CHECK: %[[Y4:.*]] = nn.reshape
// CHECK: return %[[Y4]], %{{.*}}, %[[AUX4]]
func.func @two_layers(%x: tensor<2x8x16xf32>, %wg: tensor<16x3xf32>,
                      %w1: tensor<3x16x32xf32>, %b1: tensor<3x32xf32>,
                      %w2: tensor<3x32x16xf32>, %b2: tensor<3x16xf32>,
                      %vg: tensor<16x2xf32>, %v1: tensor<2x16x8xf32>, %c1: tensor<2x8xf32>,
                      %v2: tensor<2x8x16xf32>, %c2: tensor<2x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe3", num_experts = 3 : i64, top_k = 1 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 1.25 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x3xf32>, tensor<3x16x32xf32>, tensor<3x32xf32>,
         tensor<3x32x16xf32>, tensor<3x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  %z, %aux2 = moe.layer %y, %vg, %v1, %c1, %v2, %c2
      {name = "moe4", num_experts = 2 : i64, top_k = 2 : i64, ffn_hidden = 8 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.1 : f32}
      : (tensor<2x8x16xf32>, tensor<16x2xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>,
         tensor<2x8x16xf32>, tensor<2x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return %z, %aux, %aux2 : tensor<2x8x16xf32>, tensor<f32>, tensor<f32>
}

// PLACED-DAG: #[[P:.*]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[}}[0], [1], [0], [1]]>
// PLACED-LABEL: func.func @dropless
// PLACED: moe.gate {{.*}}layer = "moe1", placement = #[[P]]
// PLACED: moe.aux_loss {{.*}}layer = "moe1", placement = #[[P]]
// PLACED: moe.dispatch {{.*}}layer = "moe1", num_experts = 4 : i64, placement = #[[P]]
// PLACED: moe.experts {{.*}}layer = "moe1", placement = #[[P]]
// PLACED: moe.combine {{.*}}layer = "moe1", placement = #[[P]]
