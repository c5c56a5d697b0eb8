// RUN: flexmoe-opt %s -nn-shape-inference | FileCheck %s
// RUN: flexmoe-opt %s -nn-shape-inference | flexmoe-opt -nn-shape-inference | FileCheck %s

// A pre-LN transformer block with a language-model head; every intermediate
// starts unranked and the function returns tensor<*xf32>.

// CHECK-LABEL: func.func @block
// CHECK-SAME: (%[[TOK:[^:]*]]: tensor<2x8xi32> {nn.input = "tokens"}, %[[LAB:[^:]*]]: tensor<2x8xi32> {nn.input = "labels"}
// CHECK-SAME: %[[WTE:[^:]*]]: tensor<32x16xf32> {nn.param = "wte"}
// CHECK-SAME: -> (tensor<f32> {nn.output = "loss"}, tensor<2x8x16xf32>)
func.func @block(%tokens: tensor<2x8xi32> {nn.input = "tokens"}, %labels: tensor<2x8xi32> {nn.input = "labels"},
                 %wte: tensor<32x16xf32> {nn.param = "wte"},
                 %g1: tensor<16xf32>, %b1: tensor<16xf32>,
                 %wq: tensor<16x16xf32>, %wk: tensor<16x16xf32>, %wv: tensor<16x16xf32>, %wo: tensor<16x16xf32>,
                 %g2: tensor<16xf32>, %b2: tensor<16xf32>,
                 %w1: tensor<16x64xf32>, %c1: tensor<64xf32>, %w2: tensor<64x16xf32>, %c2: tensor<16xf32>,
                 %whead: tensor<16x32xf32>)
    -> (tensor<*xf32> {nn.output = "loss"}, tensor<*xf32>) {
  // CHECK: %[[H:.*]] = nn.embedding %[[TOK]], %[[WTE]] : (tensor<2x8xi32>, tensor<32x16xf32>) -> tensor<2x8x16xf32>
  %h = nn.embedding %tokens, %wte : (tensor<2x8xi32>, tensor<32x16xf32>) -> tensor<*xf32>
  // CHECK: %[[N1:.*]] = nn.layer_norm %[[H]], {{.*}} : (tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %n1 = nn.layer_norm %h, %g1, %b1 : (tensor<*xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<*xf32>
  // CHECK: %[[Q:.*]] = nn.linear %[[N1]], {{.*}} : (tensor<2x8x16xf32>, tensor<16x16xf32>) -> tensor<2x8x16xf32>
  %q = nn.linear %n1, %wq : (tensor<*xf32>, tensor<16x16xf32>) -> tensor<*xf32>
  %k = nn.linear %n1, %wk : (tensor<*xf32>, tensor<16x16xf32>) -> tensor<*xf32>
  %v = nn.linear %n1, %wv : (tensor<*xf32>, tensor<16x16xf32>) -> tensor<*xf32>
  // CHECK: %[[ATT:.*]] = nn.attention %[[Q]], %{{.*}}, %{{.*}} {causal = true, num_heads = 4 : i64}
  // CHECK-SAME: : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %att = nn.attention %q, %k, %v {num_heads = 4 : i64, causal = true} : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  // CHECK: %[[O:.*]] = nn.linear %[[ATT]], {{.*}} -> tensor<2x8x16xf32>
  %o = nn.linear %att, %wo : (tensor<*xf32>, tensor<16x16xf32>) -> tensor<*xf32>
  // CHECK: %[[R1:.*]] = nn.add %[[H]], %[[O]] : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %r1 = nn.add %h, %o : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %n2 = nn.layer_norm %r1, %g2, %b2 {epsilon = 1.0e-6 : f32} : (tensor<*xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<*xf32>
  // CHECK: %[[F1:.*]] = nn.linear %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8x16xf32>, tensor<16x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %f1 = nn.linear %n2, %w1, %c1 : (tensor<*xf32>, tensor<16x64xf32>, tensor<64xf32>) -> tensor<*xf32>
  // CHECK: %[[ACT:.*]] = nn.gelu %[[F1]] : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %act = nn.gelu %f1 : (tensor<*xf32>) -> tensor<*xf32>
  // CHECK: %[[DROP:.*]] = nn.dropout %[[ACT]] {{.*}} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %drop = nn.dropout %act {rate = 0.1 : f32, seed = 3 : i64} : (tensor<*xf32>) -> tensor<*xf32>
  // CHECK: %[[F2:.*]] = nn.linear %[[DROP]], {{.*}} : (tensor<2x8x64xf32>, tensor<64x16xf32>, tensor<16xf32>) -> tensor<2x8x16xf32>
  %f2 = nn.linear %drop, %w2, %c2 : (tensor<*xf32>, tensor<64x16xf32>, tensor<16xf32>) -> tensor<*xf32>
  // CHECK: %[[R2:.*]] = nn.add %[[R1]], %[[F2]] : (tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %r2 = nn.add %r1, %f2 : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  // A reshape keeps its stated static type; its operand is refined.
  // CHECK: %[[FLAT:.*]] = nn.reshape %[[R2]] : (tensor<2x8x16xf32>) -> tensor<16x16xf32>
  %flat = nn.reshape %r2 : (tensor<*xf32>) -> tensor<16x16xf32>
  // CHECK: %[[LOGITS:.*]] = nn.linear %[[FLAT]], {{.*}} : (tensor<16x16xf32>, tensor<16x32xf32>) -> tensor<16x32xf32>
  %logits = nn.linear %flat, %whead : (tensor<16x16xf32>, tensor<16x32xf32>) -> tensor<*xf32>
  // CHECK: %[[LFLAT:.*]] = nn.reshape %[[LAB]] : (tensor<2x8xi32>) -> tensor<16xi32>
  %lflat = nn.reshape %labels : (tensor<2x8xi32>) -> tensor<16xi32>
  // CHECK: %[[LOSS:.*]] = nn.cross_entropy %[[LOGITS]], %[[LFLAT]] : (tensor<16x32xf32>, tensor<16xi32>) -> tensor<f32>
  %loss = nn.cross_entropy %logits, %lflat : (tensor<*xf32>, tensor<16xi32>) -> tensor<*xf32>
  // CHECK: return %[[LOSS]], %[[R2]] : tensor<f32>, tensor<2x8x16xf32>
  return %loss, %r2 : tensor<*xf32>, tensor<*xf32>
}

