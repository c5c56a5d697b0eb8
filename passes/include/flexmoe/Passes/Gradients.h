//===- Gradients.h - per-op gradient rules ----------------------*- C++ -*-===//
#ifndef FLEXMOE_PASSES_GRADIENTS_H
#define FLEXMOE_PASSES_GRADIENTS_H

#include "mlir/IR/DialectRegistry.h"

namespace flexmoe {

/// Attaches the GradientOpInterface external models (the gradient rules of
/// every differentiable nn and moe op) to the registry.
void registerGradientRules(mlir::DialectRegistry &registry);

} // namespace flexmoe

#endif // FLEXMOE_PASSES_GRADIENTS_H
