//===- TypeUtils.cpp ------------------------------------------------------===//
#include "flexmoe/Dialect/Common/TypeUtils.h"

#include "mlir/IR/TypeUtilities.h"

using namespace mlir;

bool flexmoe::areCompatibleTensorTypes(TypeRange inferred, TypeRange actual) {
  if (inferred.size() != actual.size())
    return false;
  for (auto [lhs, rhs] : llvm::zip(inferred, actual)) {
    if (lhs == rhs)
      continue;
    auto lhsTensor = dyn_cast<TensorType>(lhs);
    auto rhsTensor = dyn_cast<TensorType>(rhs);
    if (!lhsTensor || !rhsTensor ||
        lhsTensor.getElementType() != rhsTensor.getElementType())
      return false;
    if (failed(verifyCompatibleShape(lhsTensor, rhsTensor)))
      return false;
  }
  return true;
}

Type flexmoe::meetTensorTypes(Type lhs, Type rhs) {
  if (lhs == rhs)
    return lhs;
  auto lhsTensor = dyn_cast<TensorType>(lhs);
  auto rhsTensor = dyn_cast<TensorType>(rhs);
  if (!lhsTensor || !rhsTensor ||
      lhsTensor.getElementType() != rhsTensor.getElementType())
    return {};
  if (!lhsTensor.hasRank())
    return rhs;
  if (!rhsTensor.hasRank())
    return lhs;
  if (lhsTensor.getRank() != rhsTensor.getRank())
    return {};
  SmallVector<int64_t> shape;
  for (auto [l, r] : llvm::zip(lhsTensor.getShape(), rhsTensor.getShape())) {
    if (!ShapedType::isDynamic(l) && !ShapedType::isDynamic(r) && l != r)
      return {};
    shape.push_back(ShapedType::isDynamic(l) ? r : l);
  }
  // Keep an encoding only when the two agree on it.
  auto lhsRanked = cast<RankedTensorType>(lhs);
  auto rhsRanked = cast<RankedTensorType>(rhs);
  Attribute encoding = lhsRanked.getEncoding();
  if (!encoding)
    encoding = rhsRanked.getEncoding();
  else if (rhsRanked.getEncoding() && rhsRanked.getEncoding() != encoding)
    return {};
  return RankedTensorType::get(shape, lhsTensor.getElementType(), encoding);
}

bool flexmoe::hasStaticTensorShape(Type type) {
  auto tensor = dyn_cast<TensorType>(type);
  return !tensor || tensor.hasStaticShape();
}
