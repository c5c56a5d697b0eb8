// RUN: flexmoe-opt %s -split-input-file -lower-to-exec -verify-diagnostics

// expected-error @+1 {{lower-to-exec needs func.func @train_step (Stage 5 of docs/IR.md: run build-train-step and spmd-partition first)}}
module {
  func.func @forward() {
    return
  }
}

// -----

func.func @train_step(%x: tensor<2x4x8xf32> {nn.input = "tokens"}, %wg: tensor<8x4xf32> {nn.param = "wg", nn.init = "zeros"},
                      %w1: tensor<4x8x16xf32> {nn.param = "w1", nn.init = "zeros"}, %b1: tensor<4x16xf32> {nn.param = "b1", nn.init = "zeros"},
                      %w2: tensor<4x16x8xf32> {nn.param = "w2", nn.init = "zeros"}, %b2: tensor<4x8xf32> {nn.param = "b2", nn.init = "zeros"})
    -> (tensor<f32> {nn.output = "loss"}) {
  // expected-error @+1 {{lower-to-exec cannot lower 'moe.layer': run moe-expand-layers first}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 1 : i64, ffn_hidden = 16 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x4x8xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>,
         tensor<4x16x8xf32>, tensor<4x8xf32>) -> (tensor<2x4x8xf32>, tensor<f32>)
  return %aux : tensor<f32>
}

// -----

// expected-error @+1 {{argument 1 of @train_step is neither a parameter (nn.param), optimizer state (nn.opt_state) nor an input (nn.input)}}
func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "ones"}, %q: tensor<4xf32>)
    -> (tensor<f32> {nn.output = "loss"}) {
  %s = nn.add %p, %q : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %loss = nn.reduce_sum %s {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{argument 0 of @train_step has type 'tensor<?x4xf32>'; lower-to-exec needs static shapes (run nn-shape-inference first)}}
func.func @train_step(%p: tensor<?x4xf32> {nn.param = "p", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}) {
  %loss = nn.reduce_sum %p {dims = array<i64: 0, 1>} : (tensor<?x4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

func.func private @helper(tensor<4xf32>) -> tensor<f32>

func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}) {
  // expected-error @+1 {{lower-to-exec cannot lower 'func.call': only nn and moe ops can be lowered}}
  %loss = func.call @helper(%p) : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{result 1 of @train_step is neither the loss (nn.output) nor an update of an argument (nn.updates)}}
func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}, tensor<4xf32>) {
  %loss = nn.reduce_sum %p {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss, %p : tensor<f32>, tensor<4xf32>
}

// -----

// expected-error @+2 {{argument 1 of @train_step is optimizer state of 'w', which is no parameter of @train_step}}
func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "ones"},
                      %m: tensor<4xf32> {nn.opt_state = "adam_m", nn.state_of = "w"})
    -> (tensor<f32> {nn.output = "loss"}) {
  %loss = nn.reduce_sum %p {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

func.func @train_step(%x: tensor<8x8xf32> {nn.param = "x", nn.init = "ones"},
                      %wg: tensor<8x4xf32> {nn.param = "wg", nn.init = "ones"})
    -> (tensor<f32> {nn.output = "loss"}) {
  // expected-error @+1 {{MoE layer 'moe1' has no #moe.placement; lower-to-exec needs the expanded, placed layer of Stage 5}}
  %probs, %ids, %cw = moe.gate %x, %wg {layer = "moe1", top_k = 1 : i64}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x1xi32>, tensor<8x1xf32>)
  %loss = nn.reduce_sum %probs {dims = array<i64: 0, 1>} : (tensor<8x4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// expected-error @+1 {{parameter 'p' has nn.init = "normal" but no nn.init_std}}
func.func @train_step(%p: tensor<4xf32> {nn.param = "p", nn.init = "normal"})
    -> (tensor<f32> {nn.output = "loss"}) {
  %loss = nn.reduce_sum %p {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}
