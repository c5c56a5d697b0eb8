//===- Pipelines.h - named pass pipelines -----------------------*- C++ -*-===//
//
// The training pipeline of docs/IR.md, registered by name for flexmoe-opt and
// exposed as C++ so that flexmoe-compile runs exactly the same passes.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_COMPILER_PIPELINES_H
#define FLEXMOE_COMPILER_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Support/LogicalResult.h"

#include <cstdint>
#include <string>

namespace flexmoe {

/// Options of flexmoe-train-pipeline and flexmoe-tensor-pipeline, e.g.
/// `flexmoe-train-pipeline{world-size=4 lr=3e-4}`.
struct TrainPipelineOptions
    : public mlir::PassPipelineOptions<TrainPipelineOptions> {
  Option<int64_t> worldSize{*this, "world-size",
                            llvm::cl::desc("Number of devices"),
                            llvm::cl::init(1)};
  Option<int64_t> slotsPerDevice{
      *this, "slots-per-device",
      llvm::cl::desc("Expert slots per device (0: ceil(experts / "
                     "world-size), or the placement file's value)"),
      llvm::cl::init(0)};
  Option<std::string> placementFile{
      *this, "placement-file",
      llvm::cl::desc("JSON file with the initial placement of each MoE "
                     "layer (default: round-robin)"),
      llvm::cl::init("")};
  Option<double> learningRate{
      *this, "lr", llvm::cl::desc("AdamW learning rate"), llvm::cl::init(1e-3)};
  Option<double> weightDecay{*this, "weight-decay",
                             llvm::cl::desc("AdamW decoupled weight decay"),
                             llvm::cl::init(0.01)};
};

/// Checks the option values (world size >= 1, ...); on failure `error` says
/// what is wrong in the options' own terms.
mlir::LogicalResult
verifyTrainPipelineOptions(const TrainPipelineOptions &options,
                           std::string &error);

/// Stage 0 (the model) to Stage 5: the partitioned tensor-level training
/// step, after spmd-partition.
void buildTensorPipeline(mlir::OpPassManager &pm,
                         const TrainPipelineOptions &options);

/// Stage 0 to Stage 6: the tensor pipeline, then lower-to-exec and
/// exec-buffer-reuse. The result translates to a .fmoe program.
void buildTrainPipeline(mlir::OpPassManager &pm,
                        const TrainPipelineOptions &options);

/// Registers flexmoe-train-pipeline and flexmoe-tensor-pipeline with MLIR's
/// pass registry, so that flexmoe-opt and --pass-pipeline know them.
void registerPipelines();

} // namespace flexmoe

#endif // FLEXMOE_COMPILER_PIPELINES_H
