//===- BuildTrainStep.cpp - build-train-step pass -------------------------===//
//
// Replaces `func.func @forward` (inputs and parameters → scalar loss) by
// `func.func @train_step` (docs/IR.md, Stage 4): the forward ops, their
// reverse-mode derivative, and one nn.adamw per parameter.
//
// The reverse sweep knows no op by name: each op contributes its backward ops
// through its GradientOpInterface rule (passes/lib/Gradients*.cpp).
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Passes/Gradients.h"
#include "flexmoe/Passes/Passes.h"

#include "flexmoe/Dialect/NN/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace flexmoe {
#define GEN_PASS_DEF_BUILDTRAINSTEP
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
using namespace flexmoe;

namespace {

// Argument and result attributes of the model and the training step.
constexpr StringLiteral kInputAttr = "nn.input";
constexpr StringLiteral kParamAttr = "nn.param";
constexpr StringLiteral kMoeLayerAttr = "moe.layer";
constexpr StringLiteral kOptStateAttr = "nn.opt_state";
constexpr StringLiteral kStateOfAttr = "nn.state_of";
constexpr StringLiteral kOutputAttr = "nn.output";
constexpr StringLiteral kUpdatesAttr = "nn.updates";

/// True for values that carry a gradient: float tensors. Integer ids,
/// labels, positions and counts never do.
bool isDifferentiable(Value value) {
  auto type = dyn_cast<TensorType>(value.getType());
  return type && isa<FloatType>(type.getElementType());
}

/// @forward's arguments by role, each list in @forward's order.
struct ArgumentRoles {
  SmallVector<unsigned> inputs;
  SmallVector<unsigned> params;
};

/// Checks that @forward is a straight-line function returning the loss.
LogicalResult verifyForward(func::FuncOp forward) {
  if (forward.isExternal())
    return forward.emitError("@forward has no body");
  FunctionType type = forward.getFunctionType();
  auto loss = type.getNumResults() == 1
                  ? dyn_cast<RankedTensorType>(type.getResult(0))
                  : RankedTensorType();
  if (!loss || loss.getRank() != 0 || !loss.getElementType().isF32())
    return forward.emitError("@forward must return exactly one tensor<f32> "
                             "(the loss), but returns ")
           << type.getResults();
  if (!forward.getBody().hasOneBlock())
    return forward.emitError("@forward must have a single block");
  for (Operation &op : forward.getBody().front())
    if (op.getNumRegions() != 0)
      return op.emitError("op '")
             << op.getName()
             << "' has regions; build-train-step differentiates straight-line "
                "code only";
  return success();
}

/// Splits @forward's arguments into inputs (nn.input) and parameters
/// (nn.param, statically shaped float tensors).
FailureOr<ArgumentRoles> classifyArguments(func::FuncOp forward) {
  ArgumentRoles roles;
  // The optimizer state refers to its parameter by name.
  llvm::StringMap<unsigned> paramIndex;
  for (BlockArgument arg : forward.getArguments()) {
    unsigned index = arg.getArgNumber();
    bool isInput = forward.getArgAttr(index, kInputAttr) != nullptr;
    auto paramName = forward.getArgAttrOfType<StringAttr>(index, kParamAttr);
    if (isInput == (paramName != nullptr))
      return emitError(arg.getLoc())
             << "argument #" << index
             << " of @forward must be either an input (nn.input) or a "
                "parameter (nn.param with a name)";
    if (isInput) {
      roles.inputs.push_back(index);
      continue;
    }
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!type || !type.hasStaticShape() || !isDifferentiable(arg))
      return emitError(arg.getLoc())
             << "parameter '" << paramName.getValue()
             << "' must be a statically shaped float tensor, not "
             << arg.getType();
    auto [it, inserted] = paramIndex.try_emplace(paramName.getValue(), index);
    if (!inserted)
      return emitError(arg.getLoc())
             << "parameter name '" << paramName.getValue()
             << "' is used by arguments #" << it->second << " and #" << index;
    roles.params.push_back(index);
  }
  return roles;
}

