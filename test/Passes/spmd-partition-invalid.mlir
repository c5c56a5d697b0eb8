// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -spmd-partition="world-size=4"
// RUN: not flexmoe-opt %s -split-input-file -spmd-partition="world-size=0" 2>&1 | FileCheck %s --check-prefix=ZERO

// ZERO: error: spmd-partition needs world-size ≥ 1, got 0

// expected-error@+1 {{the module is placed for world size 2 (flexmoe.world_size), but spmd-partition runs with world-size 4}}
module attributes {flexmoe.world_size = 2 : i64} {
  func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}) -> tensor<8x4xi32> {
    return %tokens : tensor<8x4xi32>
  }
}

// -----

// expected-error@+1 {{spmd-partition expects a func.func @train_step with a body; run build-train-step first}}
module {
  func.func @forward(%tokens: tensor<8x4xi32> {nn.input = "tokens"}) -> tensor<8x4xi32> {
    return %tokens : tensor<8x4xi32>
  }
}

// -----

func.func @train_step(%x: tensor<8x8xf32> {nn.input = "tokens"}, %gate: tensor<8x4xf32> {nn.param = "gate"}) -> tensor<8x8xf32> {
  // expected-error@+1 {{the placement of layer 'moe1' is for world size 2, but spmd-partition runs with world-size 4}}
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", top_k = 2 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
  return %x : tensor<8x8xf32>
}

// -----

func.func @train_step(%x: tensor<8x8xf32> {nn.input = "tokens"}, %gate: tensor<8x4xf32> {nn.param = "gate"}) -> tensor<8x8xf32> {
  // expected-error@+1 {{layer 'moe1' has no placement; run moe-initial-placement first}}
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", top_k = 2 : i64}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
  return %x : tensor<8x8xf32>
}

// -----

func.func @train_step(%x: tensor<8x8xf32> {nn.input = "tokens"}, %gate: tensor<8x4xf32> {nn.param = "gate"}) -> tensor<8x8xf32> {
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", top_k = 2 : i64, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1], [2], [3]]>}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
  // expected-error@+1 {{ops of layer 'moe1' disagree on its placement}}
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[1], [0], [2], [3]]>}
      : (tensor<8x4xf32>, tensor<8x2xi32>) -> tensor<f32>
  return %x : tensor<8x8xf32>
}

// -----

func.func @train_step(
    // expected-error@+1 {{batch size 6 is not divisible by world size 4}}
    %tokens: tensor<6x4xi32> {nn.input = "tokens"}) -> tensor<6x4xi32> {
  return %tokens : tensor<6x4xi32>
}

// -----

func.func @train_step(
    // expected-error@+1 {{input 'tokens' must be a statically shaped tensor with a leading batch dimension, got 'tensor<i32>'}}
    %tokens: tensor<i32> {nn.input = "tokens"}) -> tensor<i32> {
  return %tokens : tensor<i32>
}

// -----

func.func @train_step(
    %x: tensor<8x8xf32> {nn.input = "tokens"},
    %gate: tensor<8x4xf32> {nn.param = "gate"},
    // expected-error@+1 {{parameter 'moe1.w1' of layer 'moe1' has type 'tensor<3x8x16xf32>', but its leading dimension must be the layer's 4 experts}}
    %w1: tensor<3x8x16xf32> {nn.param = "moe1.w1", moe.layer = "moe1"}) -> tensor<8x8xf32> {
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", top_k = 2 : i64, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1], [2], [3]]>}
      : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
  return %x : tensor<8x8xf32>
}

// -----

func.func @train_step(
    %x: tensor<8x8xf32> {nn.input = "tokens"},
    // expected-error@+1 {{adam_m of 'moe2.w1' belongs to layer 'moe2', but no op of @train_step carries that layer}}
    %w1_m: tensor<4x8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe2.w1", moe.layer = "moe2"}) -> tensor<8x8xf32> {
  return %x : tensor<8x8xf32>
}

// -----

func.func @train_step(
    %x: tensor<8x8xf32> {nn.input = "tokens"},
    %ids: tensor<8x2xi32> {nn.input = "labels"},
    %w1: tensor<4x8x16xf32> {nn.param = "moe1.w1"},
    %b1: tensor<4x16xf32> {nn.param = "moe1.b1", moe.layer = "moe1"},
    %w2: tensor<4x16x8xf32> {nn.param = "moe1.w2", moe.layer = "moe1"},
    %b2: tensor<4x8xf32> {nn.param = "moe1.b2", moe.layer = "moe1"}) -> tensor<16x8xf32> {
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1], [2], [3]]>}
      : (tensor<8x8xf32>, tensor<8x2xi32>) -> (tensor<16x8xf32>, tensor<8x2xi32>, tensor<4xi32>)
  // expected-error@+1 {{the expert weights of layer 'moe1' must be @train_step arguments marked moe.layer = "moe1" to be partitioned over the devices}}
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "gelu", capacity = 0 : i64, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1], [2], [3]]>}
      : (tensor<16x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
  return %out : tensor<16x8xf32>
}

// -----

func.func private @helper(tensor<8x4x8xf32>) -> tensor<8x4x8xf32>

