//===- Gradients.h - per-op gradient rules ----------------------*- C++ -*-===//
//
// The gradient rules of the nn and moe ops are GradientOpInterface external
// models (GradientsNN.cpp, GradientsMoe.cpp); build-train-step only talks to
// the interface. This header also holds the few IR-building helpers the rules
// share, so that e.g. "sum a broadcast gradient back to the operand's shape"
// exists once.
//
// Contract of a rule (GradientOpInterface::buildGradient), as build-train-step
// calls it:
//  - it is called only when at least one result gradient is non-null, with
//    the builder's insertion point where the backward ops go;
//  - it returns one entry per operand, null for operands that get no
//    gradient (integer ids, positions, counts); a non-null entry has exactly
//    the operand's type;
//  - it may build gradients that turn out unused: the pass erases dead ops;
//  - on failure it has emitted a diagnostic at the op.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_PASSES_GRADIENTS_H
#define FLEXMOE_PASSES_GRADIENTS_H

#include "flexmoe/Dialect/Common/GradientOpInterface.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"

namespace flexmoe {

/// Attaches the GradientOpInterface external models (the gradient rules of
/// every differentiable nn and moe op) to the registry.
void registerGradientRules(mlir::DialectRegistry &registry);

namespace grad {

/// The rules of each dialect; registerGradientRules calls both.
void registerNNGradientRules(mlir::DialectRegistry &registry);
void registerMoeGradientRules(mlir::DialectRegistry &registry);

/// An external model that forwards GradientOpInterface::buildGradient to a
/// free function `LogicalResult rule(OpT, OpBuilder &, ArrayRef<Value>
/// resultGradients, SmallVectorImpl<Value> &operandGradients)`, so that a rule
/// is one plain function.
template <typename OpT, auto Rule>
struct GradientRule
    : GradientOpInterface::ExternalModel<GradientRule<OpT, Rule>, OpT> {
  mlir::LogicalResult
  buildGradient(mlir::Operation *op, mlir::OpBuilder &builder,
                mlir::ArrayRef<mlir::Value> resultGradients,
                llvm::SmallVectorImpl<mlir::Value> &operandGradients) const {
    return Rule(llvm::cast<OpT>(op), builder, resultGradients,
                operandGradients);
  }
};

/// Attaches `Rule` as the gradient rule of OpT.
template <typename OpT, auto Rule> void attachRule(mlir::MLIRContext *context) {
  OpT::template attachInterface<GradientRule<OpT, Rule>>(*context);
}

/// Creates a one-result op of type OpT with an explicit result type (the op's
/// verifier still checks it against type inference).
template <typename OpT>
mlir::Value createOp(mlir::OpBuilder &builder, mlir::Location loc,
                     mlir::Type resultType, mlir::ValueRange operands,
                     llvm::ArrayRef<mlir::NamedAttribute> attributes = {}) {
  return builder
      .create<OpT>(loc, mlir::TypeRange{resultType}, operands, attributes)
      ->getResult(0);
}

/// The attributes among `names` that `op` carries. Attributes left at their
/// default are not copied, so the new op gets the same default.
llvm::SmallVector<mlir::NamedAttribute>
copyAttributes(mlir::Operation *op, llvm::ArrayRef<llvm::StringRef> names);

/// `nn.fill {value}` of the given static float tensor type.
mlir::Value createFill(mlir::OpBuilder &builder, mlir::Location loc,
                       mlir::Type type, double value);

/// `value` reshaped to `type` with nn.reshape; `value` itself when it already
/// has that type.
mlir::Value reshapeTo(mlir::OpBuilder &builder, mlir::Location loc,
                      mlir::Value value, mlir::Type type);

/// The gradient of an operand that was broadcast (numpy rules) to the shape of
/// `gradient`: sums over the broadcast dimensions (the extra leading ones and
/// those where the operand has size 1) with nn.reduce_sum {keep_dims}, then
/// reshapes to `operandType`. `gradient` itself when nothing was broadcast.
mlir::Value sumToShape(mlir::OpBuilder &builder, mlir::Location loc,
                       mlir::Value gradient, mlir::Type operandType);

/// `value` broadcast to `type` (numpy rules, `value`'s shape aligned to the
/// right) as `nn.add(nn.fill 0, value)`; `value` itself when it already has
/// that type.
mlir::Value broadcastTo(mlir::OpBuilder &builder, mlir::Location loc,
                        mlir::Value value, mlir::Type type);

} // namespace grad
} // namespace flexmoe

#endif // FLEXMOE_PASSES_GRADIENTS_H
