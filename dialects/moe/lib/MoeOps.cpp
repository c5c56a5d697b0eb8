//===- MoeOps.cpp - moe dialect ops: type inference and verifiers ---------===//
//
// Type inference derives what it can and leaves the rest dynamic; the
// verifiers then check operand shapes against each other in the user's terms
// (the dimension letters of docs/IR.md: T tokens, D model width, E experts,
// H ffn_hidden, k top_k, N routed rows, G expert groups).
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Moe/MoeOps.h"
#include "flexmoe/Dialect/Common/TypeUtils.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace flexmoe::moe;

namespace {

constexpr int64_t kDynamic = ShapedType::kDynamic;

/// Dimension `i` of `type`, dynamic when the tensor is unranked or too small.
int64_t dimOf(Type type, unsigned i) {
  auto ranked = dyn_cast<RankedTensorType>(type);
  if (!ranked || ranked.getRank() <= static_cast<int64_t>(i))
    return kDynamic;
  return ranked.getDimSize(i);
}

int64_t dimOf(Value value, unsigned i) { return dimOf(value.getType(), i); }

Type elementTypeOf(Value value) {
  return cast<TensorType>(value.getType()).getElementType();
}

/// lhs · rhs, dynamic when either is or when the product overflows.
int64_t mulDims(int64_t lhs, int64_t rhs) {
  int64_t product;
  if (ShapedType::isDynamic(lhs) || ShapedType::isDynamic(rhs) ||
      llvm::MulOverflow(lhs, rhs, product))
    return kDynamic;
  return product;
}

/// A size taken from an attribute; a value the verifier rejects (< 1) is
/// left dynamic so that inference never builds an invalid tensor type.
int64_t sizeFromAttr(IntegerAttr attr) {
  if (!attr || attr.getInt() < 1)
    return kDynamic;
  return attr.getInt();
}

RankedTensorType tensorOf(ArrayRef<int64_t> shape, Type elementType) {
  return RankedTensorType::get(shape, elementType);
}

RankedTensorType i32TensorOf(MLIRContext *context, ArrayRef<int64_t> shape) {
  return RankedTensorType::get(shape, IntegerType::get(context, 32));
}

/// Binds the dimension letters of an op's operands and reports the first
/// disagreement: "w1 has D = 32 but x has D = 16".
class ShapeChecker {
public:
  explicit ShapeChecker(Operation *op) : op(op) {}

  /// Fixes `letter` from an attribute: "num_experts is 4".
  void bind(StringRef letter, int64_t size, StringRef attrName) {
    bound[letter] = {size, (attrName + " is " + Twine(size)).str()};
  }

  /// Checks that `value` (the operand or result called `name`) is a tensor of
  /// the rank of `letters` and that each of its static dimensions agrees with
  /// what the letter is already bound to.
  LogicalResult match(StringRef name, Value value,
                      ArrayRef<StringRef> letters) {
    auto ranked = dyn_cast<RankedTensorType>(value.getType());
    if (!ranked)
      return success();
    if (ranked.getRank() != static_cast<int64_t>(letters.size())) {
      InFlightDiagnostic diag = op->emitOpError() << name << " must be a ";
      if (letters.empty())
        diag << "0-d tensor";
      else
        diag << "[" << llvm::join(letters, ",") << "] tensor";
      return diag << ", got " << value.getType();
    }
    for (auto [letter, size] : llvm::zip(letters, ranked.getShape())) {
      if (ShapedType::isDynamic(size))
        continue;
      auto it = bound.find(letter);
      if (it == bound.end()) {
        bound[letter] = {size,
                         (name + " has " + letter + " = " + Twine(size)).str()};
        continue;
      }
      if (it->second.first != size)
        return op->emitOpError() << name << " has " << letter << " = " << size
                                 << " but " << it->second.second;
    }
    return success();
  }

