//===- Compile.h - the flexmoe-compile driver as a library ------*- C++ -*-===//
//
// Everything flexmoe-compile does, callable from C++: choose a model (a zoo
// preset with overrides, or a Stage 0 .mlir file), run the training pipeline
// up to the requested level and write IR text or the .fmoe program. The tool
// is a thin main that fills CompileOptions from its command line.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_COMPILER_COMPILE_H
#define FLEXMOE_COMPILER_COMPILE_H

#include "flexmoe/Models/GPTMoE.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace flexmoe {

/// How far to compile and what to write.
enum class EmitKind {
  /// The Stage 0 model IR (nothing run).
  Model,
  /// The tensor-level training step of one device, after spmd-partition.
  Mlir,
  /// The exec IR, after exec-buffer-reuse.
  Exec,
  /// The .fmoe flatbuffer program (docs/program-format.md).
  Program,
};

/// "model", "mlir", "exec" or "program".
std::optional<EmitKind> parseEmitKind(llvm::StringRef name);
llvm::StringRef stringifyEmitKind(EmitKind kind);

struct CompileOptions {
  /// Exactly one of the two: a zoo preset name, or a Stage 0 .mlir file
  /// ("-" reads stdin).
  std::string modelPreset;
  std::string inputFile;

  /// Overrides of the preset's settings; only valid with modelPreset.
  std::optional<int64_t> numExperts;
  std::optional<int64_t> topK;
  std::optional<double> capacityFactor;
  std::optional<int64_t> batchSize;
  std::optional<int64_t> seqLen;
  std::optional<int64_t> numLayers;
  std::optional<double> dropout;
  std::optional<double> auxLossCoef;

  /// "f32" or "bf16": sets the module attribute flexmoe.compute_dtype. Unset
  /// keeps the input's attribute (and means f32 when it has none).
  std::optional<std::string> computeDtype;

  /// Training pipeline options (TrainPipelineOptions).
  int64_t worldSize = 1;
  int64_t slotsPerDevice = 0;
  std::string placementFile;
  double learningRate = 1e-3;
  double weightDecay = 0.01;

  EmitKind emit = EmitKind::Program;
  /// Where to write; "-" is stdout. Only created once compilation succeeded.
  std::string outputFile = "-";

  /// Called on the pass manager before it runs, e.g. to apply MLIR's
  /// command-line options (--mlir-print-ir-after-all, --mlir-timing, ...).
  std::function<mlir::LogicalResult(mlir::PassManager &)> configurePassManager;
};

/// Checks the options on their own (one model source, known dtype, world
/// size >= 1, overrides only with a preset, ...). The error names the flag.
llvm::Error validateCompileOptions(const CompileOptions &options);

/// The preset named by options.modelPreset with the overrides applied,
/// validated, and checked against the world size (the batch must split
/// evenly over the devices).
llvm::Expected<models::GPTMoEConfig>
resolveModelConfig(const CompileOptions &options);

/// Checks that `module` is a Stage 0 model (docs/IR.md): a func.func
/// @forward returning the scalar loss, every argument an nn.input or a
/// uniquely named nn.param. Emits a diagnostic at the offending IR.
mlir::LogicalResult verifyStage0Model(mlir::ModuleOp module);

/// Runs the pipeline on a Stage 0 module, in place, as far as
/// `options.emit` asks (model source, output and overrides in `options` are
/// ignored), then writes IR text or the program to `os`. On failure the
/// diagnostics were emitted and nothing was written.
mlir::LogicalResult compileModule(mlir::ModuleOp module,
                                  const CompileOptions &options,
                                  llvm::raw_ostream &os);

/// The whole driver: validates the options, builds or parses the model
/// (parse errors as file:line:col diagnostics), compiles it and writes
/// `options.outputFile`. On failure the diagnostics were emitted and no
/// output file was created.
mlir::LogicalResult runCompileDriver(mlir::MLIRContext &context,
                                     const CompileOptions &options);

} // namespace flexmoe

#endif // FLEXMOE_COMPILER_COMPILE_H
