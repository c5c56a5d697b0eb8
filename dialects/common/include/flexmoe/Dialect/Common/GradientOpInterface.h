//===- GradientOpInterface.h - per-op gradient rules ------------*- C++ -*-===//
#ifndef FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE_H
#define FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpDefinition.h"

#include "flexmoe/Dialect/Common/GradientOpInterface.h.inc"

#endif // FLEXMOE_DIALECT_COMMON_GRADIENTOPINTERFACE_H
