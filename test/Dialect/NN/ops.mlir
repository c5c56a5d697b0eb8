// RUN: flexmoe-opt %s | FileCheck %s
// RUN: flexmoe-opt %s | flexmoe-opt | FileCheck %s
// RUN: flexmoe-opt -mlir-print-op-generic %s | flexmoe-opt | FileCheck %s

// Round trip of every nn op in its uniform form; attributes equal to their
// default are elided.

// CHECK-LABEL: func.func @embedding
// CHECK-SAME: (%[[IDS:.*]]: tensor<8x32xi32>, %[[TABLE:.*]]: tensor<256x64xf32>, %[[DY:.*]]: tensor<8x32x64xf32>)
func.func @embedding(%ids: tensor<8x32xi32>, %table: tensor<256x64xf32>, %dy: tensor<8x32x64xf32>)
    -> (tensor<8x32x64xf32>, tensor<256x64xf32>) {
  // CHECK: %[[H:.*]] = nn.embedding %[[IDS]], %[[TABLE]] : (tensor<8x32xi32>, tensor<256x64xf32>) -> tensor<8x32x64xf32>
  %h = nn.embedding %ids, %table : (tensor<8x32xi32>, tensor<256x64xf32>) -> tensor<8x32x64xf32>
  // CHECK: %[[DT:.*]] = nn.embedding_grad %[[IDS]], %[[DY]] {vocab_size = 256 : i64} : (tensor<8x32xi32>, tensor<8x32x64xf32>) -> tensor<256x64xf32>
  %dt = nn.embedding_grad %ids, %dy {vocab_size = 256 : i64} : (tensor<8x32xi32>, tensor<8x32x64xf32>) -> tensor<256x64xf32>
  // CHECK: return %[[H]], %[[DT]]
  return %h, %dt : tensor<8x32x64xf32>, tensor<256x64xf32>
}

// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:.*]]: tensor<8x32x64xf32>, %[[W:.*]]: tensor<64x128xf32>, %[[B:.*]]: tensor<128xf32>, %[[DY:.*]]: tensor<8x32x128xf32>)
func.func @linear(%x: tensor<8x32x64xf32>, %w: tensor<64x128xf32>, %b: tensor<128xf32>, %dy: tensor<8x32x128xf32>)
    -> (tensor<8x32x128xf32>, tensor<8x32x128xf32>, tensor<8x32x64xf32>, tensor<64x128xf32>) {
  // CHECK: %[[Y:.*]] = nn.linear %[[X]], %[[W]], %[[B]] : (tensor<8x32x64xf32>, tensor<64x128xf32>, tensor<128xf32>) -> tensor<8x32x128xf32>
  %y = nn.linear %x, %w, %b : (tensor<8x32x64xf32>, tensor<64x128xf32>, tensor<128xf32>) -> tensor<8x32x128xf32>
  // CHECK: %[[Z:.*]] = nn.linear %[[X]], %[[W]] : (tensor<8x32x64xf32>, tensor<64x128xf32>) -> tensor<8x32x128xf32>
  %z = nn.linear %x, %w : (tensor<8x32x64xf32>, tensor<64x128xf32>) -> tensor<8x32x128xf32>
  // CHECK: %[[DX:.*]], %[[DW:.*]] = nn.linear_grad %[[X]], %[[W]], %[[DY]] : (tensor<8x32x64xf32>, tensor<64x128xf32>, tensor<8x32x128xf32>) -> (tensor<8x32x64xf32>, tensor<64x128xf32>)
  %dx, %dw = nn.linear_grad %x, %w, %dy : (tensor<8x32x64xf32>, tensor<64x128xf32>, tensor<8x32x128xf32>) -> (tensor<8x32x64xf32>, tensor<64x128xf32>)
  // CHECK: return %[[Y]], %[[Z]], %[[DX]], %[[DW]]
  return %y, %z, %dx, %dw : tensor<8x32x128xf32>, tensor<8x32x128xf32>, tensor<8x32x64xf32>, tensor<64x128xf32>
}

