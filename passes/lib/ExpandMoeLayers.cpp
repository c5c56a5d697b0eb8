//===- ExpandMoeLayers.cpp - moe-expand-layers pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_EXPANDMOELAYERS
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct ExpandMoeLayersPass : flexmoe::impl::ExpandMoeLayersBase<ExpandMoeLayersPass> {
  using ExpandMoeLayersBase::ExpandMoeLayersBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'moe-expand-layers' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
