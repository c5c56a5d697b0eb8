//===- MoeOps.td - moe dialect ops ---------------------------*- tablegen -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEOPS
#define FLEXMOE_DIALECT_MOE_MOEOPS

include "flexmoe/Dialect/Moe/MoeDialect.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

#endif // FLEXMOE_DIALECT_MOE_MOEOPS
