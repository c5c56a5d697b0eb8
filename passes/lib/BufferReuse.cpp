//===- BufferReuse.cpp - exec-buffer-reuse pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_BUFFERREUSE
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct BufferReusePass : flexmoe::impl::BufferReuseBase<BufferReusePass> {
  using BufferReuseBase::BufferReuseBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'exec-buffer-reuse' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
