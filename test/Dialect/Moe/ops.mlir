// RUN: flexmoe-opt %s | FileCheck %s
// Printing and parsing again gives the same IR.
// RUN: flexmoe-opt %s | flexmoe-opt | FileCheck %s
// The generic form round-trips too (properties, optional attributes).
// RUN: flexmoe-opt %s --mlir-print-op-generic | flexmoe-opt | FileCheck %s

// CHECK: #[[P4:placement[0-9]*]] = #moe.placement<world_size = 4, slots_per_device = 2, replicas = {{\[}}[0], [1], [2, 3], [3]]>
// CHECK: #[[P2:placement[0-9]*]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[}}[0], [1], [0], [1]]>
#p4 = #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[0], [1], [2, 3], [3]]>
#p2 = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>

// CHECK-LABEL: func.func @layer
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x16xf32>, %[[WG:.*]]: tensor<16x4xf32>, %[[W1:.*]]: tensor<4x16x32xf32>, %[[B1:.*]]: tensor<4x32xf32>, %[[W2:.*]]: tensor<4x32x16xf32>, %[[B2:.*]]: tensor<4x16xf32>)
func.func @layer(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>,
                 %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                 %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<2x8x16xf32>, tensor<f32>) {
  // CHECK: %[[Y:.*]], %[[YAUX:.*]] = moe.layer %[[X]], %[[WG]], %[[W1]], %[[B1]], %[[W2]], %[[B2]]
  // CHECK-SAME: activation = "relu", aux_loss_coef = 0.00999999977 : f32, capacity_factor = 0.000000e+00 : f32, ffn_hidden = 32 : i64, name = "moe1", num_experts = 4 : i64, top_k = 2 : i64}
  // CHECK-SAME: : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32, activation = "relu"}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  // The default activation ("gelu") is not printed; the placement is.
  // CHECK: %[[Z:.*]], %[[ZAUX:.*]] = moe.layer %[[X]], %[[WG]], %[[W1]], %[[B1]], %[[W2]], %[[B2]]
  // CHECK-SAME: {aux_loss_coef = 0.00999999977 : f32, capacity_factor = 1.250000e+00 : f32, ffn_hidden = 32 : i64, name = "moe2", num_experts = 4 : i64, placement = #[[P4]], top_k = 1 : i64}
  %z, %aux2 = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe2", num_experts = 4 : i64, top_k = 1 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 1.25 : f32, aux_loss_coef = 0.01 : f32, activation = "gelu",
       placement = #p4}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  // CHECK: return %[[Y]], %[[YAUX]], %[[Z]], %[[ZAUX]]
  return %y, %aux, %z, %aux2 : tensor<2x8x16xf32>, tensor<f32>, tensor<2x8x16xf32>, tensor<f32>
}

// Unranked operands and results are accepted before shape inference.
// CHECK-LABEL: func.func @layer_unranked
func.func @layer_unranked(%x: tensor<*xf32>, %wg: tensor<16x4xf32>,
                          %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                          %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<*xf32>, tensor<*xf32>) {
  // CHECK: moe.layer
  // CHECK-SAME: -> (tensor<*xf32>, tensor<*xf32>)
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<*xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  return %y, %aux : tensor<*xf32>, tensor<*xf32>
}

// The expanded forward ops of one layer (T = 16, D = 16, E = 4, k = 2).
// CHECK-LABEL: func.func @forward_ops
func.func @forward_ops(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>,
                       %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                       %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<16x16xf32>, tensor<f32>, tensor<32x16xf32>) {
  // CHECK: %[[PROBS:.*]], %[[IDS:.*]], %[[WEIGHTS:.*]] = moe.gate %{{.*}}, %{{.*}} {layer = "moe1", placement = #[[P4]], top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  %probs, %ids, %weights = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64, placement = #p4}
      : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  // CHECK: %[[AUX:.*]] = moe.aux_loss %[[PROBS]], %[[IDS]] {coef = 0.00999999977 : f32, layer = "moe1"} : (tensor<16x4xf32>, tensor<16x2xi32>) -> tensor<f32>
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32}
      : (tensor<16x4xf32>, tensor<16x2xi32>) -> tensor<f32>
  // CHECK: %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch %{{.*}}, %[[IDS]] {capacity = 0 : i64, layer = "moe1", num_experts = 4 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64}
      : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  // With capacity C = 10 the routed rows are E·C = 40.
  // CHECK: moe.dispatch {{.*}}capacity = 10 : i64{{.*}} -> (tensor<40x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  %routed_c, %pos_c, %counts_c = moe.dispatch %x, %ids {layer = "moe1", num_experts = 4 : i64, capacity = 10 : i64}
      : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<40x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  // CHECK: %[[E:.*]] = moe.experts %[[ROUTED]], %[[COUNTS]], {{.*}} {capacity = 0 : i64, layer = "moe1"} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "gelu", capacity = 0 : i64}
      : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  // CHECK: moe.experts {{.*}} {activation = "relu", capacity = 10 : i64, layer = "moe1"} : {{.*}} -> tensor<40x16xf32>
  %out_c = moe.experts %routed_c, %counts_c, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "relu", capacity = 10 : i64}
      : (tensor<40x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<40x16xf32>
  // CHECK: %[[Y:.*]] = moe.combine %[[E]], %[[POS]], %[[WEIGHTS]] {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
  %y = moe.combine %out, %pos, %weights {layer = "moe1"}
      : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
  // CHECK: return %[[Y]], %[[AUX]], %[[E]]
  return %y, %aux, %out : tensor<16x16xf32>, tensor<f32>, tensor<32x16xf32>
}