  /// The size bound to `letter`, or dynamic.
  int64_t get(StringRef letter) const {
    auto it = bound.find(letter);
    return it == bound.end() ? kDynamic : it->second.first;
  }

private:
  Operation *op;
  llvm::StringMap<std::pair<int64_t, std::string>> bound;
};

/// All float operands of `op` share one element type.
LogicalResult verifySameFloatType(Operation *op) {
  Type first;
  for (auto [index, operand] : llvm::enumerate(op->getOperands())) {
    Type element = elementTypeOf(operand);
    if (!isa<FloatType>(element))
      continue;
    if (!first) {
      first = element;
      continue;
    }
    if (element != first)
      return op->emitOpError()
             << "operand " << index << " has element type " << element
             << " but the other float operands have " << first;
  }
  return success();
}

LogicalResult verifyLayerName(Operation *op, StringRef layer) {
  if (layer.empty())
    return op->emitOpError() << "has an empty layer name";
  return success();
}

LogicalResult verifyActivation(Operation *op, StringRef activation) {
  if (activation != "gelu" && activation != "relu")
    return op->emitOpError()
           << "activation must be \"gelu\" or \"relu\", got \"" << activation
           << "\"";
  return success();
}

/// The placement of `layer`, when present, describes `numExperts` experts.
LogicalResult verifyPlacementExperts(Operation *op, StringRef layer,
                                     PlacementAttr placement,
                                     int64_t numExperts) {
  if (!placement || ShapedType::isDynamic(numExperts) ||
      placement.getNumExperts() == numExperts)
    return success();
  return op->emitOpError() << "layer '" << layer << "' has " << numExperts
                           << " experts but its placement lists "
                           << placement.getNumExperts();
}

LogicalResult verifyTopK(Operation *op, int64_t topK, int64_t numExperts) {
  if (topK < 1 || (!ShapedType::isDynamic(numExperts) && topK > numExperts)) {
    InFlightDiagnostic diag = op->emitOpError() << "top_k must be in [1, ";
    if (ShapedType::isDynamic(numExperts))
      diag << "E]";
    else
      diag << numExperts << "]";
    return diag << ", got " << topK;
  }
  return success();
}

} // namespace

// Every op compares inferred and declared results the same way: unranked and
// dynamic dimensions are compatible with anything of the same element type.
#define MOE_COMPATIBLE_RETURN_TYPES(Op)                                        \
  bool Op::isCompatibleReturnTypes(TypeRange inferred, TypeRange actual) {     \
    return flexmoe::areCompatibleTensorTypes(inferred, actual);                \
  }
MOE_COMPATIBLE_RETURN_TYPES(LayerOp)
MOE_COMPATIBLE_RETURN_TYPES(GateOp)
MOE_COMPATIBLE_RETURN_TYPES(GateGradOp)
MOE_COMPATIBLE_RETURN_TYPES(AuxLossOp)
MOE_COMPATIBLE_RETURN_TYPES(AuxLossGradOp)
MOE_COMPATIBLE_RETURN_TYPES(DispatchOp)
MOE_COMPATIBLE_RETURN_TYPES(DispatchGradOp)
MOE_COMPATIBLE_RETURN_TYPES(CombineOp)
MOE_COMPATIBLE_RETURN_TYPES(CombineGradOp)
MOE_COMPATIBLE_RETURN_TYPES(ExpertsOp)
MOE_COMPATIBLE_RETURN_TYPES(ExpertsGradOp)
MOE_COMPATIBLE_RETURN_TYPES(AllToAllOp)
MOE_COMPATIBLE_RETURN_TYPES(ReplicaGradSyncOp)
MOE_COMPATIBLE_RETURN_TYPES(AllReduceOp)
#undef MOE_COMPATIBLE_RETURN_TYPES

//===----------------------------------------------------------------------===//
// moe.layer
//===----------------------------------------------------------------------===//

LogicalResult LayerOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &inferred) {
  Type x = adaptor.getX().getType();
  inferred.push_back(x);
  inferred.push_back(tensorOf({}, cast<TensorType>(x).getElementType()));
  return success();
}

