//===- Pipelines.cpp - named pass pipelines -------------------------------===//
#include "flexmoe/Compiler/Pipelines.h"

#include "flexmoe/Passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir;

LogicalResult
flexmoe::verifyTrainPipelineOptions(const TrainPipelineOptions &options,
                                    std::string &error) {
  if (options.worldSize < 1) {
    error = llvm::formatv("world-size must be at least 1, got {0}",
                          options.worldSize.getValue());
    return failure();
  }
  if (options.slotsPerDevice < 0) {
    error = llvm::formatv("slots-per-device must not be negative, got {0}",
                          options.slotsPerDevice.getValue());
    return failure();
  }
  if (!std::isfinite(options.learningRate) || options.learningRate <= 0) {
    error = llvm::formatv("lr must be a positive number, got {0}",
                          options.learningRate.getValue());
    return failure();
  }
  if (!std::isfinite(options.weightDecay) || options.weightDecay < 0) {
    error = llvm::formatv("weight-decay must not be negative, got {0}",
                          options.weightDecay.getValue());
    return failure();
  }
  return success();
}

void flexmoe::buildTensorPipeline(OpPassManager &pm,
                                  const TrainPipelineOptions &options) {
  pm.addPass(createShapeInference());

  InitialPlacementOptions placement;
  placement.worldSize = options.worldSize;
  placement.slotsPerDevice = options.slotsPerDevice;
  placement.placementFile = options.placementFile;
  pm.addPass(createInitialPlacement(placement));

  pm.addPass(createExpandMoeLayers());

  BuildTrainStepOptions trainStep;
  trainStep.learningRate = options.learningRate;
  trainStep.weightDecay = options.weightDecay;
  pm.addPass(createBuildTrainStep(trainStep));
  // The generated backward pass recomputes shapes and repeats reshapes and
  // fills; fold them before partitioning multiplies the program by devices.
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());

  SpmdPartitionOptions spmd;
  spmd.worldSize = options.worldSize;
  pm.addPass(createSpmdPartition(spmd));
  pm.addPass(createCanonicalizerPass());
}

void flexmoe::buildTrainPipeline(OpPassManager &pm,
                                 const TrainPipelineOptions &options) {
  buildTensorPipeline(pm, options);
  pm.addPass(createLowerToExec());
  pm.addPass(createBufferReuse());
}

namespace {
/// Registers one pipeline whose options are checked before it is built, so
/// that `flexmoe-train-pipeline{world-size=0}` fails with a message instead
/// of reaching the passes.
void registerTrainingPipeline(
    StringRef name, StringRef description,
    void (*build)(OpPassManager &, const flexmoe::TrainPipelineOptions &)) {
  registerPassPipeline(
      name, description,
      [name, build](OpPassManager &pm, StringRef optionsStr,
                    function_ref<LogicalResult(const Twine &)> errorHandler) {
        flexmoe::TrainPipelineOptions options;
        if (failed(options.parseFromString(optionsStr)))
          return failure();
        std::string error;
        if (failed(flexmoe::verifyTrainPipelineOptions(options, error)))
          return errorHandler(name + ": " + error);
        build(pm, options);
        return success();
      },
      [](function_ref<void(const detail::PassOptions &)> optHandler) {
        optHandler(flexmoe::TrainPipelineOptions());
      });
}
} // namespace

void flexmoe::registerPipelines() {
  registerTrainingPipeline(
      "flexmoe-train-pipeline",
      "Compile a Stage 0 model to the exec program of one training step: "
      "shape inference, initial placement, MoE expansion, autodiff and "
      "AdamW, SPMD partitioning, lowering to exec and buffer reuse",
      &buildTrainPipeline);
  registerTrainingPipeline(
      "flexmoe-tensor-pipeline",
      "The tensor-level part of flexmoe-train-pipeline: a Stage 0 model to "
      "the partitioned training step of one device (up to spmd-partition)",
      &buildTensorPipeline);
}
