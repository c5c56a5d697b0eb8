// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics --moe-expand-layers

// Shapes must be known: the pass runs after nn-shape-inference.
func.func @unranked(%x: tensor<*xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
                    %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{needs statically shaped operands (run nn-shape-inference first), got x of type 'tensor<*xf32>'}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<*xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  return
}

// -----

func.func @dynamic_results(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
                           %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{needs static result types (run nn-shape-inference first), got 'tensor<*xf32>' and 'tensor<f32>'}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<*xf32>, tensor<f32>)
  return
}

// -----

// Expert parameters are function arguments, so that SPMD partitioning can
// store them per device.
func.func @computed_param(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
                          %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  %b1s = nn.scale %b1 {factor = 2.0 : f32} : (tensor<4x32xf32>) -> tensor<4x32xf32>
  // expected-error @+1 {{expert parameter b1 of layer 'moe1' must be an argument of the enclosing function}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1s, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

// Two layers cannot share expert parameters: each layer's experts are placed
// on their own.
func.func @shared(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
                  %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  // expected-error @+1 {{expert parameter w1 (argument 2) is shared by layers 'moe1' and 'moe2'}}
  %z, %aux2 = moe.layer %y, %wg, %w1, %b1, %w2, %b2
      {name = "moe2", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @huge_capacity(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
                         %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{capacity_factor 1.000000e+30 gives layer 'moe1' more routed rows than fit in a tensor}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 1.0e30 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}
