// Round-robin: expert e on device e mod W, slots_per_device = ceil(E / W).
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=2" | FileCheck %s --check-prefix=W2
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=3" | FileCheck %s --check-prefix=W3
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=8" | FileCheck %s --check-prefix=W8
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=2 slots-per-device=3" | FileCheck %s --check-prefix=S3
// The default is one device.
// RUN: flexmoe-opt %s --moe-initial-placement | FileCheck %s --check-prefix=W1
// From a placement file; world-size may be repeated if it agrees.
// RUN: flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-w4.json" | FileCheck %s --check-prefix=FILE
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=4 slots-per-device=2 placement-file=%S/Inputs/placement-w4.json" | FileCheck %s --check-prefix=FILE
// The result verifies and round-trips.
// RUN: flexmoe-opt %s --moe-initial-placement="world-size=2" | flexmoe-opt | FileCheck %s --check-prefix=W2

// W2-DAG: #[[P:.*]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[}}[0], [1], [0], [1]]>
// W2-DAG: #[[Q:.*]] = #moe.placement<world_size = 2, slots_per_device = 1, replicas = {{\[}}[0], [1]]>
// W2-LABEL: module attributes {flexmoe.world_size = 2 : i64}
// W2-LABEL: func.func @two_layers
// W2: moe.layer {{.*}}name = "moe1"{{.*}}placement = #[[P]]
// W2: moe.layer {{.*}}name = "moe2"{{.*}}placement = #[[Q]]
// W2-LABEL: func.func @expanded
// W2: moe.gate {{.*}}layer = "moe3", placement = #[[P]]
// W2: moe.dispatch {{.*}}layer = "moe3"{{.*}}placement = #[[P]]
// W2: moe.combine {{.*}}layer = "moe3", placement = #[[P]]

// W3-DAG: #[[P:.*]] = #moe.placement<world_size = 3, slots_per_device = 2, replicas = {{\[}}[0], [1], [2], [0]]>
// W3-DAG: #[[Q:.*]] = #moe.placement<world_size = 3, slots_per_device = 1, replicas = {{\[}}[0], [1]]>
// W3: module attributes {flexmoe.world_size = 3 : i64}
// W3: name = "moe1"{{.*}}placement = #[[P]]
// W3: name = "moe2"{{.*}}placement = #[[Q]]

// More devices than experts: one expert per device, devices 4..7 hold none.
// W8-DAG: #[[P:.*]] = #moe.placement<world_size = 8, slots_per_device = 1, replicas = {{\[}}[0], [1], [2], [3]]>
// W8: module attributes {flexmoe.world_size = 8 : i64}
// W8: name = "moe1"{{.*}}placement = #[[P]]

// S3-DAG: #[[P:.*]] = #moe.placement<world_size = 2, slots_per_device = 3, replicas = {{\[}}[0], [1], [0], [1]]>
// S3: name = "moe1"{{.*}}placement = #[[P]]

// W1-DAG: #[[P:.*]] = #moe.placement<world_size = 1, slots_per_device = 4, replicas = {{\[}}[0], [0], [0], [0]]>
// W1: module attributes {flexmoe.world_size = 1 : i64}
// W1: name = "moe1"{{.*}}placement = #[[P]]

// Expanded ops of a layer (moe3) that has no moe.layer take the file's
// entry too; the 2-expert layer moe2 gets its own entry.
// FILE-DAG: #[[P:.*]] = #moe.placement<world_size = 4, slots_per_device = 2, replicas = {{\[}}[0], [1], [2, 3], [3]]>
// FILE-DAG: #[[Q:.*]] = #moe.placement<world_size = 4, slots_per_device = 2, replicas = {{\[}}[0, 1], [2]]>
// FILE-DAG: #[[R:.*]] = #moe.placement<world_size = 4, slots_per_device = 2, replicas = {{\[}}[3], [2], [1], [0]]>
// FILE: module attributes {flexmoe.world_size = 4 : i64}
// FILE: name = "moe1"{{.*}}placement = #[[P]]
// FILE: name = "moe2"{{.*}}placement = #[[Q]]
// FILE: moe.gate {{.*}}layer = "moe3", placement = #[[R]]
// FILE: moe.dispatch {{.*}}layer = "moe3"{{.*}}placement = #[[R]]
// FILE: moe.combine {{.*}}layer = "moe3", placement = #[[R]]

func.func @two_layers(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>,
                      %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                      %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>,
                      %vg: tensor<16x2xf32>,
                      %v1: tensor<2x16x32xf32>, %c1: tensor<2x32xf32>,
                      %v2: tensor<2x32x16xf32>, %c2: tensor<2x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  %z, %aux2 = moe.layer %y, %vg, %v1, %c1, %v2, %c2
      {name = "moe2", num_experts = 2 : i64, top_k = 1 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x2xf32>, tensor<2x16x32xf32>, tensor<2x32xf32>,
         tensor<2x32x16xf32>, tensor<2x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return %z, %aux, %aux2 : tensor<2x8x16xf32>, tensor<f32>, tensor<f32>
}

// A layer already expanded: its ops carry the layer's name.
func.func @expanded(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>,
                    %out: tensor<32x16xf32>) -> (tensor<16x16xf32>, tensor<32x16xf32>) {
  %probs, %ids, %weights = moe.gate %x, %wg {layer = "moe3", top_k = 2 : i64}
      : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe3", num_experts = 4 : i64, capacity = 0 : i64}
      : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  %y = moe.combine %out, %pos, %weights {layer = "moe3"}
      : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
  return %y, %routed : tensor<16x16xf32>, tensor<32x16xf32>
}
