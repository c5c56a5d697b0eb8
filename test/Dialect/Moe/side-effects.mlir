// RUN: flexmoe-opt %s --canonicalize | FileCheck %s

// Local ops are Pure and vanish when unused; collectives communicate with the
// other devices, so they stay even when their results are unused.
// CHECK-LABEL: func.func @unused
// CHECK-NOT: moe.gate
// CHECK: moe.all_to_all
// CHECK-NEXT: moe.replica_grad_sync
// CHECK-NEXT: moe.all_reduce
// CHECK-NEXT: return
#p2 = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>
func.func @unused(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>,
                  %routed: tensor<32x16xf32>, %counts: tensor<4xi32>,
                  %dw: tensor<2x8xf32>, %g: tensor<4xf32>) {
  %probs, %ids, %weights = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64}
      : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  %recv, %slot_counts = moe.all_to_all %routed, %counts {layer = "moe1", direction = "dispatch", placement = #p2}
      : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  %s = moe.replica_grad_sync %dw {layer = "moe1", placement = #p2} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %r = moe.all_reduce %g {reduction = "sum"} : (tensor<4xf32>) -> tensor<4xf32>
  return
}
