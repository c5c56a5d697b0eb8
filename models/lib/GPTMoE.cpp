//===- GPTMoE.cpp - GPT-MoE model builder and presets ---------------------===//
#include "flexmoe/Models/GPTMoE.h"

#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Dialect/NN/NNOps.h"
#include "runtime/plan/Placement.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir;
using flexmoe::models::GPTMoEConfig;

//===----------------------------------------------------------------------===//
// Presets
//===----------------------------------------------------------------------===//

namespace {
GPTMoEConfig makePreset(llvm::StringRef name, int64_t layers, int64_t dModel,
                        int64_t heads, int64_t experts, int64_t ffnHidden,
                        int64_t expertHidden, int64_t vocab, int64_t seqLen,
                        int64_t batch) {
  GPTMoEConfig config;
  config.name = name.str();
  config.numLayers = layers;
  config.dModel = dModel;
  config.numHeads = heads;
  config.numExperts = experts;
  config.topK = 2;
  config.moeEvery = 2;
  config.ffnHidden = ffnHidden;
  config.expertHidden = expertHidden;
  config.vocabSize = vocab;
  config.seqLen = seqLen;
  config.batchSize = batch;
  return config;
}

const llvm::StringRef kPresetNames[] = {"gpt-moe-tiny", "gpt-moe-small",
                                        "gpt-moe-125m"};
} // namespace

llvm::ArrayRef<llvm::StringRef> flexmoe::models::gptMoEPresetNames() {
  return kPresetNames;
}

llvm::Expected<GPTMoEConfig>
flexmoe::models::lookupGPTMoEPreset(llvm::StringRef name) {
  // Byte-level vocabularies for the small presets so that they train on raw
  // text without a tokenizer; GPT-2's padded BPE vocabulary for 125m.
  if (name == "gpt-moe-tiny")
    return makePreset(name, /*layers=*/2, /*dModel=*/64, /*heads=*/4,
                      /*experts=*/4, /*ffnHidden=*/256, /*expertHidden=*/128,
                      /*vocab=*/256, /*seqLen=*/32, /*batch=*/8);
  if (name == "gpt-moe-small")
    return makePreset(name, 4, 256, 4, 8, 1024, 512, 256, 128, 16);
  if (name == "gpt-moe-125m")
    return makePreset(name, 12, 768, 12, 16, 3072, 3072, 50304, 1024, 8);
  return llvm::createStringError(
      llvm::inconvertibleErrorCode(), "unknown preset '%s'; valid presets: %s",
      name.str().c_str(),
      llvm::join(llvm::ArrayRef(kPresetNames), ", ").c_str());
}

//===----------------------------------------------------------------------===//
// Validation
//===----------------------------------------------------------------------===//

