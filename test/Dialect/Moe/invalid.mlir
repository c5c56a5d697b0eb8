// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics

// Every verifier error of the moe ops, one per split.

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x8xf32>, %w1: tensor<8x16x32xf32>, %b1: tensor<8x32xf32>, %w2: tensor<8x32x16xf32>, %b2: tensor<8x16xf32>) {
  // expected-error @+1 {{layer 'moe1' has 8 experts but its placement lists 4}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 8 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
      : (tensor<2x8x16xf32>, tensor<16x8xf32>, tensor<8x16x32xf32>, tensor<8x32xf32>, tensor<8x32x16xf32>, tensor<8x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{has an empty name}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{layer 'moe1' must have at least one expert, got num_experts = 0}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 0 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{top_k must be in [1, 4], got 5}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 5 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{top_k must be in [1, 4], got 0}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 0 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{ffn_hidden must be at least 1, got 0}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 0 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{capacity_factor must be a finite number >= 0 (0 = dropless), got -1.000000e+00}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = -1.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{aux_loss_coef must be a finite number >= 0, got -5.000000e-01}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = -0.5 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{activation must be "gelu" or "relu", got "swish"}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32, activation = "swish"}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x64xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{w1 has H = 64 but ffn_hidden is 32}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x64xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x5xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{gate_weight has E = 5 but num_experts is 4}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x5xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x8xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{w2 has D = 8 but x has D = 16}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x8xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<3x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{b1 has E = 3 but num_experts is 4}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<3x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{x must be a [B,S,D] tensor, got 'tensor<16x16xf32>'}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<16x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf16>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{operand 1 has element type 'f16' but the other float operands have 'f32'}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf16>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{y has D = 8 but x has D = 16}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2 {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64, capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x8xf32>, tensor<f32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>) {
  // expected-error @+1 {{top_k must be in [1, 4], got 5}}
  %p, %i, %w = moe.gate %x, %wg {layer = "moe1", top_k = 5 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x5xi32>, tensor<16x5xf32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<8x4xf32>) {
  // expected-error @+1 {{gate_weight has D = 8 but x has D = 16}}
  %p, %i, %w = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<8x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>) {
  // expected-error @+1 {{layer 'moe1' has 4 experts but its placement lists 2}}
  %p, %i, %w = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 1, replicas = [[0], [1]]>} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>) {
  // expected-error @+1 {{has an empty layer name}}
  %p, %i, %w = moe.gate %x, %wg {layer = "", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>)
  return
}

// -----

// expert_ids must be [T,k].
func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{are incompatible with return type(s) of operation}}
  %p, %i, %w = moe.gate %x, %wg {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>) -> (tensor<16x4xf32>, tensor<16x3xi32>, tensor<16x2xf32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>, %p: tensor<16x4xf32>, %i: tensor<16x2xi32>, %dw: tensor<16x2xf32>, %dp: tensor<16x8xf32>) {
  // expected-error @+1 {{d_probs has E = 8 but gate_weight has E = 4}}
  %dx, %dwg = moe.gate_grad %x, %wg, %p, %i, %dw, %dp {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>) -> (tensor<16x16xf32>, tensor<16x4xf32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %wg: tensor<16x4xf32>, %p: tensor<16x4xf32>, %i: tensor<16x3xi32>, %dw: tensor<16x2xf32>, %dp: tensor<16x4xf32>) {
  // expected-error @+1 {{expert_ids has k = 3 but top_k is 2}}
  %dx, %dwg = moe.gate_grad %x, %wg, %p, %i, %dw, %dp {layer = "moe1", top_k = 2 : i64} : (tensor<16x16xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<16x3xi32>, tensor<16x2xf32>, tensor<16x4xf32>) -> (tensor<16x16xf32>, tensor<16x4xf32>)
  return
}

// -----

func.func @f(%p: tensor<16x4xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{coef must be a finite number >= 0, got -1.000000e+00}}
  %a = moe.aux_loss %p, %i {layer = "moe1", coef = -1.0 : f32} : (tensor<16x4xf32>, tensor<16x2xi32>) -> tensor<f32>
  return
}