// Partially dynamic types are refined too, and multi-result ops get every
// result refined.
// CHECK-LABEL: func.func @backward
// CHECK-SAME: -> (tensor<8x64xf32>, tensor<64x32xf32>, tensor<32xf32>)
func.func @backward(%x: tensor<8x64xf32>, %w: tensor<64x32xf32>, %dy: tensor<8x32xf32>)
    -> (tensor<?x64xf32>, tensor<*xf32>, tensor<?xf32>) {
  // CHECK: nn.linear_grad {{.*}} : (tensor<8x64xf32>, tensor<64x32xf32>, tensor<8x32xf32>) -> (tensor<8x64xf32>, tensor<64x32xf32>)
  %dx, %dw = nn.linear_grad %x, %w, %dy : (tensor<8x64xf32>, tensor<64x32xf32>, tensor<8x32xf32>) -> (tensor<?x64xf32>, tensor<*xf32>)
  // CHECK: nn.reduce_sum {{.*}} {dims = array<i64: 0>} : (tensor<8x32xf32>) -> tensor<32xf32>
  %db = nn.reduce_sum %dy {dims = array<i64: 0>} : (tensor<8x32xf32>) -> tensor<?xf32>
  return %dx, %dw, %db : tensor<?x64xf32>, tensor<*xf32>, tensor<?xf32>
}