LogicalResult LayerOp::verify() {
  StringRef name = getName();
  if (name.empty())
    return emitOpError() << "has an empty name";
  int64_t numExperts = getNumExpertsAttr().getInt();
  int64_t topK = getTopKAttr().getInt();
  int64_t ffnHidden = getFfnHiddenAttr().getInt();
  if (numExperts < 1)
    return emitOpError()
           << "layer '" << name
           << "' must have at least one expert, got num_experts = "
           << numExperts;
  if (failed(verifyTopK(*this, topK, numExperts)))
    return failure();
  if (ffnHidden < 1)
    return emitOpError() << "ffn_hidden must be at least 1, got " << ffnHidden;
  double capacityFactor = getCapacityFactor().convertToDouble();
  if (!(capacityFactor >= 0.0) || std::isinf(capacityFactor))
    return emitOpError() << "capacity_factor must be a finite number >= 0 "
                            "(0 = dropless), got "
                         << capacityFactor;
  double auxLossCoef = getAuxLossCoef().convertToDouble();
  if (!(auxLossCoef >= 0.0) || std::isinf(auxLossCoef))
    return emitOpError() << "aux_loss_coef must be a finite number >= 0, got "
                         << auxLossCoef;
  if (failed(verifyActivation(*this, getActivation())) ||
      failed(verifySameFloatType(*this)))
    return failure();

  ShapeChecker shapes(*this);
  shapes.bind("E", numExperts, "num_experts");
  shapes.bind("H", ffnHidden, "ffn_hidden");
  if (failed(shapes.match("x", getX(), {"B", "S", "D"})) ||
      failed(shapes.match("gate_weight", getGateWeight(), {"D", "E"})) ||
      failed(shapes.match("w1", getW1(), {"E", "D", "H"})) ||
      failed(shapes.match("b1", getB1(), {"E", "H"})) ||
      failed(shapes.match("w2", getW2(), {"E", "H", "D"})) ||
      failed(shapes.match("b2", getB2(), {"E", "D"})) ||
      failed(shapes.match("y", getY(), {"B", "S", "D"})) ||
      failed(shapes.match("aux_loss", getAuxLoss(), {})))
    return failure();
  return verifyPlacementExperts(*this, name, getPlacementAttr(), numExperts);
}

//===----------------------------------------------------------------------===//
// moe.gate, moe.gate_grad
//===----------------------------------------------------------------------===//

LogicalResult GateOp::inferReturnTypes(MLIRContext *context,
                                       std::optional<Location>, Adaptor adaptor,
                                       SmallVectorImpl<Type> &inferred) {
  Value x = adaptor.getX();
  int64_t tokens = dimOf(x, 0);
  int64_t experts = dimOf(adaptor.getGateWeight(), 1);
  int64_t topK = sizeFromAttr(adaptor.getTopKAttr());
  Type element = elementTypeOf(x);
  inferred.push_back(tensorOf({tokens, experts}, element));
  inferred.push_back(i32TensorOf(context, {tokens, topK}));
  inferred.push_back(tensorOf({tokens, topK}, element));
  return success();
}

LogicalResult GateOp::verify() {
  ShapeChecker shapes(*this);
  shapes.bind("k", getTopKAttr().getInt(), "top_k");
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(verifySameFloatType(*this)) ||
      failed(shapes.match("x", getX(), {"T", "D"})) ||
      failed(shapes.match("gate_weight", getGateWeight(), {"D", "E"})) ||
      failed(verifyTopK(*this, getTopKAttr().getInt(), shapes.get("E"))))
    return failure();
  return verifyPlacementExperts(*this, getLayer(), getPlacementAttr(),
                                shapes.get("E"));
}

LogicalResult GateGradOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location>,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getX().getType());
  inferred.push_back(adaptor.getGateWeight().getType());
  return success();
}

LogicalResult GateGradOp::verify() {
  ShapeChecker shapes(*this);
  shapes.bind("k", getTopKAttr().getInt(), "top_k");
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(verifySameFloatType(*this)) ||
      failed(shapes.match("x", getX(), {"T", "D"})) ||
      failed(shapes.match("gate_weight", getGateWeight(), {"D", "E"})) ||
      failed(shapes.match("probs", getProbs(), {"T", "E"})) ||
      failed(shapes.match("expert_ids", getExpertIds(), {"T", "k"})) ||
      failed(shapes.match("d_combine_weights", getDCombineWeights(),
                          {"T", "k"})) ||
      failed(shapes.match("d_probs", getDProbs(), {"T", "E"})) ||
      failed(verifyTopK(*this, getTopKAttr().getInt(), shapes.get("E"))))
    return failure();
  return verifyPlacementExperts(*this, getLayer(), getPlacementAttr(),
                                shapes.get("E"));
}

//===----------------------------------------------------------------------===//
// moe.aux_loss, moe.aux_loss_grad
//===----------------------------------------------------------------------===//

static LogicalResult verifyCoef(Operation *op, APFloat coef) {
  double value = coef.convertToDouble();
  if (!(value >= 0.0) || std::isinf(value))
    return op->emitOpError()
           << "coef must be a finite number >= 0, got " << value;
  return success();
}

LogicalResult AuxLossOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location>,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  inferred.push_back(tensorOf({}, elementTypeOf(adaptor.getProbs())));
  return success();
}