/// Creates the empty `@train_step` before @forward, with the signature and
/// argument/result attributes of docs/IR.md, Stage 4:
///   (inputs, params, m per param, v per param)
///     -> (loss {nn.output}, new params, new m, new v {nn.updates = arg#}).
func::FuncOp createTrainStep(func::FuncOp forward, const ArgumentRoles &roles) {
  MLIRContext *ctx = forward.getContext();
  Builder b(ctx);
  SmallVector<Type> argTypes;
  SmallVector<Location> argLocs;
  SmallVector<DictionaryAttr> argAttrs;
  auto addArgument = [&](unsigned forwardIndex, DictionaryAttr attrs) {
    argTypes.push_back(forward.getArgument(forwardIndex).getType());
    argLocs.push_back(forward.getArgument(forwardIndex).getLoc());
    argAttrs.push_back(attrs);
  };
  for (unsigned index : roles.inputs)
    addArgument(index, forward.getArgAttrDict(index));
  for (unsigned index : roles.params)
    addArgument(index, forward.getArgAttrDict(index));
  for (StringRef state : {"adam_m", "adam_v"}) {
    for (unsigned index : roles.params) {
      SmallVector<NamedAttribute> attrs = {
          b.getNamedAttr(kOptStateAttr, b.getStringAttr(state)),
          b.getNamedAttr(kStateOfAttr, forward.getArgAttr(index, kParamAttr))};
      // Expert state moves with its expert when the placement changes.
      if (Attribute layer = forward.getArgAttr(index, kMoeLayerAttr))
        attrs.push_back(b.getNamedAttr(kMoeLayerAttr, layer));
      addArgument(index, b.getDictionaryAttr(attrs));
    }
  }

  SmallVector<Type> resultTypes = {forward.getFunctionType().getResult(0)};
  SmallVector<DictionaryAttr> resultAttrs = {b.getDictionaryAttr(
      b.getNamedAttr(kOutputAttr, b.getStringAttr("loss")))};
  // Every other result is the new value of the argument at the same offset
  // past the inputs: params, then m, then v.
  for (unsigned arg = roles.inputs.size(); arg < argTypes.size(); ++arg) {
    resultTypes.push_back(argTypes[arg]);
    resultAttrs.push_back(b.getDictionaryAttr(
        b.getNamedAttr(kUpdatesAttr, b.getI64IntegerAttr(arg))));
  }

  OpBuilder builder(forward);
  auto trainStep = builder.create<func::FuncOp>(
      forward.getLoc(), "train_step",
      FunctionType::get(ctx, argTypes, resultTypes));
  trainStep.setVisibility(forward.getVisibility());
  for (auto [index, attrs] : llvm::enumerate(argAttrs))
    trainStep.setArgAttrs(index, attrs);
  for (auto [index, attrs] : llvm::enumerate(resultAttrs))
    trainStep.setResultAttrs(index, attrs);
  Block *body = new Block();
  trainStep.getBody().push_back(body);
  body->addArguments(argTypes, argLocs);
  return trainStep;
}

/// The values the reverse sweep differentiates: float values that depend on
/// a parameter and that the loss depends on.
DenseSet<Value> findActiveValues(ArrayRef<Operation *> ops, ValueRange params,
                                 Value loss) {
  DenseSet<Value> varied(params.begin(), params.end());
  for (Operation *op : ops)
    if (llvm::any_of(op->getOperands(),
                     [&](Value v) { return varied.contains(v); }))
      for (Value result : op->getResults())
        if (isDifferentiable(result))
          varied.insert(result);

  DenseSet<Value> active;
  if (varied.contains(loss))
    active.insert(loss);
  for (Operation *op : llvm::reverse(ops)) {
    if (llvm::none_of(op->getResults(),
                      [&](Value v) { return active.contains(v); }))
      continue;
    for (Value operand : op->getOperands())
      if (varied.contains(operand))
        active.insert(operand);
  }
  return active;
}

