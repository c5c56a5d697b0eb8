//===- Compile.cpp - the flexmoe-compile driver as a library --------------===//
#include "flexmoe/Compiler/Compile.h"

#include "flexmoe/Compiler/Pipelines.h"
#include "flexmoe/Compiler/ProgramTranslation.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/ToolUtilities.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <cmath>

using namespace mlir;
using flexmoe::models::GPTMoEConfig;

namespace {
constexpr llvm::StringLiteral kComputeDtypeAttr = "flexmoe.compute_dtype";

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Prints diagnostics on a model built from a preset, which has no source
/// file: ops carry the name of the model part they belong to (NameLoc), so
/// an error reads "gpt-moe-tiny:h1.moe: error: ...".
LogicalResult printModelDiagnostic(llvm::StringRef model, Diagnostic &diag) {
  auto print = [&](Diagnostic &d) {
    std::string prefix = model.str();
    if (auto name = d.getLocation()->findInstanceOf<NameLoc>()) {
      if (name.getName() != model)
        prefix += ":" + name.getName().str();
    } else if (!isa<UnknownLoc>(d.getLocation()))
      llvm::raw_string_ostream(prefix) << ":" << d.getLocation();
    switch (d.getSeverity()) {
    case DiagnosticSeverity::Error:
      llvm::WithColor::error(llvm::errs(), prefix);
      break;
    case DiagnosticSeverity::Warning:
      llvm::WithColor::warning(llvm::errs(), prefix);
      break;
    case DiagnosticSeverity::Note:
      llvm::WithColor::note(llvm::errs(), prefix);
      break;
    case DiagnosticSeverity::Remark:
      llvm::WithColor::remark(llvm::errs(), prefix);
      break;
    }
    llvm::errs() << d.str() << "\n";
  };
  print(diag);
  for (Diagnostic &note : diag.getNotes())
    print(note);
  return success();
}

/// Emits `error` as a diagnostic at an unknown location (the driver's
/// options have no place in the IR).
LogicalResult emitOptionsError(MLIRContext &context, llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  return emitError(UnknownLoc::get(&context)) << message;
}
} // namespace

std::optional<flexmoe::EmitKind> flexmoe::parseEmitKind(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<EmitKind>>(name)
      .Case("model", EmitKind::Model)
      .Case("mlir", EmitKind::Mlir)
      .Case("exec", EmitKind::Exec)
      .Case("program", EmitKind::Program)
      .Default(std::nullopt);
}

llvm::StringRef flexmoe::stringifyEmitKind(EmitKind kind) {
  switch (kind) {
  case EmitKind::Model:
    return "model";
  case EmitKind::Mlir:
    return "mlir";
  case EmitKind::Exec:
    return "exec";
  case EmitKind::Program:
    return "program";
  }
  llvm_unreachable("unknown EmitKind");
}

llvm::Error flexmoe::validateCompileOptions(const CompileOptions &options) {
  if (options.modelPreset.empty() == options.inputFile.empty())
    return makeError(options.modelPreset.empty()
                         ? "no model given: pass --model <preset> or an "
                           "input .mlir file"
                         : "pass either --model or an input .mlir file, not "
                           "both");
  if (!options.modelPreset.empty()) {
    auto preset = models::lookupGPTMoEPreset(options.modelPreset);
    if (!preset)
      return preset.takeError();
  } else {
    // An input file fixes the model's shapes; silently ignoring a shape flag
    // would compile something other than what was asked for.
    std::pair<const char *, bool> presetOnly[] = {
        {"--experts", options.numExperts.has_value()},
        {"--top-k", options.topK.has_value()},
        {"--capacity-factor", options.capacityFactor.has_value()},
        {"--batch", options.batchSize.has_value()},
        {"--seq-len", options.seqLen.has_value()},
        {"--layers", options.numLayers.has_value()},
        {"--dropout", options.dropout.has_value()},
        {"--aux-loss-coef", options.auxLossCoef.has_value()},
    };
    for (auto [flag, given] : presetOnly)
      if (given)
        return makeError(llvm::Twine(flag) +
                         " only applies with --model; an input .mlir file "
                         "already fixes the model's shapes");
  }
  if (options.computeDtype && *options.computeDtype != "f32" &&
      *options.computeDtype != "bf16")
    return makeError("--dtype must be f32 or bf16, got '" +
                     *options.computeDtype + "'");
  if (options.worldSize < 1)
    return makeError(llvm::formatv("--world-size must be at least 1, got {0}",
                                   options.worldSize));
  if (options.slotsPerDevice < 0)
    return makeError(
        llvm::formatv("--slots-per-device must not be negative, got {0}",
                      options.slotsPerDevice));
  if (!std::isfinite(options.learningRate) || options.learningRate <= 0)
    return makeError(llvm::formatv("--lr must be a positive number, got {0}",
                                   options.learningRate));
  if (!std::isfinite(options.weightDecay) || options.weightDecay < 0)
    return makeError(llvm::formatv(
        "--weight-decay must not be negative, got {0}", options.weightDecay));
  if (!options.placementFile.empty() &&
      !llvm::sys::fs::exists(options.placementFile))
    return makeError("--placement-file '" + options.placementFile +
                     "' does not exist");
  if (options.outputFile.empty())
    return makeError("-o needs a file name (or - for stdout)");
  return llvm::Error::success();
}