// CHECK-LABEL: func.func @matmul
// CHECK-SAME: (%[[A:.*]]: tensor<8x4x32x16xf32>, %[[B:.*]]: tensor<8x4x32x16xf32>, %[[W:.*]]: tensor<16x24xf32>)
func.func @matmul(%a: tensor<8x4x32x16xf32>, %b: tensor<8x4x32x16xf32>, %w: tensor<16x24xf32>)
    -> (tensor<8x4x32x32xf32>, tensor<8x4x16x16xf32>, tensor<8x4x32x24xf32>) {
  // CHECK: nn.matmul %[[A]], %[[B]] {transpose_rhs = true} : (tensor<8x4x32x16xf32>, tensor<8x4x32x16xf32>) -> tensor<8x4x32x32xf32>
  %s = nn.matmul %a, %b {transpose_rhs = true} : (tensor<8x4x32x16xf32>, tensor<8x4x32x16xf32>) -> tensor<8x4x32x32xf32>
  // CHECK: nn.matmul %[[A]], %[[B]] {transpose_lhs = true} : (tensor<8x4x32x16xf32>, tensor<8x4x32x16xf32>) -> tensor<8x4x16x16xf32>
  %t = nn.matmul %a, %b {transpose_lhs = true, transpose_rhs = false} : (tensor<8x4x32x16xf32>, tensor<8x4x32x16xf32>) -> tensor<8x4x16x16xf32>
  // A 2-D rhs broadcasts over the batch dimensions.
  // CHECK: nn.matmul %[[A]], %[[W]] : (tensor<8x4x32x16xf32>, tensor<16x24xf32>) -> tensor<8x4x32x24xf32>
  %u = nn.matmul %a, %w : (tensor<8x4x32x16xf32>, tensor<16x24xf32>) -> tensor<8x4x32x24xf32>
  return %s, %t, %u : tensor<8x4x32x32xf32>, tensor<8x4x16x16xf32>, tensor<8x4x32x24xf32>
}

// CHECK-LABEL: func.func @layer_norm
// CHECK-SAME: (%[[X:.*]]: tensor<8x32x64xf32>, %[[G:.*]]: tensor<64xf32>, %[[B:.*]]: tensor<64xf32>, %[[DY:.*]]: tensor<8x32x64xf32>)
func.func @layer_norm(%x: tensor<8x32x64xf32>, %g: tensor<64xf32>, %b: tensor<64xf32>, %dy: tensor<8x32x64xf32>)
    -> (tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>) {
  // CHECK: nn.layer_norm %[[X]], %[[G]], %[[B]] : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x32x64xf32>
  %y = nn.layer_norm %x, %g, %b : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x32x64xf32>
  // CHECK: nn.layer_norm %[[X]], %[[G]], %[[B]] {epsilon = 9.99999997E-7 : f32}
  %y2 = nn.layer_norm %x, %g, %b {epsilon = 1.0e-6 : f32} : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x32x64xf32>
  // CHECK: %{{.*}}, %{{.*}}, %{{.*}} = nn.layer_norm_grad %[[X]], %[[G]], %[[DY]] : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<8x32x64xf32>) -> (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>)
  %dx, %dg, %db = nn.layer_norm_grad %x, %g, %dy : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<8x32x64xf32>) -> (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>)
  return %y, %y2, %dx, %dg, %db : tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>
}

// CHECK-LABEL: func.func @activations
// CHECK-SAME: (%[[X:.*]]: tensor<4x16xf32>, %[[DY:.*]]: tensor<4x16xf32>)
func.func @activations(%x: tensor<4x16xf32>, %dy: tensor<4x16xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>) {
  // CHECK: %[[G:.*]] = nn.gelu %[[X]] : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %g = nn.gelu %x {approximate = "tanh"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  // CHECK: nn.gelu %[[X]] {approximate = "none"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %ge = nn.gelu %x {approximate = "none"} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  // CHECK: nn.gelu_grad %[[X]], %[[DY]] {approximate = "none"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %dg = nn.gelu_grad %x, %dy {approximate = "none"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  // CHECK: %[[S:.*]] = nn.softmax %[[X]] : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %s = nn.softmax %x : (tensor<4x16xf32>) -> tensor<4x16xf32>
  // CHECK: nn.softmax %[[X]] {axis = 0 : i64} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  %s0 = nn.softmax %x {axis = 0 : i64} : (tensor<4x16xf32>) -> tensor<4x16xf32>
  // CHECK: nn.softmax_grad %[[S]], %[[DY]] : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %ds = nn.softmax_grad %s, %dy {axis = -1 : i64} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %g, %ge, %dg, %s, %s0, %ds : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>
}

