//===- LowerToExec.cpp - Stage 5 tensor IR to the exec dialect ------------===//
//
// Turns the partitioned `@train_step` into an `exec.program`: buffers for
// every tensor value, one instruction per op in program order, the MoE layer
// table and the AdamW defaults. docs/program-format.md describes the result.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "flexmoe/Dialect/Exec/ExecOps.h"
#include "flexmoe/Dialect/Moe/MoeAttrs.h"
#include "flexmoe/Dialect/Moe/MoeDialect.h"
#include "flexmoe/Dialect/NN/NNDialect.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringMap.h"

#include <functional>
#include <tuple>

namespace flexmoe {
#define GEN_PASS_DEF_LOWERTOEXEC
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
using namespace flexmoe;
using flexmoe::exec::BufferKind;
using flexmoe::exec::Opcode;

namespace {

constexpr int64_t kAlignment = 64;

int64_t alignUp(int64_t value) {
  return (value + kAlignment - 1) / kAlignment * kAlignment;
}

/// Opcodes whose kernels read and write each element independently, so an
/// output may share the buffer of an input of the same shape.
bool isElementwise(Opcode opcode) {
  switch (opcode) {
  case Opcode::AdamW:
  case Opcode::Add:
  case Opcode::Mul:
  case Opcode::Scale:
  case Opcode::Gelu:
  case Opcode::Dropout:
  case Opcode::Copy:
  case Opcode::AllReduceMean:
  case Opcode::AllReduceSum:
  case Opcode::ReplicaGradSync:
    return true;
  default:
    return false;
  }
}

/// The static description of one MoE layer, gathered from its expanded ops.
struct LayerInfo {
  std::string name;
  moe::PlacementAttr placement;
  std::optional<int64_t> numExperts, topK, dModel, ffnHidden, capacity;
  std::string activation = "gelu";
  Operation *firstOp = nullptr;
};

class Lowering {
public:
  Lowering(ModuleOp module, func::FuncOp func)
      : module(module), func(func), builder(module.getContext()) {}

  LogicalResult run();

private:
  ModuleOp module;
  func::FuncOp func;
  OpBuilder builder;
  exec::ProgramOp program;

  /// The buffer holding each tensor value.
  DenseMap<Value, Value> bufferOf;
  /// The root buffer (the exec.buffer) behind a buffer or view.
  DenseMap<Value, Value> rootOf;
  DenseMap<Value, bool> isGradient;
  llvm::MapVector<StringRef, LayerInfo> layers;
  llvm::StringMap<Value> paramBuffers;
  /// Results that update an argument in place: value -> argument index.
  DenseMap<Value, unsigned> updates;
  Value lossValue;
  /// Program order of the body's ops, and for every argument the position
  /// of its last reader (through views too).
  DenseMap<Operation *, unsigned> position;
  DenseMap<unsigned, unsigned> lastReadOfArg;
  SmallVector<std::pair<Value, Value>> copiesAtEnd; // (from, to)
  int64_t nextOffset = 0;
  unsigned nameCounter = 0;

  LogicalResult collectLayers();
  LogicalResult collectResults();
  LogicalResult lowerArguments();
  LogicalResult lowerOp(Operation *op);
  void computeLastReads();
  FailureOr<exec::BufferType> bufferType(Location loc, Type type,
                                         StringRef what);
  Value createBuffer(Location loc, exec::BufferType type, BufferKind kind,
                     StringRef name, Value stateOf = {},
                     ArrayRef<NamedAttribute> attrs = {});
  FailureOr<Opcode> opcodeFor(Operation *op);
  SmallVector<NamedAttribute> instructionAttrs(Operation *op, Opcode opcode);
  FailureOr<Value> outputFor(Operation *op, Opcode opcode, OpResult result,
                             StringRef name);
};

} // namespace

FailureOr<exec::BufferType> Lowering::bufferType(Location loc, Type type,
                                                 StringRef what) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return emitError(loc) << what << " has type " << type
                          << "; lower-to-exec needs static shapes (run "
                             "nn-shape-inference first)",
           failure();
  Type element = tensor.getElementType();
  if (!element.isF32() && !element.isSignlessInteger(32))
    return emitError(loc) << what << " has element type " << element
                          << "; programs hold f32 and i32 buffers only",
           failure();
  return exec::BufferType::get(type.getContext(), tensor.getShape(), element);
}

