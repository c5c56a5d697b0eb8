//===- BuildTrainStep.cpp - build-train-step pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_BUILDTRAINSTEP
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct BuildTrainStepPass : flexmoe::impl::BuildTrainStepBase<BuildTrainStepPass> {
  using BuildTrainStepBase::BuildTrainStepBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'build-train-step' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
