//===- MoeDialect.h - the moe dialect ---------------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEDIALECT_H
#define FLEXMOE_DIALECT_MOE_MOEDIALECT_H

#include "mlir/IR/Dialect.h"

#include "flexmoe/Dialect/Moe/MoeDialect.h.inc"

#endif // FLEXMOE_DIALECT_MOE_MOEDIALECT_H