// A call sees the refined signature of its callee, whichever function comes
// first in the module.
// CHECK-LABEL: func.func @caller
// CHECK-SAME: -> tensor<4x8xf32>
func.func @caller(%x: tensor<4x8xf32>) -> tensor<*xf32> {
  // CHECK: %[[C:.*]] = call @callee(%{{.*}}) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %c = func.call @callee(%x) : (tensor<4x8xf32>) -> tensor<*xf32>
  // CHECK: nn.scale %[[C]] {{.*}} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s = nn.scale %c {factor = 2.0 : f32} : (tensor<*xf32>) -> tensor<*xf32>
  return %s : tensor<*xf32>
}

// CHECK-LABEL: func.func @callee
// CHECK-SAME: -> tensor<4x8xf32>
func.func @callee(%x: tensor<4x8xf32>) -> tensor<*xf32> {
  // CHECK: nn.softmax %{{.*}} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %y = nn.softmax %x : (tensor<4x8xf32>) -> tensor<*xf32>
  return %y : tensor<*xf32>
}

// Declarations are left alone.
// CHECK-LABEL: func.func private @external
// CHECK-SAME: (tensor<*xf32>) -> tensor<*xf32>
func.func private @external(tensor<*xf32>) -> tensor<*xf32>

// Ops of other dialects take part through InferTypeOpInterface.
// CHECK-LABEL: func.func @moe_block
// CHECK-SAME: -> (tensor<2x8x16xf32>, tensor<f32>)
func.func @moe_block(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>,
                     %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                     %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<*xf32>, tensor<*xf32>) {
  %h = nn.gelu %x : (tensor<2x8x16xf32>) -> tensor<*xf32>
  // CHECK: %[[Y:.*]], %[[AUX:.*]] = moe.layer
  // CHECK-SAME: : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>, tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  %y, %aux = moe.layer %h, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<*xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  // CHECK: return %[[Y]], %[[AUX]] : tensor<2x8x16xf32>, tensor<f32>
  return %y, %aux : tensor<*xf32>, tensor<*xf32>
}

