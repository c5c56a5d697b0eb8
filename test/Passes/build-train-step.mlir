// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step | FileCheck %s
// The output is valid IR that parses and verifies again.
// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step | flexmoe-opt -split-input-file | FileCheck %s
// The AdamW hyper-parameters come from the pass options.
// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics -build-train-step="lr=0.5 beta1=0.25 beta2=0.75 epsilon=0.125 weight-decay=0.0625" | FileCheck %s --check-prefix=OPTS

// A two-layer MLP: linear, gelu, linear, cross entropy. The labels come after
// the parameters in @forward; inputs come first in @train_step.

// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<4x8xf32> {nn.input = "x"},
// CHECK-SAME:    %[[LABELS:[^:]*]]: tensor<4xi32> {nn.input = "labels"},
// CHECK-SAME:    %[[W1:[^:]*]]: tensor<8x16xf32> {nn.init = "normal", nn.init_std = 2.000000e-02 : f32, nn.param = "w1"},
// CHECK-SAME:    %[[B1:[^:]*]]: tensor<16xf32> {nn.init = "zeros", nn.param = "b1"},
// CHECK-SAME:    %[[W2:[^:]*]]: tensor<16x10xf32> {nn.param = "w2"},
// CHECK-SAME:    %[[B2:[^:]*]]: tensor<10xf32> {nn.param = "b2"},
// CHECK-SAME:    %[[MW1:[^:]*]]: tensor<8x16xf32> {nn.opt_state = "adam_m", nn.state_of = "w1"},
// CHECK-SAME:    %[[MB1:[^:]*]]: tensor<16xf32> {nn.opt_state = "adam_m", nn.state_of = "b1"},
// CHECK-SAME:    %[[MW2:[^:]*]]: tensor<16x10xf32> {nn.opt_state = "adam_m", nn.state_of = "w2"},
// CHECK-SAME:    %[[MB2:[^:]*]]: tensor<10xf32> {nn.opt_state = "adam_m", nn.state_of = "b2"},
// CHECK-SAME:    %[[VW1:[^:]*]]: tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "w1"},
// CHECK-SAME:    %[[VB1:[^:]*]]: tensor<16xf32> {nn.opt_state = "adam_v", nn.state_of = "b1"},
// CHECK-SAME:    %[[VW2:[^:]*]]: tensor<16x10xf32> {nn.opt_state = "adam_v", nn.state_of = "w2"},
// CHECK-SAME:    %[[VB2:[^:]*]]: tensor<10xf32> {nn.opt_state = "adam_v", nn.state_of = "b2"})
// CHECK-SAME:    -> (tensor<f32> {nn.output = "loss"},
// CHECK-SAME:        tensor<8x16xf32> {nn.updates = 2 : i64}, tensor<16xf32> {nn.updates = 3 : i64},
// CHECK-SAME:        tensor<16x10xf32> {nn.updates = 4 : i64}, tensor<10xf32> {nn.updates = 5 : i64},
// CHECK-SAME:        tensor<8x16xf32> {nn.updates = 6 : i64}, tensor<16xf32> {nn.updates = 7 : i64},
// CHECK-SAME:        tensor<16x10xf32> {nn.updates = 8 : i64}, tensor<10xf32> {nn.updates = 9 : i64},
// CHECK-SAME:        tensor<8x16xf32> {nn.updates = 10 : i64}, tensor<16xf32> {nn.updates = 11 : i64},
// CHECK-SAME:        tensor<16x10xf32> {nn.updates = 12 : i64}, tensor<10xf32> {nn.updates = 13 : i64})
// Forward.
// CHECK:         %[[H:.*]] = nn.linear %[[X]], %[[W1]], %[[B1]]
// CHECK:         %[[A:.*]] = nn.gelu %[[H]] {approximate = "none"}
// CHECK:         %[[LOGITS:.*]] = nn.linear %[[A]], %[[W2]], %[[B2]]
// CHECK:         %[[LOSS:.*]] = nn.cross_entropy %[[LOGITS]], %[[LABELS]]
// Backward, in reverse order, seeded with 1.
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// CHECK:         %[[DLOGITS:.*]] = nn.cross_entropy_grad %[[LOGITS]], %[[LABELS]], %[[SEED]] : (tensor<4x10xf32>, tensor<4xi32>, tensor<f32>) -> tensor<4x10xf32>
// CHECK:         %[[DA:.*]], %[[DW2:.*]] = nn.linear_grad %[[A]], %[[W2]], %[[DLOGITS]] : (tensor<4x16xf32>, tensor<16x10xf32>, tensor<4x10xf32>) -> (tensor<4x16xf32>, tensor<16x10xf32>)
// CHECK:         %[[DB2:.*]] = nn.reduce_sum %[[DLOGITS]] {dims = array<i64: 0>} : (tensor<4x10xf32>) -> tensor<10xf32>
// CHECK:         %[[DH:.*]] = nn.gelu_grad %[[H]], %[[DA]] {approximate = "none"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
// The input x gets no update, but dx comes with dw1 from the same op.
// CHECK:         %{{.*}}, %[[DW1:.*]] = nn.linear_grad %[[X]], %[[W1]], %[[DH]]
// CHECK:         %[[DB1:.*]] = nn.reduce_sum %[[DH]] {dims = array<i64: 0>} : (tensor<4x16xf32>) -> tensor<16xf32>
// One AdamW update per parameter, in parameter order.
// CHECK:         %[[NW1:[^,]*]], %[[NMW1:[^,]*]], %[[NVW1:[^ ]*]] = nn.adamw %[[W1]], %[[DW1]], %[[MW1]], %[[VW1]] {beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32, epsilon = 9.99999993E-9 : f32, lr = 1.000000e-03 : f32, weight_decay = 0.00999999977 : f32} : (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x16xf32>)
// CHECK:         %[[NB1:[^,]*]], %[[NMB1:[^,]*]], %[[NVB1:[^ ]*]] = nn.adamw %[[B1]], %[[DB1]], %[[MB1]], %[[VB1]]
// CHECK:         %[[NW2:[^,]*]], %[[NMW2:[^,]*]], %[[NVW2:[^ ]*]] = nn.adamw %[[W2]], %[[DW2]], %[[MW2]], %[[VW2]]
// CHECK:         %[[NB2:[^,]*]], %[[NMB2:[^,]*]], %[[NVB2:[^ ]*]] = nn.adamw %[[B2]], %[[DB2]], %[[MB2]], %[[VB2]]
// CHECK:         return %[[LOSS]], %[[NW1]], %[[NB1]], %[[NW2]], %[[NB2]], %[[NMW1]], %[[NMB1]], %[[NMW2]], %[[NMB2]], %[[NVW1]], %[[NVB1]], %[[NVW2]], %[[NVB2]] :
// CHECK-NOT:   func.func @forward