/// Gradient rules work on static shapes: checks every value of the ops that
/// will be differentiated.
LogicalResult verifyStaticShapes(ArrayRef<Operation *> ops,
                                 const DenseSet<Value> &active) {
  for (Operation *op : ops) {
    if (llvm::none_of(op->getResults(),
                      [&](Value v) { return active.contains(v); }))
      continue;
    auto isStatic = [](Type type) {
      auto tensor = dyn_cast<TensorType>(type);
      return !tensor || (tensor.hasRank() && tensor.hasStaticShape());
    };
    SmallVector<Type> types(op->getOperandTypes());
    llvm::append_range(types, op->getResultTypes());
    if (const Type *type = llvm::find_if_not(types, isStatic);
        type != types.end())
      return op->emitError("build-train-step needs static shapes, got ")
             << *type << " (run nn-shape-inference first)";
  }
  return success();
}

/// Builds, in reverse program order, the gradient of the loss with respect to
/// every active value; gradients of a value with several uses are summed.
class ReverseSweep {
public:
  ReverseSweep(OpBuilder &builder, const DenseSet<Value> &active)
      : builder(builder), active(active) {}

  LogicalResult run(ArrayRef<Operation *> ops, Value loss) {
    // A loss that depends on no parameter has nothing to differentiate.
    if (!active.contains(loss))
      return success();
    gradients[loss] = grad::createFill(builder, loss.getLoc(), loss.getType(),
                                       /*value=*/1.0);
    for (Operation *op : llvm::reverse(ops))
      if (failed(differentiate(op)))
        return failure();
    return success();
  }

  /// The gradient of `value`; null when it does not reach the loss.
  Value gradientOf(Value value) const { return gradients.lookup(value); }

private:
  LogicalResult differentiate(Operation *op) {
    SmallVector<Value> resultGradients = llvm::map_to_vector(
        op->getResults(), [&](Value result) { return gradientOf(result); });
    if (llvm::all_of(resultGradients, [](Value g) { return !g; }))
      return success();
    auto rule = dyn_cast<GradientOpInterface>(op);
    if (!rule)
      return op->emitError()
             << "op '" << op->getName() << "' has no gradient rule";

    SmallVector<Value> operandGradients;
    {
      OpBuilder::InsertionGuard guard(builder);
      if (failed(
              rule.buildGradient(builder, resultGradients, operandGradients)))
        return failure();
    }
    if (operandGradients.size() != op->getNumOperands())
      return op->emitError()
             << "the gradient rule of '" << op->getName() << "' returned "
             << operandGradients.size() << " gradients for "
             << op->getNumOperands() << " operands";
    for (OpOperand &operand : op->getOpOperands()) {
      Value gradient = operandGradients[operand.getOperandNumber()];
      if (!gradient || !active.contains(operand.get()))
        continue;
      if (gradient.getType() != operand.get().getType())
        return op->emitError() << "the gradient rule of '" << op->getName()
                               << "' returned " << gradient.getType()
                               << " for operand #" << operand.getOperandNumber()
                               << " of type " << operand.get().getType();
      accumulate(operand.get(), gradient, op->getLoc());
    }
    return success();
  }

  void accumulate(Value value, Value gradient, Location loc) {
    auto [it, inserted] = gradients.try_emplace(value, gradient);
    if (!inserted)
      it->second = grad::createOp<nn::AddOp>(builder, loc, value.getType(),
                                             {it->second, gradient});
  }

  OpBuilder &builder;
  const DenseSet<Value> &active;
  DenseMap<Value, Value> gradients;
};

/// Erases the ops whose results are unused and that have no side effects
/// (gradients of inputs, unused results of multi-result rules, ...).
void eraseDeadOps(Block &body) {
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
    if (isOpTriviallyDead(&op))
      op.erase();
}

