//===- ExecDialect.h - the exec dialect -----------------------------*- C++
//-*-===//
#ifndef FLEXMOE_DIALECT_EXEC_EXECDIALECT_H
#define FLEXMOE_DIALECT_EXEC_EXECDIALECT_H

#include "mlir/IR/Dialect.h"

#include "flexmoe/Dialect/Exec/ExecDialect.h.inc"

#endif // FLEXMOE_DIALECT_EXEC_EXECDIALECT_H
