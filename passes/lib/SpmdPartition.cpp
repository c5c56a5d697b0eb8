//===- SpmdPartition.cpp - spmd-partition pass ----------------------------===//
//
// Stage 4 → Stage 5 of docs/IR.md: turns @train_step into the program that
// every device runs. Data parallelism for the dense part (batch split, dense
// gradients averaged with moe.all_reduce), expert parallelism for the MoE
// layers (local expert slots, moe.all_to_all around the expert computation,
// replica gradient sync).
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeAttrs.h"
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/Moe/MoeOps.h"
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Dialect/NN/NNOps.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/STLExtras.h"

#include <type_traits>

namespace flexmoe {
#define GEN_PASS_DEF_SPMDPARTITION
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
namespace moe = flexmoe::moe;
namespace nn = flexmoe::nn;

namespace {

constexpr llvm::StringLiteral kTrainStep = "train_step";
constexpr llvm::StringLiteral kWorldSizeAttr = "flexmoe.world_size";
constexpr llvm::StringLiteral kInputAttr = "nn.input";
constexpr llvm::StringLiteral kParamAttr = "nn.param";
constexpr llvm::StringLiteral kStateOfAttr = "nn.state_of";
constexpr llvm::StringLiteral kOptStateAttr = "nn.opt_state";
constexpr llvm::StringLiteral kUpdatesAttr = "nn.updates";
constexpr llvm::StringLiteral kExpertLayerArgAttr = "moe.layer";
constexpr llvm::StringLiteral kLayerAttr = "layer";
constexpr llvm::StringLiteral kPlacementAttr = "placement";

int64_t elementCount(ShapedType type) {
  int64_t n = 1;
  for (int64_t d : type.getShape())
    n *= d;
  return n;
}

/// A name for a function argument in diagnostics: the parameter or input
/// name, or "adam_m of 'w'" for optimizer state.
std::string describeArgument(func::FuncOp func, unsigned index) {
  if (auto name = func.getArgAttrOfType<StringAttr>(index, kParamAttr))
    return ("parameter '" + name.getValue() + "'").str();
  if (auto name = func.getArgAttrOfType<StringAttr>(index, kInputAttr))
    return ("input '" + name.getValue() + "'").str();
  auto of = func.getArgAttrOfType<StringAttr>(index, kStateOfAttr);
  auto kind = func.getArgAttrOfType<StringAttr>(index, kOptStateAttr);
  if (of && kind)
    return (kind.getValue() + " of '" + of.getValue() + "'").str();
  return "argument #" + std::to_string(index);
}

/// What is known about one MoE layer of the step.
struct Layer {
  moe::PlacementAttr placement;
  /// The first op carrying the layer, for diagnostics.
  Operation *anchor = nullptr;
};

/// Partitions one @train_step; every method reports its own errors.
class Partitioner {
public:
  Partitioner(func::FuncOp func, int64_t worldSize)
      : func(func), ctx(func.getContext()), builder(func.getContext()),
        worldSize(worldSize) {}

  LogicalResult run() {
    if (failed(checkStage4()) || failed(collectLayers()) ||
        failed(splitInputs()) || failed(localizeExpertArguments()) ||
        failed(checkExpertStateMarked()) || failed(propagate()) ||
        failed(synchronizeGradients()) || failed(updateSignature()))
      return failure();
    return success();
  }

private:
  // --- Analysis --------------------------------------------------------===//

