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