// CHECK-LABEL: func.func @attention
// CHECK-SAME: (%[[Q:.*]]: tensor<2x16x64xf32>, %[[K:.*]]: tensor<2x16x64xf32>, %[[V:.*]]: tensor<2x16x64xf32>, %[[DY:.*]]: tensor<2x16x64xf32>)
func.func @attention(%q: tensor<2x16x64xf32>, %k: tensor<2x16x64xf32>, %v: tensor<2x16x64xf32>, %dy: tensor<2x16x64xf32>)
    -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) {
  // CHECK: nn.attention %[[Q]], %[[K]], %[[V]] {causal = true, num_heads = 4 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  %o = nn.attention %q, %k, %v {num_heads = 4 : i64, causal = true} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  // CHECK: nn.attention %[[Q]], %[[K]], %[[V]] {num_heads = 8 : i64, window = 4 : i64}
  %w = nn.attention %q, %k, %v {num_heads = 8 : i64, causal = false, window = 4 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  // CHECK: %{{.*}}, %{{.*}}, %{{.*}} = nn.attention_grad %[[Q]], %[[K]], %[[V]], %[[DY]] {causal = true, num_heads = 4 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  %dq, %dk, %dv = nn.attention_grad %q, %k, %v, %dy {num_heads = 4 : i64, causal = true}
      : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  return %o, %w, %dq, %dk, %dv : tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>
}

// CHECK-LABEL: func.func @arithmetic
// CHECK-SAME: (%[[A:.*]]: tensor<8x16x64xf32>, %[[B:.*]]: tensor<16x64xf32>, %[[C:.*]]: tensor<8x16x1xf32>)
func.func @arithmetic(%a: tensor<8x16x64xf32>, %b: tensor<16x64xf32>, %c: tensor<8x16x1xf32>)
    -> (tensor<8x16x64xf32>, tensor<8x16x64xf32>, tensor<8x16x64xf32>) {
  // CHECK: nn.add %[[A]], %[[B]] : (tensor<8x16x64xf32>, tensor<16x64xf32>) -> tensor<8x16x64xf32>
  %s = nn.add %a, %b : (tensor<8x16x64xf32>, tensor<16x64xf32>) -> tensor<8x16x64xf32>
  // CHECK: nn.mul %[[A]], %[[C]] : (tensor<8x16x64xf32>, tensor<8x16x1xf32>) -> tensor<8x16x64xf32>
  %p = nn.mul %a, %c : (tensor<8x16x64xf32>, tensor<8x16x1xf32>) -> tensor<8x16x64xf32>
  // CHECK: nn.scale %[[A]] {factor = 2.500000e-01 : f32} : (tensor<8x16x64xf32>) -> tensor<8x16x64xf32>
  %q = nn.scale %a {factor = 0.25 : f32} : (tensor<8x16x64xf32>) -> tensor<8x16x64xf32>
  return %s, %p, %q : tensor<8x16x64xf32>, tensor<8x16x64xf32>, tensor<8x16x64xf32>
}

// CHECK-LABEL: func.func @reduce_sum
// CHECK-SAME: (%[[X:.*]]: tensor<8x32x64xf32>)
func.func @reduce_sum(%x: tensor<8x32x64xf32>) -> (tensor<64xf32>, tensor<8x32x1xf32>, tensor<f32>) {
  // CHECK: nn.reduce_sum %[[X]] {dims = array<i64: 0, 1>} : (tensor<8x32x64xf32>) -> tensor<64xf32>
  %a = nn.reduce_sum %x {dims = array<i64: 0, 1>} : (tensor<8x32x64xf32>) -> tensor<64xf32>
  // CHECK: nn.reduce_sum %[[X]] {dims = array<i64: -1>, keep_dims = true} : (tensor<8x32x64xf32>) -> tensor<8x32x1xf32>
  %b = nn.reduce_sum %x {dims = array<i64: -1>, keep_dims = true} : (tensor<8x32x64xf32>) -> tensor<8x32x1xf32>
  // CHECK: nn.reduce_sum %[[X]] {dims = array<i64: 2, 0, 1>} : (tensor<8x32x64xf32>) -> tensor<f32>
  %c = nn.reduce_sum %x {dims = array<i64: 2, 0, 1>} : (tensor<8x32x64xf32>) -> tensor<f32>
  return %a, %b, %c : tensor<64xf32>, tensor<8x32x1xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @shapes
// CHECK-SAME: (%[[X:.*]]: tensor<4x8x8x32xf32>, %[[IDS:.*]]: tensor<8x32xi32>)
func.func @shapes(%x: tensor<4x8x8x32xf32>, %ids: tensor<8x32xi32>)
    -> (tensor<256x32xf32>, tensor<256xi32>, tensor<4x32x8x8xf32>, tensor<4x8x8x32xf32>) {
  // CHECK: nn.reshape %[[X]] : (tensor<4x8x8x32xf32>) -> tensor<256x32xf32>
  %r = nn.reshape %x : (tensor<4x8x8x32xf32>) -> tensor<256x32xf32>
  // CHECK: nn.reshape %[[IDS]] : (tensor<8x32xi32>) -> tensor<256xi32>
  %ri = nn.reshape %ids : (tensor<8x32xi32>) -> tensor<256xi32>
  // CHECK: nn.transpose %[[X]] {permutation = array<i64: 0, 3, 1, 2>} : (tensor<4x8x8x32xf32>) -> tensor<4x32x8x8xf32>
  %t = nn.transpose %x {permutation = array<i64: 0, 3, 1, 2>} : (tensor<4x8x8x32xf32>) -> tensor<4x32x8x8xf32>
  // CHECK: nn.roll %[[X]] {dims = array<i64: 1, 2>, shifts = array<i64: -2, -2>} : (tensor<4x8x8x32xf32>) -> tensor<4x8x8x32xf32>
  %o = nn.roll %x {shifts = array<i64: -2, -2>, dims = array<i64: 1, 2>} : (tensor<4x8x8x32xf32>) -> tensor<4x8x8x32xf32>
  return %r, %ri, %t, %o : tensor<256x32xf32>, tensor<256xi32>, tensor<4x32x8x8xf32>, tensor<4x8x8x32xf32>
}

// CHECK-LABEL: func.func @loss
// CHECK-SAME: (%[[X:.*]]: tensor<8x32x256xf32>, %[[L:.*]]: tensor<8x32xi32>)
func.func @loss(%x: tensor<8x32x256xf32>, %labels: tensor<8x32xi32>) -> (tensor<f32>, tensor<8x32x256xf32>, tensor<8x32x256xf32>) {
  // CHECK: nn.dropout %[[X]] {rate = 1.000000e-01 : f32, seed = 7 : i64} : (tensor<8x32x256xf32>) -> tensor<8x32x256xf32>
  %d = nn.dropout %x {rate = 0.1 : f32, seed = 7 : i64} : (tensor<8x32x256xf32>) -> tensor<8x32x256xf32>
  // CHECK: %[[LOSS:.*]] = nn.cross_entropy %[[X]], %[[L]] : (tensor<8x32x256xf32>, tensor<8x32xi32>) -> tensor<f32>
  %loss = nn.cross_entropy %x, %labels {ignore_index = -100 : i64} : (tensor<8x32x256xf32>, tensor<8x32xi32>) -> tensor<f32>
  // CHECK: %[[ONE:.*]] = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
  %one = nn.fill {value = 1.0 : f32} : () -> tensor<f32>
  // CHECK: nn.cross_entropy_grad %[[X]], %[[L]], %[[ONE]] {ignore_index = 0 : i64} : (tensor<8x32x256xf32>, tensor<8x32xi32>, tensor<f32>) -> tensor<8x32x256xf32>
  %dx = nn.cross_entropy_grad %x, %labels, %one {ignore_index = 0 : i64} : (tensor<8x32x256xf32>, tensor<8x32xi32>, tensor<f32>) -> tensor<8x32x256xf32>
  return %loss, %d, %dx : tensor<f32>, tensor<8x32x256xf32>, tensor<8x32x256xf32>
}

// CHECK-LABEL: func.func @adamw
// CHECK-SAME: (%[[P:.*]]: tensor<64x128xf32>, %[[G:.*]]: tensor<64x128xf32>, %[[M:.*]]: tensor<64x128xf32>, %[[V:.*]]: tensor<64x128xf32>)
func.func @adamw(%p: tensor<64x128xf32>, %g: tensor<64x128xf32>, %m: tensor<64x128xf32>, %v: tensor<64x128xf32>)
    -> (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>) {
  // CHECK: %[[P1:.*]], %[[M1:.*]], %[[V1:.*]] = nn.adamw %[[P]], %[[G]], %[[M]], %[[V]]
  // CHECK-SAME: {beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32, epsilon = 9.99999993E-9 : f32, lr = 1.000000e-03 : f32, weight_decay = 0.00999999977 : f32}
  // CHECK-SAME: : (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>) -> (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>)
  %p1, %m1, %v1 = nn.adamw %p, %g, %m, %v
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>) -> (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>)
  // CHECK: return %[[P1]], %[[M1]], %[[V1]]
  return %p1, %m1, %v1 : tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>
}

// Before nn-shape-inference, intermediate results may be unranked or
// partially dynamic; the verifier accepts them.
// CHECK-LABEL: func.func @unranked
func.func @unranked(%x: tensor<8x32x64xf32>, %w: tensor<64x128xf32>, %u: tensor<*xf32>) -> tensor<*xf32> {
  // CHECK: nn.linear %{{.*}}, %{{.*}} : (tensor<8x32x64xf32>, tensor<64x128xf32>) -> tensor<*xf32>
  %y = nn.linear %x, %w : (tensor<8x32x64xf32>, tensor<64x128xf32>) -> tensor<*xf32>
  // CHECK: nn.gelu %{{.*}} : (tensor<*xf32>) -> tensor<?x32x128xf32>
  %g = nn.gelu %y : (tensor<*xf32>) -> tensor<?x32x128xf32>
  // CHECK: nn.add %{{.*}}, %{{.*}} : (tensor<?x32x128xf32>, tensor<*xf32>) -> tensor<*xf32>
  %s = nn.add %g, %u : (tensor<?x32x128xf32>, tensor<*xf32>) -> tensor<*xf32>
  // CHECK: nn.reshape %{{.*}} : (tensor<*xf32>) -> tensor<*xf32>
  %r = nn.reshape %s : (tensor<*xf32>) -> tensor<*xf32>
  return %r : tensor<*xf32>
}

// Every op verifies with unranked operands (shape checks that need a rank are
// skipped until nn-shape-inference refines them).
// CHECK-LABEL: func.func @all_unranked
func.func @all_unranked(%u: tensor<*xf32>, %ids: tensor<*xi32>) {
  // CHECK-COUNT-2: nn.embedding
  %0 = nn.embedding %ids, %u : (tensor<*xi32>, tensor<*xf32>) -> tensor<*xf32>
  %1 = nn.embedding %ids, %u : (tensor<*xi32>, tensor<*xf32>) -> tensor<8x32x64xf32>
  %2 = nn.embedding_grad %ids, %u {vocab_size = 256 : i64} : (tensor<*xi32>, tensor<*xf32>) -> tensor<256x?xf32>
  %3 = nn.linear %u, %u, %u : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %4:2 = nn.linear_grad %u, %u, %u : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>)
  %5 = nn.matmul %u, %u {transpose_lhs = true} : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %6 = nn.layer_norm %u, %u, %u : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %7:3 = nn.layer_norm_grad %u, %u, %u : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  %8 = nn.gelu %u : (tensor<*xf32>) -> tensor<*xf32>
  %9 = nn.gelu_grad %u, %u : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %10 = nn.softmax %u {axis = 5 : i64} : (tensor<*xf32>) -> tensor<*xf32>
  %11 = nn.softmax_grad %u, %u : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %12 = nn.attention %u, %u, %u {num_heads = 3 : i64} : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %13:3 = nn.attention_grad %u, %u, %u, %u {num_heads = 3 : i64} : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  %14 = nn.add %u, %u : (tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  %15 = nn.mul %u, %u : (tensor<*xf32>, tensor<*xf32>) -> tensor<4x4xf32>
  %16 = nn.scale %u {factor = 3.0 : f32} : (tensor<*xf32>) -> tensor<*xf32>
  %17 = nn.reduce_sum %u {dims = array<i64: 4, -1>} : (tensor<*xf32>) -> tensor<*xf32>
  %18 = nn.reshape %u : (tensor<*xf32>) -> tensor<2x3xf32>
  %19 = nn.transpose %u {permutation = array<i64: 2, 0, 1>} : (tensor<*xf32>) -> tensor<*xf32>
  %20 = nn.roll %u {shifts = array<i64: 1>, dims = array<i64: 7>} : (tensor<*xf32>) -> tensor<*xf32>
  %21 = nn.dropout %u {rate = 0.5 : f32, seed = 1 : i64} : (tensor<*xf32>) -> tensor<*xf32>
  %22 = nn.cross_entropy %u, %ids : (tensor<*xf32>, tensor<*xi32>) -> tensor<*xf32>
  %23 = nn.cross_entropy_grad %u, %ids, %u : (tensor<*xf32>, tensor<*xi32>, tensor<*xf32>) -> tensor<*xf32>
  %24 = nn.fill {value = 0.0 : f32} : () -> tensor<*xf32>
  %25:3 = nn.adamw %u, %u, %u, %u {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.0 : f32}
      : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>)
  // CHECK: nn.adamw
  return
}
