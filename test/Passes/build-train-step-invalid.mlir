// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step

// expected-error @+1 {{build-train-step: no 'func.func @forward' to differentiate}}
module {
  func.func @model(%x: tensor<4xf32> {nn.param = "x"}) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
}

// -----

// expected-error @+1 {{@forward must return exactly one tensor<f32> (the loss), but returns 'tensor<4xf32>'}}
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %w: tensor<8xf32> {nn.param = "w"}) -> tensor<4xf32> {
  %y = nn.reduce_sum %x {dims = array<i64: 1>} : (tensor<4x8xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

// expected-error @+1 {{@forward must return exactly one tensor<f32> (the loss), but returns 'tensor<f32>', 'tensor<f32>'}}
func.func @forward(%x: tensor<f32> {nn.param = "x"}) -> (tensor<f32>, tensor<f32>) {
  return %x, %x : tensor<f32>, tensor<f32>
}

// -----

// expected-error @+1 {{@forward has no body}}
func.func private @forward(tensor<f32> {nn.param = "x"}) -> tensor<f32>

// -----

// An op on the path from a parameter to the loss without a gradient rule: the
// MoE layer must be expanded first.
func.func @forward(%x: tensor<1x2x4xf32> {nn.input = "x"},
                   %labels: tensor<1x2xi32> {nn.input = "labels"},
                   %wg: tensor<4x2xf32> {nn.param = "moe1.gate"},
                   %w1: tensor<2x4x8xf32> {nn.param = "moe1.w1"},
                   %b1: tensor<2x8xf32> {nn.param = "moe1.b1"},
                   %w2: tensor<2x8x4xf32> {nn.param = "moe1.w2"},
                   %b2: tensor<2x4xf32> {nn.param = "moe1.b2"}) -> tensor<f32> {
  // expected-error @+1 {{op 'moe.layer' has no gradient rule}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 2 : i64, top_k = 1 : i64, ffn_hidden = 8 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32, activation = "gelu"}
      : (tensor<1x2x4xf32>, tensor<4x2xf32>, tensor<2x4x8xf32>, tensor<2x8xf32>,
         tensor<2x8x4xf32>, tensor<2x4xf32>) -> (tensor<1x2x4xf32>, tensor<f32>)
  %loss = nn.cross_entropy %y, %labels : (tensor<1x2x4xf32>, tensor<1x2xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A gradient op used in a model has no gradient rule of its own.
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %w: tensor<4x8xf32> {nn.param = "w"}) -> tensor<f32> {
  // expected-error @+1 {{op 'nn.gelu_grad' has no gradient rule}}
  %g = nn.gelu_grad %x, %w : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %loss = nn.reduce_sum %g {dims = array<i64: 0, 1>} : (tensor<4x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Ops without a rule are fine off the path from the parameters: only the
// softmax_grad on the path is reported, not the gelu_grad on the input.
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %w: tensor<4x8xf32> {nn.param = "w"}) -> tensor<f32> {
  %g = nn.gelu_grad %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %h = nn.mul %g, %w : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  // expected-error @+1 {{op 'nn.softmax_grad' has no gradient rule}}
  %s = nn.softmax_grad %h, %g : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %loss = nn.reduce_sum %s {dims = array<i64: 0, 1>} : (tensor<4x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{argument #1 of @forward must be either an input (nn.input) or a parameter (nn.param with a name)}}
func.func @forward(%x: tensor<f32> {nn.param = "x"}, %y: tensor<f32>) -> tensor<f32> {
  return %x : tensor<f32>
}

// -----

// expected-error @+1 {{argument #0 of @forward must be either an input (nn.input) or a parameter (nn.param with a name)}}
func.func @forward(%x: tensor<f32> {nn.param = "x", nn.input = "x"}) -> tensor<f32> {
  return %x : tensor<f32>
}

// -----

// expected-error @+1 {{parameter 'table' must be a statically shaped float tensor, not 'tensor<4x8xi32>'}}
func.func @forward(%t: tensor<4x8xi32> {nn.param = "table"}, %w: tensor<f32> {nn.param = "w"}) -> tensor<f32> {
  return %w : tensor<f32>
}

// -----

// Shapes must be inferred first.
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %w: tensor<8x8xf32> {nn.param = "w"}) -> tensor<f32> {
  // expected-error @+1 {{build-train-step needs static shapes, got 'tensor<*xf32>' (run nn-shape-inference first)}}
  %h = nn.linear %x, %w : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<*xf32>
  %loss = nn.reduce_sum %h {dims = array<i64: 0, 1>} : (tensor<*xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{build-train-step: the module already has a symbol named 'train_step'}}
module {
  func.func @forward(%w: tensor<f32> {nn.param = "w"}) -> tensor<f32> {
    return %w : tensor<f32>
  }
  func.func @train_step() {
    return
  }
}

// -----

// An input of a differentiated op must be statically shaped too.
func.func @forward(%x: tensor<?x8xf32> {nn.input = "x"},
                   %w: tensor<8x8xf32> {nn.param = "w"}) -> tensor<f32> {
  // expected-error @+1 {{build-train-step needs static shapes, got 'tensor<?x8xf32>' (run nn-shape-inference first)}}
  %h = nn.linear %x, %w : (tensor<?x8xf32>, tensor<8x8xf32>) -> tensor<?x8xf32>
  %loss = nn.reduce_sum %h {dims = array<i64: 0, 1>} : (tensor<?x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

func.func @forward(%a: tensor<f32> {nn.param = "w"}, %x: tensor<f32> {nn.input = "x"},
                   // expected-error @+1 {{parameter name 'w' is used by arguments #0 and #2}}
                   %b: tensor<f32> {nn.param = "w"}) -> tensor<f32> {
  return %a : tensor<f32>
}

// -----

// expected-error @+1 {{@forward must have a single block}}
func.func @forward(%w: tensor<f32> {nn.param = "w"}) -> tensor<f32> {
  return %w : tensor<f32>
^unreachable:
  return %w : tensor<f32>
}