// The inferred type of every inferring nn op.
// CHECK-LABEL: func.func @every_op
func.func @every_op(%ids: tensor<4x6xi32>, %table: tensor<50x8xf32>, %x: tensor<4x6x8xf32>,
                   %w: tensor<8x12xf32>, %bias: tensor<12xf32>, %g: tensor<8xf32>,
                   %a: tensor<3x5x7xf32>, %b: tensor<3x5x9xf32>, %p: tensor<7x2xf32>) {
  // CHECK: nn.embedding {{.*}} -> tensor<4x6x8xf32>
  %0 = nn.embedding %ids, %table : (tensor<4x6xi32>, tensor<50x8xf32>) -> tensor<*xf32>
  // CHECK: nn.embedding_grad {{.*}} -> tensor<50x8xf32>
  %1 = nn.embedding_grad %ids, %0 {vocab_size = 50 : i64} : (tensor<4x6xi32>, tensor<*xf32>) -> tensor<*xf32>
  // CHECK: nn.linear {{.*}} -> tensor<4x6x12xf32>
  %2 = nn.linear %x, %w, %bias : (tensor<4x6x8xf32>, tensor<8x12xf32>, tensor<12xf32>) -> tensor<*xf32>
  // CHECK: nn.linear_grad {{.*}} -> (tensor<4x6x8xf32>, tensor<8x12xf32>)
  %3:2 = nn.linear_grad %x, %w, %2 : (tensor<4x6x8xf32>, tensor<8x12xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  // [3,5,7]ᵀ·[3,5,9] contracts the 5s: [3,7,9].
  // CHECK: nn.matmul {{.*}} -> tensor<3x7x9xf32>
  %4 = nn.matmul %a, %b {transpose_lhs = true} : (tensor<3x5x7xf32>, tensor<3x5x9xf32>) -> tensor<*xf32>
  // A 2-D rhs broadcasts over the batch: [3,5,7]·[7,2] = [3,5,2].
  // CHECK: nn.matmul {{.*}} -> tensor<3x5x2xf32>
  %5 = nn.matmul %a, %p : (tensor<3x5x7xf32>, tensor<7x2xf32>) -> tensor<*xf32>
  // CHECK: nn.matmul {{.*}} -> tensor<3x5x5xf32>
  %6 = nn.matmul %a, %a {transpose_rhs = true} : (tensor<3x5x7xf32>, tensor<3x5x7xf32>) -> tensor<*xf32>
  // CHECK: nn.layer_norm {{.*}} -> tensor<4x6x8xf32>
  %7 = nn.layer_norm %x, %g, %g : (tensor<4x6x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<*xf32>
  // CHECK: nn.layer_norm_grad {{.*}} -> (tensor<4x6x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %8:3 = nn.layer_norm_grad %x, %g, %7 : (tensor<4x6x8xf32>, tensor<8xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  // CHECK: nn.gelu_grad {{.*}} -> tensor<4x6x8xf32>
  %9 = nn.gelu_grad %x, %7 : (tensor<4x6x8xf32>, tensor<*xf32>) -> tensor<*xf32>
  // CHECK: nn.softmax_grad {{.*}} -> tensor<4x6x8xf32>
  %10 = nn.softmax_grad %7, %x {axis = 1 : i64} : (tensor<*xf32>, tensor<4x6x8xf32>) -> tensor<*xf32>
  // CHECK: nn.attention_grad {{.*}} -> (tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<4x6x8xf32>)
  %11:3 = nn.attention_grad %x, %x, %x, %7 {num_heads = 2 : i64} : (tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  // CHECK: nn.mul {{.*}} -> tensor<4x6x8xf32>
  %12 = nn.mul %x, %g : (tensor<4x6x8xf32>, tensor<8xf32>) -> tensor<*xf32>
  // CHECK: nn.reduce_sum {{.*}} -> tensor<6xf32>
  %13 = nn.reduce_sum %x {dims = array<i64: 0, -1>} : (tensor<4x6x8xf32>) -> tensor<*xf32>
  // CHECK: nn.reduce_sum {{.*}} -> tensor<1x6x1xf32>
  %14 = nn.reduce_sum %x {dims = array<i64: 2, 0>, keep_dims = true} : (tensor<4x6x8xf32>) -> tensor<*xf32>
  // CHECK: nn.transpose {{.*}} -> tensor<8x4x6xf32>
  %15 = nn.transpose %x {permutation = array<i64: 2, 0, 1>} : (tensor<4x6x8xf32>) -> tensor<*xf32>
  // CHECK: nn.transpose {{.*}} -> tensor<6x4xi32>
  %16 = nn.transpose %ids {permutation = array<i64: 1, 0>} : (tensor<4x6xi32>) -> tensor<*xi32>
  // CHECK: nn.roll {{.*}} -> tensor<4x6x8xf32>
  %17 = nn.roll %x {shifts = array<i64: 3>, dims = array<i64: 1>} : (tensor<4x6x8xf32>) -> tensor<*xf32>
  // CHECK: nn.cross_entropy {{.*}} -> tensor<f32>
  %18 = nn.cross_entropy %x, %ids : (tensor<4x6x8xf32>, tensor<4x6xi32>) -> tensor<*xf32>
  // CHECK: nn.cross_entropy_grad {{.*}} -> tensor<4x6x8xf32>
  %19 = nn.cross_entropy_grad %x, %ids, %18 : (tensor<4x6x8xf32>, tensor<4x6xi32>, tensor<*xf32>) -> tensor<*xf32>
  // CHECK: nn.adamw {{.*}} -> (tensor<8x12xf32>, tensor<8x12xf32>, tensor<8x12xf32>)
  %20:3 = nn.adamw %w, %3#1, %w, %w {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.0 : f32}
      : (tensor<8x12xf32>, tensor<*xf32>, tensor<8x12xf32>, tensor<8x12xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  return
}