LogicalResult AuxLossOp::verify() {
  ShapeChecker shapes(*this);
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(verifyCoef(*this, getCoef())) ||
      failed(shapes.match("probs", getProbs(), {"T", "E"})) ||
      failed(shapes.match("expert_ids", getExpertIds(), {"T", "k"})))
    return failure();
  return verifyPlacementExperts(*this, getLayer(), getPlacementAttr(),
                                shapes.get("E"));
}

LogicalResult AuxLossGradOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location>,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getProbs().getType());
  return success();
}

LogicalResult AuxLossGradOp::verify() {
  ShapeChecker shapes(*this);
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(verifyCoef(*this, getCoef())) ||
      failed(verifySameFloatType(*this)) ||
      failed(shapes.match("probs", getProbs(), {"T", "E"})) ||
      failed(shapes.match("expert_ids", getExpertIds(), {"T", "k"})) ||
      failed(shapes.match("dloss", getDloss(), {})))
    return failure();
  return verifyPlacementExperts(*this, getLayer(), getPlacementAttr(),
                                shapes.get("E"));
}

//===----------------------------------------------------------------------===//
// moe.dispatch, moe.dispatch_grad
//===----------------------------------------------------------------------===//

LogicalResult DispatchOp::inferReturnTypes(MLIRContext *context,
                                           std::optional<Location>,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &inferred) {
  Value x = adaptor.getX();
  Value ids = adaptor.getExpertIds();
  int64_t tokens = dimOf(x, 0);
  if (ShapedType::isDynamic(tokens))
    tokens = dimOf(ids, 0);
  int64_t topK = dimOf(ids, 1);
  int64_t experts = sizeFromAttr(adaptor.getNumExpertsAttr());
  int64_t capacity =
      adaptor.getCapacityAttr() ? adaptor.getCapacityAttr().getInt() : 0;
  int64_t rows =
      capacity > 0 ? mulDims(experts, capacity) : mulDims(tokens, topK);
  inferred.push_back(tensorOf({rows, dimOf(x, 1)}, elementTypeOf(x)));
  inferred.push_back(i32TensorOf(context, {tokens, topK}));
  inferred.push_back(i32TensorOf(context, {experts}));
  return success();
}

LogicalResult DispatchOp::verify() {
  int64_t numExperts = getNumExpertsAttr().getInt();
  if (numExperts < 1)
    return emitOpError() << "num_experts must be at least 1, got "
                         << numExperts;
  if (getCapacityAttr().getInt() < 0)
    return emitOpError() << "capacity must be >= 0 (0 = dropless), got "
                         << getCapacityAttr().getInt();
  if (getCapacityAttr().getInt() > 0 &&
      ShapedType::isDynamic(mulDims(numExperts, getCapacityAttr().getInt())))
    return emitOpError() << "capacity " << getCapacityAttr().getInt() << " for "
                         << numExperts
                         << " experts gives more routed rows than fit in a "
                            "tensor dimension";
  ShapeChecker shapes(*this);
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(shapes.match("x", getX(), {"T", "D"})) ||
      failed(shapes.match("expert_ids", getExpertIds(), {"T", "k"})))
    return failure();
  int64_t topK = shapes.get("k");
  if (!ShapedType::isDynamic(topK) && (topK < 1 || topK > numExperts))
    return emitOpError() << "expert_ids has k = " << topK
                         << " choices per token; it must be in [1, "
                         << numExperts << "]";
  return verifyPlacementExperts(*this, getLayer(), getPlacementAttr(),
                                numExperts);
}

LogicalResult
DispatchGradOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                 Adaptor adaptor,
                                 SmallVectorImpl<Type> &inferred) {
  Value dRouted = adaptor.getDRouted();
  inferred.push_back(
      tensorOf({dimOf(adaptor.getPositions(), 0), dimOf(dRouted, 1)},
               elementTypeOf(dRouted)));
  return success();
}

LogicalResult DispatchGradOp::verify() {
  ShapeChecker shapes(*this);
  return failure(failed(verifyLayerName(*this, getLayer())) ||
                 failed(shapes.match("d_routed", getDRouted(), {"N", "D"})) ||
                 failed(shapes.match("positions", getPositions(), {"T", "k"})));
}

//===----------------------------------------------------------------------===//
// moe.combine, moe.combine_grad
//===----------------------------------------------------------------------===//

