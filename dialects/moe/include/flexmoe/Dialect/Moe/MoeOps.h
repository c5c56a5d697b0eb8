//===- MoeOps.h - moe dialect ops -------------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEOPS_H
#define FLEXMOE_DIALECT_MOE_MOEOPS_H

#include "flexmoe/Dialect/Moe/MoeAttrs.h"
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Moe/MoeOps.h.inc"

#endif // FLEXMOE_DIALECT_MOE_MOEOPS_H
