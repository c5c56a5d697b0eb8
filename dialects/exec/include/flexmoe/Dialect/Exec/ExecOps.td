//===- ExecOps.td - exec dialect ops ---------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECOPS
#define FLEXMOE_DIALECT_EXEC_EXECOPS

include "flexmoe/Dialect/Exec/ExecDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

#endif // FLEXMOE_DIALECT_EXEC_EXECOPS
