//===- GradientsMoe.cpp - gradient rules of the expanded MoE ops ----------===//
//
// The expanded MoE layer (moe.gate → moe.dispatch → moe.experts →
// moe.combine, plus moe.aux_loss) differentiates op by op into the matching
// *_grad ops. Integer results and operands (expert ids, positions, counts)
// carry no gradient. Every backward op keeps the forward op's `layer` and,
// once placed, `placement`, so later passes treat it as part of its layer.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Passes/Gradients.h"

#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"

#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace flexmoe;
using namespace flexmoe::moe;
using grad::attachRule;
using grad::copyAttributes;
using grad::createOp;

namespace {

using Gradients = SmallVectorImpl<Value>;

/// The attributes of a forward MoE op to carry over to its backward op.
SmallVector<NamedAttribute> layerAttributes(Operation *op,
                                            ArrayRef<StringRef> extra = {}) {
  SmallVector<StringRef> names = {"layer", "placement"};
  llvm::append_range(names, extra);
  return copyAttributes(op, names);
}

/// `gradient`, or zeros of `value`'s type when it is null (that result does
/// not reach the loss, but the backward op needs an operand).
Value orZeros(OpBuilder &b, Location loc, Value gradient, Value value) {
  return gradient ? gradient : grad::createFill(b, loc, value.getType(), 0.0);
}

// The gate's probabilities reach the loss through the auxiliary loss, its
// combine weights through the combine; either may be absent.
LogicalResult gateGradient(GateOp op, OpBuilder &b, ArrayRef<Value> dys,
                           Gradients &dxs) {
  Location loc = op.getLoc();
  Value x = op.getX(), gateWeight = op.getGateWeight();
  Value dProbs = orZeros(b, loc, dys[0], op.getProbs());
  Value dCombineWeights = orZeros(b, loc, dys[2], op.getCombineWeights());
  auto grads = b.create<GateGradOp>(
      loc, TypeRange{x.getType(), gateWeight.getType()},
      ValueRange{x, gateWeight, op.getProbs(), op.getExpertIds(),
                 dCombineWeights, dProbs},
      layerAttributes(op, {"top_k"}));
  dxs.assign({grads.getDx(), grads.getDGateWeight()});
  return success();
}

LogicalResult auxLossGradient(AuxLossOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  Value probs = op.getProbs();
  Value dProbs = createOp<AuxLossGradOp>(b, op.getLoc(), probs.getType(),
                                         {probs, op.getExpertIds(), dys[0]},
                                         layerAttributes(op, {"coef"}));
  dxs.assign({dProbs, Value()});
  return success();
}

LogicalResult dispatchGradient(DispatchOp op, OpBuilder &b, ArrayRef<Value> dys,
                               Gradients &dxs) {
  // Only `routed` is a float result; every token copy sends its gradient
  // back to the row it came from.
  Value dx = createOp<DispatchGradOp>(b, op.getLoc(), op.getX().getType(),
                                      {dys[0], op.getPositions()},
                                      layerAttributes(op));
  dxs.assign({dx, Value()});
  return success();
}

LogicalResult expertsGradient(ExpertsOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  Value routed = op.getRouted(), counts = op.getCounts();
  Value w1 = op.getW1(), b1 = op.getB1(), w2 = op.getW2(), b2 = op.getB2();
  auto grads = b.create<ExpertsGradOp>(
      op.getLoc(),
      TypeRange{routed.getType(), w1.getType(), b1.getType(), w2.getType(),
                b2.getType()},
      ValueRange{routed, counts, w1, b1, w2, b2, dys[0]},
      layerAttributes(op, {"activation", "capacity"}));
  // The counts get no gradient.
  dxs.assign({grads.getDRouted(), Value(), grads.getDw1(), grads.getDb1(),
              grads.getDw2(), grads.getDb2()});
  return success();
}

LogicalResult combineGradient(CombineOp op, OpBuilder &b, ArrayRef<Value> dys,
                              Gradients &dxs) {
  Value expertOut = op.getExpertOut(), positions = op.getPositions();
  Value combineWeights = op.getCombineWeights();
  auto grads = b.create<CombineGradOp>(
      op.getLoc(), TypeRange{expertOut.getType(), combineWeights.getType()},
      ValueRange{expertOut, positions, combineWeights, dys[0]},
      layerAttributes(op));
  dxs.assign({grads.getDExpertOut(), Value(), grads.getDCombineWeights()});
  return success();
}

} // namespace

void grad::registerMoeGradientRules(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, MoeDialect *) {
    attachRule<GateOp, gateGradient>(ctx);
    attachRule<AuxLossOp, auxLossGradient>(ctx);
    attachRule<DispatchOp, dispatchGradient>(ctx);
    attachRule<ExpertsOp, expertsGradient>(ctx);
    attachRule<CombineOp, combineGradient>(ctx);
  });
}