// The gradient ops.
// CHECK-LABEL: func.func @gradient_ops
func.func @gradient_ops(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>,
                        %probs: tensor<16x4xf32>, %ids: tensor<16x2xi32>,
                        %weights: tensor<16x2xf32>, %pos: tensor<16x2xi32>,
                        %routed: tensor<32x16xf32>, %counts: tensor<4xi32>,
                        %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                        %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>,
                        %out: tensor<32x16xf32>, %dy: tensor<16x16xf32>,
                        %dloss: tensor<f32>) -> (tensor<16x16xf32>, tensor<16x4xf32>) {
  // CHECK: %[[DOUT:.*]], %[[DWEIGHTS:.*]] = moe.combine_grad {{.*}} {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x16xf32>) -> (tensor<32x16xf32>, tensor<16x2xf32>)
  %dout, %dweights = moe.combine_grad %out, %pos, %weights, %dy {layer = "moe1"}
      : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x16xf32>)
      -> (tensor<32x16xf32>, tensor<16x2xf32>)
  // CHECK: %[[DROUTED:.*]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} = moe.experts_grad {{.*}}, %[[DOUT]] {capacity = 0 : i64, layer = "moe1"} : {{.*}} -> (tensor<32x16xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
  %drouted, %dw1, %db1, %dw2, %db2 = moe.experts_grad %routed, %counts, %w1, %b1, %w2, %b2, %dout
      {layer = "moe1", capacity = 0 : i64}
      : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>, tensor<32x16xf32>)
      -> (tensor<32x16xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
  // CHECK: %[[DX:.*]] = moe.dispatch_grad %[[DROUTED]], {{.*}} {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>) -> tensor<16x16xf32>
  %dx = moe.dispatch_grad %drouted, %pos {layer = "moe1"}
      : (tensor<32x16xf32>, tensor<16x2xi32>) -> tensor<16x16xf32>
  // CHECK: %[[DP:.*]] = moe.aux_loss_grad {{.*}} {coef = 0.00999999977 : f32, layer = "moe1"} : (tensor<16x4xf32>, tensor<16x2xi32>, tensor<f32>) -> tensor<16x4xf32>
  %dprobs = moe.aux_loss_grad %probs, %ids, %dloss {layer = "moe1", coef = 0.01 : f32}
      : (tensor<16x4xf32>, tensor<16x2xi32>, tensor<f32>) -> tensor<16x4xf32>
  // CHECK: %{{.*}}, %[[DWG:.*]] = moe.gate_grad {{.*}}, %[[DWEIGHTS]], %[[DP]] {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x4xf32>) -> (tensor<16x16xf32>, tensor<16x4xf32>)
  %dxg, %dwg = moe.gate_grad %x, %wg, %probs, %ids, %dweights, %dprobs {layer = "moe1", top_k = 2 : i64}
      : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<16x2xi32>,
         tensor<16x2xf32>, tensor<16x4xf32>) -> (tensor<16x16xf32>, tensor<16x4xf32>)
  // CHECK: return %[[DX]], %[[DWG]]
  return %dx, %dwg : tensor<16x16xf32>, tensor<16x4xf32>
}

