//===- ShapeInference.cpp - nn-shape-inference pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_SHAPEINFERENCE
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct ShapeInferencePass : flexmoe::impl::ShapeInferenceBase<ShapeInferencePass> {
  using ShapeInferenceBase::ShapeInferenceBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'nn-shape-inference' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