Value Lowering::createBuffer(Location loc, exec::BufferType type,
                             BufferKind kind, StringRef name, Value stateOf,
                             ArrayRef<NamedAttribute> attrs) {
  int64_t size = type.getSizeInBytes();
  auto buffer = builder.create<exec::BufferOp>(
      loc, type, exec::BufferKindAttr::get(builder.getContext(), kind),
      builder.getStringAttr(name), stateOf,
      builder.getI64IntegerAttr(nextOffset), builder.getI64IntegerAttr(size),
      StringAttr(), StringAttr(), FloatAttr(), FlatSymbolRefAttr());
  for (NamedAttribute attr : attrs)
    buffer->setAttr(attr.getName(), attr.getValue());
  nextOffset += alignUp(size);
  rootOf[buffer] = buffer;
  return buffer;
}

LogicalResult Lowering::collectLayers() {
  WalkResult walk = func.walk([&](Operation *op) -> WalkResult {
    if (!isa<moe::MoeDialect>(op->getDialect()))
      return WalkResult::advance();
    if (op->getName().getStringRef() == "moe.layer") {
      op->emitError("lower-to-exec cannot lower 'moe.layer': run "
                    "moe-expand-layers first");
      return WalkResult::interrupt();
    }
    auto name = op->getAttrOfType<StringAttr>("layer");
    if (!name)
      return WalkResult::advance(); // moe.all_reduce is not per layer
    LayerInfo &info = layers[name.getValue()];
    if (!info.firstOp) {
      info.name = name.getValue().str();
      info.firstOp = op;
    }
    if (auto placement = op->getAttrOfType<moe::PlacementAttr>("placement")) {
      if (info.placement && info.placement != placement) {
        op->emitError("the ops of MoE layer '")
            << info.name << "' carry different placements";
        return WalkResult::interrupt();
      }
      info.placement = placement;
    }
    auto i64 = [&](StringRef attr) -> std::optional<int64_t> {
      if (auto value = op->getAttrOfType<IntegerAttr>(attr))
        return value.getInt();
      return std::nullopt;
    };
    StringRef opName = op->getName().getStringRef();
    if (opName == "moe.gate")
      info.topK = i64("top_k");
    if (opName == "moe.dispatch") {
      info.numExperts = i64("num_experts");
      info.capacity = i64("capacity");
    }
    if (opName == "moe.experts") {
      // w1: [slots, D, H]
      if (auto w1 = dyn_cast<RankedTensorType>(op->getOperand(2).getType());
          w1 && w1.getRank() == 3) {
        info.dModel = w1.getDimSize(1);
        info.ffnHidden = w1.getDimSize(2);
      }
      if (auto act = op->getAttrOfType<StringAttr>("activation"))
        info.activation = act.getValue().str();
    }
    return WalkResult::advance();
  });
  if (walk.wasInterrupted())
    return failure();

  for (auto &[name, info] : layers) {
    auto missing = [&](StringRef what) {
      return info.firstOp->emitError("MoE layer '")
             << info.name << "' has no " << what
             << "; lower-to-exec needs the expanded, placed layer of Stage 5";
    };
    if (!info.placement)
      return missing("#moe.placement");
    if (!info.topK)
      return missing("moe.gate (for top_k)");
    if (!info.numExperts || !info.capacity)
      return missing("moe.dispatch (for num_experts and capacity)");
    if (!info.dModel || !info.ffnHidden)
      return missing("moe.experts (for d_model and ffn_hidden)");
    if (*info.numExperts != info.placement.getNumExperts())
      return info.firstOp->emitError("MoE layer '")
             << info.name << "' has " << *info.numExperts
             << " experts but its placement has "
             << info.placement.getNumExperts();
  }
  return success();
}

LogicalResult Lowering::collectResults() {
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  for (auto [i, value] : llvm::enumerate(ret.getOperands())) {
    if (auto output = func.getResultAttrOfType<StringAttr>(i, "nn.output")) {
      if (output.getValue() != "loss")
        return func.emitError("result ")
               << i << " is output '" << output.getValue()
               << "'; lower-to-exec knows only the output 'loss'";
      if (lossValue)
        return func.emitError("@train_step returns two losses");
      lossValue = value;
      continue;
    }
    auto target = func.getResultAttrOfType<IntegerAttr>(i, "nn.updates");
    if (!target)
      return func.emitError("result ")
             << i << " of @train_step is neither the loss (nn.output) nor an "
             << "update of an argument (nn.updates)";
    int64_t arg = target.getInt();
    if (arg < 0 || arg >= func.getNumArguments())
      return func.emitError("result ")
             << i << " updates argument " << arg << ", which does not exist";
    if (updates.count(value) || value == func.getArgument(arg)) {
      // One value updating two arguments, or an unchanged argument, needs a
      // copy (or nothing) rather than an aliased output.
      if (value != func.getArgument(arg))
        copiesAtEnd.push_back({value, func.getArgument(arg)});
      continue;
    }
    updates[value] = static_cast<unsigned>(arg);
  }
  if (!lossValue)
    return func.emitError("@train_step has no result with nn.output = "
                          "\"loss\"");
  return success();
}

