//===- Passes.h - flexmoe compiler passes -----------------------*- C++ -*-===//
#ifndef FLEXMOE_PASSES_PASSES_H
#define FLEXMOE_PASSES_PASSES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace flexmoe {

#define GEN_PASS_DECL
#include "flexmoe/Passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "flexmoe/Passes/Passes.h.inc"

} // namespace flexmoe

#endif // FLEXMOE_PASSES_PASSES_H