llvm::Error flexmoe::models::validateGPTMoEConfig(const GPTMoEConfig &config) {
  auto error = [&](const llvm::Twine &message) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "model '" + config.name + "': " + message);
  };
  std::pair<const char *, int64_t> positive[] = {
      {"number of layers", config.numLayers},
      {"model width (d_model)", config.dModel},
      {"number of attention heads", config.numHeads},
      {"number of experts", config.numExperts},
      {"top-k", config.topK},
      {"moe_every", config.moeEvery},
      {"dense FFN hidden size", config.ffnHidden},
      {"expert hidden size", config.expertHidden},
      {"vocabulary size", config.vocabSize},
      {"sequence length", config.seqLen},
      {"batch size", config.batchSize},
  };
  for (auto [what, value] : positive)
    if (value < 1)
      return error(
          llvm::formatv("the {0} must be positive, got {1}", what, value));
  if (config.dModel % config.numHeads != 0)
    return error(
        llvm::formatv("{0} attention heads do not divide the model width {1}",
                      config.numHeads, config.dModel));
  if (config.topK > config.numExperts)
    return error(
        llvm::formatv("top-k ({0}) exceeds the number of experts ({1})",
                      config.topK, config.numExperts));
  if (config.numMoeLayers() == 0)
    return error(llvm::formatv(
        "no MoE layer: with moe_every = {0}, a model of {1} layer(s) has "
        "only dense feed-forward networks",
        config.moeEvery, config.numLayers));
  if (!std::isfinite(config.capacityFactor) || config.capacityFactor < 0)
    return error(llvm::formatv(
        "the capacity factor must be 0 (dropless) or positive, got {0}",
        config.capacityFactor));
  if (!std::isfinite(config.auxLossCoef) || config.auxLossCoef < 0)
    return error(llvm::formatv(
        "the auxiliary loss coefficient must not be negative, got {0}",
        config.auxLossCoef));
  // Every expert needs a slot on some device.
  constexpr int64_t kMaxExperts =
      flexmoe::plan::kMaxWorldSize * flexmoe::plan::kMaxSlotsPerDevice;
  if (config.numExperts > kMaxExperts)
    return error(llvm::formatv(
        "{0} experts per layer exceed the {1} expert slots of the largest "
        "supported cluster ({2} devices of {3} slots)",
        config.numExperts, kMaxExperts, flexmoe::plan::kMaxWorldSize,
        flexmoe::plan::kMaxSlotsPerDevice));
  // Shapes multiply into element counts everywhere downstream (buffer sizes,
  // arena offsets); refuse sizes whose tensors no machine could hold rather
  // than let those products overflow.
  constexpr int64_t kMaxElements = int64_t(1) << 48;
  struct Tensor {
    const char *what;
    std::initializer_list<int64_t> shape;
  };
  const Tensor largest[] = {
      {"token embedding [vocab, d_model]", {config.vocabSize, config.dModel}},
      {"logits [batch, seq, vocab]",
       {config.batchSize, config.seqLen, config.vocabSize}},
      {"dense FFN activation [batch, seq, ffn_hidden]",
       {config.batchSize, config.seqLen, config.ffnHidden}},
      {"expert weights [experts, d_model, expert_hidden]",
       {config.numExperts, config.dModel, config.expertHidden}},
      {"routed expert activation [batch * seq * top_k, expert_hidden]",
       {config.batchSize, config.seqLen, config.topK, config.expertHidden}},
  };
  for (const Tensor &tensor : largest) {
    std::optional<int64_t> elements = 1;
    for (int64_t dim : tensor.shape)
      elements = elements ? llvm::checkedMul(*elements, dim) : std::nullopt;
    if (!elements || *elements > kMaxElements)
      return error(llvm::formatv("the {0} tensor would hold more than 2^48 "
                                 "elements",
                                 tensor.what));
  }
  if (!(config.dropout >= 0 && config.dropout < 1))
    return error(llvm::formatv("the dropout rate must be in [0, 1), got {0}",
                               config.dropout));
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Builder
//===----------------------------------------------------------------------===//

namespace {
namespace nn = flexmoe::nn;
namespace moe = flexmoe::moe;

/// Builds @forward: arguments are added as parameters are first needed, so
/// their order follows the model (wte, wpe, h0..., lnf, lm_head).
class GPTMoEBuilder {
public:
  GPTMoEBuilder(MLIRContext &context, const GPTMoEConfig &config)
      : context(context), config(config), b(&context), f32(b.getF32Type()) {}

  OwningOpRef<ModuleOp> build();

private:
  enum class Init { Normal, Zeros, Ones };

  Location loc(const llvm::Twine &name) {
    return NameLoc::get(b.getStringAttr(name));
  }
  RankedTensorType tensor(ArrayRef<int64_t> shape, Type element = {}) {
    return RankedTensorType::get(shape, element ? element : f32);
  }

  Value addInput(llvm::StringRef name, RankedTensorType type);
  Value addParam(const llvm::Twine &name, ArrayRef<int64_t> shape, Init init,
                 double std = 0.0);

  Value layerNorm(const std::string &prefix, Value x);
  Value linear(const std::string &prefix, Value x, int64_t in, int64_t out,
               bool bias, double std);
  Value dropout(const llvm::Twine &where, Value x);
  Value attentionBlock(const std::string &prefix, Value x);
  Value denseFFN(const std::string &prefix, Value x);
  Value moeFFN(const std::string &prefix, int64_t block, Value x,
               SmallVectorImpl<Value> &auxLosses);