void Lowering::computeLastReads() {
  unsigned index = 0;
  for (Operation &op : func.getBody().front())
    position[&op] = index++;
  // Follow reshapes: a reader of a view reads the argument.
  for (BlockArgument arg : func.getArguments()) {
    SmallVector<Value> worklist = {arg};
    unsigned last = 0;
    while (!worklist.empty()) {
      Value value = worklist.pop_back_val();
      for (Operation *user : value.getUsers()) {
        if (isa<func::ReturnOp>(user))
          continue;
        last = std::max(last, position[user]);
        if (user->getName().getStringRef() == "nn.reshape")
          worklist.push_back(user->getResult(0));
      }
    }
    lastReadOfArg[arg.getArgNumber()] = last;
  }
}

LogicalResult Lowering::lowerArguments() {
  // Parameters first, so that optimizer state can name them.
  SmallVector<unsigned> order;
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    if (func.getArgAttr(i, "nn.param"))
      order.push_back(i);
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    if (!func.getArgAttr(i, "nn.param"))
      order.push_back(i);

  for (unsigned i : order) {
    BlockArgument arg = func.getArgument(i);
    Location loc = arg.getLoc();
    std::string what = "argument " + std::to_string(i) + " of @train_step";
    FailureOr<exec::BufferType> type = bufferType(loc, arg.getType(), what);
    if (failed(type))
      return failure();
    SmallVector<NamedAttribute> attrs;
    if (auto layer = func.getArgAttrOfType<StringAttr>(i, "moe.layer")) {
      if (!layers.count(layer.getValue()))
        return emitError(loc)
               << what << " belongs to MoE layer '" << layer.getValue()
               << "', which no moe op of @train_step names";
      attrs.push_back(builder.getNamedAttr(
          "layer",
          FlatSymbolRefAttr::get(builder.getContext(), layer.getValue())));
    }
    Value buffer;
    if (auto param = func.getArgAttrOfType<StringAttr>(i, "nn.param")) {
      auto init = func.getArgAttrOfType<StringAttr>(i, "nn.init");
      if (!init)
        return emitError(loc)
               << "parameter '" << param.getValue() << "' has no nn.init";
      attrs.push_back(builder.getNamedAttr("param", param));
      attrs.push_back(builder.getNamedAttr("init", init));
      if (init.getValue() == "normal") {
        auto std = func.getArgAttrOfType<FloatAttr>(i, "nn.init_std");
        if (!std)
          return emitError(loc) << "parameter '" << param.getValue()
                                << "' has nn.init = \"normal\" but no "
                                   "nn.init_std";
        attrs.push_back(builder.getNamedAttr(
            "init_std", builder.getF32FloatAttr(std.getValueAsDouble())));
      }
      buffer = createBuffer(loc, *type, BufferKind::Parameter, param.getValue(),
                            {}, attrs);
      paramBuffers[param.getValue()] = buffer;
    } else if (auto state =
                   func.getArgAttrOfType<StringAttr>(i, "nn.opt_state")) {
      auto of = func.getArgAttrOfType<StringAttr>(i, "nn.state_of");
      if (!of || !paramBuffers.count(of.getValue()))
        return emitError(loc) << what << " is optimizer state of '"
                              << (of ? of.getValue() : StringRef("?"))
                              << "', which is no parameter of @train_step";
      BufferKind kind;
      if (state.getValue() == "adam_m")
        kind = BufferKind::AdamM;
      else if (state.getValue() == "adam_v")
        kind = BufferKind::AdamV;
      else
        return emitError(loc) << what << " has unknown optimizer state '"
                              << state.getValue() << "'";
      std::string name =
          (of.getValue() + (kind == BufferKind::AdamM ? ".m" : ".v")).str();
      buffer = createBuffer(loc, *type, kind, name, paramBuffers[of.getValue()],
                            attrs);
    } else if (auto input = func.getArgAttrOfType<StringAttr>(i, "nn.input")) {
      BufferKind kind;
      if (input.getValue() == "tokens")
        kind = BufferKind::InputTokens;
      else if (input.getValue() == "labels")
        kind = BufferKind::InputLabels;
      else
        return emitError(loc) << what << " is input '" << input.getValue()
                              << "'; programs take \"tokens\" and \"labels\"";
      buffer = createBuffer(loc, *type, kind, input.getValue(), {}, attrs);
    } else {
      return emitError(loc) << what
                            << " is neither a parameter (nn.param), "
                               "optimizer state (nn.opt_state) nor an input "
                               "(nn.input)";
    }
    bufferOf[arg] = buffer;
  }
  return success();
}

