//===- TypeUtils.h - helpers shared by the dialects -------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_COMMON_TYPEUTILS_H
#define FLEXMOE_DIALECT_COMMON_TYPEUTILS_H

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/TypeRange.h"

namespace flexmoe {

/// True when the inferred and the declared result types agree, treating an
/// unranked tensor on either side as compatible with any tensor of the same
/// element type. Used by the ops' InferTypeOpInterface so that IR whose
/// intermediate shapes are not yet inferred (tensor<*xf32>) still verifies.
bool areCompatibleTensorTypes(mlir::TypeRange inferred, mlir::TypeRange actual);

} // namespace flexmoe

#endif // FLEXMOE_DIALECT_COMMON_TYPEUTILS_H
