//===- NNOps.td - nn dialect ops ---------------------------*- tablegen -*-===//
//
// The dense ops of a model, their gradients and the AdamW update. docs/IR.md
// is the contract: op names, operand and result order, attribute names and
// defaults follow its table.
//
//===----------------------------------------------------------------------===//

#ifndef FLEXMOE_DIALECT_NN_NNOPS
#define FLEXMOE_DIALECT_NN_NNOPS

include "flexmoe/Dialect/NN/NNDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type and attribute constraints
//===----------------------------------------------------------------------===//

def NN_FloatTensor : TensorOf<[AnyFloat]>;
def NN_IdTensor : TensorOf<[I32]>;

// An f32 attribute whose C++ getter returns `float` and whose builders take
// one, so that C++ callers can write `create<ScaleOp>(loc, x, 0.5f)`.
def NN_F32Attr : FloatAttrBase<F32, "32-bit float attribute"> {
  let returnType = "float";
  let convertFromStorage = "static_cast<float>($_self.getValueAsDouble())";
}

// An i64 attribute read as a signed value (axes may be negative).
def NN_I64Attr : TypedSignlessIntegerAttrBase<I64, "int64_t",
                                              "64-bit signless integer attribute"> {
  let convertFromStorage = "$_self.getValue().getSExtValue()";
}

def NN_BoolFalseAttr : DefaultValuedAttr<BoolAttr, "false">;

//===----------------------------------------------------------------------===//
// Op classes
//===----------------------------------------------------------------------===//

// Every op prints as `nn.op %a, %b {attrs} : (operand types) -> result types`.
class NN_PureOp<string mnemonic, list<Trait> traits = []>
    : NN_Op<mnemonic, !listconcat(traits, [Pure])> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
}

