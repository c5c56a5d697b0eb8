//===- NNDialect.h - the nn dialect -----------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_NN_NNDIALECT_H
#define FLEXMOE_DIALECT_NN_NNDIALECT_H

#include "mlir/IR/Dialect.h"

#include "flexmoe/Dialect/NN/NNDialect.h.inc"

#endif // FLEXMOE_DIALECT_NN_NNDIALECT_H
