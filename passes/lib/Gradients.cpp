//===- Gradients.cpp - registration of the gradient rules -----------------===//
#include "flexmoe/Passes/Gradients.h"

void flexmoe::registerGradientRules(mlir::DialectRegistry &registry) {
  (void)registry; // The rules land with the build-train-step pass.
}