FailureOr<Opcode> Lowering::opcodeFor(Operation *op) {
  StringRef name = op->getName().getStringRef();
  if (name == "moe.all_to_all") {
    auto direction = op->getAttrOfType<StringAttr>("direction");
    if (direction && direction.getValue() == "dispatch")
      return Opcode::AllToAllDispatch;
    if (direction && direction.getValue() == "combine")
      return Opcode::AllToAllCombine;
    return op->emitError("moe.all_to_all needs direction = \"dispatch\" or "
                         "\"combine\""),
           failure();
  }
  if (name == "moe.all_reduce") {
    auto reduction = op->getAttrOfType<StringAttr>("reduction");
    if (reduction && reduction.getValue() == "mean")
      return Opcode::AllReduceMean;
    if (reduction && reduction.getValue() == "sum")
      return Opcode::AllReduceSum;
    return op->emitError("moe.all_reduce needs reduction = \"mean\" or "
                         "\"sum\""),
           failure();
  }
  for (uint32_t i = 0; i <= exec::getMaxEnumValForOpcode(); ++i) {
    auto opcode = static_cast<Opcode>(i);
    if (exec::getOpcodeSpec(opcode).irName == name)
      return opcode;
  }
  return op->emitError("lower-to-exec cannot lower '")
             << name << "': the program format has no instruction for it",
         failure();
}

SmallVector<NamedAttribute> Lowering::instructionAttrs(Operation *op,
                                                       Opcode opcode) {
  // Every attribute of the opcode, explicitly: the runtime has no defaults.
  SmallVector<NamedAttribute> attrs;
  for (const exec::AttrSpec &spec : exec::getOpcodeSpec(opcode).attrs) {
    Attribute value = op->getAttr(spec.name);
    if (!value && spec.hasDefault) {
      switch (spec.kind) {
      case exec::AttrKind::I64:
        value = builder.getI64IntegerAttr(
            static_cast<int64_t>(spec.numericDefault));
        break;
      case exec::AttrKind::F32:
        value = builder.getF32FloatAttr(spec.numericDefault);
        break;
      case exec::AttrKind::Bool:
        value = builder.getBoolAttr(spec.numericDefault != 0);
        break;
      case exec::AttrKind::Str:
        value = builder.getStringAttr(spec.stringDefault);
        break;
      case exec::AttrKind::I64Array:
        break;
      }
    }
    if (value)
      attrs.push_back(builder.getNamedAttr(spec.name, value));
  }
  return attrs;
}

FailureOr<Value> Lowering::outputFor(Operation *op, Opcode opcode,
                                     OpResult result, StringRef name) {
  FailureOr<exec::BufferType> type =
      bufferType(op->getLoc(), result.getType(),
                 "result " + std::to_string(result.getResultNumber()) +
                     " of '" + op->getName().getStringRef().str() + "'");
  if (failed(type))
    return failure();

  auto update = updates.find(result);
  if (update != updates.end()) {
    unsigned argIndex = update->second;
    BlockArgument arg = func.getArgument(argIndex);
    Value target = bufferOf[arg];
    bool readsArg = llvm::any_of(op->getOperands(), [&](Value operand) {
      return rootOf.lookup(bufferOf.lookup(operand)) == target;
    });
    bool safe = target.getType() == *type &&
                lastReadOfArg[argIndex] <= position[op] &&
                (!readsArg || isElementwise(opcode));
    if (safe)
      return target;
    // Not safe in place: compute into a fresh buffer, copy back at the end.
    copiesAtEnd.push_back({result, arg});
  }

  BufferKind kind = BufferKind::Activation;
  if (result == lossValue)
    kind = BufferKind::Loss;
  else if (isGradient.lookup(result) && type->getElementType().isF32())
    kind = BufferKind::Gradient; // the i32 counts of backward ops are not
  return createBuffer(op->getLoc(), *type, kind, name);
}

