// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics --moe-initial-placement="world-size=2"

// Layer names identify placements, so they must be unique.
func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>,
             %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  // expected-error @+1 {{is the second layer named 'moe1'; layer names must be unique}}
  %z, %aux2 = moe.layer %y, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

// expected-error @+1 {{module has flexmoe.world_size = 4 but the placement is for 2 devices}}
module attributes {flexmoe.world_size = 4 : i64} {
}

// -----

// An expanded layer whose expert count shows in none of its ops.
func.func @f(%out: tensor<32x16xf32>, %pos: tensor<16x2xi32>, %w: tensor<16x2xf32>) -> tensor<16x16xf32> {
  // expected-error @+1 {{cannot tell how many experts layer 'moe3' has}}
  %y = moe.combine %out, %pos, %w {layer = "moe3"}
      : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>) -> tensor<16x16xf32>
  return %y : tensor<16x16xf32>
}
