//===- NNOps.cpp - nn dialect ops: verifiers and type inference -----------===//
#include "flexmoe/Dialect/NN/NNOps.h"
#include "flexmoe/Dialect/Common/TypeUtils.h"

#include "mlir/Dialect/Traits.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace flexmoe::nn;

LogicalResult AddOp::inferReturnTypes(MLIRContext *context,
                                      std::optional<Location> location,
                                      Adaptor adaptor,
                                      SmallVectorImpl<Type> &inferred) {
  auto lhs = cast<TensorType>(adaptor.getLhs().getType());
  auto rhs = cast<TensorType>(adaptor.getRhs().getType());
  if (lhs.getElementType() != rhs.getElementType())
    return emitOptionalError(location, "operands have different element types: ",
                             lhs.getElementType(), " and ",
                             rhs.getElementType());
  if (!lhs.hasRank() || !rhs.hasRank()) {
    inferred.push_back(UnrankedTensorType::get(lhs.getElementType()));
    return success();
  }
  SmallVector<int64_t> shape;
  if (!OpTrait::util::getBroadcastedShape(lhs.getShape(), rhs.getShape(),
                                          shape))
    return emitOptionalError(location, "shapes ", lhs, " and ", rhs,
                             " do not broadcast");
  inferred.push_back(RankedTensorType::get(shape, lhs.getElementType()));
  return success();
}

bool AddOp::isCompatibleReturnTypes(TypeRange inferred, TypeRange actual) {
  return flexmoe::areCompatibleTensorTypes(inferred, actual);
}

#define GET_OP_CLASSES
#include "flexmoe/Dialect/NN/NNOps.cpp.inc"
