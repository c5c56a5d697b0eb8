// RUN: flexmoe-opt %s -split-input-file -nn-shape-inference -verify-diagnostics

func.func @reshape_unranked(%x: tensor<2x8x16xf32>) -> tensor<*xf32> {
  %y = nn.gelu %x : (tensor<2x8x16xf32>) -> tensor<*xf32>
  // expected-error@+1 {{cannot infer the shape of 'nn.reshape'; give its result a static type}}
  %r = nn.reshape %y : (tensor<*xf32>) -> tensor<*xf32>
  return %r : tensor<*xf32>
}

// -----

func.func @reshape_dynamic(%x: tensor<2x8x16xf32>) -> tensor<?x16xf32> {
  // expected-error@+1 {{cannot infer the shape of 'nn.reshape'; give its result a static type}}
  %r = nn.reshape %x : (tensor<2x8x16xf32>) -> tensor<?x16xf32>
  return %r : tensor<?x16xf32>
}

// -----

func.func @fill_unranked() -> tensor<*xf32> {
  // expected-error@+1 {{cannot infer the shape of 'nn.fill'; give its result a static type}}
  %c = nn.fill {value = 0.0 : f32} : () -> tensor<*xf32>
  return %c : tensor<*xf32>
}

// -----

// expected-error@+1 {{argument #1 of @dynamic_argument has type 'tensor<?x16xf32>'; nn-shape-inference needs static argument shapes}}
func.func @dynamic_argument(%x: tensor<2x16xf32>, %y: tensor<?x16xf32>) -> tensor<*xf32> {
  %s = nn.add %x, %y : (tensor<2x16xf32>, tensor<?x16xf32>) -> tensor<*xf32>
  return %s : tensor<*xf32>
}

// -----

// The mismatch is hidden behind tensor<*xf32> until the operand is refined.
func.func @late_mismatch(%x: tensor<2x8x16xf32>, %w1: tensor<16x64xf32>, %w2: tensor<32x16xf32>) -> tensor<*xf32> {
  %h = nn.linear %x, %w1 : (tensor<2x8x16xf32>, tensor<16x64xf32>) -> tensor<*xf32>
  // expected-error@+1 {{'nn.linear' op x has 64 features (its last dimension) but weight has 32 rows}}
  %y = nn.linear %h, %w2 : (tensor<*xf32>, tensor<32x16xf32>) -> tensor<*xf32>
  return %y : tensor<*xf32>
}

// -----

func.func @late_reshape_count(%x: tensor<2x8x16xf32>) -> tensor<16x8xf32> {
  %y = nn.gelu %x : (tensor<2x8x16xf32>) -> tensor<*xf32>
  // expected-error@+1 {{'nn.reshape' op cannot reshape 'tensor<2x8x16xf32>' (256 elements) into 'tensor<16x8xf32>' (128 elements)}}
  %r = nn.reshape %y : (tensor<*xf32>) -> tensor<16x8xf32>
  return %r : tensor<16x8xf32>
}

// -----

func.func @late_heads(%x: tensor<2x8x12xf32>) -> tensor<*xf32> {
  %q = nn.scale %x {factor = 1.0 : f32} : (tensor<2x8x12xf32>) -> tensor<*xf32>
  // expected-error@+1 {{'nn.attention' op num_heads = 8 does not divide the feature dimension 12}}
  %o = nn.attention %q, %q, %q {num_heads = 8 : i64} : (tensor<*xf32>, tensor<*xf32>, tensor<*xf32>) -> tensor<*xf32>
  return %o : tensor<*xf32>
}

// -----

// A declared static result that disagrees with the refined operands.
func.func @late_result(%x: tensor<2x8xf32>) -> tensor<4x8xf32> {
  %y = nn.gelu %x : (tensor<2x8xf32>) -> tensor<*xf32>
  // expected-error@+2 {{'nn.softmax' op inferred type(s) 'tensor<2x8xf32>' are incompatible with return type(s) of operation 'tensor<4x8xf32>'}}
  // expected-error@+1 {{'nn.softmax' op failed to infer returned types}}
  %s = nn.softmax %y : (tensor<*xf32>) -> tensor<4x8xf32>
  return %s : tensor<4x8xf32>
}

// -----

func.func private @opaque(tensor<2x8xf32>) -> tensor<*xf32>

func.func @opaque_call(%x: tensor<2x8xf32>) -> tensor<*xf32> {
  // expected-error@+1 {{cannot infer the shape of 'func.call'; give its result a static type}}
  %y = func.call @opaque(%x) : (tensor<2x8xf32>) -> tensor<*xf32>
  return %y : tensor<*xf32>
}

// -----

// expected-error@+1 {{nn-shape-inference does not support recursive calls; @recursive calls itself, directly or through other functions}}
func.func @recursive(%x: tensor<2x8xf32>) -> tensor<*xf32> {
  %y = func.call @recursive(%x) : (tensor<2x8xf32>) -> tensor<*xf32>
  return %y : tensor<*xf32>
}
