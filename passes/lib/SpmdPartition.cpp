//===- SpmdPartition.cpp - spmd-partition pass -------------------------------------------------===//
#include "flexmoe/Passes/Passes.h"

namespace flexmoe {
#define GEN_PASS_DEF_SPMDPARTITION
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;

namespace {
struct SpmdPartitionPass : flexmoe::impl::SpmdPartitionBase<SpmdPartitionPass> {
  using SpmdPartitionBase::SpmdPartitionBase;
  void runOnOperation() override {
    // Placeholder until the pass lands; fails loudly rather than passing IR through.
    getOperation().emitError("pass 'spmd-partition' is not implemented yet");
    signalPassFailure();
  }
};
} // namespace