struct BuildTrainStepPass
    : flexmoe::impl::BuildTrainStepBase<BuildTrainStepPass> {
  using BuildTrainStepBase::BuildTrainStepBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>("forward");
    if (!forward) {
      module.emitError("build-train-step: no 'func.func @forward' to "
                       "differentiate");
      return signalPassFailure();
    }
    if (module.lookupSymbol("train_step")) {
      module.emitError("build-train-step: the module already has a symbol "
                       "named 'train_step'");
      return signalPassFailure();
    }
    if (failed(verifyForward(forward)))
      return signalPassFailure();
    FailureOr<ArgumentRoles> roles = classifyArguments(forward);
    if (failed(roles))
      return signalPassFailure();

    func::FuncOp trainStep = createTrainStep(forward, *roles);
    if (failed(buildBody(forward, trainStep, *roles))) {
      trainStep.erase();
      return signalPassFailure();
    }
    forward.erase();
  }

private:
  /// Fills @train_step: the forward ops, the backward ops, the updates.
  LogicalResult buildBody(func::FuncOp forward, func::FuncOp trainStep,
                          const ArgumentRoles &roles) {
    Block &body = trainStep.getBody().front();
    unsigned numInputs = roles.inputs.size();
    unsigned numParams = roles.params.size();
    IRMapping mapping;
    for (auto [index, forwardIndex] : llvm::enumerate(
             llvm::concat<const unsigned>(roles.inputs, roles.params)))
      mapping.map(forward.getArgument(forwardIndex),
                  trainStep.getArgument(index));

    auto builder = OpBuilder::atBlockEnd(&body);
    SmallVector<Operation *> forwardOps;
    for (Operation &op : forward.getBody().front().without_terminator())
      forwardOps.push_back(builder.clone(op, mapping));
    Operation *forwardReturn = forward.getBody().front().getTerminator();
    Value loss = mapping.lookupOrDefault(forwardReturn->getOperand(0));

    ValueRange params = body.getArguments().slice(numInputs, numParams);
    DenseSet<Value> active = findActiveValues(forwardOps, params, loss);
    if (failed(verifyStaticShapes(forwardOps, active)))
      return failure();
    ReverseSweep sweep(builder, active);
    if (failed(sweep.run(forwardOps, loss)))
      return failure();

    // One AdamW update per parameter, in parameter order.
    SmallVector<NamedAttribute> adamAttrs = {
        builder.getNamedAttr("lr", builder.getF32FloatAttr(learningRate)),
        builder.getNamedAttr("beta1", builder.getF32FloatAttr(beta1)),
        builder.getNamedAttr("beta2", builder.getF32FloatAttr(beta2)),
        builder.getNamedAttr("epsilon", builder.getF32FloatAttr(epsilon)),
        builder.getNamedAttr("weight_decay",
                             builder.getF32FloatAttr(weightDecay))};
    SmallVector<Value> newParams, newM, newV;
    for (auto [i, param] : llvm::enumerate(params)) {
      Value gradient = sweep.gradientOf(param);
      if (!gradient) {
        emitWarning(param.getLoc())
            << "parameter '"
            << forward.getArgAttrOfType<StringAttr>(roles.params[i], kParamAttr)
                   .getValue()
            << "' does not affect the loss; its gradient is zero";
        gradient = grad::createFill(builder, param.getLoc(), param.getType(),
                                    /*value=*/0.0);
      }
      Value m = body.getArgument(numInputs + numParams + i);
      Value v = body.getArgument(numInputs + 2 * numParams + i);
      auto update = builder.create<nn::AdamWOp>(
          param.getLoc(), TypeRange{param.getType(), m.getType(), v.getType()},
          ValueRange{param, gradient, m, v}, adamAttrs);
      newParams.push_back(update->getResult(0));
      newM.push_back(update->getResult(1));
      newV.push_back(update->getResult(2));
    }
    SmallVector<Value> results = {loss};
    llvm::append_range(results, newParams);
    llvm::append_range(results, newM);
    llvm::append_range(results, newV);
    builder.create<func::ReturnOp>(forwardReturn->getLoc(), results);

    eraseDeadOps(body);
    return success();
  }
};

} // namespace