  /// The input must be a Stage 4 step: MoE layers expanded, no collectives.
  LogicalResult checkStage4() {
    WalkResult walk = func.walk([&](Operation *op) {
      if (isa<moe::AllToAllOp, moe::AllReduceOp, moe::ReplicaGradSyncOp>(op)) {
        op->emitError("@train_step is already partitioned: it contains '")
            << op->getName() << "'";
        return WalkResult::interrupt();
      }
      if (auto layer = dyn_cast<moe::LayerOp>(op)) {
        layer.emitError("moe.layer '")
            << layer.getName()
            << "' must be expanded before spmd-partition; run "
               "moe-expand-layers first";
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    return failure(walk.wasInterrupted());
  }

  /// Finds every MoE layer (the ops carrying `layer`) and its placement,
  /// which must agree across the layer's ops and with the world size.
  LogicalResult collectLayers() {
    for (Operation &op : func.getBody().front()) {
      auto name = op.getAttrOfType<StringAttr>(kLayerAttr);
      if (!name)
        continue;
      auto placement = op.getAttrOfType<moe::PlacementAttr>(kPlacementAttr);
      if (!placement)
        return op.emitError("layer '")
               << name.getValue()
               << "' has no placement; run moe-initial-placement first";
      auto [it, inserted] = layers.try_emplace(name, Layer{placement, &op});
      if (inserted) {
        if (placement.getWorldSize() != worldSize)
          return op.emitError("the placement of layer '")
                 << name.getValue() << "' is for world size "
                 << placement.getWorldSize()
                 << ", but spmd-partition runs with world-size " << worldSize;
        continue;
      }
      if (it->second.placement != placement)
        return op.emitError("ops of layer '")
               << name.getValue() << "' disagree on its placement";
    }
    return success();
  }

  // --- Arguments -------------------------------------------------------===//

  /// B → B/W on the leading dimension of every input.
  LogicalResult splitInputs() {
    for (BlockArgument arg : func.getArguments()) {
      if (!func.getArgAttr(arg.getArgNumber(), kInputAttr))
        continue;
      auto type = dyn_cast<RankedTensorType>(arg.getType());
      if (!type || type.getRank() == 0 || !type.hasStaticShape())
        return emitError(arg.getLoc())
               << describeArgument(func, arg.getArgNumber())
               << " must be a statically shaped tensor with a leading batch "
                  "dimension, got "
               << arg.getType();
      int64_t batch = type.getDimSize(0);
      if (batch % worldSize != 0)
        return emitError(arg.getLoc())
               << "batch size " << batch << " is not divisible by world size "
               << worldSize;
      SmallVector<int64_t> shape(type.getShape());
      shape[0] = batch / worldSize;
      retype(arg, type.clone(shape));
    }
    return success();
  }

  /// [E, ...] → [slots_per_device, ...] for the expert parameters of each
  /// layer and their AdamW state (the arguments marked `moe.layer`).
  LogicalResult localizeExpertArguments() {
    for (BlockArgument arg : func.getArguments()) {
      unsigned index = arg.getArgNumber();
      auto layerName =
          func.getArgAttrOfType<StringAttr>(index, kExpertLayerArgAttr);
      if (!layerName)
        continue;
      auto it = layers.find(layerName);
      if (it == layers.end())
        return emitError(arg.getLoc())
               << describeArgument(func, index) << " belongs to layer '"
               << layerName.getValue()
               << "', but no op of @train_step carries that layer";
      moe::PlacementAttr placement = it->second.placement;
      int64_t numExperts = placement.getNumExperts();
      auto type = dyn_cast<RankedTensorType>(arg.getType());
      if (!type || type.getRank() == 0 || type.getDimSize(0) != numExperts)
        return emitError(arg.getLoc())
               << describeArgument(func, index) << " of layer '"
               << layerName.getValue() << "' has type " << arg.getType()
               << ", but its leading dimension must be the layer's "
               << numExperts << " experts";
      SmallVector<int64_t> shape(type.getShape());
      shape[0] = placement.getSlotsPerDevice();
      retype(arg, type.clone(shape));
    }
    return success();
  }

  /// The layer an argument holds expert slots of, if any.
  StringAttr expertLayerOf(Value value) {
    auto arg = dyn_cast<BlockArgument>(value);
    if (!arg || arg.getOwner() != &func.getBody().front())
      return {};
    return func.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                             kExpertLayerArgAttr);
  }

  /// An expert parameter's AdamW state is stored per slot like the parameter,
  /// so it must be marked with the same layer.
  LogicalResult checkExpertStateMarked() {
    for (auto update : func.getBody().front().getOps<nn::AdamWOp>()) {
      StringAttr layer = expertLayerOf(update.getParam());
      if (!layer)
        continue;
      for (Value state : {update.getM(), update.getV()}) {
        if (expertLayerOf(state) == layer)
          continue;
        auto arg = cast<BlockArgument>(update.getParam());
        return update.emitError("the AdamW state of ")
               << describeArgument(func, arg.getArgNumber())
               << " must be @train_step arguments marked moe.layer = \""
               << layer.getValue() << "\", like the parameter";
      }
    }
    return success();
  }

  // --- Propagation -----------------------------------------------------===//

  /// Walks the body in program order and gives every op the per-device types
  /// of its (already per-device) operands; inserts the all-to-alls around the
  /// expert computation on the way.
  LogicalResult propagate() {
    // Ops inserted on the way are created with their final types, so the
    // walk covers only the ops that were there before.
    SmallVector<Operation *> ops = llvm::map_to_vector(
        func.getBody().front(), [](Operation &op) { return &op; });
    for (Operation *op : ops) {
      if (isa<func::ReturnOp>(op))
        continue;
      if (auto fill = dyn_cast<nn::FillOp>(op)) {
        shardFillLikeForwardValue(fill);
        continue;
      }
      if (failed(resolveFills(op)))
        return failure();
      if (auto experts = dyn_cast<moe::ExpertsOp>(op)) {
        if (failed(partitionExpertsLike(experts, experts.getOut())))
          return failure();
        continue;
      }
      if (auto grad = dyn_cast<moe::ExpertsGradOp>(op)) {
        if (failed(partitionExpertsLike(grad, grad.getDRouted())))
          return failure();
        continue;
      }
      if (!hasChangedOperand(op))
        continue;
      if (auto reshape = dyn_cast<nn::ReshapeOp>(op)) {
        if (failed(partitionReshape(reshape)))
          return failure();
        continue;
      }
      if (auto dispatch = dyn_cast<moe::DispatchOp>(op))
        localizeCapacity(dispatch);
      if (failed(reinferResultTypes(op)))
        return failure();
    }
    return success();
  }

  bool hasChangedOperand(Operation *op) const {
    return llvm::any_of(op->getOperands(),
                        [&](Value v) { return originalTypes.contains(v); });
  }

  /// The type a value had in the Stage 4 program.
  Type originalType(Value v) const {
    auto it = originalTypes.find(v);
    return it == originalTypes.end() ? v.getType() : it->second;
  }

  void retype(Value v, Type type) {
    if (v.getType() == type)
      return;
    originalTypes.try_emplace(v, v.getType());
    v.setType(type);
  }

  /// An `nn.fill` has no operand to say whether it is batch-shaped. The
  /// zero fills of build-train-step stand for the gradient of a forward value
  /// (an unused result, the input of a reduction) and have its Stage 4 type:
  /// when every earlier value of that type is split over the devices, the
  /// fill is too. Otherwise its users decide (resolveFills).
  void shardFillLikeForwardValue(nn::FillOp fill) {
    Type type = fill.getResult().getType();
    Type split;
    auto consider = [&](Value v) {
      // Slot-side rows are not batch values.
      if (isa_and_nonnull<moe::AllToAllOp, moe::ExpertsOp, moe::ExpertsGradOp>(
              v.getDefiningOp()))
        return true;
      if (originalType(v) != type)
        return true;
      if (!originalTypes.contains(v) || (split && split != v.getType()))
        return false; // a replicated value of that type, or two splits
      split = v.getType();
      return true;
    };
    for (BlockArgument arg : func.getArguments())
      if (!consider(arg))
        return;
    for (Operation &op : func.getBody().front()) {
      if (&op == fill.getOperation())
        break;
      for (Value result : op.getResults())
        if (!consider(result))
          return;
    }
    if (!split)
      return;
    fills[fill] = FillKind::Sharded;
    retype(fill.getResult(), split);
  }

  /// A fill not settled by shardFillLikeForwardValue is split when an op uses
  /// it beside a per-device operand of the same Stage 4 shape; it then takes
  /// that operand's per-device shape.
  LogicalResult resolveFills(Operation *user) {
    for (OpOperand &use : user->getOpOperands()) {
      auto fill = use.get().getDefiningOp<nn::FillOp>();
      if (!fill)
        continue;
      auto fillType = cast<ShapedType>(originalType(fill.getResult()));
      Value sibling;
      for (Value other : user->getOperands()) {
        if (other == use.get() || !originalTypes.contains(other))
          continue;
        auto otherType = cast<ShapedType>(originalType(other));
        if (otherType.hasRank() &&
            otherType.getShape() == fillType.getShape()) {
          sibling = other;
          break;
        }
      }
      FillKind &kind = fills[fill];
      if (!sibling) {
        if (kind == FillKind::Unknown)
          kind = FillKind::Replicated;
        continue;
      }
      if (kind == FillKind::Replicated) {
        InFlightDiagnostic diag =
            fill.emitError("cannot partition this fill: it is used both as a "
                           "replicated tensor and as a per-device batch shard");
        diag.attachNote(user->getLoc()) << "used as a batch shard here";
        return diag;
      }
      kind = FillKind::Sharded;
      auto shape = cast<ShapedType>(sibling.getType()).getShape();
      retype(fill.getResult(),
             RankedTensorType::get(shape, fillType.getElementType()));
    }
    return success();
  }

  /// nn.reshape has an explicit result type: the batch carried by the operand
  /// is carried by the result's leading dimension ([B,S,D] → [B·S,D] and
  /// back), which shrinks by the factor the operand shrank by.
  LogicalResult partitionReshape(nn::ReshapeOp reshape) {
    auto before = cast<ShapedType>(originalType(reshape->getOperand(0)));
    auto after = cast<ShapedType>(reshape->getOperand(0).getType());
    auto result = cast<RankedTensorType>(reshape->getResult(0).getType());
    int64_t oldCount = elementCount(before), newCount = elementCount(after);
    if (newCount == 0 || oldCount % newCount != 0)
      return reshape.emitError("cannot partition this reshape: its operand "
                               "went from ")
             << before << " to " << after;
    int64_t factor = oldCount / newCount;
    if (result.getRank() == 0 || result.getDimSize(0) % factor != 0)
      return reshape.emitError("cannot split the batch of this reshape over ")
             << worldSize << " devices: the leading dimension of its result "
             << result << " is not divisible by " << factor;
    SmallVector<int64_t> shape(result.getShape());
    shape[0] /= factor;
    retype(reshape->getResult(0), result.clone(shape));
    return success();
  }

  /// Token capacity is per device: with T/W tokens, C = ceil(cf·T·k/E)
  /// becomes ceil(cf·(T/W)·k/E) = ceil(C/W).
  void localizeCapacity(moe::DispatchOp dispatch) {
    int64_t capacity = dispatch.getCapacity();
    if (capacity > 0)
      dispatch.setCapacity((capacity + worldSize - 1) / worldSize);
  }

  /// Re-runs the op's type inference on its per-device operands.
  LogicalResult reinferResultTypes(Operation *op) {
    auto infer = dyn_cast<InferTypeOpInterface>(op);
    if (!infer) {
      auto changed = llvm::find_if(op->getOpOperands(), [&](OpOperand &use) {
        return originalTypes.contains(use.get());
      });
      return op->emitError("spmd-partition does not know how to partition '")
             << op->getName() << "': operand #" << changed->getOperandNumber()
             << " is split over the devices (" << originalType(changed->get())
             << " → " << changed->get().getType()
             << ") and the op does not infer its result types";
    }
    SmallVector<Type> inferred;
    if (failed(checked(op, [&] {
          if (failed(infer.inferReturnTypes(
                  ctx, op->getLoc(), op->getOperands(),
                  op->getRawDictionaryAttrs(), op->getPropertiesStorage(),
                  op->getRegions(), inferred)))
            return failure();
          // The ops' inference is lenient: what it cannot derive stays
          // dynamic, and the verifier says why.
          for (Type type : inferred) {
            auto ranked = dyn_cast<RankedTensorType>(type);
            if (!ranked || !ranked.hasStaticShape()) {
              (void)verify(op, /*verifyRecursively=*/false);
              return failure();
            }
          }
          for (auto [result, type] :
               llvm::zip_equal(op->getResults(), inferred))
            retype(result, type);
          return verify(op, /*verifyRecursively=*/false);
        })))
      return failure();
    return success();
  }

  /// Runs `fn` (type inference, verification) and turns the first diagnostic
  /// it emits into one error at `op` that says what was being done.
  LogicalResult checked(Operation *op, function_ref<LogicalResult()> fn) {
    std::string reason;
    LogicalResult status = success();
    {
      ScopedDiagnosticHandler capture(ctx, [&](Diagnostic &diag) {
        if (reason.empty() && diag.getSeverity() == DiagnosticSeverity::Error)
          reason = diag.str();
        return success();
      });
      status = fn();
    }
    if (succeeded(status))
      return success();
    return op->emitError("cannot partition '")
           << op->getName() << "' over " << worldSize << " devices: "
           << (reason.empty() ? "its per-device result types cannot be inferred"
                              : reason);
  }

  // --- Expert parallelism ----------------------------------------------===//

  SmallVector<NamedAttribute> layerAttrs(StringAttr layer) {
    return {
        builder.getNamedAttr(kLayerAttr, layer),
        builder.getNamedAttr(kPlacementAttr, layers.lookup(layer).placement)};
  }

  /// The rows this device's slots receive, and the slot counts, for
  /// expert-grouped `rows` with per-expert `counts`. Created once per pair so
  /// that moe.experts_grad reuses what the forward moe.experts received.
  std::pair<Value, Value> dispatchToSlots(Value rows, Value counts,
                                          StringAttr layer, Operation *before) {
    auto key = std::make_pair(rows, counts);
    if (auto it = dispatched.find(key); it != dispatched.end())
      return it->second;
    moe::PlacementAttr placement = layers.lookup(layer).placement;
    auto rowsType = cast<RankedTensorType>(rows.getType());
    SmallVector<int64_t> recvShape(rowsType.getShape());
    recvShape[0] *= worldSize; // the dropless bound M = W·N
    Type slotCountsType = RankedTensorType::get(
        {placement.getSlotsPerDevice()},
        cast<ShapedType>(counts.getType()).getElementType());
    SmallVector<NamedAttribute> attrs = layerAttrs(layer);
    attrs.push_back(
        builder.getNamedAttr("direction", builder.getStringAttr("dispatch")));
    builder.setInsertionPoint(before);
    auto a2a = builder.create<moe::AllToAllOp>(
        before->getLoc(), TypeRange{rowsType.clone(recvShape), slotCountsType},
        ValueRange{rows, counts}, attrs);
    auto result = std::make_pair(a2a->getResult(0), a2a->getResult(1));
    dispatched[key] = result;
    return result;
  }

  /// Sends `slotRows` back to the devices the tokens came from, in their
  /// expert-grouped order (`rowsType`, like the moe.dispatch output, with
  /// per-expert counts of `countsType`), and uses that for every use of
  /// `slotRows`.
  void combineFromSlots(Value slotRows, Value slotCounts, Type rowsType,
                        Type countsType, StringAttr layer) {
    SmallVector<NamedAttribute> attrs = layerAttrs(layer);
    attrs.push_back(
        builder.getNamedAttr("direction", builder.getStringAttr("combine")));
    builder.setInsertionPointAfterValue(slotRows);
    auto a2a = builder.create<moe::AllToAllOp>(
        slotRows.getLoc(), TypeRange{rowsType, countsType},
        ValueRange{slotRows, slotCounts}, attrs);
    slotRows.replaceAllUsesExcept(a2a->getResult(0), a2a);
  }

  /// The weight operands of moe.experts(_grad) must be the layer's expert
  /// parameter arguments, which now hold the local slots.
  LogicalResult checkLocalWeights(Operation *op, ValueRange weights,
                                  StringAttr layer) {
    for (Value weight : weights) {
      if (expertLayerOf(weight) == layer)
        continue;
      return op->emitError("the expert weights of layer '")
             << layer.getValue()
             << "' must be @train_step arguments marked moe.layer = \""
             << layer.getValue() << "\" to be partitioned over the devices";
    }
    return success();
  }

  /// moe.experts and moe.experts_grad alike: the routed rows (and, for the
  /// gradient, dy) go to the devices whose slots hold their experts, the op
  /// runs on the local slots, and `result` comes back in the original order.
  template <typename ExpertsLikeOp>
  LogicalResult partitionExpertsLike(ExpertsLikeOp op, Value result) {
    StringAttr layer = op.getLayerAttr();
    if (failed(checkLocalWeights(
            op, {op.getW1(), op.getB1(), op.getW2(), op.getB2()}, layer)))
      return failure();
    Value rows = op.getRouted(), counts = op.getCounts();
    Type rowsType = rows.getType(), countsType = counts.getType();
    auto [recv, slotCounts] = dispatchToSlots(rows, counts, layer, op);
    if constexpr (std::is_same_v<ExpertsLikeOp, moe::ExpertsGradOp>) {
      // Same counts, same plan: dy's slot counts equal slotCounts.
      Value dyLocal = dispatchToSlots(op.getDy(), counts, layer, op).first;
      op.getDyMutable().assign(dyLocal);
    }
    op.getRoutedMutable().assign(recv);
    op.getCountsMutable().assign(slotCounts);
    op.setCapacity(0);
    if (failed(reinferResultTypes(op)))
      return failure();
    combineFromSlots(result, slotCounts, rowsType, countsType, layer);
    return success();
  }

  // --- Gradient synchronisation ----------------------------------------===//

  /// Dense gradients: moe.all_reduce mean, right after the op producing the
  /// final gradient, so that the rest of the backward pass can run while it
  /// is in flight (docs/distributed.md, "Overlap"). Expert gradients:
  /// nn.scale 1/W, then one moe.replica_grad_sync per layer. Then every
  /// nn.adamw, in its order, after all of them.
  LogicalResult synchronizeGradients() {
    llvm::MapVector<StringAttr, SmallVector<nn::AdamWOp>> expertUpdates;
    // The last all-reduce placed after each producer: the gradients of one
    // op (dgamma, dbeta) keep their updates' order.
    DenseMap<Operation *, Operation *> lastReduceAfter;
    for (auto update : func.getBody().front().getOps<nn::AdamWOp>()) {
      if (StringAttr layer = expertLayerOf(update.getParam())) {
        expertUpdates[layer].push_back(update);
        continue;
      }
      Value grad = update.getGrad();
      Operation *producer = grad.getDefiningOp();
      if (auto it = lastReduceAfter.find(producer); it != lastReduceAfter.end())
        builder.setInsertionPointAfter(it->second);
      else
        builder.setInsertionPointAfterValue(grad);
      auto reduce = builder.create<moe::AllReduceOp>(
          update.getLoc(), TypeRange{grad.getType()}, ValueRange{grad},
          ArrayRef<NamedAttribute>{builder.getNamedAttr(
              "reduction", builder.getStringAttr("mean"))});
      update.getGradMutable().assign(reduce->getResult(0));
      lastReduceAfter[producer] = reduce;
    }
    for (auto &[layer, updates] : expertUpdates)
      synchronizeExpertGradients(layer, updates);
    // Every update after every gradient collective: the runtime can then
    // take the global gradient norm (clipping, loss-scale overflow checks)
    // before the first parameter changes.
    Operation *terminator = func.getBody().front().getTerminator();
    SmallVector<nn::AdamWOp> allUpdates(
        func.getBody().front().getOps<nn::AdamWOp>());
    for (nn::AdamWOp update : allUpdates)
      update->moveBefore(terminator);
    return success();
  }

  void synchronizeExpertGradients(StringAttr layer,
                                  MutableArrayRef<nn::AdamWOp> updates) {
    // The sync needs every gradient of the layer and must precede every
    // update: after the last gradient, with updates above it moved below.
    Operation *lastDef = nullptr;
    for (nn::AdamWOp update : updates) {
      Operation *def = update.getGrad().getDefiningOp();
      if (def && (!lastDef || lastDef->isBeforeInBlock(def)))
        lastDef = def;
    }
    Operation *firstUpdate = updates.front();
    for (nn::AdamWOp update : updates)
      if (update->isBeforeInBlock(firstUpdate))
        firstUpdate = update;
    if (lastDef && !lastDef->isBeforeInBlock(firstUpdate))
      builder.setInsertionPointAfter(lastDef);
    else
      builder.setInsertionPoint(firstUpdate);

    Location loc = layers.lookup(layer).anchor->getLoc();
    SmallVector<Value> scaled;
    SmallVector<Type> types;
    for (nn::AdamWOp update : updates) {
      Value grad = update.getGrad();
      auto scale = builder.create<nn::ScaleOp>(
          loc, TypeRange{grad.getType()}, ValueRange{grad},
          ArrayRef<NamedAttribute>{builder.getNamedAttr(
              "factor",
              builder.getF32FloatAttr(1.0f / static_cast<float>(worldSize)))});
      scaled.push_back(scale->getResult(0));
      types.push_back(grad.getType());
    }
    auto sync = builder.create<moe::ReplicaGradSyncOp>(loc, types, scaled,
                                                       layerAttrs(layer));
    Operation *last = sync;
    for (auto [update, synced] : llvm::zip_equal(updates, sync->getResults())) {
      update.getGradMutable().assign(synced);
      if (update->isBeforeInBlock(sync)) {
        update->moveAfter(last);
        last = update;
      }
    }
  }

  // --- Signature -------------------------------------------------------===//

  /// Result types follow the returned values; every `nn.updates` result must
  /// still have its argument's (per-device) type.
  LogicalResult updateSignature() {
    auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
    func.setFunctionType(FunctionType::get(
        ctx, func.getBody().front().getArgumentTypes(), ret.getOperandTypes()));
    for (unsigned i = 0, e = func.getNumResults(); i < e; ++i) {
      auto updates = func.getResultAttrOfType<IntegerAttr>(i, kUpdatesAttr);
      if (!updates)
        continue;
      int64_t index = updates.getInt();
      if (index < 0 || index >= func.getNumArguments())
        return func.emitError("result #")
               << i << " updates argument #" << index
               << ", which @train_step does not have";
      Type argType = func.getArgument(index).getType();
      if (ret.getOperand(i).getType() != argType)
        return func.emitError("after partitioning, result #")
               << i << " has type " << ret.getOperand(i).getType()
               << " but updates "
               << describeArgument(func, static_cast<unsigned>(index))
               << " of type " << argType;
    }
    return success();
  }

  enum class FillKind { Unknown, Replicated, Sharded };

  func::FuncOp func;
  MLIRContext *ctx;
  OpBuilder builder;
  int64_t worldSize;
  llvm::MapVector<StringAttr, Layer> layers;
  /// Stage 4 types of the values whose type changed.
  DenseMap<Value, Type> originalTypes;
  DenseMap<Operation *, FillKind> fills;
  DenseMap<std::pair<Value, Value>, std::pair<Value, Value>> dispatched;
};

struct SpmdPartitionPass : flexmoe::impl::SpmdPartitionBase<SpmdPartitionPass> {
  using SpmdPartitionBase::SpmdPartitionBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (worldSize < 1) {
      module.emitError("spmd-partition needs world-size ≥ 1, got ")
          << static_cast<int64_t>(worldSize);
      return signalPassFailure();
    }
    if (auto attr = module->getAttr(kWorldSizeAttr)) {
      auto declared = dyn_cast<IntegerAttr>(attr);
      if (!declared) {
        module.emitError(kWorldSizeAttr) << " must be an integer, got " << attr;
        return signalPassFailure();
      }
      if (declared.getInt() != worldSize) {
        module.emitError("the module is placed for world size ")
            << declared.getInt() << " (" << kWorldSizeAttr
            << "), but spmd-partition runs with world-size "
            << static_cast<int64_t>(worldSize);
        return signalPassFailure();
      }
    }
    auto func = module.lookupSymbol<func::FuncOp>(kTrainStep);
    if (!func || func.isExternal()) {
      module.emitError("spmd-partition expects a func.func @train_step with a "
                       "body; run build-train-step first");
      return signalPassFailure();
    }
    if (!func.getBody().hasOneBlock()) {
      func.emitError("@train_step must have a single block");
      return signalPassFailure();
    }
    if (failed(Partitioner(func, worldSize).run()))
      return signalPassFailure();
    module->setAttr(
        kWorldSizeAttr,
        IntegerAttr::get(IntegerType::get(&getContext(), 64), worldSize));
  }
};

} // namespace
