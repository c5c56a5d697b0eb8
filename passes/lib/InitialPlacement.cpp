//===- InitialPlacement.cpp - moe-initial-placement pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_INITIALPLACEMENT
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct InitialPlacementPass : flexmoe::impl::InitialPlacementBase<InitialPlacementPass> {
  using InitialPlacementBase::InitialPlacementBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'moe-initial-placement' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