LogicalResult Lowering::lowerOp(Operation *op) {
  StringRef opName = op->getName().getStringRef();
  std::string name =
      (opName.drop_front(opName.find('.') + 1) + "." + Twine(nameCounter++))
          .str();

  // Gradients: what the backward ops produce and everything computed from
  // gradients (the forward pass never reads one).
  bool gradient = opName.ends_with("_grad") || opName == "nn.fill" ||
                  llvm::any_of(op->getOperands(),
                               [&](Value v) { return isGradient.lookup(v); });
  for (Value result : op->getResults())
    isGradient[result] = gradient;

  if (opName == "nn.reshape") {
    Value source = bufferOf.lookup(op->getOperand(0));
    Value root = rootOf.lookup(source);
    FailureOr<exec::BufferType> type =
        bufferType(op->getLoc(), op->getResult(0).getType(), "nn.reshape");
    if (failed(type))
      return failure();
    Value result = op->getResult(0);
    if (result == lossValue || updates.count(result)) {
      // The loss and updated state need buffers of their own: copy.
      FailureOr<Value> out =
          outputFor(op, Opcode::Copy, op->getResult(0), name);
      if (failed(out))
        return failure();
      Value view = builder.create<exec::ViewOp>(
          op->getLoc(), *type, root, builder.getStringAttr(name + ".in"));
      rootOf[view] = root;
      builder.create<exec::KernelOp>(op->getLoc(), Opcode::Copy,
                                     ValueRange{view}, ValueRange{*out},
                                     FlatSymbolRefAttr());
      bufferOf[result] = *out;
      return success();
    }
    auto view = builder.create<exec::ViewOp>(op->getLoc(), *type, root,
                                             builder.getStringAttr(name));
    rootOf[view] = root;
    bufferOf[result] = view;
    return success();
  }

  FailureOr<Opcode> opcode = opcodeFor(op);
  if (failed(opcode))
    return failure();
  const exec::OpcodeSpec &spec = exec::getOpcodeSpec(*opcode);

  SmallVector<Value> inputs;
  for (Value operand : op->getOperands()) {
    Value buffer = bufferOf.lookup(operand);
    if (!buffer)
      return op->emitError("lower-to-exec: an operand of '")
             << opName << "' is not defined in @train_step's body";
    inputs.push_back(buffer);
  }
  SmallVector<Value> outputs;
  for (OpResult result : op->getResults()) {
    std::string resultName =
        op->getNumResults() == 1
            ? name
            : name + "." + std::to_string(result.getResultNumber());
    FailureOr<Value> out = outputFor(op, *opcode, result, resultName);
    if (failed(out))
      return failure();
    outputs.push_back(*out);
    bufferOf[result] = *out;
  }

  FlatSymbolRefAttr layer;
  if (spec.needsLayer)
    if (auto name = op->getAttrOfType<StringAttr>("layer"))
      layer = FlatSymbolRefAttr::get(builder.getContext(), name.getValue());
  Operation *inst;
  if (spec.isCollective)
    inst = builder.create<exec::CollectiveOp>(op->getLoc(), *opcode, inputs,
                                              outputs, layer);
  else
    inst = builder.create<exec::KernelOp>(op->getLoc(), *opcode, inputs,
                                          outputs, layer);
  for (NamedAttribute attr : instructionAttrs(op, *opcode))
    inst->setAttr(attr.getName(), attr.getValue());
  // Report a malformed source op (a missing required attribute, a wrong
  // operand type) at the source op, in exec's terms.
  if (failed(mlir::verify(inst, /*verifyRecursively=*/false)))
    return op->emitError("lower-to-exec: '")
               << opName << "' does not fit the '"
               << exec::stringifyOpcode(*opcode) << "' instruction",
           failure();
  return success();
}

