//===- flexmoe-compile.cpp - the flexmoe compile driver -------------------===//
//
// Compiles a GPT-MoE preset or a Stage 0 .mlir model into a training program:
//
//   flexmoe-compile --model gpt-moe-tiny --world-size 4 -o tiny.fmoe
//   flexmoe-compile model.mlir --emit=mlir -o - | flexmoe-opt
//
// A thin main over flexmoe::runCompileDriver (compiler/lib/Compile.cpp).
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Compiler/Compile.h"
#include "flexmoe/Compiler/Registration.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/WithColor.h"

using namespace llvm;

namespace {
cl::OptionCategory compileCategory("flexmoe-compile options");
cl::OptionCategory mlirCategory("MLIR options (printing, timing, debugging)");

cl::opt<std::string> inputFilename(cl::Positional, cl::desc("[<input.mlir>]"),
                                   cl::cat(compileCategory));
cl::opt<std::string> modelPreset(
    "model", cl::value_desc("preset"),
    cl::desc("Build a zoo model instead of reading a file: gpt-moe-tiny, "
             "gpt-moe-small or gpt-moe-125m"),
    cl::cat(compileCategory));
cl::opt<std::string> outputFilename("o", cl::value_desc("file"),
                                    cl::desc("Output file ('-' for stdout)"),
                                    cl::init("-"), cl::cat(compileCategory));
cl::opt<std::string>
    emitKind("emit", cl::value_desc("level"),
             cl::desc("What to write: model (the Stage 0 IR), mlir (the "
                      "tensor-level training step after spmd-partition), "
                      "exec (the exec IR) or program (the .fmoe program; "
                      "default)"),
             cl::init("program"), cl::cat(compileCategory));

cl::opt<int64_t> worldSize("world-size", cl::value_desc("N"),
                           cl::desc("Number of devices (default 1)"),
                           cl::init(1), cl::cat(compileCategory));
cl::opt<int64_t> slotsPerDevice(
    "slots-per-device", cl::value_desc("N"),
    cl::desc("Expert slots per device (default: ceil(experts / world size), "
             "or the placement file's)"),
    cl::init(0), cl::cat(compileCategory));
cl::opt<std::string> placementFile(
    "placement-file", cl::value_desc("file.json"),
    cl::desc("Initial expert placement of each MoE layer (default: "
             "round-robin); format in docs/IR.md"),
    cl::cat(compileCategory));
cl::opt<double> learningRate("lr", cl::value_desc("X"),
                             cl::desc("AdamW learning rate (default 1e-3)"),
                             cl::init(1e-3), cl::cat(compileCategory));
cl::opt<double> weightDecay("weight-decay", cl::value_desc("X"),
                            cl::desc("AdamW weight decay (default 0.01)"),
                            cl::init(0.01), cl::cat(compileCategory));
cl::opt<std::string>
    computeDtype("dtype", cl::value_desc("f32|bf16"),
                 cl::desc("Compute data type; parameters and optimizer "
                          "state stay f32 (default f32)"),
                 cl::cat(compileCategory));

// Overrides of the preset's shapes (--model only).
cl::opt<int64_t> numExperts("experts", cl::value_desc("E"),
                            cl::desc("Experts per MoE layer (--model only)"),
                            cl::cat(compileCategory));
cl::opt<int64_t> topK("top-k", cl::value_desc("K"),
                      cl::desc("Experts per token (--model only)"),
                      cl::cat(compileCategory));
cl::opt<double> capacityFactor(
    "capacity-factor", cl::value_desc("F"),
    cl::desc("Expert capacity factor, 0 for dropless (--model only)"),
    cl::cat(compileCategory));
cl::opt<int64_t> batchSize("batch", cl::value_desc("B"),
                           cl::desc("Global batch size in sequences, "
                                    "divisible by the world size (--model "
                                    "only)"),
                           cl::cat(compileCategory));
cl::opt<int64_t> seqLen("seq-len", cl::value_desc("S"),
                        cl::desc("Sequence length (--model only)"),
                        cl::cat(compileCategory));
cl::opt<int64_t> numLayers("layers", cl::value_desc("L"),
                           cl::desc("Transformer blocks (--model only)"),
                           cl::cat(compileCategory));
cl::opt<double>
    auxLossCoef("aux-loss-coef", cl::value_desc("C"),
                cl::desc("Weight of each MoE layer's load-balancing loss, >= 0 "
                         "(--model only; default 0.01)"),
                cl::cat(compileCategory));
cl::opt<double> dropout("dropout", cl::value_desc("P"),
                        cl::desc("Dropout rate after the embeddings and on "
                                 "the residual branches, in [0, 1) "
                                 "(--model only; default 0)"),
                        cl::cat(compileCategory));

template <typename T> std::optional<T> ifGiven(const cl::opt<T> &option) {
  if (option.getNumOccurrences() == 0)
    return std::nullopt;
  return option.getValue();
}

int fail(const Twine &message) {
  WithColor::error(errs(), "flexmoe-compile") << message << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  InitLLVM initLLVM(argc, argv);
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  // libLLVM registers hundreds of backend options; --help shows only the
  // driver's own and MLIR's.
  for (auto &entry : cl::getRegisteredOptions())
    if (entry.getKey().starts_with("mlir-"))
      entry.getValue()->addCategory(mlirCategory);
  cl::HideUnrelatedOptions({&compileCategory, &mlirCategory});
  cl::ParseCommandLineOptions(
      argc, argv,
      "flexmoe-compile: compile a Mixture-of-Experts model into a training "
      "program\n\n"
      "  flexmoe-compile --model gpt-moe-tiny --world-size 4 -o tiny.fmoe\n"
      "  flexmoe-compile model.mlir --emit=exec -o model.exec.mlir\n");

  flexmoe::CompileOptions options;
  options.modelPreset = modelPreset;
  options.inputFile = inputFilename;
  options.numExperts = ifGiven(numExperts);
  options.topK = ifGiven(topK);
  options.capacityFactor = ifGiven(capacityFactor);
  options.batchSize = ifGiven(batchSize);
  options.seqLen = ifGiven(seqLen);
  options.numLayers = ifGiven(numLayers);
  options.dropout = ifGiven(dropout);
  options.auxLossCoef = ifGiven(auxLossCoef);
  options.computeDtype = ifGiven(computeDtype);
  options.worldSize = worldSize;
  options.slotsPerDevice = slotsPerDevice;
  options.placementFile = placementFile;
  options.learningRate = learningRate;
  options.weightDecay = weightDecay;
  options.outputFile = outputFilename;

  std::optional<flexmoe::EmitKind> emit = flexmoe::parseEmitKind(emitKind);
  if (!emit)
    return fail("--emit must be one of model, mlir, exec, program; got '" +
                emitKind + "'");
  options.emit = *emit;
  if (Error error = flexmoe::validateCompileOptions(options))
    return fail(toString(std::move(error)));
  if (!options.modelPreset.empty()) {
    // Reported here too, so that a bad shape flag reads as a flag error.
    auto config = flexmoe::resolveModelConfig(options);
    if (!config)
      return fail(toString(config.takeError()));
  }
  if (options.emit == flexmoe::EmitKind::Program && options.outputFile == "-" &&
      sys::Process::StandardOutIsDisplayed())
    return fail("refusing to write a binary program to the terminal; pass "
                "-o <file.fmoe> or --emit=model|mlir|exec");

  // --mlir-timing reports when `timingManager` goes out of scope, after the
  // compile.
  mlir::DefaultTimingManager timingManager;
  mlir::applyDefaultTimingManagerCLOptions(timingManager);
  mlir::TimingScope timing = timingManager.getRootScope();
  options.configurePassManager = [&timing](mlir::PassManager &pm) {
    if (mlir::failed(mlir::applyPassManagerCLOptions(pm)))
      return mlir::failure();
    pm.enableTiming(timing);
    return mlir::success();
  };

  mlir::DialectRegistry registry;
  flexmoe::registerAllDialects(registry);
  mlir::MLIRContext context(registry);
  // A failing pass would otherwise print the whole module after its message;
  // --mlir-print-op-on-diagnostic still asks for it.
  if (cl::getRegisteredOptions()["mlir-print-op-on-diagnostic"]
          ->getNumOccurrences() == 0)
    context.printOpOnDiagnostic(false);
  context.loadAllAvailableDialects();
  return failed(flexmoe::runCompileDriver(context, options)) ? 1 : 0;
}