// OPTS-LABEL: func.func @train_step(
// OPTS-COUNT-4: nn.adamw {{.*}} {beta1 = 2.500000e-01 : f32, beta2 = 7.500000e-01 : f32, epsilon = 1.250000e-01 : f32, lr = 5.000000e-01 : f32, weight_decay = 6.250000e-02 : f32}

module attributes {flexmoe.model = "mlp"} {
  func.func @forward(%x: tensor<4x8xf32> {nn.input = "x"},
                     %w1: tensor<8x16xf32> {nn.param = "w1", nn.init = "normal", nn.init_std = 0.02 : f32},
                     %b1: tensor<16xf32> {nn.param = "b1", nn.init = "zeros"},
                     %w2: tensor<16x10xf32> {nn.param = "w2"},
                     %b2: tensor<10xf32> {nn.param = "b2"},
                     %labels: tensor<4xi32> {nn.input = "labels"}) -> tensor<f32> {
    %h = nn.linear %x, %w1, %b1 : (tensor<4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
    %a = nn.gelu %h {approximate = "none"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
    %logits = nn.linear %a, %w2, %b2 : (tensor<4x16xf32>, tensor<16x10xf32>, tensor<10xf32>) -> tensor<4x10xf32>
    %loss = nn.cross_entropy %logits, %labels : (tensor<4x10xf32>, tensor<4xi32>) -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// An expanded MoE layer (docs/IR.md, Stage 3) between an embedding and a
// head; the layer's auxiliary loss is added to the cross entropy. The gate's
// input gets gradients through both the dispatch and the gate, which are
// summed.

// Every backward op of the layer keeps its `layer` and `placement`.
// CHECK:       #[[PLACEMENT:.+]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[\[}}0], [1], [0], [1]]>
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[TOKENS:[^:]*]]: tensor<2x4xi32> {nn.input = "tokens"},
// CHECK-SAME:    %[[LABELS:[^:]*]]: tensor<2x4xi32> {nn.input = "labels"},
// CHECK-SAME:    %[[WTE:[^:]*]]: tensor<32x8xf32> {nn.param = "wte"},
// CHECK-SAME:    %[[WG:[^:]*]]: tensor<8x4xf32> {nn.param = "moe1.gate"},
// CHECK-SAME:    %[[W1:[^:]*]]: tensor<4x8x16xf32> {moe.layer = "moe1", nn.param = "moe1.w1"},
// CHECK-SAME:    %[[B1:[^:]*]]: tensor<4x16xf32> {moe.layer = "moe1", nn.param = "moe1.b1"},
// CHECK-SAME:    %[[W2:[^:]*]]: tensor<4x16x8xf32> {moe.layer = "moe1", nn.param = "moe1.w2"},
// CHECK-SAME:    %[[B2:[^:]*]]: tensor<4x8xf32> {moe.layer = "moe1", nn.param = "moe1.b2"},
// CHECK-SAME:    %[[HEAD:[^:]*]]: tensor<8x32xf32> {nn.param = "head"},
// CHECK-SAME:    {nn.opt_state = "adam_m", nn.state_of = "wte"},
// CHECK-SAME:    {nn.opt_state = "adam_m", nn.state_of = "moe1.gate"},
// CHECK-SAME:    %[[MW1:[^:]*]]: tensor<4x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w1"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.b1"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w2"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.b2"},
// CHECK-SAME:    {nn.opt_state = "adam_m", nn.state_of = "head"},
// CHECK-SAME:    {nn.opt_state = "adam_v", nn.state_of = "wte"},
// CHECK-SAME:    {nn.opt_state = "adam_v", nn.state_of = "moe1.gate"},
// CHECK-SAME:    %[[VW1:[^:]*]]: tensor<4x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.w1"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b1"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.w2"},
// CHECK-SAME:    {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b2"},
// CHECK-SAME:    {nn.opt_state = "adam_v", nn.state_of = "head"})
// CHECK-SAME:    -> (tensor<f32> {nn.output = "loss"}, tensor<32x8xf32> {nn.updates = 2 : i64},
// CHECK-SAME:    tensor<8x32xf32> {nn.updates = 22 : i64})
// CHECK:         %[[X:.*]] = nn.embedding %[[TOKENS]], %[[WTE]]
// CHECK:         %[[XT:.*]] = nn.reshape %[[X]]
// CHECK:         %[[PROBS:.*]], %[[IDS:.*]], %[[CW:.*]] = moe.gate %[[XT]], %[[WG]]
// CHECK:         %[[AUX:.*]] = moe.aux_loss %[[PROBS]], %[[IDS]]
// CHECK:         %[[ROUTED:.*]], %[[POS:.*]], %[[COUNTS:.*]] = moe.dispatch %[[XT]], %[[IDS]]
// CHECK:         %[[OUT:.*]] = moe.experts %[[ROUTED]], %[[COUNTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]]
// CHECK:         %[[YT:.*]] = moe.combine %[[OUT]], %[[POS]], %[[CW]]
// CHECK:         %[[Y:.*]] = nn.reshape %[[YT]]
// CHECK:         %[[LOGITS:.*]] = nn.linear %[[Y]], %[[HEAD]]
// CHECK:         %[[CE:.*]] = nn.cross_entropy %[[LOGITS]], %[[LABELS]]
// CHECK:         %[[LOSS:.*]] = nn.add %[[CE]], %[[AUX]]
// The seed flows unchanged through the scalar add to both losses.
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// CHECK:         %[[DLOGITS:.*]] = nn.cross_entropy_grad %[[LOGITS]], %[[LABELS]], %[[SEED]]
// CHECK:         %[[DY:.*]], %[[DHEAD:.*]] = nn.linear_grad %[[Y]], %[[HEAD]], %[[DLOGITS]]
// CHECK:         %[[DYT:.*]] = nn.reshape %[[DY]] : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
// CHECK:         %[[DOUT:.*]], %[[DCW:.*]] = moe.combine_grad %[[OUT]], %[[POS]], %[[CW]], %[[DYT]] {layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         %[[DROUTED:.*]], %[[DW1:.*]], %[[DB1:.*]], %[[DW2:.*]], %[[DB2:.*]] = moe.experts_grad %[[ROUTED]], %[[COUNTS]], %[[W1]], %[[B1]], %[[W2]], %[[B2]], %[[DOUT]] {capacity = 0 : i64, layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK-SAME:      -> (tensor<16x8xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>)
// CHECK:         %[[DXT_DISPATCH:.*]] = moe.dispatch_grad %[[DROUTED]], %[[POS]] {layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK-SAME:      (tensor<16x8xf32>, tensor<8x2xi32>) -> tensor<8x8xf32>
// CHECK:         %[[DPROBS:.*]] = moe.aux_loss_grad %[[PROBS]], %[[IDS]], %[[SEED]] {coef = 0.00999999977 : f32, layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         %[[DXT_GATE:.*]], %[[DWG:.*]] = moe.gate_grad %[[XT]], %[[WG]], %[[PROBS]], %[[IDS]], %[[DCW]], %[[DPROBS]] {layer = "moe1", placement = #[[PLACEMENT]], top_k = 2 : i64}
// CHECK:         %[[DXT:.*]] = nn.add %[[DXT_DISPATCH]], %[[DXT_GATE]] : (tensor<8x8xf32>, tensor<8x8xf32>) -> tensor<8x8xf32>
// CHECK:         %[[DX:.*]] = nn.reshape %[[DXT]] : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
// CHECK:         %[[DWTE:.*]] = nn.embedding_grad %[[TOKENS]], %[[DX]] {vocab_size = 32 : i64} : (tensor<2x4xi32>, tensor<2x4x8xf32>) -> tensor<32x8xf32>
// CHECK:         nn.adamw %[[WTE]], %[[DWTE]],
// CHECK:         nn.adamw %[[WG]], %[[DWG]],
// CHECK:         nn.adamw %[[W1]], %[[DW1]], %[[MW1]], %[[VW1]]
// CHECK:         nn.adamw %[[B1]], %[[DB1]],
// CHECK:         nn.adamw %[[W2]], %[[DW2]],
// CHECK:         nn.adamw %[[B2]], %[[DB2]],
// CHECK:         nn.adamw %[[HEAD]], %[[DHEAD]],
// CHECK:         return %[[LOSS]],

module attributes {flexmoe.world_size = 2 : i64} {
  func.func @forward(%tokens: tensor<2x4xi32> {nn.input = "tokens"},
                     %labels: tensor<2x4xi32> {nn.input = "labels"},
                     %wte: tensor<32x8xf32> {nn.param = "wte"},
                     %wg: tensor<8x4xf32> {nn.param = "moe1.gate"},
                     %w1: tensor<4x8x16xf32> {nn.param = "moe1.w1", moe.layer = "moe1"},
                     %b1: tensor<4x16xf32> {nn.param = "moe1.b1", moe.layer = "moe1"},
                     %w2: tensor<4x16x8xf32> {nn.param = "moe1.w2", moe.layer = "moe1"},
                     %b2: tensor<4x8xf32> {nn.param = "moe1.b2", moe.layer = "moe1"},
                     %head: tensor<8x32xf32> {nn.param = "head"}) -> tensor<f32> {
    %x = nn.embedding %tokens, %wte : (tensor<2x4xi32>, tensor<32x8xf32>) -> tensor<2x4x8xf32>
    %xt = nn.reshape %x : (tensor<2x4x8xf32>) -> tensor<8x8xf32>
    %probs, %ids, %cw = moe.gate %xt, %wg {layer = "moe1", top_k = 2 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<8x8xf32>, tensor<8x4xf32>) -> (tensor<8x4xf32>, tensor<8x2xi32>, tensor<8x2xf32>)
    %aux = moe.aux_loss %probs, %ids {layer = "moe1", coef = 0.01 : f32, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<8x4xf32>, tensor<8x2xi32>) -> tensor<f32>
    %routed, %pos, %counts = moe.dispatch %xt, %ids {layer = "moe1", num_experts = 4 : i64, capacity = 0 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<8x8xf32>, tensor<8x2xi32>) -> (tensor<16x8xf32>, tensor<8x2xi32>, tensor<4xi32>)
    %out = moe.experts %routed, %counts, %w1, %b1, %w2, %b2 {layer = "moe1", activation = "gelu", capacity = 0 : i64, placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<16x8xf32>, tensor<4xi32>, tensor<4x8x16xf32>, tensor<4x16xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>) -> tensor<16x8xf32>
    %yt = moe.combine %out, %pos, %cw {layer = "moe1", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [1], [0], [1]]>}
        : (tensor<16x8xf32>, tensor<8x2xi32>, tensor<8x2xf32>) -> tensor<8x8xf32>
    %y = nn.reshape %yt : (tensor<8x8xf32>) -> tensor<2x4x8xf32>
    %logits = nn.linear %y, %head : (tensor<2x4x8xf32>, tensor<8x32xf32>) -> tensor<2x4x32xf32>
    %ce = nn.cross_entropy %logits, %labels : (tensor<2x4x32xf32>, tensor<2x4xi32>) -> tensor<f32>
    %loss = nn.add %ce, %aux : (tensor<f32>, tensor<f32>) -> tensor<f32>
    return %loss : tensor<f32>
  }
}

// -----

// A residual: %e feeds both the gelu and the add, so its two gradients are
// summed with nn.add. The broadcast operands of the adds and the mul get
// their gradients summed back to their own shapes.

// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<2x4x8xf32> {nn.input = "x"},
// CHECK-SAME:    %[[W:[^:]*]]: tensor<8x8xf32> {nn.param = "w"},
// CHECK-SAME:    %[[BIAS:[^:]*]]: tensor<8xf32> {nn.param = "bias"},
// CHECK-SAME:    %[[GAIN:[^:]*]]: tensor<4x1xf32> {nn.param = "gain"},
// CHECK:         %[[E:.*]] = nn.linear %[[X]], %[[W]] :
// CHECK:         %[[G:.*]] = nn.gelu %[[E]]
// CHECK:         %[[R:.*]] = nn.add %[[G]], %[[E]]
// CHECK:         %[[RB:.*]] = nn.add %[[R]], %[[BIAS]]
// CHECK:         %[[S:.*]] = nn.mul %[[RB]], %[[GAIN]]
// CHECK:         %[[T:.*]] = nn.reduce_sum %[[S]] {dims = array<i64: 0, 1, 2>}
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
// reduce_sum: the seed is reshaped to rank 3 and broadcast over x's shape.
// CHECK:         %[[SEED3:.*]] = nn.reshape %[[SEED]] : (tensor<f32>) -> tensor<1x1x1xf32>
// CHECK:         %[[ZEROS:.*]] = nn.fill {value = 0.000000e+00 : f32} : () -> tensor<2x4x8xf32>
// CHECK:         %[[DS:.*]] = nn.add %[[ZEROS]], %[[SEED3]] : (tensor<2x4x8xf32>, tensor<1x1x1xf32>) -> tensor<2x4x8xf32>
// mul: d(rb) = ds·gain; d(gain) = Σ ds·rb over the broadcast dims 0 and 2.
// CHECK:         %[[DRB:.*]] = nn.mul %[[DS]], %[[GAIN]] : (tensor<2x4x8xf32>, tensor<4x1xf32>) -> tensor<2x4x8xf32>
// CHECK:         %[[DSRB:.*]] = nn.mul %[[DS]], %[[RB]]
// CHECK:         %[[DGAIN3:.*]] = nn.reduce_sum %[[DSRB]] {dims = array<i64: 0, 2>, keep_dims = true} : (tensor<2x4x8xf32>) -> tensor<1x4x1xf32>
// CHECK:         %[[DGAIN:.*]] = nn.reshape %[[DGAIN3]] : (tensor<1x4x1xf32>) -> tensor<4x1xf32>
// add of the bias: only the leading dimensions are summed.
// CHECK:         %[[DBIAS:.*]] = nn.reduce_sum %[[DRB]] {dims = array<i64: 0, 1>} : (tensor<2x4x8xf32>) -> tensor<8xf32>
// The residual: dr goes to both the gelu and %e; their sum is d(e).
// CHECK:         %[[DG:.*]] = nn.gelu_grad %[[E]], %[[DRB]]
// CHECK:         %[[DE:.*]] = nn.add %[[DRB]], %[[DG]] : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK:         %{{.*}}, %[[DW:.*]] = nn.linear_grad %[[X]], %[[W]], %[[DE]]
// CHECK:         nn.adamw %[[W]], %[[DW]],
// CHECK:         nn.adamw %[[BIAS]], %[[DBIAS]],
// CHECK:         nn.adamw %[[GAIN]], %[[DGAIN]],

func.func @forward(%x: tensor<2x4x8xf32> {nn.input = "x"},
                   %w: tensor<8x8xf32> {nn.param = "w"},
                   %bias: tensor<8xf32> {nn.param = "bias"},
                   %gain: tensor<4x1xf32> {nn.param = "gain"}) -> tensor<f32> {
  %e = nn.linear %x, %w : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %g = nn.gelu %e : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %r = nn.add %g, %e : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %rb = nn.add %r, %bias : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %s = nn.mul %rb, %gain : (tensor<2x4x8xf32>, tensor<4x1xf32>) -> tensor<2x4x8xf32>
  %t = nn.reduce_sum %s {dims = array<i64: 0, 1, 2>} : (tensor<2x4x8xf32>) -> tensor<f32>
  return %t : tensor<f32>
}

// -----

// A transformer block: embedding, layer norm, attention over q, k, v
// projections of the same normalised input (whose three gradients are
// summed), and a residual around the attention.

// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[TOKENS:[^:]*]]: tensor<2x4xi32> {nn.input = "tokens"},
// CHECK-SAME:    %[[LABELS:[^:]*]]: tensor<2x4xi32> {nn.input = "labels"},
// CHECK-SAME:    %[[WTE:[^:]*]]: tensor<16x8xf32> {nn.param = "wte"},
// CHECK-SAME:    %[[GAMMA:[^:]*]]: tensor<8xf32> {nn.init = "ones", nn.param = "ln.gamma"},
// CHECK-SAME:    %[[BETA:[^:]*]]: tensor<8xf32> {nn.init = "zeros", nn.param = "ln.beta"},
// CHECK:         %[[X:.*]] = nn.embedding %[[TOKENS]], %[[WTE]]
// CHECK:         %[[N:.*]] = nn.layer_norm %[[X]], %[[GAMMA]], %[[BETA]] {epsilon = 9.99999997E-7 : f32}
// CHECK:         %[[Q:.*]] = nn.linear %[[N]], %[[WQ:[^ ]*]] :
// CHECK:         %[[K:.*]] = nn.linear %[[N]], %[[WK:[^ ]*]] :
// CHECK:         %[[V:.*]] = nn.linear %[[N]], %[[WV:[^ ]*]] :
// CHECK:         %[[A:.*]] = nn.attention %[[Q]], %[[K]], %[[V]]
// CHECK:         %[[R:.*]] = nn.add %[[X]], %[[A]]
// CHECK:         %[[LOGITS:.*]] = nn.linear %[[R]], %[[HEAD:[^ ]*]] :
// CHECK:         nn.cross_entropy %[[LOGITS]], %[[LABELS]] {ignore_index = 0 : i64}
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32}
// CHECK:         %[[DLOGITS:.*]] = nn.cross_entropy_grad %[[LOGITS]], %[[LABELS]], %[[SEED]] {ignore_index = 0 : i64}
// CHECK:         %[[DR:.*]], %[[DHEAD:.*]] = nn.linear_grad %[[R]], %[[HEAD]], %[[DLOGITS]]
// CHECK:         %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = nn.attention_grad %[[Q]], %[[K]], %[[V]], %[[DR]] {causal = true, num_heads = 2 : i64, window = 3 : i64}
// CHECK-SAME:      (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
// CHECK:         %[[DN_V:.*]], %[[DWV:.*]] = nn.linear_grad %[[N]], %[[WV]], %[[DV]]
// CHECK:         %[[DN_K:.*]], %[[DWK:.*]] = nn.linear_grad %[[N]], %[[WK]], %[[DK]]
// CHECK:         %[[DN_VK:.*]] = nn.add %[[DN_V]], %[[DN_K]]
// CHECK:         %[[DN_Q:.*]], %[[DWQ:.*]] = nn.linear_grad %[[N]], %[[WQ]], %[[DQ]]
// CHECK:         %[[DN:.*]] = nn.add %[[DN_VK]], %[[DN_Q]]
// CHECK:         %[[DX_LN:.*]], %[[DGAMMA:.*]], %[[DBETA:.*]] = nn.layer_norm_grad %[[X]], %[[GAMMA]], %[[DN]] {epsilon = 9.99999997E-7 : f32}
// CHECK-SAME:      -> (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>)
// The residual: the embedding output gets dr directly and through the norm.
// CHECK:         %[[DX:.*]] = nn.add %[[DR]], %[[DX_LN]]
// CHECK:         %[[DWTE:.*]] = nn.embedding_grad %[[TOKENS]], %[[DX]] {vocab_size = 16 : i64}
// CHECK:         nn.adamw %[[WTE]], %[[DWTE]],
// CHECK:         nn.adamw %[[GAMMA]], %[[DGAMMA]],
// CHECK:         nn.adamw %[[BETA]], %[[DBETA]],
// CHECK:         nn.adamw %[[WQ]], %[[DWQ]],
// CHECK:         nn.adamw %[[WK]], %[[DWK]],
// CHECK:         nn.adamw %[[WV]], %[[DWV]],
// CHECK:         nn.adamw %[[HEAD]], %[[DHEAD]],

func.func @forward(%tokens: tensor<2x4xi32> {nn.input = "tokens"},
                   %labels: tensor<2x4xi32> {nn.input = "labels"},
                   %wte: tensor<16x8xf32> {nn.param = "wte"},
                   %gamma: tensor<8xf32> {nn.param = "ln.gamma", nn.init = "ones"},
                   %beta: tensor<8xf32> {nn.param = "ln.beta", nn.init = "zeros"},
                   %wq: tensor<8x8xf32> {nn.param = "wq"},
                   %wk: tensor<8x8xf32> {nn.param = "wk"},
                   %wv: tensor<8x8xf32> {nn.param = "wv"},
                   %head: tensor<8x16xf32> {nn.param = "head"}) -> tensor<f32> {
  %x = nn.embedding %tokens, %wte : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<2x4x8xf32>
  %n = nn.layer_norm %x, %gamma, %beta {epsilon = 1.0e-6 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %q = nn.linear %n, %wq : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %k = nn.linear %n, %wk : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %v = nn.linear %n, %wv : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %a = nn.attention %q, %k, %v {num_heads = 2 : i64, causal = true, window = 3 : i64} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %r = nn.add %x, %a : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %logits = nn.linear %r, %head : (tensor<2x4x8xf32>, tensor<8x16xf32>) -> tensor<2x4x16xf32>
  %loss = nn.cross_entropy %logits, %labels {ignore_index = 0 : i64} : (tensor<2x4x16xf32>, tensor<2x4xi32>) -> tensor<f32>
  return %loss : tensor<f32>
}