llvm::Expected<GPTMoEConfig>
flexmoe::resolveModelConfig(const CompileOptions &options) {
  auto config = models::lookupGPTMoEPreset(options.modelPreset);
  if (!config)
    return config.takeError();
  if (options.numExperts)
    config->numExperts = *options.numExperts;
  if (options.topK)
    config->topK = *options.topK;
  if (options.capacityFactor)
    config->capacityFactor = *options.capacityFactor;
  if (options.batchSize)
    config->batchSize = *options.batchSize;
  if (options.seqLen)
    config->seqLen = *options.seqLen;
  if (options.numLayers)
    config->numLayers = *options.numLayers;
  if (options.dropout)
    config->dropout = *options.dropout;
  if (options.auxLossCoef)
    config->auxLossCoef = *options.auxLossCoef;
  if (llvm::Error error = models::validateGPTMoEConfig(*config))
    return std::move(error);
  if (options.worldSize >= 1 && config->batchSize % options.worldSize != 0)
    return makeError(llvm::formatv(
        "batch size {0} is not divisible by world size {1}; every device "
        "needs the same number of sequences",
        config->batchSize, options.worldSize));
  return config;
}

LogicalResult flexmoe::verifyStage0Model(ModuleOp module) {
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward) {
    if (module.lookupSymbol("train_step"))
      return module.emitError(
          "input is already compiled (it has @train_step); flexmoe-compile "
          "takes a Stage 0 model with func.func @forward");
    return module.emitError("input is not a Stage 0 model: no func.func "
                            "@forward (see docs/IR.md)");
  }
  if (forward.isExternal())
    return forward.emitError("@forward has no body");

  FunctionType type = forward.getFunctionType();
  auto isLoss = [](Type t) {
    auto tensor = dyn_cast<TensorType>(t);
    return tensor && tensor.getElementType().isF32() &&
           (!tensor.hasRank() || tensor.getRank() == 0);
  };
  if (type.getNumResults() != 1 || !isLoss(type.getResult(0)))
    return forward.emitError("@forward must return the loss as one "
                             "tensor<f32>, it returns ")
           << type.getResults();

  llvm::StringSet<> paramNames;
  bool hasParam = false;
  for (unsigned i = 0, e = forward.getNumArguments(); i < e; ++i) {
    auto input = forward.getArgAttrOfType<StringAttr>(i, "nn.input");
    auto param = forward.getArgAttrOfType<StringAttr>(i, "nn.param");
    if (!input == !param)
      return forward.emitError() << "argument #" << i << " of @forward must "
                                 << "carry exactly one of nn.input and "
                                    "nn.param";
    if (param) {
      hasParam = true;
      if (!paramNames.insert(param.getValue()).second)
        return forward.emitError()
               << "parameter name '" << param.getValue()
               << "' is used by more than one argument of @forward";
    }
  }
  if (!hasParam)
    return forward.emitError("@forward has no parameters (nn.param "
                             "arguments): there is nothing to train");
  return success();
}