// The collectives of a partitioned step (W = 2, 2 slots per device).
// CHECK-LABEL: func.func @collectives
func.func @collectives(%routed: tensor<32x16xf32>, %counts: tensor<4xi32>,
                       %dw1: tensor<2x16x32xf32>, %db1: tensor<2x32xf32>,
                       %dwg: tensor<16x4xf32>)
    -> (tensor<32x16xf32>, tensor<4xi32>, tensor<2x16x32xf32>, tensor<2x32xf32>, tensor<16x4xf32>) {
  // CHECK: %[[RECV:.*]], %[[SLOTS:.*]] = moe.all_to_all %{{.*}}, %{{.*}} {direction = "dispatch", layer = "moe1", placement = #[[P2]]} : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  %recv, %slot_counts = moe.all_to_all %routed, %counts {layer = "moe1", direction = "dispatch", placement = #p2}
      : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  // CHECK: %[[BACK:.*]], %[[BACKCOUNTS:.*]] = moe.all_to_all %[[RECV]], %[[SLOTS]] {direction = "combine", layer = "moe1", placement = #[[P2]]} : (tensor<64x16xf32>, tensor<2xi32>) -> (tensor<32x16xf32>, tensor<4xi32>)
  %back, %back_counts = moe.all_to_all %recv, %slot_counts {layer = "moe1", direction = "combine", placement = #p2}
      : (tensor<64x16xf32>, tensor<2xi32>) -> (tensor<32x16xf32>, tensor<4xi32>)
  // Without a placement the result types are whatever is written.
  // CHECK: moe.all_to_all {{.*}} {direction = "dispatch", layer = "moe1"} : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  %recv2, %slot_counts2 = moe.all_to_all %routed, %counts {layer = "moe1", direction = "dispatch"}
      : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  // CHECK: %[[S:.*]]:2 = moe.replica_grad_sync %{{.*}}, %{{.*}} {layer = "moe1", placement = #[[P2]]} : (tensor<2x16x32xf32>, tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>)
  %sw1, %sb1 = moe.replica_grad_sync %dw1, %db1 {layer = "moe1", placement = #p2}
      : (tensor<2x16x32xf32>, tensor<2x32xf32>) -> (tensor<2x16x32xf32>, tensor<2x32xf32>)
  // CHECK: %[[AR:.*]] = moe.all_reduce %{{.*}} {reduction = "mean"} : (tensor<16x4xf32>) -> tensor<16x4xf32>
  %g = moe.all_reduce %dwg {reduction = "mean"} : (tensor<16x4xf32>) -> tensor<16x4xf32>
  // CHECK: return %[[BACK]], %[[BACKCOUNTS]], %[[S]]#0, %[[S]]#1, %[[AR]]
  return %back, %back_counts, %sw1, %sb1, %g
      : tensor<32x16xf32>, tensor<4xi32>, tensor<2x16x32xf32>, tensor<2x32xf32>, tensor<16x4xf32>
}

// Before shape inference, operands and results may be unranked or dynamic;
// the inferred types keep what is known ([?,E] for probs here).
// CHECK-LABEL: func.func @unknown_shapes
func.func @unknown_shapes(%x: tensor<*xf32>, %wg: tensor<16x4xf32>, %routed: tensor<?x16xf32>,
                          %counts: tensor<4xi32>)
    -> (tensor<?x4xf32>, tensor<*xi32>, tensor<*xf32>, tensor<?x16xf32>, tensor<?xi32>) {
  // CHECK: moe.gate {{.*}} : (tensor<*xf32>, tensor<16x4xf32>) -> (tensor<?x4xf32>, tensor<*xi32>, tensor<*xf32>)
  %probs, %ids, %weights = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64}
      : (tensor<*xf32>, tensor<16x4xf32>) -> (tensor<?x4xf32>, tensor<*xi32>, tensor<*xf32>)
  // Without a placement, all_to_all's row count and out_counts stay dynamic.
  // CHECK: moe.all_to_all {{.*}} : (tensor<?x16xf32>, tensor<4xi32>) -> (tensor<?x16xf32>, tensor<?xi32>)
  %recv, %slot_counts = moe.all_to_all %routed, %counts {layer = "moe1", direction = "dispatch"}
      : (tensor<?x16xf32>, tensor<4xi32>) -> (tensor<?x16xf32>, tensor<?xi32>)
  return %probs, %ids, %weights, %recv, %slot_counts
      : tensor<?x4xf32>, tensor<*xi32>, tensor<*xf32>, tensor<?x16xf32>, tensor<?xi32>
}