LogicalResult Lowering::run() {
  if (failed(collectLayers()) || failed(collectResults()))
    return failure();
  computeLastReads();

  int64_t worldSize = 1;
  if (auto attr = module->getAttrOfType<IntegerAttr>("flexmoe.world_size"))
    worldSize = attr.getInt();
  StringRef dtype = "f32";
  if (auto attr = module->getAttrOfType<StringAttr>("flexmoe.compute_dtype"))
    dtype = attr.getValue();

  builder.setInsertionPoint(func);
  program = builder.create<exec::ProgramOp>(
      func.getLoc(), func.getSymName(), worldSize, dtype, /*arena_size=*/0,
      FloatAttr(), FloatAttr(), FloatAttr(), FloatAttr(), FloatAttr());
  Block *body = new Block();
  program.getBody().push_back(body);
  builder.setInsertionPointToStart(body);

  for (auto &[name, info] : layers) {
    moe::PlacementAttr placement = info.placement;
    SmallVector<Attribute> replicas;
    for (ArrayRef<int64_t> devices : placement.getReplicas())
      replicas.push_back(builder.getDenseI64ArrayAttr(devices));
    builder.create<exec::MoeLayerOp>(
        info.firstOp->getLoc(), name, *info.numExperts, *info.topK,
        *info.dModel, *info.ffnHidden, *info.capacity, info.activation,
        placement.getWorldSize(), placement.getSlotsPerDevice(),
        builder.getArrayAttr(replicas));
  }

  if (failed(lowerArguments()))
    return failure();
  for (Operation &op : func.getBody().front().without_terminator()) {
    if (!isa<nn::NNDialect, moe::MoeDialect>(op.getDialect()))
      return op.emitError("lower-to-exec cannot lower '")
             << op.getName() << "': only nn and moe ops can be lowered";
    if (failed(lowerOp(&op)))
      return failure();
  }
  for (auto [from, to] : copiesAtEnd)
    builder.create<exec::KernelOp>(
        func.getLoc(), Opcode::Copy, ValueRange{bufferOf[from]},
        ValueRange{bufferOf[to]}, FlatSymbolRefAttr());

  // Gradients of expert parameters belong to the parameter's layer, back
  // through the scale / sync / reduce chain to the op that computed them.
  DenseMap<Value, Operation *> writer;
  program.walk([&](Operation *op) {
    if (auto kernel = dyn_cast<exec::KernelOp>(op))
      for (Value out : kernel.getOutputs())
        writer[out] = op;
    if (auto collective = dyn_cast<exec::CollectiveOp>(op))
      for (Value out : collective.getOutputs())
        writer[out] = op;
  });
  std::function<void(Value, FlatSymbolRefAttr)> markLayer =
      [&](Value buffer, FlatSymbolRefAttr layer) {
        auto grad = buffer.getDefiningOp<exec::BufferOp>();
        if (!grad || grad.getKind() != BufferKind::Gradient ||
            grad.getLayerAttr())
          return;
        grad.setLayerAttr(layer);
        Operation *op = writer.lookup(buffer);
        if (!op)
          return;
        auto [opcode, ins,
              outs] = [&]() -> std::tuple<Opcode, OperandRange, OperandRange> {
          if (auto kernel = dyn_cast<exec::KernelOp>(op))
            return {kernel.getOpcode(), kernel.getInputs(),
                    kernel.getOutputs()};
          auto collective = cast<exec::CollectiveOp>(op);
          return {collective.getOpcode(), collective.getInputs(),
                  collective.getOutputs()};
        }();
        if (opcode != Opcode::Scale && opcode != Opcode::ReplicaGradSync &&
            opcode != Opcode::AllReduceMean && opcode != Opcode::AllReduceSum)
          return;
        for (auto [in, out] : llvm::zip(ins, outs))
          if (out == buffer)
            markLayer(in, layer);
      };
  program.walk([&](exec::KernelOp kernel) {
    if (kernel.getOpcode() != Opcode::AdamW)
      return;
    auto param = kernel.getInputs()[0].getDefiningOp<exec::BufferOp>();
    if (param && param.getLayerAttr())
      markLayer(kernel.getInputs()[1], param.getLayerAttr());
    if (!program.getLrAttr())
      for (StringRef key : {"lr", "beta1", "beta2", "epsilon", "weight_decay"})
        program->setAttr(key, kernel->getAttr(key));
  });
  program.setArenaSize(nextOffset);
  func.erase();
  return success();
}

namespace {
struct LowerToExecPass : flexmoe::impl::LowerToExecBase<LowerToExecPass> {
  using LowerToExecBase::LowerToExecBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto func = module.lookupSymbol<func::FuncOp>("train_step");
    if (!func) {
      module.emitError("lower-to-exec needs func.func @train_step (Stage 5 "
                       "of docs/IR.md: run build-train-step and "
                       "spmd-partition first)");
      return signalPassFailure();
    }
    if (!func.getBody().hasOneBlock())
      return func.emitError("@train_step must have a single block"),
             signalPassFailure();
    Lowering lowering(module, func);
    if (failed(lowering.run()))
      signalPassFailure();
  }
};
} // namespace
