//===- GradientsNN.cpp - gradient rules of the nn ops ---------------------===//
//
// One function per differentiable nn op: given the gradient of the result
// (never null: single-result ops are only asked when their result reaches the
// loss), build the gradient of each operand. See Gradients.h for the
// contract.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Passes/Gradients.h"

#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Dialect/NN/NNOps.h"

#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace flexmoe;
using namespace flexmoe::nn;
using grad::attachRule;
using grad::copyAttributes;
using grad::createOp;

namespace {

using Gradients = SmallVectorImpl<Value>;

/// `value` with its last two dimensions swapped.
Value transposeLastTwo(OpBuilder &b, Location loc, Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  int64_t rank = type.getRank();
  SmallVector<int64_t> permutation = llvm::to_vector(llvm::seq<int64_t>(rank));
  std::swap(permutation[rank - 1], permutation[rank - 2]);
  SmallVector<int64_t> shape(type.getShape());
  std::swap(shape[rank - 1], shape[rank - 2]);
  return createOp<TransposeOp>(
      b, loc, RankedTensorType::get(shape, type.getElementType()), value,
      {b.getNamedAttr("permutation", b.getDenseI64ArrayAttr(permutation))});
}

/// `lhs · rhs` with the transpose flags, of the given result type.
Value createMatmul(OpBuilder &b, Location loc, Type type, Value lhs, Value rhs,
                   bool transposeLhs, bool transposeRhs) {
  return createOp<MatmulOp>(
      b, loc, type, {lhs, rhs},
      {b.getNamedAttr("transpose_lhs", b.getBoolAttr(transposeLhs)),
       b.getNamedAttr("transpose_rhs", b.getBoolAttr(transposeRhs))});
}

/// Dimensions in [0, rank), negative ones counted from the back.
SmallVector<int64_t> normalizeDims(ArrayRef<int64_t> dims, int64_t rank) {
  return llvm::map_to_vector(dims,
                             [&](int64_t d) { return d < 0 ? d + rank : d; });
}

LogicalResult embeddingGradient(EmbeddingOp op, OpBuilder &b,
                                ArrayRef<Value> dys, Gradients &dxs) {
  auto tableType = cast<RankedTensorType>(op.getTable().getType());
  Value dtable = createOp<EmbeddingGradOp>(
      b, op.getLoc(), tableType, {op.getIds(), dys[0]},
      {b.getNamedAttr("vocab_size",
                      b.getI64IntegerAttr(tableType.getDimSize(0)))});
  dxs.assign({Value(), dtable});
  return success();
}

LogicalResult linearGradient(LinearOp op, OpBuilder &b, ArrayRef<Value> dys,
                             Gradients &dxs) {
  Value x = op.getX(), weight = op.getWeight();
  auto grads = b.create<LinearGradOp>(op.getLoc(),
                                      TypeRange{x.getType(), weight.getType()},
                                      ValueRange{x, weight, dys[0]});
  dxs.assign({grads.getDx(), grads.getDweight()});
  // The bias is broadcast over every leading dimension of the output.
  if (Value bias = op.getBias())
    dxs.push_back(grad::sumToShape(b, op.getLoc(), dys[0], bias.getType()));
  return success();
}

// y = A·B with A = lhs or lhsᵀ and B = rhs or rhsᵀ (the transpose flags):
// dA = dy·Bᵀ and dB = Aᵀ·dy; the flags of the backward matmuls absorb the
// transposes.
LogicalResult matmulGradient(MatmulOp op, OpBuilder &b, ArrayRef<Value> dys,
                             Gradients &dxs) {
  Location loc = op.getLoc();
  Value lhs = op.getLhs(), rhs = op.getRhs(), dy = dys[0];
  bool transposeLhs = op.getTransposeLhs(), transposeRhs = op.getTransposeRhs();
  auto lhsType = cast<RankedTensorType>(lhs.getType());
  auto rhsType = cast<RankedTensorType>(rhs.getType());
  auto dyType = cast<RankedTensorType>(dy.getType());
  // The verifier guarantees equal batch dimensions or a 2-D rhs.
  assert((rhsType.getRank() == lhsType.getRank() || rhsType.getRank() == 2) &&
         "matmul rhs must be 2-D or have the rank of lhs");

  Value dlhs;
  if (!transposeLhs) {
    dlhs = createMatmul(b, loc, lhsType, dy, rhs, false, !transposeRhs);
  } else if (rhsType.getRank() == lhsType.getRank()) {
    // dlhs = dAᵀ = B·dyᵀ.
    dlhs = createMatmul(b, loc, lhsType, rhs, dy, transposeRhs, true);
  } else {
    // A broadcast 2-D rhs cannot be a matmul's lhs: transpose dA instead.
    SmallVector<int64_t> shape(lhsType.getShape());
    std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
    Value dA = createMatmul(
        b, loc, RankedTensorType::get(shape, lhsType.getElementType()), dy, rhs,
        false, !transposeRhs);
    dlhs = transposeLastTwo(b, loc, dA);
  }

  // drhs for every batch of dy, summed over the batches a 2-D rhs was
  // broadcast to.
  SmallVector<int64_t> drhsShape(dyType.getShape().drop_back(2));
  llvm::append_range(drhsShape, rhsType.getShape().take_back(2));
  auto drhsType = RankedTensorType::get(drhsShape, rhsType.getElementType());
  Value drhs =
      transposeRhs
          ? createMatmul(b, loc, drhsType, dy, lhs, true, transposeLhs)
          : createMatmul(b, loc, drhsType, lhs, dy, !transposeLhs, false);
  dxs.assign({dlhs, grad::sumToShape(b, loc, drhs, rhsType)});
  return success();
}

LogicalResult layerNormGradient(LayerNormOp op, OpBuilder &b,
                                ArrayRef<Value> dys, Gradients &dxs) {
  Value x = op.getX(), gamma = op.getGamma(), beta = op.getBeta();
  auto grads = b.create<LayerNormGradOp>(
      op.getLoc(), TypeRange{x.getType(), gamma.getType(), beta.getType()},
      ValueRange{x, gamma, dys[0]}, copyAttributes(op, {"epsilon"}));
  dxs.assign({grads.getDx(), grads.getDgamma(), grads.getDbeta()});
  return success();
}

LogicalResult geluGradient(GeluOp op, OpBuilder &b, ArrayRef<Value> dys,
                           Gradients &dxs) {
  dxs.push_back(createOp<GeluGradOp>(b, op.getLoc(), op.getX().getType(),
                                     {op.getX(), dys[0]},
                                     copyAttributes(op, {"approximate"})));
  return success();
}

LogicalResult softmaxGradient(SoftmaxOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  // The backward needs only the forward output: dx = y·(dy − Σ y·dy).
  dxs.push_back(createOp<SoftmaxGradOp>(b, op.getLoc(), op.getX().getType(),
                                        {op.getResult(), dys[0]},
                                        copyAttributes(op, {"axis"})));
  return success();
}

LogicalResult attentionGradient(AttentionOp op, OpBuilder &b,
                                ArrayRef<Value> dys, Gradients &dxs) {
  Value q = op.getQ(), k = op.getK(), v = op.getV();
  auto grads = b.create<AttentionGradOp>(
      op.getLoc(), TypeRange{q.getType(), k.getType(), v.getType()},
      ValueRange{q, k, v, dys[0]},
      copyAttributes(op, {"num_heads", "causal", "window"}));
  dxs.assign({grads.getDq(), grads.getDk(), grads.getDv()});
  return success();
}

LogicalResult addGradient(AddOp op, OpBuilder &b, ArrayRef<Value> dys,
                          Gradients &dxs) {
  Location loc = op.getLoc();
  dxs.assign({grad::sumToShape(b, loc, dys[0], op.getLhs().getType()),
              grad::sumToShape(b, loc, dys[0], op.getRhs().getType())});
  return success();
}

LogicalResult mulGradient(MulOp op, OpBuilder &b, ArrayRef<Value> dys,
                          Gradients &dxs) {
  Location loc = op.getLoc();
  Value lhs = op.getLhs(), rhs = op.getRhs(), dy = dys[0];
  Value dlhs = createOp<MulOp>(b, loc, dy.getType(), {dy, rhs});
  Value drhs = createOp<MulOp>(b, loc, dy.getType(), {dy, lhs});
  dxs.assign({grad::sumToShape(b, loc, dlhs, lhs.getType()),
              grad::sumToShape(b, loc, drhs, rhs.getType())});
  return success();
}

LogicalResult scaleGradient(ScaleOp op, OpBuilder &b, ArrayRef<Value> dys,
                            Gradients &dxs) {
  dxs.push_back(createOp<ScaleOp>(b, op.getLoc(), op.getX().getType(), dys[0],
                                  copyAttributes(op, {"factor"})));
  return success();
}

LogicalResult reduceSumGradient(ReduceSumOp op, OpBuilder &b,
                                ArrayRef<Value> dys, Gradients &dxs) {
  Location loc = op.getLoc();
  auto xType = cast<RankedTensorType>(op.getX().getType());
  // Every element of x contributed once to its sum: put the summed
  // dimensions back with size 1, then broadcast.
  SmallVector<int64_t> keptShape(xType.getShape());
  for (int64_t d : normalizeDims(op.getDims(), xType.getRank()))
    keptShape[d] = 1;
  Value kept = grad::reshapeTo(
      b, loc, dys[0], RankedTensorType::get(keptShape, xType.getElementType()));
  dxs.push_back(grad::broadcastTo(b, loc, kept, xType));
  return success();
}

LogicalResult reshapeGradient(ReshapeOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  dxs.push_back(grad::reshapeTo(b, op.getLoc(), dys[0], op.getX().getType()));
  return success();
}

LogicalResult transposeGradient(TransposeOp op, OpBuilder &b,
                                ArrayRef<Value> dys, Gradients &dxs) {
  ArrayRef<int64_t> permutation = op.getPermutation();
  SmallVector<int64_t> inverse(permutation.size());
  for (auto [i, p] : llvm::enumerate(permutation))
    inverse[p] = i;
  dxs.push_back(createOp<TransposeOp>(
      b, op.getLoc(), op.getX().getType(), dys[0],
      {b.getNamedAttr("permutation", b.getDenseI64ArrayAttr(inverse))}));
  return success();
}

LogicalResult rollGradient(RollOp op, OpBuilder &b, ArrayRef<Value> dys,
                           Gradients &dxs) {
  SmallVector<int64_t> shifts =
      llvm::map_to_vector(op.getShifts(), [](int64_t s) { return -s; });
  dxs.push_back(createOp<RollOp>(
      b, op.getLoc(), op.getX().getType(), dys[0],
      {b.getNamedAttr("shifts", b.getDenseI64ArrayAttr(shifts)),
       b.getNamedAttr("dims", b.getDenseI64ArrayAttr(op.getDims()))}));
  return success();
}

LogicalResult dropoutGradient(DropoutOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  // The mask depends only on (seed, element, step), so the same dropout
  // applied to dy zeroes and scales exactly the elements the forward did.
  dxs.push_back(createOp<DropoutOp>(b, op.getLoc(), op.getX().getType(), dys[0],
                                    copyAttributes(op, {"rate", "seed"})));
  return success();
}

LogicalResult crossEntropyGradient(CrossEntropyOp op, OpBuilder &b,
                                   ArrayRef<Value> dys, Gradients &dxs) {
  Value logits = op.getLogits(), labels = op.getLabels();
  Value dlogits = createOp<CrossEntropyGradOp>(
      b, op.getLoc(), logits.getType(), {logits, labels, dys[0]},
      copyAttributes(op, {"ignore_index"}));
  dxs.assign({dlogits, Value()});
  return success();
}

} // namespace

void grad::registerNNGradientRules(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, NNDialect *) {
    attachRule<EmbeddingOp, embeddingGradient>(ctx);
    attachRule<LinearOp, linearGradient>(ctx);
    attachRule<MatmulOp, matmulGradient>(ctx);
    attachRule<LayerNormOp, layerNormGradient>(ctx);
    attachRule<GeluOp, geluGradient>(ctx);
    attachRule<SoftmaxOp, softmaxGradient>(ctx);
    attachRule<AttentionOp, attentionGradient>(ctx);
    attachRule<AddOp, addGradient>(ctx);
    attachRule<MulOp, mulGradient>(ctx);
    attachRule<ScaleOp, scaleGradient>(ctx);
    attachRule<ReduceSumOp, reduceSumGradient>(ctx);
    attachRule<ReshapeOp, reshapeGradient>(ctx);
    attachRule<TransposeOp, transposeGradient>(ctx);
    attachRule<RollOp, rollGradient>(ctx);
    attachRule<DropoutOp, dropoutGradient>(ctx);
    attachRule<CrossEntropyOp, crossEntropyGradient>(ctx);
  });
}
