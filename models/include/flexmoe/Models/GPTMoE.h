//===- GPTMoE.h - GPT-MoE model builder and presets -------------*- C++ -*-===//
//
// A decoder-only GPT with pre-LayerNorm blocks in which every `moeEvery`-th
// feed-forward network is a Mixture-of-Experts layer (GShard / Switch style),
// built as the Stage 0 IR of docs/IR.md.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_MODELS_GPTMOE_H
#define FLEXMOE_MODELS_GPTMOE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace flexmoe::models {

struct GPTMoEConfig {
  /// Recorded as the module attribute flexmoe.model.
  std::string name = "gpt-moe";
  int64_t numLayers = 2;
  int64_t dModel = 64;
  int64_t numHeads = 4;
  int64_t numExperts = 4;
  int64_t topK = 2;
  /// Block i has an MoE feed-forward network iff (i + 1) % moeEvery == 0.
  int64_t moeEvery = 2;
  /// Hidden width of the dense feed-forward networks.
  int64_t ffnHidden = 256;
  /// Hidden width of every expert.
  int64_t expertHidden = 128;
  int64_t vocabSize = 256;
  int64_t seqLen = 32;
  /// The global batch (all devices together).
  int64_t batchSize = 8;
  /// Expert capacity factor; 0 routes every token (dropless).
  double capacityFactor = 0.0;
  /// Weight of the load-balancing loss of each MoE layer.
  double auxLossCoef = 0.01;
  /// Dropout rate after the embeddings and on both residual branches; no
  /// dropout ops are emitted when it is 0.
  double dropout = 0.0;

  bool isMoeLayer(int64_t block) const {
    return moeEvery > 0 && (block + 1) % moeEvery == 0;
  }
  int64_t numMoeLayers() const {
    return moeEvery > 0 ? numLayers / moeEvery : 0;
  }
};

/// The preset names, in order of size: gpt-moe-tiny, gpt-moe-small,
/// gpt-moe-125m.
llvm::ArrayRef<llvm::StringRef> gptMoEPresetNames();

/// The named preset, or an error listing the valid names.
llvm::Expected<GPTMoEConfig> lookupGPTMoEPreset(llvm::StringRef name);

/// Checks that a config describes a buildable model (positive sizes, heads
/// dividing the model width, top-k within the experts, ...); the error says
/// which setting is wrong and why.
llvm::Error validateGPTMoEConfig(const GPTMoEConfig &config);

/// Builds the Stage 0 module: func.func @forward(tokens, labels, params...)
/// returning the training loss (cross entropy plus the MoE auxiliary losses).
/// Loads the dialects it needs. Returns null, with a diagnostic emitted on
/// `context`, when the config is invalid.
mlir::OwningOpRef<mlir::ModuleOp> buildGPTMoE(mlir::MLIRContext &context,
                                              const GPTMoEConfig &config);

} // namespace flexmoe::models

#endif // FLEXMOE_MODELS_GPTMOE_H
