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

/// The most specific type that both `lhs` and `rhs` describe: ranked if either
/// is, each dimension static if either has it static. Non-tensor types must be
/// equal. Returns a null type when the two are incompatible (different element
/// types, ranks or static sizes).
mlir::Type meetTensorTypes(mlir::Type lhs, mlir::Type rhs);

/// True for a ranked tensor type whose dimensions are all static, and for any
/// non-tensor type (which has no shape to infer).
bool hasStaticTensorShape(mlir::Type type);

} // namespace flexmoe

#endif // FLEXMOE_DIALECT_COMMON_TYPEUTILS_H
