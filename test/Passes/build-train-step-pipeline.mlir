// RUN: flexmoe-opt %s -nn-shape-inference -moe-initial-placement=world-size=2 -moe-expand-layers -build-train-step | FileCheck %s
// RUN: flexmoe-opt %s -nn-shape-inference -moe-initial-placement=world-size=2 -moe-expand-layers -build-train-step | flexmoe-opt | FileCheck %s

// A Stage 0 model (unranked intermediates, one moe.layer) through the first
// four passes of the training pipeline: the expert state carries its layer,
// every backward op of the layer its placement, and every parameter gets
// its gradient.

// CHECK:       #[[PLACEMENT:.+]] = #moe.placement<world_size = 2, slots_per_device = 2, replicas = {{\[\[}}0], [1], [0], [1]]>
// CHECK-LABEL: func.func @train_step(
// CHECK-SAME:    %[[TOKENS:[^:]*]]: tensor<2x4xi32> {nn.input = "tokens"},
// CHECK-SAME:    %[[LABELS:[^:]*]]: tensor<2x4xi32> {nn.input = "labels"},
// CHECK-SAME:    %[[WTE:[^:]*]]: tensor<16x8xf32> {nn.init = "normal", nn.init_std = 2.000000e-02 : f32, nn.param = "wte"},
// CHECK-SAME:    %[[GAMMA:[^:]*]]: tensor<8xf32> {nn.init = "ones", nn.param = "ln.gamma"},
// CHECK-SAME:    %[[BETA:[^:]*]]: tensor<8xf32> {nn.init = "zeros", nn.param = "ln.beta"},
// CHECK-SAME:    %[[WG:[^:]*]]: tensor<8x4xf32> {nn.param = "moe1.gate_weight"},
// CHECK-SAME:    %[[W1:[^:]*]]: tensor<4x8x16xf32> {moe.layer = "moe1", nn.param = "moe1.w1"},
// CHECK-SAME:    %[[B1:[^:]*]]: tensor<4x16xf32> {moe.layer = "moe1", nn.param = "moe1.b1"},
// CHECK-SAME:    %[[W2:[^:]*]]: tensor<4x16x8xf32> {moe.layer = "moe1", nn.param = "moe1.w2"},
// CHECK-SAME:    %[[B2:[^:]*]]: tensor<4x8xf32> {moe.layer = "moe1", nn.param = "moe1.b2"},
// CHECK-SAME:    %[[HEAD:[^:]*]]: tensor<8x16xf32> {nn.param = "head"},
// CHECK-SAME:    tensor<8x4xf32> {nn.opt_state = "adam_m", nn.state_of = "moe1.gate_weight"},
// CHECK-SAME:    tensor<4x8x16xf32> {moe.layer = "moe1", nn.opt_state = "adam_m", nn.state_of = "moe1.w1"},
// CHECK-SAME:    tensor<4x8xf32> {moe.layer = "moe1", nn.opt_state = "adam_v", nn.state_of = "moe1.b2"},
// CHECK-SAME:    tensor<8x16xf32> {nn.opt_state = "adam_v", nn.state_of = "head"})
// CHECK-SAME:    -> (tensor<f32> {nn.output = "loss"},
// CHECK-NOT:   moe.layer %
// CHECK:         %[[X:.*]] = nn.embedding %[[TOKENS]], %[[WTE]]
// CHECK:         %[[AUX:.*]] = moe.aux_loss
// CHECK:         %[[CE:.*]] = nn.cross_entropy
// CHECK:         %[[LOSS:.*]] = nn.add %[[CE]], %[[AUX]] : (tensor<f32>, tensor<f32>) -> tensor<f32>
// CHECK:         %[[SEED:.*]] = nn.fill {value = 1.000000e+00 : f32}
// CHECK:         moe.combine_grad {{.*}} {layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         %{{.*}}, %[[DW1:.*]], %[[DB1:.*]], %[[DW2:.*]], %[[DB2:.*]] = moe.experts_grad {{.*}} {capacity = 0 : i64, layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         moe.dispatch_grad {{.*}} {layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         moe.aux_loss_grad %{{.*}}, %{{.*}}, %[[SEED]] {coef = 0.00999999977 : f32, layer = "moe1", placement = #[[PLACEMENT]]}
// CHECK:         %{{.*}}, %[[DWG:.*]] = moe.gate_grad {{.*}} {layer = "moe1", placement = #[[PLACEMENT]], top_k = 2 : i64}
// CHECK:         %{{.*}}, %[[DGAMMA:.*]], %[[DBETA:.*]] = nn.layer_norm_grad %[[X]], %[[GAMMA]]
// CHECK:         %[[DWTE:.*]] = nn.embedding_grad %[[TOKENS]]
// CHECK:         nn.adamw %[[WTE]], %[[DWTE]],
// CHECK:         nn.adamw %[[GAMMA]], %[[DGAMMA]],
// CHECK:         nn.adamw %[[BETA]], %[[DBETA]],
// CHECK:         nn.adamw %[[WG]], %[[DWG]],
// CHECK:         nn.adamw %[[W1]], %[[DW1]],
// CHECK:         nn.adamw %[[B1]], %[[DB1]],
// CHECK:         nn.adamw %[[W2]], %[[DW2]],
// CHECK:         nn.adamw %[[B2]], %[[DB2]],
// CHECK:         nn.adamw %[[HEAD]], %{{.*}},
// CHECK:         return %[[LOSS]],
// CHECK-NOT:   func.func @forward

module attributes {flexmoe.model = "gpt-moe-micro"} {
  func.func @forward(%tokens: tensor<2x4xi32> {nn.input = "tokens"},
                     %labels: tensor<2x4xi32> {nn.input = "labels"},
                     %wte: tensor<16x8xf32> {nn.param = "wte", nn.init = "normal", nn.init_std = 0.02 : f32},
                     %gamma: tensor<8xf32> {nn.param = "ln.gamma", nn.init = "ones"},
                     %beta: tensor<8xf32> {nn.param = "ln.beta", nn.init = "zeros"},
                     %wg: tensor<8x4xf32> {nn.param = "moe1.gate_weight"},
                     %w1: tensor<4x8x16xf32> {nn.param = "moe1.w1"},
                     %b1: tensor<4x16xf32> {nn.param = "moe1.b1"},
                     %w2: tensor<4x16x8xf32> {nn.param = "moe1.w2"},
                     %b2: tensor<4x8xf32> {nn.param = "moe1.b2"},
                     %head: tensor<8x16xf32> {nn.param = "head"}) -> tensor<*xf32> {
    %x = nn.embedding %tokens, %wte : (tensor<2x4xi32>, tensor<16x8xf32>) -> tensor<*xf32>
    %n = nn.layer_norm %x, %gamma, %beta : (tensor<*xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<*xf32>
    %y, %aux = moe.layer %n, %wg, %w1, %b1, %w2, %b2
        {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 16 : i64,
         capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
        : (tensor<*xf32>, tensor<8x4xf32>, tensor<4x8x16xf32>, tensor<4x16xf32>,
           tensor<4x16x8xf32>, tensor<4x8xf32>) -> (tensor<*xf32>, tensor<*xf32>)
    %r = nn.add %x, %y : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
    %logits = nn.linear %r, %head : (tensor<*xf32>, tensor<8x16xf32>) -> tensor<*xf32>
    %ce = nn.cross_entropy %logits, %labels : (tensor<*xf32>, tensor<2x4xi32>) -> tensor<*xf32>
    %loss = nn.add %ce, %aux : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
    return %loss : tensor<*xf32>
  }
}