  MLIRContext &context;
  const GPTMoEConfig &config;
  OpBuilder b;
  Type f32;
  func::FuncOp forward;
  Block *body = nullptr;
  int64_t nextDropoutSeed = 0;
};

Value GPTMoEBuilder::addInput(llvm::StringRef name, RankedTensorType type) {
  unsigned index = forward.getNumArguments();
  forward.insertArgument(
      index, type,
      b.getDictionaryAttr(b.getNamedAttr("nn.input", b.getStringAttr(name))),
      loc(name));
  return forward.getArgument(index);
}

Value GPTMoEBuilder::addParam(const llvm::Twine &name, ArrayRef<int64_t> shape,
                              Init init, double std) {
  std::string nameStr = name.str();
  SmallVector<NamedAttribute> attrs = {
      b.getNamedAttr("nn.param", b.getStringAttr(nameStr))};
  switch (init) {
  case Init::Normal:
    attrs.push_back(b.getNamedAttr("nn.init", b.getStringAttr("normal")));
    attrs.push_back(b.getNamedAttr("nn.init_std", b.getF32FloatAttr(std)));
    break;
  case Init::Zeros:
    attrs.push_back(b.getNamedAttr("nn.init", b.getStringAttr("zeros")));
    break;
  case Init::Ones:
    attrs.push_back(b.getNamedAttr("nn.init", b.getStringAttr("ones")));
    break;
  }
  unsigned index = forward.getNumArguments();
  forward.insertArgument(index, tensor(shape), b.getDictionaryAttr(attrs),
                         loc(nameStr));
  return forward.getArgument(index);
}
Value GPTMoEBuilder::layerNorm(const std::string &prefix, Value x) {
  Value gamma = addParam(prefix + ".gamma", {config.dModel}, Init::Ones);
  Value beta = addParam(prefix + ".beta", {config.dModel}, Init::Zeros);
  return b.create<nn::LayerNormOp>(loc(prefix), x, gamma, beta,
                                   /*epsilon=*/1e-5f);
}

Value GPTMoEBuilder::linear(const std::string &prefix, Value x, int64_t in,
                            int64_t out, bool bias, double std) {
  Value weight = addParam(prefix + ".weight", {in, out}, Init::Normal, std);
  Value biasValue =
      bias ? addParam(prefix + ".bias", {out}, Init::Zeros) : Value();
  return b.create<nn::LinearOp>(loc(prefix), x, weight, biasValue);
}

Value GPTMoEBuilder::dropout(const llvm::Twine &where, Value x) {
  if (config.dropout == 0.0)
    return x;
  // A distinct seed per site so that the masks are independent.
  return b.create<nn::DropoutOp>(
      loc(where), x, static_cast<float>(config.dropout), nextDropoutSeed++);
}

Value GPTMoEBuilder::attentionBlock(const std::string &prefix, Value x) {
  int64_t d = config.dModel;
  // GPT-2 scales the init of projections into the residual stream by the
  // number of residual additions so that its variance does not grow with
  // depth.
  double residualStd = 0.02 / std::sqrt(2.0 * config.numLayers);
  Value h = layerNorm(prefix + ".ln1", x);
  Value q = linear(prefix + ".attn.q", h, d, d, /*bias=*/true, 0.02);
  Value k = linear(prefix + ".attn.k", h, d, d, /*bias=*/true, 0.02);
  Value v = linear(prefix + ".attn.v", h, d, d, /*bias=*/true, 0.02);
  Value a = b.create<nn::AttentionOp>(loc(prefix + ".attn"), q, k, v,
                                      config.numHeads, /*causal=*/true,
                                      /*window=*/0);
  Value o = linear(prefix + ".attn.o", a, d, d, /*bias=*/true, residualStd);
  o = dropout(prefix + ".attn.dropout", o);
  return b.create<nn::AddOp>(loc(prefix + ".attn.residual"), x, o);
}

Value GPTMoEBuilder::denseFFN(const std::string &prefix, Value h) {
  double residualStd = 0.02 / std::sqrt(2.0 * config.numLayers);
  Value f = linear(prefix + ".mlp.fc1", h, config.dModel, config.ffnHidden,
                   /*bias=*/true, 0.02);
  f = b.create<nn::GeluOp>(loc(prefix + ".mlp.gelu"), f);
  return linear(prefix + ".mlp.fc2", f, config.ffnHidden, config.dModel,
                /*bias=*/true, residualStd);
}

Value GPTMoEBuilder::moeFFN(const std::string &prefix, int64_t block, Value h,
                            SmallVectorImpl<Value> &auxLosses) {
  int64_t d = config.dModel, e = config.numExperts, hid = config.expertHidden;
  double residualStd = 0.02 / std::sqrt(2.0 * config.numLayers);
  std::string p = prefix + ".moe";
  Value gate = addParam(p + ".gate", {d, e}, Init::Normal, 0.02);
  Value w1 = addParam(p + ".w1", {e, d, hid}, Init::Normal, 0.02);
  Value b1 = addParam(p + ".b1", {e, hid}, Init::Zeros);
  Value w2 = addParam(p + ".w2", {e, hid, d}, Init::Normal, residualStd);
  Value b2 = addParam(p + ".b2", {e, d}, Init::Zeros);
  auto layer = b.create<moe::LayerOp>(
      loc(p), h, gate, w1, b1, w2, b2,
      /*name=*/llvm::formatv("moe{0}", block).str(), /*num_experts=*/e,
      /*top_k=*/config.topK, /*ffn_hidden=*/hid,
      /*capacity_factor=*/llvm::APFloat(float(config.capacityFactor)),
      /*aux_loss_coef=*/llvm::APFloat(float(config.auxLossCoef)),
      /*activation=*/"gelu", /*placement=*/nullptr);
  auxLosses.push_back(layer.getAuxLoss());
  return layer.getY();
}

OwningOpRef<ModuleOp> GPTMoEBuilder::build() {
  context.getOrLoadDialect<func::FuncDialect>();
  context.getOrLoadDialect<nn::NNDialect>();
  context.getOrLoadDialect<moe::MoeDialect>();

  Location modelLoc = loc(config.name);
  OwningOpRef<ModuleOp> module = ModuleOp::create(modelLoc);
  (*module)->setAttr("flexmoe.model", b.getStringAttr(config.name));
  b.setInsertionPointToEnd(module->getBody());
  auto lossType = tensor({});
  forward = b.create<func::FuncOp>(modelLoc, "forward",
                                   b.getFunctionType({}, {lossType}));
  body = forward.addEntryBlock();
  b.setInsertionPointToEnd(body);

  int64_t bsz = config.batchSize, seq = config.seqLen, d = config.dModel;
  auto i32 = b.getI32Type();
  Value tokens = addInput("tokens", tensor({bsz, seq}, i32));
  Value labels = addInput("labels", tensor({bsz, seq}, i32));

  Value wte = addParam("wte", {config.vocabSize, d}, Init::Normal, 0.02);
  Value wpe = addParam("wpe", {seq, d}, Init::Normal, 0.02);
  Value x = b.create<nn::EmbeddingOp>(loc("wte"), tokens, wte);
  // [B,S,D] + [S,D]: the positions broadcast over the batch.
  x = b.create<nn::AddOp>(loc("wpe"), x, wpe);
  x = dropout("embedding.dropout", x);

  SmallVector<Value> auxLosses;
  for (int64_t i = 0; i < config.numLayers; ++i) {
    std::string prefix = llvm::formatv("h{0}", i).str();
    x = attentionBlock(prefix, x);
    Value h = layerNorm(prefix + ".ln2", x);
    Value y = config.isMoeLayer(i) ? moeFFN(prefix, i, h, auxLosses)
                                   : denseFFN(prefix, h);
    y = dropout(prefix + ".ffn.dropout", y);
    x = b.create<nn::AddOp>(loc(prefix + ".ffn.residual"), x, y);
  }

  x = layerNorm("lnf", x);
  Value logits =
      linear("lm_head", x, d, config.vocabSize, /*bias=*/false, 0.02);
  Value loss = b.create<nn::CrossEntropyOp>(loc("loss"), logits, labels,
                                            /*ignore_index=*/-100);
  for (Value aux : auxLosses)
    loss = b.create<nn::AddOp>(loc("loss.aux"), loss, aux);
  b.create<func::ReturnOp>(loc("loss"), loss);

  if (failed(verify(*module)))
    return nullptr;
  return module;
}
} // namespace

OwningOpRef<ModuleOp> flexmoe::models::buildGPTMoE(MLIRContext &context,
                                                   const GPTMoEConfig &config) {
  if (llvm::Error error = validateGPTMoEConfig(config)) {
    emitError(UnknownLoc::get(&context)) << llvm::toString(std::move(error));
    return nullptr;
  }
  return GPTMoEBuilder(context, config).build();
}
