//===- MoeAttrs.h - moe dialect attributes ----------------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_MOE_MOEATTRS_H
#define FLEXMOE_DIALECT_MOE_MOEATTRS_H

#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectImplementation.h"

#define GET_ATTRDEF_CLASSES
#include "flexmoe/Dialect/Moe/MoeAttrs.h.inc"

#endif // FLEXMOE_DIALECT_MOE_MOEATTRS_H
