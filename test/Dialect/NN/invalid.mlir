// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics

func.func @embedding_float_ids(%ids: tensor<8x32xf32>, %table: tensor<256x64xf32>) {
  // expected-error@+1 {{'nn.embedding' op operand #0 must be tensor of 32-bit signless integer values}}
  %h = nn.embedding %ids, %table : (tensor<8x32xf32>, tensor<256x64xf32>) -> tensor<8x32x64xf32>
  return
}

// -----

func.func @embedding_table_rank(%ids: tensor<8x32xi32>, %table: tensor<256xf32>) {
  // expected-error@+1 {{'nn.embedding' op table must be 2-D [vocab, features], got 'tensor<256xf32>'}}
  %h = nn.embedding %ids, %table : (tensor<8x32xi32>, tensor<256xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @embedding_result(%ids: tensor<8x32xi32>, %table: tensor<256x64xf32>) {
  // expected-error@+2 {{'nn.embedding' op inferred type(s) 'tensor<8x32x64xf32>' are incompatible with return type(s) of operation 'tensor<8x32x32xf32>'}}
  // expected-error@+1 {{'nn.embedding' op failed to infer returned types}}
  %h = nn.embedding %ids, %table : (tensor<8x32xi32>, tensor<256x64xf32>) -> tensor<8x32x32xf32>
  return
}

// -----

func.func @embedding_grad_vocab(%ids: tensor<8x32xi32>, %dy: tensor<8x32x64xf32>) {
  // expected-error@+1 {{'nn.embedding_grad' op vocab_size must be positive, got 0}}
  %d = nn.embedding_grad %ids, %dy {vocab_size = 0 : i64} : (tensor<8x32xi32>, tensor<8x32x64xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @embedding_grad_shape(%ids: tensor<8x32xi32>, %dy: tensor<8x16x64xf32>) {
  // expected-error@+1 {{'nn.embedding_grad' op dy must be the shape of ids followed by the feature dimension, got ids 'tensor<8x32xi32>' and dy 'tensor<8x16x64xf32>'}}
  %d = nn.embedding_grad %ids, %dy {vocab_size = 256 : i64} : (tensor<8x32xi32>, tensor<8x16x64xf32>) -> tensor<256x64xf32>
  return
}

// -----

func.func @embedding_grad_missing_vocab(%ids: tensor<8x32xi32>, %dy: tensor<8x32x64xf32>) {
  // expected-error@+1 {{vocab_size}}
  %d = nn.embedding_grad %ids, %dy : (tensor<8x32xi32>, tensor<8x32x64xf32>) -> tensor<256x64xf32>
  return
}

// -----

func.func @linear_contraction(%x: tensor<8x32x64xf32>, %w: tensor<32x128xf32>) {
  // expected-error@+1 {{'nn.linear' op x has 64 features (its last dimension) but weight has 32 rows}}
  %y = nn.linear %x, %w : (tensor<8x32x64xf32>, tensor<32x128xf32>) -> tensor<8x32x128xf32>
  return
}

// -----

func.func @linear_bias(%x: tensor<8x64xf32>, %w: tensor<64x128xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{'nn.linear' op bias has 64 elements but weight has 128 columns}}
  %y = nn.linear %x, %w, %b : (tensor<8x64xf32>, tensor<64x128xf32>, tensor<64xf32>) -> tensor<8x128xf32>
  return
}

// -----

func.func @linear_weight_rank(%x: tensor<8x64xf32>, %w: tensor<4x64x128xf32>) {
  // expected-error@+1 {{'nn.linear' op weight must be 2-D [in_features, out_features], got 'tensor<4x64x128xf32>'}}
  %y = nn.linear %x, %w : (tensor<8x64xf32>, tensor<4x64x128xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @linear_element_type(%x: tensor<8x64xf32>, %w: tensor<64x128xf16>) {
  // expected-error@+1 {{'nn.linear' op weight has element type 'f16' but x has 'f32'}}
  %y = nn.linear %x, %w : (tensor<8x64xf32>, tensor<64x128xf16>) -> tensor<*xf32>
  return
}

// -----

func.func @linear_result(%x: tensor<8x64xf32>, %w: tensor<64x128xf32>) {
  // expected-error@+2 {{'nn.linear' op inferred type(s) 'tensor<8x128xf32>' are incompatible with return type(s) of operation 'tensor<8x64xf32>'}}
  // expected-error@+1 {{'nn.linear' op failed to infer returned types}}
  %y = nn.linear %x, %w : (tensor<8x64xf32>, tensor<64x128xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @linear_grad_dy(%x: tensor<8x64xf32>, %w: tensor<64x128xf32>, %dy: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.linear_grad' op dy has 64 features (its last dimension) but weight has 128 columns}}
  %dx, %dw = nn.linear_grad %x, %w, %dy : (tensor<8x64xf32>, tensor<64x128xf32>, tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @linear_grad_leading(%x: tensor<8x64xf32>, %w: tensor<64x128xf32>, %dy: tensor<4x128xf32>) {
  // expected-error@+1 {{'nn.linear_grad' op dy must have the leading dimensions of x, got x 'tensor<8x64xf32>' and dy 'tensor<4x128xf32>'}}
  %dx, %dw = nn.linear_grad %x, %w, %dy : (tensor<8x64xf32>, tensor<64x128xf32>, tensor<4x128xf32>) -> (tensor<8x64xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @matmul_contraction(%a: tensor<4x32x16xf32>, %b: tensor<4x32x16xf32>) {
  // expected-error@+1 {{'nn.matmul' op contraction dimensions differ: lhs 'tensor<4x32x16xf32>' has K = 16 but rhs 'tensor<4x32x16xf32>' has K = 32}}
  %c = nn.matmul %a, %b : (tensor<4x32x16xf32>, tensor<4x32x16xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @matmul_batch(%a: tensor<4x32x16xf32>, %b: tensor<2x16x8xf32>) {
  // expected-error@+1 {{'nn.matmul' op batch dimension 0 differs: lhs 'tensor<4x32x16xf32>' and rhs 'tensor<2x16x8xf32>'}}
  %c = nn.matmul %a, %b : (tensor<4x32x16xf32>, tensor<2x16x8xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @matmul_rank(%a: tensor<2x4x32x16xf32>, %b: tensor<4x16x8xf32>) {
  // expected-error@+1 {{'nn.matmul' op rhs must be 2-D or have the rank of lhs, got lhs 'tensor<2x4x32x16xf32>' and rhs 'tensor<4x16x8xf32>'}}
  %c = nn.matmul %a, %b : (tensor<2x4x32x16xf32>, tensor<4x16x8xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @matmul_vector(%a: tensor<16xf32>, %b: tensor<16x8xf32>) {
  // expected-error@+1 {{'nn.matmul' op lhs must be at least 2-D [..., M, K], got 'tensor<16xf32>'}}
  %c = nn.matmul %a, %b : (tensor<16xf32>, tensor<16x8xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @layer_norm_gamma(%x: tensor<8x64xf32>, %g: tensor<32xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op gamma has 32 elements but x has 64 features (its last dimension)}}
  %y = nn.layer_norm %x, %g, %b : (tensor<8x64xf32>, tensor<32xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @layer_norm_epsilon(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op epsilon must be a positive number, got 0}}
  %y = nn.layer_norm %x, %g, %b {epsilon = 0.0 : f32} : (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @layer_norm_epsilon_type(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %b: tensor<64xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op attribute 'epsilon' failed to satisfy constraint: 32-bit float attribute}}
  %y = nn.layer_norm %x, %g, %b {epsilon = 1.0e-5 : f64} : (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @layer_norm_grad_dy(%x: tensor<8x64xf32>, %g: tensor<64xf32>, %dy: tensor<4x64xf32>) {
  // expected-error@+1 {{'nn.layer_norm_grad' op dy must have the shape of x ('tensor<8x64xf32>'), got 'tensor<4x64xf32>'}}
  %dx, %dg, %db = nn.layer_norm_grad %x, %g, %dy : (tensor<8x64xf32>, tensor<64xf32>, tensor<4x64xf32>) -> (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @gelu_approximate(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.gelu' op approximate must be "tanh" or "none", got "erf"}}
  %y = nn.gelu %x {approximate = "erf"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @gelu_result(%x: tensor<8x64xf32>) {
  // expected-error@+2 {{'nn.gelu' op inferred type(s) 'tensor<8x64xf32>' are incompatible with return type(s) of operation 'tensor<64x8xf32>'}}
  // expected-error@+1 {{'nn.gelu' op failed to infer returned types}}
  %y = nn.gelu %x : (tensor<8x64xf32>) -> tensor<64x8xf32>
  return
}

// -----

func.func @gelu_int(%x: tensor<8x64xi32>) {
  // expected-error@+1 {{'nn.gelu' op operand #0 must be tensor of floating-point values}}
  %y = nn.gelu %x : (tensor<8x64xi32>) -> tensor<8x64xi32>
  return
}

// -----

func.func @gelu_grad_shape(%x: tensor<8x64xf32>, %dy: tensor<8x32xf32>) {
  // expected-error@+1 {{'nn.gelu_grad' op dy must have the shape of x ('tensor<8x64xf32>'), got 'tensor<8x32xf32>'}}
  %dx = nn.gelu_grad %x, %dy : (tensor<8x64xf32>, tensor<8x32xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @softmax_axis(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.softmax' op axis 2 is out of range for 'tensor<8x64xf32>' (rank 2)}}
  %y = nn.softmax %x {axis = 2 : i64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @softmax_grad_shape(%y: tensor<8x64xf32>, %dy: tensor<64xf32>) {
  // expected-error@+1 {{'nn.softmax_grad' op dy must have the shape of y ('tensor<8x64xf32>'), got 'tensor<64xf32>'}}
  %dx = nn.softmax_grad %y, %dy : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @softmax_grad_axis(%y: tensor<8x64xf32>, %dy: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.softmax_grad' op axis -3 is out of range for 'tensor<8x64xf32>' (rank 2)}}
  %dx = nn.softmax_grad %y, %dy {axis = -3 : i64} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @attention_heads(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op num_heads = 6 does not divide the feature dimension 64}}
  %o = nn.attention %q, %q, %q {num_heads = 6 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_heads_positive(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op num_heads must be positive, got 0}}
  %o = nn.attention %q, %q, %q {num_heads = 0 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_window(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op window must be >= 0 (0 means full attention), got -1}}
  %o = nn.attention %q, %q, %q {num_heads = 4 : i64, window = -1 : i64} : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_rank(%q: tensor<32x64xf32>) {
  // expected-error@+1 {{'nn.attention' op q must be 3-D [batch, sequence, features], got 'tensor<32x64xf32>'}}
  %o = nn.attention %q, %q, %q {num_heads = 4 : i64} : (tensor<32x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @attention_kv(%q: tensor<2x16x64xf32>, %k: tensor<2x8x64xf32>) {
  // expected-error@+1 {{'nn.attention' op k must have the shape of q ('tensor<2x16x64xf32>'), got 'tensor<2x8x64xf32>'}}
  %o = nn.attention %q, %k, %k {num_heads = 4 : i64} : (tensor<2x16x64xf32>, tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @attention_grad_dy(%q: tensor<2x16x64xf32>, %dy: tensor<2x16x32xf32>) {
  // expected-error@+1 {{'nn.attention_grad' op dy must have the shape of q ('tensor<2x16x64xf32>'), got 'tensor<2x16x32xf32>'}}
  %dq, %dk, %dv = nn.attention_grad %q, %q, %q, %dy {num_heads = 4 : i64}
      : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  return
}

// -----

func.func @attention_grad_heads(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention_grad' op num_heads must be positive, got -2}}
  %dq, %dk, %dv = nn.attention_grad %q, %q, %q, %q {num_heads = -2 : i64}
      : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  return
}

// -----

func.func @add_broadcast(%a: tensor<8x16xf32>, %b: tensor<4x16xf32>) {
  // expected-error@+1 {{'nn.add' op shapes of lhs 'tensor<8x16xf32>' and rhs 'tensor<4x16xf32>' do not broadcast}}
  %c = nn.add %a, %b : (tensor<8x16xf32>, tensor<4x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @add_element_type(%a: tensor<8x16xf32>, %b: tensor<8x16xi32>) {
  // expected-error@+1 {{'nn.add' op rhs has element type 'i32' but lhs has 'f32'}}
  %c = nn.add %a, %b : (tensor<8x16xf32>, tensor<8x16xi32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @mul_broadcast(%a: tensor<8x16xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'nn.mul' op shapes of lhs 'tensor<8x16xf32>' and rhs 'tensor<3xf32>' do not broadcast}}
  %c = nn.mul %a, %b : (tensor<8x16xf32>, tensor<3xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @scale_missing_factor(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{factor}}
  %y = nn.scale %x : (tensor<8x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @scale_result(%x: tensor<8x16xf32>) {
  // expected-error@+2 {{'nn.scale' op inferred type(s) 'tensor<8x16xf32>' are incompatible with return type(s) of operation 'tensor<8x16xf16>'}}
  // expected-error@+1 {{'nn.scale' op failed to infer returned types}}
  %y = nn.scale %x {factor = 2.0 : f32} : (tensor<8x16xf32>) -> tensor<8x16xf16>
  return
}

// -----

func.func @reduce_sum_range(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.reduce_sum' op dimension 2 in dims is out of range for 'tensor<8x16xf32>' (rank 2)}}
  %y = nn.reduce_sum %x {dims = array<i64: 2>} : (tensor<8x16xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @reduce_sum_unique(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.reduce_sum' op dimension -1 appears more than once in dims}}
  %y = nn.reduce_sum %x {dims = array<i64: 1, -1>} : (tensor<8x16xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @reduce_sum_result(%x: tensor<8x16xf32>) {
  // expected-error@+2 {{'nn.reduce_sum' op inferred type(s) 'tensor<8x1xf32>' are incompatible with return type(s) of operation 'tensor<8xf32>'}}
  // expected-error@+1 {{'nn.reduce_sum' op failed to infer returned types}}
  %y = nn.reduce_sum %x {dims = array<i64: 1>, keep_dims = true} : (tensor<8x16xf32>) -> tensor<8xf32>
  return
}

// -----

func.func @reshape_count(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.reshape' op cannot reshape 'tensor<8x16xf32>' (128 elements) into 'tensor<8x8xf32>' (64 elements)}}
  %y = nn.reshape %x : (tensor<8x16xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @reshape_element_type(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.reshape' op result element type 'i32' differs from the element type 'f32' of x}}
  %y = nn.reshape %x : (tensor<8x16xf32>) -> tensor<128xi32>
  return
}

// -----

func.func @transpose_length(%x: tensor<8x16x4xf32>) {
  // expected-error@+1 {{'nn.transpose' op permutation has 2 entries but x 'tensor<8x16x4xf32>' has rank 3}}
  %y = nn.transpose %x {permutation = array<i64: 1, 0>} : (tensor<8x16x4xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @transpose_repeated(%x: tensor<8x16x4xf32>) {
  // expected-error@+1 {{'nn.transpose' op permutation entry 1 appears more than once}}
  %y = nn.transpose %x {permutation = array<i64: 1, 1, 0>} : (tensor<8x16x4xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @transpose_range_unranked(%x: tensor<*xf32>) {
  // expected-error@+1 {{'nn.transpose' op permutation entry 3 is out of range [0, 2)}}
  %y = nn.transpose %x {permutation = array<i64: 3, 0>} : (tensor<*xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @roll_lengths(%x: tensor<4x8x8x32xf32>) {
  // expected-error@+1 {{'nn.roll' op shifts has 1 entries but dims has 2}}
  %y = nn.roll %x {shifts = array<i64: 2>, dims = array<i64: 1, 2>} : (tensor<4x8x8x32xf32>) -> tensor<4x8x8x32xf32>
  return
}

// -----

func.func @roll_range(%x: tensor<4x8x8x32xf32>) {
  // expected-error@+1 {{'nn.roll' op dimension 4 in dims is out of range for 'tensor<4x8x8x32xf32>' (rank 4)}}
  %y = nn.roll %x {shifts = array<i64: 2>, dims = array<i64: 4>} : (tensor<4x8x8x32xf32>) -> tensor<4x8x8x32xf32>
  return
}

// -----

func.func @roll_empty(%x: tensor<4x8xf32>) {
  // expected-error@+1 {{'nn.roll' op dims must name at least one dimension}}
  %y = nn.roll %x {shifts = array<i64>, dims = array<i64>} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

func.func @dropout_rate(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.dropout' op rate must be in [0, 1), got 1}}
  %y = nn.dropout %x {rate = 1.0 : f32, seed = 0 : i64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @dropout_negative(%x: tensor<8x16xf32>) {
  // expected-error@+1 {{'nn.dropout' op rate must be in [0, 1), got -0.5}}
  %y = nn.dropout %x {rate = -0.5 : f32, seed = 0 : i64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
  return
}

// -----

func.func @cross_entropy_labels(%logits: tensor<8x32x256xf32>, %labels: tensor<8x16xi32>) {
  // expected-error@+1 {{'nn.cross_entropy' op labels must have the shape of logits without its last (class) dimension, got logits 'tensor<8x32x256xf32>' and labels 'tensor<8x16xi32>'}}
  %l = nn.cross_entropy %logits, %labels : (tensor<8x32x256xf32>, tensor<8x16xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_label_rank(%logits: tensor<8x32x256xf32>, %labels: tensor<8x32x256xi32>) {
  // expected-error@+1 {{'nn.cross_entropy' op labels must have the shape of logits without its last (class) dimension}}
  %l = nn.cross_entropy %logits, %labels : (tensor<8x32x256xf32>, tensor<8x32x256xi32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_float_labels(%logits: tensor<8x256xf32>, %labels: tensor<8xf32>) {
  // expected-error@+1 {{'nn.cross_entropy' op operand #1 must be tensor of 32-bit signless integer values}}
  %l = nn.cross_entropy %logits, %labels : (tensor<8x256xf32>, tensor<8xf32>) -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_result(%logits: tensor<8x256xf32>, %labels: tensor<8xi32>) {
  // expected-error@+2 {{'nn.cross_entropy' op inferred type(s) 'tensor<f32>' are incompatible with return type(s) of operation 'tensor<8xf32>'}}
  // expected-error@+1 {{'nn.cross_entropy' op failed to infer returned types}}
  %l = nn.cross_entropy %logits, %labels : (tensor<8x256xf32>, tensor<8xi32>) -> tensor<8xf32>
  return
}

// -----

func.func @cross_entropy_grad_dloss(%logits: tensor<8x256xf32>, %labels: tensor<8xi32>, %dloss: tensor<1xf32>) {
  // expected-error@+1 {{'nn.cross_entropy_grad' op dloss must be a 0-d tensor (the loss gradient), got 'tensor<1xf32>'}}
  %d = nn.cross_entropy_grad %logits, %labels, %dloss : (tensor<8x256xf32>, tensor<8xi32>, tensor<1xf32>) -> tensor<8x256xf32>
  return
}

// -----

func.func @cross_entropy_grad_labels(%logits: tensor<8x256xf32>, %labels: tensor<4xi32>, %dloss: tensor<f32>) {
  // expected-error@+1 {{'nn.cross_entropy_grad' op labels must have the shape of logits without its last (class) dimension, got logits 'tensor<8x256xf32>' and labels 'tensor<4xi32>'}}
  %d = nn.cross_entropy_grad %logits, %labels, %dloss : (tensor<8x256xf32>, tensor<4xi32>, tensor<f32>) -> tensor<8x256xf32>
  return
}

// -----

func.func @fill_int() {
  // expected-error@+1 {{'nn.fill' op result #0 must be tensor of floating-point values}}
  %c = nn.fill {value = 1.0 : f32} : () -> tensor<4xi32>
  return
}

// -----

func.func @fill_nan() {
  // expected-error@+1 {{'nn.fill' op value must be a number, got NaN}}
  %c = nn.fill {value = 0x7FC00000 : f32} : () -> tensor<4xf32>
  return
}

// -----

func.func @adamw_shapes(%p: tensor<64x128xf32>, %m: tensor<128x64xf32>) {
  // expected-error@+1 {{'nn.adamw' op m must have the shape of param ('tensor<64x128xf32>'), got 'tensor<128x64xf32>'}}
  %p1, %m1, %v1 = nn.adamw %p, %p, %m, %p
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<64x128xf32>, tensor<64x128xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> (tensor<64x128xf32>, tensor<64x128xf32>, tensor<64x128xf32>)
  return
}

// -----

func.func @adamw_beta(%p: tensor<64xf32>) {
  // expected-error@+1 {{'nn.adamw' op beta2 must be in [0, 1), got 1}}
  %p1, %m1, %v1 = nn.adamw %p, %p, %p, %p
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 1.0 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_lr(%p: tensor<64xf32>) {
  // expected-error@+1 {{'nn.adamw' op lr must be a non-negative number, got -1}}
  %p1, %m1, %v1 = nn.adamw %p, %p, %p, %p
      {lr = -1.0 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32, weight_decay = 0.01 : f32}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @adamw_missing(%p: tensor<64xf32>) {
  // expected-error@+1 {{weight_decay}}
  %p1, %m1, %v1 = nn.adamw %p, %p, %p, %p
      {lr = 1.0e-3 : f32, beta1 = 0.9 : f32, beta2 = 0.999 : f32, epsilon = 1.0e-8 : f32}
      : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
  return
}

// -----

func.func @reshape_huge(%x: tensor<4611686018427387904x4xf32>) {
  // expected-error@+1 {{'nn.reshape' op element count of 'tensor<4611686018427387904x4xf32>' does not fit in 64 bits}}
  %y = nn.reshape %x : (tensor<4611686018427387904x4xf32>) -> tensor<16xf32>
  return
}
