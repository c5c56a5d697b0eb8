//===- ExecOps.h - exec dialect ops ---------------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECOPS_H
#define FLEXMOE_DIALECT_EXEC_EXECOPS_H

#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Exec/ExecOps.h.inc"

#endif // FLEXMOE_DIALECT_EXEC_EXECOPS_H