LogicalResult CombineOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location>,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  Value expertOut = adaptor.getExpertOut();
  int64_t tokens = dimOf(adaptor.getPositions(), 0);
  if (ShapedType::isDynamic(tokens))
    tokens = dimOf(adaptor.getCombineWeights(), 0);
  inferred.push_back(
      tensorOf({tokens, dimOf(expertOut, 1)}, elementTypeOf(expertOut)));
  return success();
}

LogicalResult CombineOp::verify() {
  ShapeChecker shapes(*this);
  return failure(
      failed(verifyLayerName(*this, getLayer())) ||
      failed(verifySameFloatType(*this)) ||
      failed(shapes.match("expert_out", getExpertOut(), {"N", "D"})) ||
      failed(shapes.match("positions", getPositions(), {"T", "k"})) ||
      failed(shapes.match("combine_weights", getCombineWeights(), {"T", "k"})));
}

LogicalResult CombineGradOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location>,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getExpertOut().getType());
  inferred.push_back(adaptor.getCombineWeights().getType());
  return success();
}

LogicalResult CombineGradOp::verify() {
  ShapeChecker shapes(*this);
  return failure(
      failed(verifyLayerName(*this, getLayer())) ||
      failed(verifySameFloatType(*this)) ||
      failed(shapes.match("expert_out", getExpertOut(), {"N", "D"})) ||
      failed(shapes.match("positions", getPositions(), {"T", "k"})) ||
      failed(
          shapes.match("combine_weights", getCombineWeights(), {"T", "k"})) ||
      failed(shapes.match("dy", getDy(), {"T", "D"})));
}

//===----------------------------------------------------------------------===//
// moe.experts, moe.experts_grad
//===----------------------------------------------------------------------===//

/// The checks shared by moe.experts and moe.experts_grad.
template <typename OpT>
static LogicalResult verifyExpertsCommon(OpT op, ShapeChecker &shapes) {
  int64_t capacity = op.getCapacityAttr().getInt();
  if (capacity < 0)
    return op.emitOpError()
           << "capacity must be >= 0 (0 = packed), got " << capacity;
  if (failed(verifyLayerName(op, op.getLayer())) ||
      failed(verifyActivation(op, op.getActivation())) ||
      failed(verifySameFloatType(op)) ||
      failed(shapes.match("routed", op.getRouted(), {"N", "D"})) ||
      failed(shapes.match("counts", op.getCounts(), {"G"})) ||
      failed(shapes.match("w1", op.getW1(), {"G", "D", "H"})) ||
      failed(shapes.match("b1", op.getB1(), {"G", "H"})) ||
      failed(shapes.match("w2", op.getW2(), {"G", "H", "D"})) ||
      failed(shapes.match("b2", op.getB2(), {"G", "D"})))
    return failure();
  int64_t rows = shapes.get("N"), groups = shapes.get("G");
  if (capacity > 0 && !ShapedType::isDynamic(rows) &&
      !ShapedType::isDynamic(groups)) {
    int64_t needed = mulDims(groups, capacity);
    if (rows != needed) {
      InFlightDiagnostic diag =
          op.emitOpError() << "routed has " << rows << " rows but " << groups
                           << " groups of capacity " << capacity << " need ";
      if (ShapedType::isDynamic(needed))
        return diag << "more than fit in a tensor dimension";
      return diag << needed;
    }
  }
  // Before partitioning the groups are the layer's experts, after it the
  // device's local slots.
  PlacementAttr placement = op.getPlacementAttr();
  if (placement && !ShapedType::isDynamic(groups) &&
      groups != placement.getNumExperts() &&
      groups != placement.getSlotsPerDevice())
    return op.emitOpError()
           << "has " << groups << " expert groups but layer '" << op.getLayer()
           << "' has " << placement.getNumExperts() << " experts and "
           << placement.getSlotsPerDevice() << " slots per device";
  return success();
}

LogicalResult ExpertsOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location>,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getRouted().getType());
  return success();
}

LogicalResult ExpertsOp::verify() {
  ShapeChecker shapes(*this);
  return verifyExpertsCommon(*this, shapes);
}

LogicalResult ExpertsGradOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location>,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  for (Value operand : {adaptor.getRouted(), adaptor.getW1(), adaptor.getB1(),
                        adaptor.getW2(), adaptor.getB2()})
    inferred.push_back(operand.getType());
  return success();
}

LogicalResult ExpertsGradOp::verify() {
  ShapeChecker shapes(*this);
  if (failed(verifyExpertsCommon(*this, shapes)))
    return failure();
  return shapes.match("dy", getDy(), {"N", "D"});
}

