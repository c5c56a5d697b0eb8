//===- Registration.h - everything flexmoe registers ------------*- C++ -*-===//
#ifndef FLEXMOE_COMPILER_REGISTRATION_H
#define FLEXMOE_COMPILER_REGISTRATION_H

#include "mlir/IR/DialectRegistry.h"

namespace flexmoe {

/// The nn, moe and exec dialects, func, and the gradient-rule external models.
void registerAllDialects(mlir::DialectRegistry &registry);

/// Every flexmoe pass and named pipeline, plus the upstream passes used in
/// pipelines (canonicalize, cse, ...).
void registerAllPasses();

} // namespace flexmoe

#endif // FLEXMOE_COMPILER_REGISTRATION_H