// An op whose result types follow from its operands and attributes. The
// inference is lenient (operands it cannot make sense of give unranked
// results); the verifier reports what is wrong, in the op's terms.
class NN_InferOp<string mnemonic, list<Trait> traits = []>
    : NN_PureOp<mnemonic, !listconcat(traits, [InferTypeOpAdaptorWithIsCompatible])> {
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

def NN_EmbeddingOp : NN_InferOp<"embedding"> {
  let summary = "looks up token embeddings in a table";
  let description = [{
    Gathers row `ids[b, s]` of `table: [V, D]` for every token, giving
    `[B, S, D]` (more generally, the shape of `ids` followed by `D`). Ids
    must lie in `[0, V)`; the runtime checks them.

    ```mlir
    %h = nn.embedding %tokens, %wte : (tensor<8x32xi32>, tensor<256x64xf32>) -> tensor<8x32x64xf32>
    ```
  }];
  let arguments = (ins NN_IdTensor:$ids, NN_FloatTensor:$table);
  let results = (outs NN_FloatTensor:$result);
}

def NN_EmbeddingGradOp : NN_InferOp<"embedding_grad"> {
  let summary = "gradient of nn.embedding with respect to its table";
  let description = [{
    Scatter-adds row `dy[b, s]` into row `ids[b, s]` of a zero
    `[vocab_size, D]` table gradient.

    ```mlir
    %dwte = nn.embedding_grad %tokens, %dh {vocab_size = 256 : i64}
        : (tensor<8x32xi32>, tensor<8x32x64xf32>) -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins NN_IdTensor:$ids, NN_FloatTensor:$dy,
                       NN_I64Attr:$vocab_size);
  let results = (outs NN_FloatTensor:$dtable);
}

//===----------------------------------------------------------------------===//
// Linear algebra
//===----------------------------------------------------------------------===//

def NN_LinearOp : NN_InferOp<"linear"> {
  let summary = "affine map x·weight + bias over the last dimension";
  let description = [{
    `x: [..., K]` times `weight: [K, N]` (weights are stored `[in, out]`),
    plus the optional `bias: [N]`, gives `[..., N]`.

    ```mlir
    %y = nn.linear %x, %w, %b : (tensor<8x32x64xf32>, tensor<64x256xf32>, tensor<256xf32>) -> tensor<8x32x256xf32>
    %z = nn.linear %x, %w : (tensor<8x32x64xf32>, tensor<64x256xf32>) -> tensor<8x32x256xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_FloatTensor:$weight,
                       Optional<NN_FloatTensor>:$bias);
  let results = (outs NN_FloatTensor:$result);
  let builders = [
    // Without bias; the result type is inferred.
    OpBuilder<(ins "::mlir::Value":$x, "::mlir::Value":$weight), [{
      build($_builder, $_state, x, weight, ::mlir::Value());
    }]>
  ];
}

def NN_LinearGradOp : NN_InferOp<"linear_grad"> {
  let summary = "gradients of nn.linear with respect to x and weight";
  let description = [{
    Given `dy: [..., N]`, computes `dx = dy·weightᵀ: [..., K]` and
    `dweight = xᵀ·dy: [K, N]` (leading dimensions summed). The bias gradient
    is a `nn.reduce_sum` of `dy` and is not part of this op.

    ```mlir
    %dx, %dw = nn.linear_grad %x, %w, %dy
        : (tensor<8x32x64xf32>, tensor<64x256xf32>, tensor<8x32x256xf32>) -> (tensor<8x32x64xf32>, tensor<64x256xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_FloatTensor:$weight,
                       NN_FloatTensor:$dy);
  let results = (outs NN_FloatTensor:$dx, NN_FloatTensor:$dweight);
}

def NN_MatmulOp : NN_InferOp<"matmul"> {
  let summary = "batched matrix product";
  let description = [{
    Multiplies `lhs: [..., M, K]` by `rhs: [..., K, N]` batch by batch, giving
    `[..., M, N]`. A 2-D `rhs` is broadcast over the batch dimensions of
    `lhs`; otherwise both operands have the same rank and batch dimensions.
    `transpose_lhs` (`transpose_rhs`) reads the last two dimensions of that
    operand swapped, i.e. `lhs: [..., K, M]` (`rhs: [..., N, K]`).

    ```mlir
    %s = nn.matmul %q, %k {transpose_rhs = true}
        : (tensor<8x4x32x16xf32>, tensor<8x4x32x16xf32>) -> tensor<8x4x32x32xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$lhs, NN_FloatTensor:$rhs,
                       NN_BoolFalseAttr:$transpose_lhs,
                       NN_BoolFalseAttr:$transpose_rhs);
  let results = (outs NN_FloatTensor:$result);
}

//===----------------------------------------------------------------------===//
// Normalisation and activations
//===----------------------------------------------------------------------===//

def NN_LayerNormOp : NN_InferOp<"layer_norm"> {
  let summary = "layer normalisation over the last dimension";
  let description = [{
    Normalises `x: [..., D]` over its last dimension to zero mean and unit
    variance (`(x - mean) / sqrt(var + epsilon)`, biased variance), then
    scales by `gamma: [D]` and shifts by `beta: [D]`.

    ```mlir
    %y = nn.layer_norm %x, %gamma, %beta {epsilon = 1.000000e-05 : f32}
        : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x32x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_FloatTensor:$gamma,
                       NN_FloatTensor:$beta,
                       DefaultValuedAttr<NN_F32Attr, "1e-5f">:$epsilon);
  let results = (outs NN_FloatTensor:$result);
}

def NN_LayerNormGradOp : NN_InferOp<"layer_norm_grad"> {
  let summary = "gradients of nn.layer_norm";
  let description = [{
    Given the forward input `x: [..., D]`, `gamma: [D]` and the result
    gradient `dy: [..., D]`, computes `dx: [..., D]`, `dgamma: [D]` and
    `dbeta: [D]` (statistics are recomputed from `x`). `epsilon` must match
    the forward op's.

    ```mlir
    %dx, %dgamma, %dbeta = nn.layer_norm_grad %x, %gamma, %dy
        : (tensor<8x32x64xf32>, tensor<64xf32>, tensor<8x32x64xf32>) -> (tensor<8x32x64xf32>, tensor<64xf32>, tensor<64xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_FloatTensor:$gamma,
                       NN_FloatTensor:$dy,
                       DefaultValuedAttr<NN_F32Attr, "1e-5f">:$epsilon);
  let results = (outs NN_FloatTensor:$dx, NN_FloatTensor:$dgamma,
                      NN_FloatTensor:$dbeta);
}

def NN_GeluOp : NN_InferOp<"gelu"> {
  let summary = "Gaussian error linear unit";
  let description = [{
    Elementwise GELU. `approximate = "tanh"` (the default) uses
    `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`; `"none"` the exact
    `x·Φ(x)` with the error function.

    ```mlir
    %y = nn.gelu %x : (tensor<8x32x256xf32>) -> tensor<8x32x256xf32>
    %z = nn.gelu %x {approximate = "none"} : (tensor<8x32x256xf32>) -> tensor<8x32x256xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x,
                       DefaultValuedAttr<StrAttr, "\"tanh\"">:$approximate);
  let results = (outs NN_FloatTensor:$result);
}

def NN_GeluGradOp : NN_InferOp<"gelu_grad"> {
  let summary = "gradient of nn.gelu";
  let description = [{
    `dx = dy · gelu'(x)` elementwise, with the same `approximate` as the
    forward op.

    ```mlir
    %dx = nn.gelu_grad %x, %dy : (tensor<8x32x256xf32>, tensor<8x32x256xf32>) -> tensor<8x32x256xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_FloatTensor:$dy,
                       DefaultValuedAttr<StrAttr, "\"tanh\"">:$approximate);
  let results = (outs NN_FloatTensor:$dx);
}

def NN_SoftmaxOp : NN_InferOp<"softmax"> {
  let summary = "softmax along one axis";
  let description = [{
    `exp(x - max) / sum(exp(x - max))` along `axis` (negative values count
    from the end; the default -1 is the last dimension).

    ```mlir
    %p = nn.softmax %s {axis = -1 : i64} : (tensor<8x4x32x32xf32>) -> tensor<8x4x32x32xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x,
                       DefaultValuedAttr<NN_I64Attr, "-1">:$axis);
  let results = (outs NN_FloatTensor:$result);
}

def NN_SoftmaxGradOp : NN_InferOp<"softmax_grad"> {
  let summary = "gradient of nn.softmax from its output";
  let description = [{
    Given the softmax output `y` and the result gradient `dy`, computes
    `dx = y · (dy - sum(dy · y))` with the sum along `axis`.

    ```mlir
    %dx = nn.softmax_grad %p, %dp : (tensor<8x4x32x32xf32>, tensor<8x4x32x32xf32>) -> tensor<8x4x32x32xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$y, NN_FloatTensor:$dy,
                       DefaultValuedAttr<NN_I64Attr, "-1">:$axis);
  let results = (outs NN_FloatTensor:$dx);
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def NN_AttentionOp : NN_InferOp<"attention"> {
  let summary = "multi-head scaled dot-product attention";
  let description = [{
    Splits `q`, `k`, `v: [B, S, D]` into `num_heads` heads of `D / num_heads`
    features, computes `softmax(q·kᵀ / sqrt(D / num_heads))·v` per head and
    concatenates the heads back into `[B, S, D]`. The input and output
    projections are separate `nn.linear` ops.

    With `causal = true`, query `i` sees key `j` only if `j ≤ i`. With
    `window = w > 0`, query `i` sees key `j` iff `0 ≤ i−j < w` (causal) or
    `|i−j| < w` (bidirectional); `window = 0` (the default) is full
    attention.

    ```mlir
    %o = nn.attention %q, %k, %v {num_heads = 4 : i64, causal = true}
        : (tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>) -> tensor<8x32x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$q, NN_FloatTensor:$k, NN_FloatTensor:$v,
                       NN_I64Attr:$num_heads, NN_BoolFalseAttr:$causal,
                       DefaultValuedAttr<NN_I64Attr, "0">:$window);
  let results = (outs NN_FloatTensor:$result);
}

def NN_AttentionGradOp : NN_InferOp<"attention_grad"> {
  let summary = "gradients of nn.attention with respect to q, k and v";
  let description = [{
    Given the forward operands and the result gradient `dy: [B, S, D]`,
    computes `dq`, `dk`, `dv` (the attention probabilities are recomputed).
    The attributes must match the forward op's.

    ```mlir
    %dq, %dk, %dv = nn.attention_grad %q, %k, %v, %dy {num_heads = 4 : i64, causal = true}
        : (tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>)
        -> (tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$q, NN_FloatTensor:$k, NN_FloatTensor:$v,
                       NN_FloatTensor:$dy,
                       NN_I64Attr:$num_heads, NN_BoolFalseAttr:$causal,
                       DefaultValuedAttr<NN_I64Attr, "0">:$window);
  let results = (outs NN_FloatTensor:$dq, NN_FloatTensor:$dk,
                      NN_FloatTensor:$dv);
}

//===----------------------------------------------------------------------===//
// Elementwise arithmetic
//===----------------------------------------------------------------------===//

def NN_AddOp : NN_InferOp<"add"> {
  let summary = "elementwise addition with numpy broadcasting";
  let description = [{
    Adds two tensors of the same element type; shapes broadcast as in numpy.

    ```mlir
    %c = nn.add %a, %b : (tensor<8x16x64xf32>, tensor<16x64xf32>) -> tensor<8x16x64xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$lhs, AnyTensor:$rhs);
  let results = (outs AnyTensor:$result);
}

def NN_MulOp : NN_InferOp<"mul"> {
  let summary = "elementwise multiplication with numpy broadcasting";
  let description = [{
    Multiplies two tensors of the same element type; shapes broadcast as in
    numpy.

    ```mlir
    %c = nn.mul %a, %b : (tensor<8x16x64xf32>, tensor<8x16x1xf32>) -> tensor<8x16x64xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$lhs, AnyTensor:$rhs);
  let results = (outs AnyTensor:$result);
}

def NN_ScaleOp : NN_InferOp<"scale"> {
  let summary = "multiplication by a constant";
  let description = [{
    `x · factor` elementwise.

    ```mlir
    %y = nn.scale %x {factor = 2.500000e-01 : f32} : (tensor<64x256xf32>) -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_F32Attr:$factor);
  let results = (outs NN_FloatTensor:$result);
}

def NN_ReduceSumOp : NN_InferOp<"reduce_sum"> {
  let summary = "sum over a set of dimensions";
  let description = [{
    Sums `x` over `dims` (distinct, negative values count from the end). The
    reduced dimensions are dropped, or kept with size 1 when `keep_dims` is
    true. Reducing every dimension without `keep_dims` gives a 0-d tensor.

    ```mlir
    %db = nn.reduce_sum %dy {dims = array<i64: 0, 1>} : (tensor<8x32x256xf32>) -> tensor<256xf32>
    %s = nn.reduce_sum %x {dims = array<i64: -1>, keep_dims = true} : (tensor<8x32x64xf32>) -> tensor<8x32x1xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, DenseI64ArrayAttr:$dims,
                       NN_BoolFalseAttr:$keep_dims);
  let results = (outs NN_FloatTensor:$result);
}

//===----------------------------------------------------------------------===//
// Shape manipulation
//===----------------------------------------------------------------------===//

def NN_ReshapeOp : NN_PureOp<"reshape"> {
  let summary = "reinterprets a tensor with another shape";
  let description = [{
    Gives the elements of `x`, in row-major order, the shape of the result
    type, which must have the same number of elements. The result type is
    not inferred: it is written out and must be static by the end of
    `nn-shape-inference`.

    ```mlir
    %t = nn.reshape %x : (tensor<8x32x64xf32>) -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$x);
  let results = (outs AnyTensor:$result);
  let hasVerifier = 1;
}

def NN_TransposeOp : NN_InferOp<"transpose"> {
  let summary = "permutes the dimensions of a tensor";
  let description = [{
    Result dimension `i` is dimension `permutation[i]` of `x`.
    `permutation` must be a permutation of `[0, rank)`.

    ```mlir
    %t = nn.transpose %x {permutation = array<i64: 0, 2, 1, 3>}
        : (tensor<8x32x4x16xf32>) -> tensor<8x4x32x16xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$x, DenseI64ArrayAttr:$permutation);
  let results = (outs AnyTensor:$result);
}

def NN_RollOp : NN_InferOp<"roll"> {
  let summary = "cyclic shift along dimensions";
  let description = [{
    Shifts `x` cyclically by `shifts[i]` positions along dimension `dims[i]`
    (as `torch.roll`): element `j` moves to `(j + shift) mod size`. Swin
    Transformer's shifted windows roll the spatial dimensions by minus half a
    window before window attention and back afterwards.

    ```mlir
    %r = nn.roll %x {shifts = array<i64: -2, -2>, dims = array<i64: 1, 2>}
        : (tensor<4x8x8x32xf32>) -> tensor<4x8x8x32xf32>
    ```
  }];
  let arguments = (ins AnyTensor:$x, DenseI64ArrayAttr:$shifts,
                       DenseI64ArrayAttr:$dims);
  let results = (outs AnyTensor:$result);
}

//===----------------------------------------------------------------------===//
// Regularisation and loss
//===----------------------------------------------------------------------===//

def NN_DropoutOp : NN_InferOp<"dropout"> {
  let summary = "inverted dropout with a reproducible mask";
  let description = [{
    Zeroes each element with probability `rate` and scales the others by
    `1 / (1 - rate)`. The mask is a function of (`seed`, element index,
    training step); the runtime supplies the step, so the op is pure and
    `nn.dropout` of `dy` with the same `seed` and `rate` is its gradient.

    ```mlir
    %y = nn.dropout %x {rate = 1.000000e-01 : f32, seed = 7 : i64} : (tensor<8x32x64xf32>) -> tensor<8x32x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$x, NN_F32Attr:$rate, NN_I64Attr:$seed);
  let results = (outs NN_FloatTensor:$result);
}

def NN_CrossEntropyOp : NN_InferOp<"cross_entropy"> {
  let summary = "mean softmax cross entropy against integer labels";
  let description = [{
    For `logits: [..., V]` and `labels: [...]` (i32 class ids), the mean over
    all positions whose label is not `ignore_index` of
    `logsumexp(logits) - logits[label]`; a 0-d tensor. With no counted
    position the loss is 0.

    ```mlir
    %loss = nn.cross_entropy %logits, %labels : (tensor<8x32x256xf32>, tensor<8x32xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$logits, NN_IdTensor:$labels,
                       DefaultValuedAttr<NN_I64Attr, "-100">:$ignore_index);
  let results = (outs NN_FloatTensor:$result);
}

def NN_CrossEntropyGradOp : NN_InferOp<"cross_entropy_grad"> {
  let summary = "gradient of nn.cross_entropy with respect to the logits";
  let description = [{
    `dlogits = dloss · (softmax(logits) - onehot(label)) / count` at counted
    positions and 0 at ignored ones, where `count` is the number of labels
    other than `ignore_index` and `dloss` the 0-d loss gradient.

    ```mlir
    %dlogits = nn.cross_entropy_grad %logits, %labels, %dloss
        : (tensor<8x32x256xf32>, tensor<8x32xi32>, tensor<f32>) -> tensor<8x32x256xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$logits, NN_IdTensor:$labels,
                       NN_FloatTensor:$dloss,
                       DefaultValuedAttr<NN_I64Attr, "-100">:$ignore_index);
  let results = (outs NN_FloatTensor:$dlogits);
}

//===----------------------------------------------------------------------===//
// Constants and the optimizer
//===----------------------------------------------------------------------===//

def NN_FillOp : NN_PureOp<"fill"> {
  let summary = "a float tensor with every element equal to a value";
  let description = [{
    The result type is written out; it must be static by the end of
    `nn-shape-inference`. The training step seeds the loss gradient with it.

    ```mlir
    %one = nn.fill {value = 1.000000e+00 : f32} : () -> tensor<f32>
    ```
  }];
  let arguments = (ins NN_F32Attr:$value);
  let results = (outs NN_FloatTensor:$result);
  let hasVerifier = 1;
  // No operands: without them the uniform format would print two spaces.
  let assemblyFormat = "attr-dict `:` functional-type(operands, results)";
}

def NN_AdamWOp : NN_InferOp<"adamw"> {
  let summary = "one AdamW step for a parameter and its optimizer state";
  let description = [{
    With gradient `g` and the step count `t` supplied by the runtime:
    `m' = beta1·m + (1-beta1)·g`, `v' = beta2·v + (1-beta2)·g²`,
    `param' = param - lr·(m̂ / (sqrt(v̂) + epsilon) + weight_decay·param)`
    where `m̂ = m' / (1-beta1^t)` and `v̂ = v' / (1-beta2^t)` (decoupled weight
    decay). `param`, `grad`, `m` and `v` have the same shape; the results are
    the new parameter, first and second moment.

    ```mlir
    %p1, %m1, %v1 = nn.adamw %p, %g, %m, %v
        {lr = 1.000000e-03 : f32, beta1 = 0.899999976 : f32, beta2 = 9.990000e-01 : f32,
         epsilon = 9.99999993E-9 : f32, weight_decay = 0.00999999977 : f32}
        : (tensor<64x256xf32>, tensor<64x256xf32>, tensor<64x256xf32>, tensor<64x256xf32>)
        -> (tensor<64x256xf32>, tensor<64x256xf32>, tensor<64x256xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$param, NN_FloatTensor:$grad,
                       NN_FloatTensor:$m, NN_FloatTensor:$v,
                       NN_F32Attr:$lr, NN_F32Attr:$beta1, NN_F32Attr:$beta2,
                       NN_F32Attr:$epsilon, NN_F32Attr:$weight_decay);
  let results = (outs NN_FloatTensor:$new_param, NN_FloatTensor:$new_m,
                      NN_FloatTensor:$new_v);
}

#endif // FLEXMOE_DIALECT_NN_NNOPS
