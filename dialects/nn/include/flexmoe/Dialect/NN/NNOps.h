//===- NNOps.h - nn dialect ops ---------------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_NN_NNOPS_H
#define FLEXMOE_DIALECT_NN_NNOPS_H

#include "flexmoe/Dialect/NN/NNDialect.h"
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "flexmoe/Dialect/NN/NNOps.h.inc"

#endif // FLEXMOE_DIALECT_NN_NNOPS_H
