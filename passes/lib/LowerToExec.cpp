//===- LowerToExec.cpp - lower-to-exec pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_LOWERTOEXEC
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct LowerToExecPass : flexmoe::impl::LowerToExecBase<LowerToExecPass> {
  using LowerToExecBase::LowerToExecBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'lower-to-exec' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