// -----

func.func @f(%p: tensor<16x4xf32>, %i: tensor<8x2xi32>) {
  // expected-error @+1 {{expert_ids has T = 8 but probs has T = 16}}
  %a = moe.aux_loss %p, %i {layer = "moe1", coef = 0.01 : f32} : (tensor<16x4xf32>, tensor<8x2xi32>) -> tensor<f32>
  return
}

// -----

func.func @f(%p: tensor<16x4xf32>, %i: tensor<16x2xi32>, %dl: tensor<1xf32>) {
  // expected-error @+1 {{dloss must be a 0-d tensor, got 'tensor<1xf32>'}}
  %d = moe.aux_loss_grad %p, %i, %dl {layer = "moe1", coef = 0.01 : f32} : (tensor<16x4xf32>, tensor<16x2xi32>, tensor<1xf32>) -> tensor<16x4xf32>
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{num_experts must be at least 1, got 0}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 0 : i64, capacity = 0 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<0xi32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity must be >= 0 (0 = dropless), got -2}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 4 : i64, capacity = -2 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{expert_ids has k = 2 choices per token; it must be in [1, 1]}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 1 : i64, capacity = 0 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<1xi32>)
  return
}

// -----

// With a capacity the routed rows are E·C, not T·k.
func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{inferred type(s) 'tensor<40x16xf32>', 'tensor<16x2xi32>', 'tensor<4xi32>' are incompatible with return type(s) of operation 'tensor<32x16xf32>', 'tensor<16x2xi32>', 'tensor<4xi32>'}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 4 : i64, capacity = 10 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{layer 'moe1' has 4 experts but its placement lists 8}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64, placement = #moe.placement<world_size = 1, slots_per_device = 8, replicas = [[0], [0], [0], [0], [0], [0], [0], [0]]>} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<32x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%dr: tensor<32x16xf32>, %p: tensor<32xi32>) {
  // expected-error @+1 {{positions must be a [T,k] tensor, got 'tensor<32xi32>'}}
  %dx = moe.dispatch_grad %dr, %p {layer = "moe1"} : (tensor<32x16xf32>, tensor<32xi32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%o: tensor<32x16xf32>, %p: tensor<16x2xi32>, %w: tensor<8x2xf32>) {
  // expected-error @+1 {{combine_weights has T = 8 but positions has T = 16}}
  %y = moe.combine %o, %p, %w {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<8x2xf32>) -> tensor<16x16xf32>
  return
}

// -----