//===----------------------------------------------------------------------===//
// moe.all_to_all
//===----------------------------------------------------------------------===//

LogicalResult AllToAllOp::inferReturnTypes(MLIRContext *context,
                                           std::optional<Location>,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &inferred) {
  Value input = adaptor.getInput();
  int64_t rows = kDynamic, outCounts = kDynamic;
  PlacementAttr placement = adaptor.getPlacementAttr();
  StringAttr direction = adaptor.getDirectionAttr();
  int64_t inRows = dimOf(input, 0);
  if (placement && direction) {
    int64_t worldSize = placement.getWorldSize();
    if (direction.getValue() == "dispatch") {
      rows = mulDims(worldSize, inRows);
      outCounts = placement.getSlotsPerDevice();
    } else if (direction.getValue() == "combine") {
      if (!ShapedType::isDynamic(inRows) && inRows % worldSize == 0)
        rows = inRows / worldSize;
      outCounts = placement.getNumExperts();
    }
  }
  inferred.push_back(tensorOf({rows, dimOf(input, 1)}, elementTypeOf(input)));
  inferred.push_back(i32TensorOf(context, {outCounts}));
  return success();
}

LogicalResult AllToAllOp::verify() {
  StringRef direction = getDirection();
  if (direction != "dispatch" && direction != "combine")
    return emitOpError() << "direction must be \"dispatch\" or \"combine\", "
                            "got \""
                         << direction << "\"";
  ShapeChecker shapes(*this);
  if (failed(verifyLayerName(*this, getLayer())) ||
      failed(shapes.match("input", getInput(), {"N", "D"})) ||
      failed(shapes.match("counts", getCounts(), {"G"})) ||
      failed(shapes.match("output", getOutput(), {"M", "D"})) ||
      failed(shapes.match("out_counts", getOutCounts(), {"G'"})))
    return failure();
  PlacementAttr placement = getPlacementAttr();
  if (!placement)
    return success();
  bool dispatch = direction == "dispatch";
  int64_t groups = shapes.get("G");
  int64_t expected =
      dispatch ? placement.getNumExperts() : placement.getSlotsPerDevice();
  if (!ShapedType::isDynamic(groups) && groups != expected)
    return emitOpError() << "counts has " << groups << " entries but layer '"
                         << getLayer() << "' has " << expected
                         << (dispatch ? " experts" : " slots per device");
  int64_t rows = shapes.get("N");
  if (!dispatch && !ShapedType::isDynamic(rows) &&
      rows % placement.getWorldSize() != 0)
    return emitOpError() << "input has " << rows
                         << " rows, not a multiple of world_size "
                         << placement.getWorldSize();
  return success();
}

//===----------------------------------------------------------------------===//
// moe.replica_grad_sync, moe.all_reduce
//===----------------------------------------------------------------------===//

LogicalResult
ReplicaGradSyncOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                    Adaptor adaptor,
                                    SmallVectorImpl<Type> &inferred) {
  for (Value grad : adaptor.getGrads())
    inferred.push_back(grad.getType());
  return success();
}

LogicalResult ReplicaGradSyncOp::verify() {
  if (failed(verifyLayerName(*this, getLayer())))
    return failure();
  if (getGrads().empty())
    return emitOpError() << "needs at least one gradient";
  PlacementAttr placement = getPlacementAttr();
  if (!placement)
    return success();
  for (auto [index, grad] : llvm::enumerate(getGrads())) {
    auto ranked = dyn_cast<RankedTensorType>(grad.getType());
    if (!ranked)
      continue;
    if (ranked.getRank() < 1)
      return emitOpError() << "gradient " << index
                           << " must be a [S,...] tensor, got " << ranked;
    int64_t slots = ranked.getDimSize(0);
    if (!ShapedType::isDynamic(slots) && slots != placement.getSlotsPerDevice())
      return emitOpError() << "gradient " << index << " has " << slots
                           << " slots but layer '" << getLayer() << "' has "
                           << placement.getSlotsPerDevice()
                           << " slots per device";
  }
  return success();
}

LogicalResult AllReduceOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location>,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  inferred.push_back(adaptor.getGrad().getType());
  return success();
}

LogicalResult AllReduceOp::verify() {
  StringRef reduction = getReduction();
  if (reduction != "mean" && reduction != "sum")
    return emitOpError() << "reduction must be \"mean\" or \"sum\", got \""
                         << reduction << "\"";
  return success();
}

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Moe/MoeOps.cpp.inc"