func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}, %wte: tensor<16x8xf32> {nn.param = "wte"}) -> tensor<8x4x8xf32> {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  // expected-error@+1 {{spmd-partition does not know how to partition 'func.call': operand #0 is split over the devices ('tensor<8x4x8xf32>' → 'tensor<2x4x8xf32>') and the op does not infer its result types}}
  %r = func.call @helper(%h) : (tensor<8x4x8xf32>) -> tensor<8x4x8xf32>
  return %r : tensor<8x4x8xf32>
}

// -----

func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}, %wte: tensor<16x8xf32> {nn.param = "wte"}) -> tensor<2x128xf32> {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  // expected-error@+1 {{cannot split the batch of this reshape over 4 devices: the leading dimension of its result 'tensor<2x128xf32>' is not divisible by 4}}
  %r = nn.reshape %h : (tensor<8x4x8xf32>) -> tensor<2x128xf32>
  return %r : tensor<2x128xf32>
}

// -----

// A parameter whose shape repeats the global batch cannot meet the per-device
// activations.
func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}, %wte: tensor<16x8xf32> {nn.param = "wte"},
                      %bias: tensor<8x4x8xf32> {nn.param = "bias"}) -> tensor<8x4x8xf32> {
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  // expected-error@+1 {{cannot partition 'nn.add' over 4 devices:}}
  %r = nn.add %h, %bias : (tensor<8x4x8xf32>, tensor<8x4x8xf32>) -> tensor<8x4x8xf32>
  return %r : tensor<8x4x8xf32>
}

// -----

func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}, %wte: tensor<16x8xf32> {nn.param = "wte"},
                      %bias: tensor<8x4x8xf32> {nn.param = "bias"}) -> (tensor<8x4x8xf32>, tensor<8x4x8xf32>) {
  // expected-error@+1 {{cannot partition this fill: it is used both as a replicated tensor and as a per-device batch shard}}
  %zero = nn.fill {value = 0.0 : f32} : () -> tensor<8x4x8xf32>
  %a = nn.add %zero, %bias : (tensor<8x4x8xf32>, tensor<8x4x8xf32>) -> tensor<8x4x8xf32>
  %h = nn.embedding %tokens, %wte : (tensor<8x4xi32>, tensor<16x8xf32>) -> tensor<8x4x8xf32>
  // expected-note@+1 {{used as a batch shard here}}
  %b = nn.add %zero, %h : (tensor<8x4x8xf32>, tensor<8x4x8xf32>) -> tensor<8x4x8xf32>
  return %a, %b : tensor<8x4x8xf32>, tensor<8x4x8xf32>
}

// -----

func.func @train_step(%tokens: tensor<8x4xi32> {nn.input = "tokens"}, %g: tensor<16x8xf32>) -> tensor<16x8xf32> {
  // expected-error@+1 {{@train_step is already partitioned: it contains 'moe.all_reduce'}}
  %r = moe.all_reduce %g {reduction = "mean"} : (tensor<16x8xf32>) -> tensor<16x8xf32>
  return %r : tensor<16x8xf32>
}

// -----

func.func @train_step(%x: tensor<2x8x16xf32> {nn.input = "tokens"}, %wg: tensor<16x4xf32> {nn.param = "gate"},
                      %w1: tensor<4x16x32xf32> {nn.param = "w1"}, %b1: tensor<4x32xf32> {nn.param = "b1"},
                      %w2: tensor<4x32x16xf32> {nn.param = "w2"}, %b2: tensor<4x16xf32> {nn.param = "b2"}) -> tensor<2x8x16xf32> {
  // expected-error@+1 {{moe.layer 'moe1' must be expanded before spmd-partition; run moe-expand-layers first}}
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>)
      -> (tensor<2x8x16xf32>, tensor<f32>)
  return %y : tensor<2x8x16xf32>
}

// -----

func.func @train_step(
    %x: tensor<8x8xf32> {nn.input = "tokens"},
    %gate: tensor<8x2xf32> {nn.param = "gate"},
    %b1: tensor<2x16xf32> {nn.param = "moe1.b1", moe.layer = "moe1"},
    %b1_m: tensor<2x16xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.b1"},
    %b1_v: tensor<2x16xf32> {nn.opt_state = "adam_v", nn.state_of = "moe1.b1", moe.layer = "moe1"}) -> tensor<2x16xf32> {
  %probs, %ids, %cw = moe.gate %x, %gate {layer = "moe1", top_k = 1 : i64, placement = #moe.placement<world_size = 4, slots_per_device = 1, replicas = [[0], [1]]>}
      : (tensor<8x8xf32>, tensor<8x2xf32>) -> (tensor<8x2xf32>, tensor<8x1xi32>, tensor<8x1xf32>)
  // expected-error@+1 {{the AdamW state of parameter 'moe1.b1' must be @train_step arguments marked moe.layer = "moe1", like the parameter}}
  %p, %m, %v = nn.adamw %b1, %b1, %b1_m, %b1_v {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.0 : f32}
      : (tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>) -> (tensor<2x16xf32>, tensor<2x16xf32>, tensor<2x16xf32>)
  return %p : tensor<2x16xf32>
}

// -----

// expected-error@+1 {{after partitioning, result #0 has type 'tensor<8x4xf32>' but updates input 'images' of type 'tensor<2x4xf32>'}}
func.func @train_step(%images: tensor<8x4xf32> {nn.input = "images"}, %p: tensor<8x4xf32> {nn.param = "p"})
    -> (tensor<8x4xf32> {nn.updates = 0 : i64}) {
  return %p : tensor<8x4xf32>
}