LogicalResult flexmoe::compileModule(ModuleOp module,
                                     const CompileOptions &options,
                                     llvm::raw_ostream &os) {
  if (failed(verifyStage0Model(module)))
    return failure();
  MLIRContext *context = module.getContext();
  if (options.computeDtype)
    module->setAttr(kComputeDtypeAttr,
                    StringAttr::get(context, *options.computeDtype));
  else if (auto dtype = module->getAttrOfType<StringAttr>(kComputeDtypeAttr);
           dtype && dtype.getValue() != "f32" && dtype.getValue() != "bf16")
    return module.emitError() << kComputeDtypeAttr << " must be \"f32\" or "
                              << "\"bf16\", got " << dtype;

  if (options.emit != EmitKind::Model) {
    TrainPipelineOptions pipelineOptions;
    pipelineOptions.worldSize = options.worldSize;
    pipelineOptions.slotsPerDevice = options.slotsPerDevice;
    pipelineOptions.placementFile = options.placementFile;
    pipelineOptions.learningRate = options.learningRate;
    pipelineOptions.weightDecay = options.weightDecay;
    std::string error;
    if (failed(verifyTrainPipelineOptions(pipelineOptions, error)))
      return module.emitError(error);

    PassManager pm(context, ModuleOp::getOperationName());
    if (options.configurePassManager &&
        failed(options.configurePassManager(pm)))
      return failure();
    if (options.emit == EmitKind::Mlir)
      buildTensorPipeline(pm, pipelineOptions);
    else
      buildTrainPipeline(pm, pipelineOptions);
    if (failed(pm.run(module)))
      return failure();
  }

  // Render into memory first so that a failure while writing (a schema the
  // program cannot express) leaves `os` untouched.
  std::string buffer;
  llvm::raw_string_ostream bufferStream(buffer);
  if (options.emit == EmitKind::Program) {
    if (failed(translateExecToProgram(module, bufferStream)))
      return failure();
  } else {
    module->print(bufferStream);
    bufferStream << "\n";
  }
  os << buffer;
  return success();
}

LogicalResult flexmoe::runCompileDriver(MLIRContext &context,
                                        const CompileOptions &options) {
  if (llvm::Error error = validateCompileOptions(options))
    return emitOptionsError(context, std::move(error));

  std::unique_ptr<llvm::MemoryBuffer> input;
  if (!options.inputFile.empty()) {
    std::string errorMessage;
    input = openInputFile(options.inputFile, &errorMessage);
    if (!input)
      return emitError(UnknownLoc::get(&context)) << errorMessage;
  }

  // Diagnostics from the parser and from every pass refer to the input
  // buffer; the handler prints them as file:line:col with the source line.
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diagnosticHandler(sourceMgr, &context);

  OwningOpRef<ModuleOp> module;
  std::optional<ScopedDiagnosticHandler> modelDiagnosticHandler;
  if (!options.modelPreset.empty()) {
    auto config = resolveModelConfig(options);
    if (!config)
      return emitOptionsError(context, config.takeError());
    std::string model = options.modelPreset;
    modelDiagnosticHandler.emplace(&context, [model](Diagnostic &diag) {
      return printModelDiagnostic(model, diag);
    });
    module = models::buildGPTMoE(context, *config);
  } else {
    sourceMgr.AddNewSourceBuffer(std::move(input), llvm::SMLoc());
    module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  }
  if (!module)
    return failure();

  std::string buffer;
  llvm::raw_string_ostream bufferStream(buffer);
  if (failed(compileModule(*module, options, bufferStream)))
    return failure();

  // The output file is created only now, so a failed compile never leaves
  // one behind (nor a truncated one).
  std::string errorMessage;
  std::unique_ptr<llvm::ToolOutputFile> output =
      openOutputFile(options.outputFile, &errorMessage);
  if (!output)
    return emitError(UnknownLoc::get(&context))
           << "cannot write '" << options.outputFile << "': " << errorMessage;
  output->os() << buffer;
  output->os().flush();
  if (output->os().has_error()) {
    std::string message = output->os().error().message();
    output->os().clear_error();
    return emitError(UnknownLoc::get(&context))
           << "cannot write '" << options.outputFile << "': " << message;
  }
  output->keep();
  return success();
}