func.func @f(%o: tensor<32x16xf32>, %p: tensor<16x2xi32>, %w: tensor<16x2xf32>, %dy: tensor<16x8xf32>) {
  // expected-error @+1 {{dy has D = 8 but expert_out has D = 16}}
  %do, %dw = moe.combine_grad %o, %p, %w, %dy {layer = "moe1"} : (tensor<32x16xf32>, tensor<16x2xi32>, tensor<16x2xf32>, tensor<16x8xf32>) -> (tensor<32x16xf32>, tensor<16x2xf32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{activation must be "gelu" or "relu", got "tanh"}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "tanh", capacity = 0 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{routed has 32 rows but 4 groups of capacity 10 need 40}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = 10 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{capacity must be >= 0 (0 = packed), got -1}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = -1 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<2x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{w2 has G = 2 but counts has G = 4}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = 0 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<2x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{has 4 expert groups but layer 'moe1' has 6 experts and 3 slots per device}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = 0 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 3, replicas = [[0], [1], [0], [1], [0], [1]]>} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>, %dy: tensor<30x16xf32>) {
  // expected-error @+1 {{dy has N = 30 but routed has N = 32}}
  %dr, %dw1, %db1, %dw2, %db2 = moe.experts_grad %r, %c, %w1, %b1, %w2, %b2, %dy {layer = "moe1", capacity = 0 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>, tensor<30x16xf32>) -> (tensor<32x16xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>) {
  // expected-error @+1 {{direction must be "dispatch" or "combine", got "scatter"}}
  %o, %oc = moe.all_to_all %r, %c {layer = "moe1", direction = "scatter"} : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  return
}

// -----

// A dispatch all_to_all returns world_size·N rows.
func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{inferred type(s) 'tensor<64x16xf32>', 'tensor<2xi32>' are incompatible with return type(s) of operation 'tensor<32x16xf32>', 'tensor<2xi32>'}}
  %o, %oc = moe.all_to_all %r, %c {layer = "moe1", direction = "dispatch", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>} : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<32x16xf32>, tensor<2xi32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<3xi32>) {
  // expected-error @+1 {{counts has 3 entries but layer 'moe1' has 4 experts}}
  %o, %oc = moe.all_to_all %r, %c {layer = "moe1", direction = "dispatch", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>} : (tensor<32x16xf32>, tensor<3xi32>) -> (tensor<64x16xf32>, tensor<2xi32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>) {
  // expected-error @+1 {{counts has 4 entries but layer 'moe1' has 2 slots per device}}
  %o, %oc = moe.all_to_all %r, %c {layer = "moe1", direction = "combine", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>} : (tensor<32x16xf32>, tensor<4xi32>) -> (tensor<16x16xf32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<2xi32>) {
  // expected-error @+1 {{input has 32 rows, not a multiple of world_size 3}}
  %o, %oc = moe.all_to_all %r, %c {layer = "moe1", direction = "combine", placement = #moe.placement<world_size = 3, slots_per_device = 2, replicas = [[0], [1], [2], [1]]>} : (tensor<32x16xf32>, tensor<2xi32>) -> (tensor<?x16xf32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>) {
  // expected-error @+1 {{gradient 0 has 4 slots but layer 'moe1' has 2 slots per device}}
  %s = moe.replica_grad_sync %g {layer = "moe1", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{needs at least one gradient}}
  moe.replica_grad_sync {layer = "moe1"} : () -> ()
  return
}

// -----

func.func @f(%g: tensor<2x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{are incompatible with return type(s) of operation}}
  %s = moe.replica_grad_sync %g {layer = "moe1"} : (tensor<2x8xf32>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f(%g: tensor<8xf32>) {
  // expected-error @+1 {{reduction must be "mean" or "sum", got "max"}}
  %r = moe.all_reduce %g {reduction = "max"} : (tensor<8xf32>) -> tensor<8xf32>
  return
}

// -----

func.func @f(%g: tensor<8xi32>) {
  // expected-error @+1 {{operand #0 must be tensor of floating-point values}}
  %r = moe.all_reduce %g {reduction = "sum"} : (tensor<8xi32>) -> tensor<8xi32>
  return
}

// -----

func.func @f(%x: tensor<16x16xf32>, %i: tensor<16x2xi32>) {
  // expected-error @+1 {{capacity 4611686018427387904 for 4 experts gives more routed rows than fit in a tensor dimension}}
  %r, %p, %c = moe.dispatch %x, %i {layer = "moe1", num_experts = 4 : i64, capacity = 4611686018427387904 : i64} : (tensor<16x16xf32>, tensor<16x2xi32>) -> (tensor<?x16xf32>, tensor<16x2xi32>, tensor<4xi32>)
  return
}

// -----

func.func @f(%r: tensor<32x16xf32>, %c: tensor<4xi32>, %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>, %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>) {
  // expected-error @+1 {{routed has 32 rows but 4 groups of capacity 4611686018427387904 need more than fit in a tensor dimension}}
  %o = moe.experts %r, %c, %w1, %b1, %w2, %b2 {layer = "moe1", capacity = 4611686018427387904 : i64} : (tensor<32x16xf32>, tensor<4xi32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> tensor<32x16xf32>
  return
}
