//===- ExpandMoeLayers.cpp - moe-expand-layers pass -----------------------===//
//
// Stage 3 of docs/IR.md: each moe.layer becomes
//   nn.reshape [B,S,D] -> [T,D], moe.gate, moe.aux_loss, moe.dispatch,
//   moe.experts, moe.combine, nn.reshape [T,D] -> [B,S,D]
// with the layer's name and placement on every moe op, and the expert
// parameters marked with the argument attribute moe.layer = "<name>".
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeOps.h"
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Dialect/NN/NNOps.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <optional>

namespace flexmoe {
#define GEN_PASS_DEF_EXPANDMOELAYERS
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
using namespace flexmoe::moe;

namespace {

/// ceil(factor · tokens · topK / experts), computed exactly for the decimal
/// the user wrote: the f32 `factor` is read back as the shortest decimal
/// num / 10^scale that rounds to it (1.1f -> 11 / 10), so that a capacity
/// that is an exact integer is not bumped by the f32 rounding error.
std::optional<int64_t> expertCapacity(float factor, int64_t tokens,
                                      int64_t topK, int64_t experts) {
  int64_t denominator = 1;
  for (int scale = 0; scale <= 6; ++scale, denominator *= 10) {
    double scaled = static_cast<double>(factor) * denominator;
    if (scaled > 1e12)
      break;
    int64_t numerator = std::llround(scaled);
    if (static_cast<float>(static_cast<double>(numerator) / denominator) !=
        factor)
      continue;
    int64_t dividend, divisor;
    if (llvm::MulOverflow(numerator, tokens, dividend) ||
        llvm::MulOverflow(dividend, topK, dividend) ||
        llvm::MulOverflow(denominator, experts, divisor))
      break;
    return llvm::divideCeil(static_cast<uint64_t>(dividend),
                            static_cast<uint64_t>(divisor));
  }
  // Factors with no short decimal form (or huge products): plain arithmetic,
  // refusing capacities whose E·C rows would not fit a tensor dimension.
  double capacity =
      std::ceil(static_cast<double>(factor) * tokens * topK / experts);
  if (!(capacity * experts < 0x1p62))
    return std::nullopt;
  return static_cast<int64_t>(capacity);
}

/// Marks an expert parameter (an argument of the enclosing function) with
/// moe.layer = "<name>", so that SPMD partitioning can find it.
LogicalResult markExpertParameter(LayerOp layer, Value param, StringRef what) {
  auto arg = dyn_cast<BlockArgument>(param);
  auto func = arg ? dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp())
                  : func::FuncOp();
  if (!func || !arg.getOwner()->isEntryBlock())
    return layer.emitOpError()
           << "expert parameter " << what << " of layer '" << layer.getName()
           << "' must be an argument of the enclosing function";
  unsigned index = arg.getArgNumber();
  if (auto existing = func.getArgAttrOfType<StringAttr>(index, "moe.layer")) {
    if (existing.getValue() != layer.getName())
      return layer.emitOpError()
             << "expert parameter " << what << " (argument " << index
             << ") is shared by layers '" << existing.getValue() << "' and '"
             << layer.getName() << "'";
    return success();
  }
  func.setArgAttr(index, "moe.layer", layer.getNameAttr());
  return success();
}

LogicalResult expandLayer(LayerOp layer) {
  auto xType = dyn_cast<RankedTensorType>(layer.getX().getType());
  if (!xType || !xType.hasStaticShape())
    return layer.emitOpError()
           << "needs statically shaped operands (run nn-shape-inference "
              "first), got x of type "
           << layer.getX().getType();
  Type element = xType.getElementType();
  if (layer.getY().getType() != xType ||
      layer.getAuxLoss().getType() != RankedTensorType::get({}, element))
    return layer.emitOpError()
           << "needs static result types (run nn-shape-inference first), got "
           << layer.getY().getType() << " and " << layer.getAuxLoss().getType();

  StringRef name = layer.getName();
  int64_t tokens = xType.getDimSize(0) * xType.getDimSize(1);
  int64_t model = xType.getDimSize(2);
  int64_t topK = layer.getTopKAttr().getInt();
  int64_t numExperts = layer.getNumExpertsAttr().getInt();
  float factor = layer.getCapacityFactor().convertToFloat();
  std::optional<int64_t> capacity =
      factor == 0.0f ? 0 : expertCapacity(factor, tokens, topK, numExperts);
  if (!capacity)
    return layer.emitOpError()
           << "capacity_factor " << factor << " gives layer '"
           << layer.getName() << "' more routed rows than fit in a tensor";

  for (auto [param, what] : {std::pair<Value, StringRef>{layer.getW1(), "w1"},
                             {layer.getB1(), "b1"},
                             {layer.getW2(), "w2"},
                             {layer.getB2(), "b2"}})
    if (failed(markExpertParameter(layer, param, what)))
      return failure();

  OpBuilder b(layer);
  Location loc = layer.getLoc();
  StringAttr layerName = layer.getNameAttr();
  PlacementAttr placement = layer.getPlacementAttr();
  IntegerAttr capacityAttr = b.getI64IntegerAttr(*capacity);

  Value flat = b.create<flexmoe::nn::ReshapeOp>(
      loc, RankedTensorType::get({tokens, model}, element), layer.getX());
  auto gate = b.create<GateOp>(loc, flat, layer.getGateWeight(), layerName,
                               layer.getTopKAttr(), placement);
  auto auxLoss =
      b.create<AuxLossOp>(loc, gate.getProbs(), gate.getExpertIds(), layerName,
                          layer.getAuxLossCoefAttr(), placement);
  auto dispatch =
      b.create<DispatchOp>(loc, flat, gate.getExpertIds(), layerName,
                           layer.getNumExpertsAttr(), capacityAttr, placement);
  auto experts = b.create<ExpertsOp>(
      loc, dispatch.getRouted(), dispatch.getCounts(), layer.getW1(),
      layer.getB1(), layer.getW2(), layer.getB2(), layerName,
      b.getStringAttr(layer.getActivation()), capacityAttr, placement);
  auto combine =
      b.create<CombineOp>(loc, experts.getOut(), dispatch.getPositions(),
                          gate.getCombineWeights(), layerName, placement);
  Value y = b.create<flexmoe::nn::ReshapeOp>(loc, xType, combine.getY());

  layer.getY().replaceAllUsesWith(y);
  layer.getAuxLoss().replaceAllUsesWith(auxLoss.getResult());
  layer.erase();
  return success();
}

struct ExpandMoeLayersPass
    : flexmoe::impl::ExpandMoeLayersBase<ExpandMoeLayersPass> {
  using ExpandMoeLayersBase::ExpandMoeLayersBase;

  void runOnOperation() override {
    SmallVector<LayerOp> layers;
    getOperation().walk([&](LayerOp layer) { layers.push_back(layer); });
    for (LayerOp layer : layers)
      if (failed(expandLayer(layer)))
        return signalPassFailure();
  }
};

} // namespace
