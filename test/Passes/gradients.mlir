// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step | FileCheck %s
// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step | flexmoe-opt -split-input-file | FileCheck %s

// The gradient rules one by one, each in a small model whose loss is the sum
// of the op's result.

// matmul: dlhs = dy·rhsᵀ, drhs = lhsᵀ·dy.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[L:[^:]*]]: tensor<2x3x4xf32> {nn.param = "lhs"}, %[[R:[^:]*]]: tensor<2x4x5xf32> {nn.param = "rhs"}
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// CHECK:         %[[SEED3:.*]] = nn.reshape %[[SEED]] : (tensor<f32>) -> tensor<1x1x1xf32>
// CHECK:         %[[ZEROS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<2x3x5xf32>
// CHECK:         %[[DY:.*]] = nn.add %[[ZEROS]], %[[SEED3]]
// CHECK:         %[[DL:.*]] = nn.matmul %[[DY]], %[[R]] {transpose_rhs = true} : (tensor<2x3x5xf32>, tensor<2x4x5xf32>) -> tensor<2x3x4xf32>
// CHECK:         %[[DR:.*]] = nn.matmul %[[L]], %[[DY]] {transpose_lhs = true} : (tensor<2x3x4xf32>, tensor<2x3x5xf32>) -> tensor<2x4x5xf32>
// CHECK:         nn.adamw %[[L]], %[[DL]],
// CHECK:         nn.adamw %[[R]], %[[DR]],
func.func @forward(%lhs: tensor<2x3x4xf32> {nn.param = "lhs"},
                   %rhs: tensor<2x4x5xf32> {nn.param = "rhs"}) -> tensor<f32> {
  %y = nn.matmul %lhs, %rhs : (tensor<2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x3x5xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1, 2>} : (tensor<2x3x5xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// matmul with both operands transposed: y = lhsᵀ·rhsᵀ.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[L:[^:]*]]: tensor<2x4x3xf32> {nn.param = "lhs"}, %[[R:[^:]*]]: tensor<2x5x4xf32> {nn.param = "rhs"}
// CHECK:         %[[DY:.*]] = nn.add
// CHECK:         %[[DL:.*]] = nn.matmul %[[R]], %[[DY]] {transpose_lhs = true, transpose_rhs = true} : (tensor<2x5x4xf32>, tensor<2x3x5xf32>) -> tensor<2x4x3xf32>
// CHECK:         %[[DR:.*]] = nn.matmul %[[DY]], %[[L]] {transpose_lhs = true, transpose_rhs = true} : (tensor<2x3x5xf32>, tensor<2x4x3xf32>) -> tensor<2x5x4xf32>
// CHECK:         nn.adamw %[[L]], %[[DL]],
// CHECK:         nn.adamw %[[R]], %[[DR]],
func.func @forward(%lhs: tensor<2x4x3xf32> {nn.param = "lhs"},
                   %rhs: tensor<2x5x4xf32> {nn.param = "rhs"}) -> tensor<f32> {
  %y = nn.matmul %lhs, %rhs {transpose_lhs = true, transpose_rhs = true} : (tensor<2x4x3xf32>, tensor<2x5x4xf32>) -> tensor<2x3x5xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1, 2>} : (tensor<2x3x5xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// matmul with a transposed lhs and a broadcast 2-D rhs: dlhs is computed
// untransposed and transposed after; drhs is summed over the batch.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[L:[^:]*]]: tensor<2x4x3xf32> {nn.param = "lhs"}, %[[R:[^:]*]]: tensor<4x5xf32> {nn.param = "rhs"}
// CHECK:         %[[DY:.*]] = nn.add
// CHECK:         %[[DA:.*]] = nn.matmul %[[DY]], %[[R]] {transpose_rhs = true} : (tensor<2x3x5xf32>, tensor<4x5xf32>) -> tensor<2x3x4xf32>
// CHECK:         %[[DL:.*]] = nn.transpose %[[DA]] {permutation = array<i64: 0, 2, 1>} : (tensor<2x3x4xf32>) -> tensor<2x4x3xf32>
// CHECK:         %[[DRB:.*]] = nn.matmul %[[L]], %[[DY]] : (tensor<2x4x3xf32>, tensor<2x3x5xf32>) -> tensor<2x4x5xf32>
// CHECK:         %[[DR:.*]] = nn.reduce_sum %[[DRB]] {dims = array<i64: 0>} : (tensor<2x4x5xf32>) -> tensor<4x5xf32>
// CHECK:         nn.adamw %[[L]], %[[DL]],
// CHECK:         nn.adamw %[[R]], %[[DR]],
func.func @forward(%lhs: tensor<2x4x3xf32> {nn.param = "lhs"},
                   %rhs: tensor<4x5xf32> {nn.param = "rhs"}) -> tensor<f32> {
  %y = nn.matmul %lhs, %rhs {transpose_lhs = true} : (tensor<2x4x3xf32>, tensor<4x5xf32>) -> tensor<2x3x5xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1, 2>} : (tensor<2x3x5xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// matmul with a transposed, broadcast 2-D rhs: y = lhs·rhsᵀ.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[L:[^:]*]]: tensor<2x3x4xf32> {nn.param = "lhs"}, %[[R:[^:]*]]: tensor<5x4xf32> {nn.param = "rhs"}
// CHECK:         %[[DY:.*]] = nn.add
// CHECK:         %[[DL:.*]] = nn.matmul %[[DY]], %[[R]] : (tensor<2x3x5xf32>, tensor<5x4xf32>) -> tensor<2x3x4xf32>
// CHECK:         %[[DRB:.*]] = nn.matmul %[[DY]], %[[L]] {transpose_lhs = true} : (tensor<2x3x5xf32>, tensor<2x3x4xf32>) -> tensor<2x5x4xf32>
// CHECK:         %[[DR:.*]] = nn.reduce_sum %[[DRB]] {dims = array<i64: 0>} : (tensor<2x5x4xf32>) -> tensor<5x4xf32>
// CHECK:         nn.adamw %[[L]], %[[DL]],
// CHECK:         nn.adamw %[[R]], %[[DR]],
func.func @forward(%lhs: tensor<2x3x4xf32> {nn.param = "lhs"},
                   %rhs: tensor<5x4xf32> {nn.param = "rhs"}) -> tensor<f32> {
  %y = nn.matmul %lhs, %rhs {transpose_rhs = true} : (tensor<2x3x4xf32>, tensor<5x4xf32>) -> tensor<2x3x5xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1, 2>} : (tensor<2x3x5xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// softmax (from its output), dropout (the same mask on dy) and scale; the
// input x needs no gradient, so d(x) = dh·w is not built.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<2x8xf32> {nn.input = "x"}, %[[W:[^:]*]]: tensor<2x8xf32> {nn.param = "w"}
// CHECK:         %[[H:.*]] = nn.mul %[[X]], %[[W]]
// CHECK:         %[[S:.*]] = nn.softmax %[[H]] {axis = 1 : i64}
// CHECK:         %[[DC:.*]] = nn.add
// CHECK:         %[[DD:.*]] = nn.scale %[[DC]] {factor = 5.000000e-01 : f32} : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK:         %[[DS:.*]] = nn.dropout %[[DD]] {rate = 1.250000e-01 : f32, seed = 7 : i64} : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK:         %[[DH:.*]] = nn.softmax_grad %[[S]], %[[DS]] {axis = 1 : i64} : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK-NOT:     nn.mul %[[DH]], %[[W]]
// CHECK:         %[[DW:.*]] = nn.mul %[[DH]], %[[X]]
// CHECK-NOT:     nn.mul
// CHECK:         nn.adamw %[[W]], %[[DW]],
func.func @forward(%x: tensor<2x8xf32> {nn.input = "x"},
                   %w: tensor<2x8xf32> {nn.param = "w"}) -> tensor<f32> {
  %h = nn.mul %x, %w : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
  %s = nn.softmax %h {axis = 1 : i64} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %d = nn.dropout %s {rate = 0.125 : f32, seed = 7 : i64} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %c = nn.scale %d {factor = 0.5 : f32} : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %loss = nn.reduce_sum %c {dims = array<i64: 0, 1>} : (tensor<2x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// transpose (inverse permutation), roll (negated shifts), reshape (back).
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[W:[^:]*]]: tensor<2x3x4xf32> {nn.param = "w"}
// CHECK:         %[[SEED1:.*]] = nn.reshape %{{.*}} : (tensor<f32>) -> tensor<1xf32>
// CHECK:         %[[ZEROS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<24xf32>
// CHECK:         %[[DFLAT:.*]] = nn.add %[[ZEROS]], %[[SEED1]] : (tensor<24xf32>, tensor<1xf32>) -> tensor<24xf32>
// CHECK:         %[[DR:.*]] = nn.reshape %[[DFLAT]] : (tensor<24xf32>) -> tensor<3x4x2xf32>
// CHECK:         %[[DT:.*]] = nn.roll %[[DR]] {dims = array<i64: 0, 2>, shifts = array<i64: -1, 2>} : (tensor<3x4x2xf32>) -> tensor<3x4x2xf32>
// CHECK:         %[[DW:.*]] = nn.transpose %[[DT]] {permutation = array<i64: 2, 0, 1>} : (tensor<3x4x2xf32>) -> tensor<2x3x4xf32>
// CHECK:         nn.adamw %[[W]], %[[DW]],
func.func @forward(%w: tensor<2x3x4xf32> {nn.param = "w"}) -> tensor<f32> {
  %t = nn.transpose %w {permutation = array<i64: 1, 2, 0>} : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
  %r = nn.roll %t {shifts = array<i64: 1, -2>, dims = array<i64: 0, 2>} : (tensor<3x4x2xf32>) -> tensor<3x4x2xf32>
  %flat = nn.reshape %r : (tensor<3x4x2xf32>) -> tensor<24xf32>
  %loss = nn.reduce_sum %flat {dims = array<i64: 0>} : (tensor<24xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// reduce_sum with keep_dims: the gradient already has the kept shape and is
// only broadcast back.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[W:[^:]*]]: tensor<2x3x4xf32> {nn.param = "w"}
// CHECK:         %[[DR:.*]] = nn.add %{{.*}}, %{{.*}} : (tensor<2x3x1xf32>, tensor<1x1x1xf32>) -> tensor<2x3x1xf32>
// CHECK:         %[[ZEROS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<2x3x4xf32>
// CHECK:         %[[DW:.*]] = nn.add %[[ZEROS]], %[[DR]] : (tensor<2x3x4xf32>, tensor<2x3x1xf32>) -> tensor<2x3x4xf32>
// CHECK:         nn.adamw %[[W]], %[[DW]],
func.func @forward(%w: tensor<2x3x4xf32> {nn.param = "w"}) -> tensor<f32> {
  %r = nn.reduce_sum %w {dims = array<i64: 2>, keep_dims = true} : (tensor<2x3x4xf32>) -> tensor<2x3x1xf32>
  %loss = nn.reduce_sum %r {dims = array<i64: 0, 1, 2>} : (tensor<2x3x1xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A value used twice by one op: both gradients are summed.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[W:[^:]*]]: tensor<4xf32> {nn.param = "w"}
// CHECK:         %[[DY:.*]] = nn.add
// CHECK:         %[[D1:.*]] = nn.mul %[[DY]], %[[W]]
// CHECK:         %[[D2:.*]] = nn.mul %[[DY]], %[[W]]
// CHECK:         %[[DW:.*]] = nn.add %[[D1]], %[[D2]]
// CHECK:         nn.adamw %[[W]], %[[DW]],
func.func @forward(%w: tensor<4xf32> {nn.param = "w"}) -> tensor<f32> {
  %sq = nn.mul %w, %w : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %loss = nn.reduce_sum %sq {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// An MoE layer without an auxiliary loss and with a capacity: the gate gets
// zeros as the gradient of its probabilities.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<4x8xf32> {nn.param = "x"}, %[[WG:[^:]*]]: tensor<8x2xf32> {nn.param = "gate"}
// CHECK:         %[[PROBS:.*]], %[[IDS:.*]], %[[CW:.*]] = moe.gate %[[X]], %[[WG]]
// CHECK:         %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch %[[X]], %[[IDS]]
// CHECK:         %[[DOUT:.*]], %[[DCW:.*]] = moe.combine_grad
// CHECK:         %[[DROUTED:.*]], %[[DW1:.*]], %[[DB1:.*]], %[[DW2:.*]], %[[DB2:.*]] = moe.experts_grad %[[ROUTED]], %[[COUNTS]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[DOUT]] {activation = "relu", capacity = 2 : i64, layer = "moe1"}
// CHECK:         %[[DX1:.*]] = moe.dispatch_grad %[[DROUTED]], %[[POS]] {layer = "moe1"} : (tensor<4x8xf32>, tensor<4x1xi32>) -> tensor<4x8xf32>
// CHECK:         %[[NOPROBS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<4x2xf32>
// CHECK:         %[[DX2:.*]], %[[DWG:.*]] = moe.gate_grad %[[X]], %[[WG]], %[[PROBS]], %[[IDS]], %[[DCW]], %[[NOPROBS]] {layer = "moe1", top_k = 1 : i64}
// CHECK:         %[[DX:.*]] = nn.add %[[DX1]], %[[DX2]]
// CHECK:         nn.adamw %[[X]], %[[DX]],
// CHECK:         nn.adamw %[[WG]], %[[DWG]],
func.func @forward(%x: tensor<4x8xf32> {nn.param = "x"},
                   %wg: tensor<8x2xf32> {nn.param = "gate"},
                   %w1: tensor<2x8x16xf32> {nn.param = "w1", moe.layer = "moe1"},
                   %b1: tensor<2x16xf32> {nn.param = "b1", moe.layer = "moe1"},
                   %w2: tensor<2x16x8xf32> {nn.param = "w2", moe.layer = "moe1"},
                   %b2: tensor<2x8xf32> {nn.param = "b2", moe.layer = "moe1"}) -> tensor<f32> {
  %probs, %ids, %cw = moe.gate %x, %wg {layer = "moe1", top_k = 1 : i64}
      : (tensor<4x8xf32>, tensor<8x2xf32>) -> (tensor<4x2xf32>, tensor<4x1xi32>, tensor<4x1xf32>)
  %routed, %pos, %counts = moe.dispatch %x, %ids {layer = "moe1", num_experts = 2 : i64, capacity = 2 : i64}
      : (tensor<4x8xf32>, tensor<4x1xi32>) -> (tensor<4x8xf32>, tensor<4x1xi32>, tensor<2xi32>)
  %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "relu", capacity = 2 : i64}
      : (tensor<4x8xf32>, tensor<2xi32>, tensor<2x8x16xf32>, tensor<2x16xf32>, tensor<2x16x8xf32>, tensor<2x8xf32>) -> tensor<4x8xf32>
  %y = moe.combine %out, %pos, %cw {layer = "moe1"}
      : (tensor<4x8xf32>, tensor<4x1xi32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1>} : (tensor<4x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A parameter that does not affect the loss is updated with a zero gradient
// (so that weight decay still applies), with a warning.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[W:[^:]*]]: tensor<4xf32> {nn.param = "w"}, %[[UNUSED:[^:]*]]: tensor<3xf32> {nn.param = "unused"}
// CHECK:         %[[ZERO:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<3xf32>
// CHECK:         nn.adamw %[[UNUSED]], %[[ZERO]],
func.func @forward(%w: tensor<4xf32> {nn.param = "w"},
                   // expected-warning @+1 {{parameter 'unused' does not affect the loss; its gradient is zero}}
                   %unused: tensor<3xf32> {nn.param = "unused"}) -> tensor<f32> {
  %loss = nn.reduce_sum %w {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// A loss that depends on no parameter: nothing is differentiated (not even
// the op without a gradient rule), every parameter gets a zero gradient.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<4xf32> {nn.input = "x"}, %[[W:[^:]*]]: tensor<4xf32> {nn.param = "w"}
// CHECK-NOT:     nn.fill {value = 1.000000e+00
// CHECK:         %[[ZERO:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<4xf32>
// CHECK:         nn.adamw %[[W]], %[[ZERO]],
func.func @forward(%x: tensor<4xf32> {nn.input = "x"},
                   // expected-warning @+1 {{parameter 'w' does not affect the loss; its gradient is zero}}
                   %w: tensor<4xf32> {nn.param = "w"}) -> tensor<f32> {
  %g = nn.gelu_grad %x, %x : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %loss = nn.reduce_sum %g {dims = array<i64: 0>} : (tensor<4xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// linear on a 3-D input: the bias gradient sums over both leading dimensions.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<2x3x4xf32> {nn.input = "x"}, %[[W:[^:]*]]: tensor<4x5xf32> {nn.param = "w"}, %[[B:[^:]*]]: tensor<5xf32> {nn.param = "b"}
// CHECK:         %[[DY:.*]] = nn.add
// CHECK:         %{{.*}}, %[[DW:.*]] = nn.linear_grad %[[X]], %[[W]], %[[DY]] : (tensor<2x3x4xf32>, tensor<4x5xf32>, tensor<2x3x5xf32>) -> (tensor<2x3x4xf32>, tensor<4x5xf32>)
// CHECK:         %[[DB:.*]] = nn.reduce_sum %[[DY]] {dims = array<i64: 0, 1>} : (tensor<2x3x5xf32>) -> tensor<5xf32>
// CHECK:         nn.adamw %[[W]], %[[DW]],
// CHECK:         nn.adamw %[[B]], %[[DB]],
func.func @forward(%x: tensor<2x3x4xf32> {nn.input = "x"},
                   %w: tensor<4x5xf32> {nn.param = "w"},
                   %b: tensor<5xf32> {nn.param = "b"}) -> tensor<f32> {
  %y = nn.linear %x, %w, %b : (tensor<2x3x4xf32>, tensor<4x5xf32>, tensor<5xf32>) -> tensor<2x3x5xf32>
  %loss = nn.reduce_sum %y {dims = array<i64: 0, 1, 2>} : (tensor<2x3x5xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Self-attention with q = k = v: the three gradients are summed.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<1x4x8xf32> {nn.param = "x"}
// CHECK:         %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = nn.attention_grad %[[X]], %[[X]], %[[X]], %{{.*}} {num_heads = 2 : i64}
// CHECK:         %[[DQK:.*]] = nn.add %[[DQ]], %[[DK]]
// CHECK:         %[[DX:.*]] = nn.add %[[DQK]], %[[DV]]
// CHECK:         nn.adamw %[[X]], %[[DX]],
func.func @forward(%x: tensor<1x4x8xf32> {nn.param = "x"}) -> tensor<f32> {
  %a = nn.attention %x, %x, %x {num_heads = 2 : i64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %loss = nn.reduce_sum %a {dims = array<i64: 0, 1, 2>} : (tensor<1x4x8xf32>) -> tensor<f32>
  return %loss : tensor<f32>
}

// -----

// Only the auxiliary loss depends on the gate: its combine weights get
// zeros as their gradient.
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<4x8xf32> {nn.input = "x"}, %[[WG:[^:]*]]: tensor<8x2xf32> {nn.param = "gate"}
// CHECK:         %[[PROBS:.*]], %[[IDS:.*]], %{{.*}} = moe.gate %[[X]], %[[WG]]
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32}
// CHECK:         %[[DPROBS:.*]] = moe.aux_loss_grad %[[PROBS]], %[[IDS]], %[[SEED]]
// CHECK:         %[[NOWEIGHTS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<4x1xf32>
// CHECK:         %{{.*}}, %[[DWG:.*]] = moe.gate_grad %[[X]], %[[WG]], %[[PROBS]], %[[IDS]], %[[NOWEIGHTS]], %[[DPROBS]]
// CHECK:         nn.adamw %[[WG]], %[[DWG]],
func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                   %wg: tensor<8x2xf32> {nn.param = "gate"}) -> tensor<f32> {
  %probs, %ids, %cw = moe.gate %x, %wg {layer = "moe1", top_k = 1 : i64}
      : (tensor<4x8xf32>, tensor<8x2xf32>) -> (tensor<4x2xf32>, tensor<4x1xi32>, tensor<4x1xf32>)
  %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32}
      : (tensor<4x2xf32>, tensor<4x1xi32>) -> tensor<f32>
  return %aux : tensor<f32>
}
