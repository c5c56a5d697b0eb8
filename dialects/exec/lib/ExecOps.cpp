//===- ExecOps.cpp - exec dialect ops: types, opcode table, verifiers -----===//
#include "flexmoe/Dialect/Exec/ExecOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace flexmoe::exec;

#include "flexmoe/Dialect/Exec/ExecEnums.cpp.inc"

//===----------------------------------------------------------------------===//
// The opcode table
//===----------------------------------------------------------------------===//

bool flexmoe::exec::isPersistent(BufferKind kind) {
  switch (kind) {
  case BufferKind::Parameter:
  case BufferKind::AdamM:
  case BufferKind::AdamV:
  case BufferKind::InputTokens:
  case BufferKind::InputLabels:
    return true;
  default:
    return false;
  }
}

namespace {
constexpr AttrSpec i64(llvm::StringLiteral name) {
  return {name, AttrKind::I64};
}
constexpr AttrSpec i64(llvm::StringLiteral name, int64_t value) {
  return {name, AttrKind::I64, true, static_cast<double>(value)};
}
constexpr AttrSpec f32(llvm::StringLiteral name) {
  return {name, AttrKind::F32};
}
constexpr AttrSpec f32(llvm::StringLiteral name, double value) {
  return {name, AttrKind::F32, true, value};
}
constexpr AttrSpec boolean(llvm::StringLiteral name) {
  return {name, AttrKind::Bool, true, 0};
}
constexpr AttrSpec array(llvm::StringLiteral name) {
  return {name, AttrKind::I64Array};
}
constexpr AttrSpec str(llvm::StringLiteral name, llvm::StringLiteral def,
                       llvm::StringLiteral allowed) {
  return {name, AttrKind::Str, true, 0, def, allowed};
}

const AttrSpec kEmbeddingGrad[] = {i64("vocab_size")};
const AttrSpec kMatmul[] = {boolean("transpose_lhs"), boolean("transpose_rhs")};
const AttrSpec kLayerNorm[] = {f32("epsilon", 1e-5)};
const AttrSpec kGelu[] = {str("approximate", "tanh", "tanh|none")};
const AttrSpec kSoftmax[] = {i64("axis", -1)};
const AttrSpec kAttention[] = {i64("num_heads"), boolean("causal"),
                               i64("window", 0)};
const AttrSpec kScale[] = {f32("factor")};
const AttrSpec kReduceSum[] = {array("dims"), boolean("keep_dims")};
const AttrSpec kTranspose[] = {array("permutation")};
const AttrSpec kRoll[] = {array("shifts"), array("dims")};
const AttrSpec kDropout[] = {f32("rate"), i64("seed")};
const AttrSpec kCrossEntropy[] = {i64("ignore_index", -100)};
const AttrSpec kFill[] = {f32("value")};
const AttrSpec kAdamW[] = {f32("lr"), f32("beta1"), f32("beta2"),
                           f32("epsilon"), f32("weight_decay")};
const AttrSpec kGate[] = {i64("top_k")};
const AttrSpec kAuxLoss[] = {f32("coef")};
const AttrSpec kDispatch[] = {i64("num_experts"), i64("capacity", 0)};
const AttrSpec kExperts[] = {str("activation", "gelu", "gelu|relu"),
                             i64("capacity", 0)};

// Operand letters as in runtime/program/OpInfo.cpp; keep the two in step.
constexpr OpcodeSpec op(llvm::StringLiteral irName, llvm::StringLiteral ins,
                        llvm::StringLiteral outs,
                        llvm::ArrayRef<AttrSpec> attrs = {}, bool layer = false,
                        bool collective = false) {
  return {irName,
          ins,
          outs,
          static_cast<unsigned>(ins.size()),
          static_cast<unsigned>(ins.size()),
          false,
          layer,
          collective,
          attrs};
}

// Indexed by Opcode (ExecOps.td).
const OpcodeSpec kSpecs[] = {
    op("nn.embedding", "if", "f"),
    op("nn.embedding_grad", "if", "f", kEmbeddingGrad),
    {"nn.linear", "fff", "f", 2, 3, false, false, false, {}},
    op("nn.linear_grad", "fff", "ff"),
    op("nn.matmul", "ff", "f", kMatmul),
    op("nn.layer_norm", "fff", "f", kLayerNorm),
    op("nn.layer_norm_grad", "fff", "fff", kLayerNorm),
    op("nn.gelu", "f", "f", kGelu),
    op("nn.gelu_grad", "ff", "f", kGelu),
    op("nn.softmax", "f", "f", kSoftmax),
    op("nn.softmax_grad", "ff", "f", kSoftmax),
    op("nn.attention", "fff", "f", kAttention),
    op("nn.attention_grad", "ffff", "fff", kAttention),
    op("nn.add", "ff", "f"),
    op("nn.mul", "ff", "f"),
    op("nn.scale", "f", "f", kScale),
    op("nn.reduce_sum", "f", "f", kReduceSum),
    op("nn.reshape", "*", "*"),
    op("nn.transpose", "*", "*", kTranspose),
    op("nn.roll", "*", "*", kRoll),
    op("nn.dropout", "f", "f", kDropout),
    op("nn.cross_entropy", "fi", "f", kCrossEntropy),
    op("nn.cross_entropy_grad", "fif", "f", kCrossEntropy),
    op("nn.fill", "", "f", kFill),
    op("nn.adamw", "ffff", "fff", kAdamW),
    op("moe.gate", "ff", "fif", kGate, true),
    op("moe.gate_grad", "fffiff", "ff", kGate, true),
    op("moe.aux_loss", "fi", "f", kAuxLoss, true),
    op("moe.aux_loss_grad", "fif", "f", kAuxLoss, true),
    op("moe.dispatch", "fi", "fii", kDispatch, true),
    op("moe.dispatch_grad", "fi", "f", {}, true),
    op("moe.experts", "fiffff", "f", kExperts, true),
    op("moe.experts_grad", "fifffff", "fffff", kExperts, true),
    op("moe.combine", "fif", "f", {}, true),
    op("moe.combine_grad", "fiff", "ff", {}, true),
    op("moe.all_to_all", "fi", "fi", {}, true, true),
    op("moe.all_to_all", "fi", "fi", {}, true, true),
    {"moe.replica_grad_sync", "", "", 1, ~0u, true, true, true, {}},
    op("moe.all_reduce", "f", "f", {}, false, true),
    op("moe.all_reduce", "f", "f", {}, false, true),
    op("exec.copy", "*", "*"),
};
static_assert(std::size(kSpecs) ==
                  static_cast<size_t>(getMaxEnumValForOpcode()) + 1,
              "every Opcode needs an OpcodeSpec");
} // namespace

const OpcodeSpec &flexmoe::exec::getOpcodeSpec(Opcode opcode) {
  return kSpecs[static_cast<size_t>(opcode)];
}

//===----------------------------------------------------------------------===//
// ProgramOp
//===----------------------------------------------------------------------===//

LogicalResult ProgramOp::verify() {
  if (getWorldSize() < 1)
    return emitOpError("world_size must be at least 1, not ") << getWorldSize();
  if (getComputeDtype() != "f32" && getComputeDtype() != "bf16")
    return emitOpError("compute_dtype must be \"f32\" or \"bf16\", not \"")
           << getComputeDtype() << "\"";
  if (getArenaSize() < 0)
    return emitOpError("arena_size must not be negative");
  BufferOp loss;
  llvm::StringSet<> params;
  for (Operation &op : getBody().front()) {
    if (!isa<ExecDialect>(op.getDialect()))
      return op.emitOpError("cannot appear in an exec.program");
    auto buffer = dyn_cast<BufferOp>(op);
    if (!buffer)
      continue;
    if (buffer.getKind() == BufferKind::Loss) {
      if (loss)
        return buffer.emitOpError("is a second loss buffer; '")
               << loss.getName() << "' is the loss";
      loss = buffer;
    }
    if (auto param = buffer.getParam())
      if (!params.insert(*param).second)
        return buffer.emitOpError("parameter name '")
               << *param << "' is used twice";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// BufferOp
//===----------------------------------------------------------------------===//

LogicalResult BufferOp::verify() {
  auto type = cast<BufferType>(getType());
  auto where = [&]() { return emitOpError("'") << getName() << "': "; };
  if (getSize() != type.getSizeInBytes())
    return where() << "size " << getSize() << " bytes does not match " << type
                   << " (" << type.getSizeInBytes() << " bytes)";
  if (getOffset() < 0 || getOffset() % 4 != 0)
    return where() << "offset " << getOffset()
                   << " must be a non-negative multiple of 4";
  if (auto program = (*this)->getParentOfType<ProgramOp>())
    if (getOffset() + getSize() > program.getArenaSize())
      return where() << "bytes [" << getOffset() << ", "
                     << getOffset() + getSize() << ") lie outside the arena of "
                     << program.getArenaSize() << " bytes";

  BufferKind kind = getKind();
  bool isInt = type.getElementType().isSignlessInteger(32);
  bool intKind =
      kind == BufferKind::InputTokens || kind == BufferKind::InputLabels;
  bool floatKind = kind == BufferKind::Parameter ||
                   kind == BufferKind::Gradient || kind == BufferKind::AdamM ||
                   kind == BufferKind::AdamV || kind == BufferKind::Loss;
  if (intKind && !isInt)
    return where() << stringifyBufferKind(kind) << " buffers must be i32";
  if (floatKind && isInt)
    return where() << stringifyBufferKind(kind) << " buffers must be f32";
  if (kind == BufferKind::Loss && !type.getShape().empty())
    return where() << "the loss must be a scalar";

  if (kind == BufferKind::Parameter) {
    if (!getParam() || getParam()->empty())
      return where() << "a parameter needs its name ('param')";
    if (!getInit())
      return where() << "a parameter needs an initializer ('init')";
    if (*getInit() != "normal" && *getInit() != "zeros" && *getInit() != "ones")
      return where() << "init must be \"normal\", \"zeros\" or \"ones\", not \""
                     << *getInit() << "\"";
    if (*getInit() == "normal" &&
        (!getInitStd() || getInitStd()->convertToFloat() < 0))
      return where() << "a normal initializer needs init_std >= 0";
  } else if (getParam() || getInit() || getInitStd()) {
    return where() << "only parameters have 'param', 'init' and 'init_std'";
  }

  bool isState = kind == BufferKind::AdamM || kind == BufferKind::AdamV;
  if (isState != static_cast<bool>(getStateOf()))
    return where() << (isState ? "optimizer state must name its parameter "
                                 "with 'of'"
                               : "only optimizer state names a parameter");
  if (isState) {
    auto owner = getStateOf().getDefiningOp<BufferOp>();
    if (!owner || owner.getKind() != BufferKind::Parameter)
      return where() << "optimizer state must belong to a parameter buffer";
    if (owner.getType() != getType())
      return where() << "has type " << getType() << " but its parameter has "
                     << owner.getType();
  }
  return success();
}

LogicalResult BufferOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (!getLayer())
    return success();
  if (!symbols.lookupNearestSymbolFrom<MoeLayerOp>(*this, getLayerAttr()))
    return emitOpError("names MoE layer ")
           << getLayerAttr() << ", which the program does not declare";
  return success();
}

//===----------------------------------------------------------------------===//
// ViewOp
//===----------------------------------------------------------------------===//

LogicalResult ViewOp::verify() {
  auto from = cast<BufferType>(getSource().getType());
  auto to = cast<BufferType>(getType());
  if (from.getElementType() != to.getElementType() ||
      from.getNumElements() != to.getNumElements())
    return emitOpError("cannot view ")
           << from << " as " << to
           << ": element type and element count must agree";
  if (getSource().getDefiningOp<ViewOp>())
    return emitOpError("views a view; view the underlying buffer instead");
  return success();
}

//===----------------------------------------------------------------------===//
// MoeLayerOp
//===----------------------------------------------------------------------===//

LogicalResult MoeLayerOp::verify() {
  auto layer = [&]() {
    return emitOpError("layer '") << getSymName() << "': ";
  };
  if (getNumExperts() < 1 || getTopK() < 1 || getTopK() > getNumExperts())
    return layer() << "needs num_experts >= 1 and top_k in [1, num_experts]";
  if (getDModel() < 1 || getFfnHidden() < 1 || getCapacity() < 0)
    return layer() << "d_model and ffn_hidden must be positive and capacity "
                      "non-negative";
  if (getActivation() != "gelu" && getActivation() != "relu")
    return layer() << "activation must be \"gelu\" or \"relu\"";
  // The bounds of runtime/plan (kMaxWorldSize, kMaxSlotsPerDevice), which
  // the program file must respect.
  constexpr int64_t kMaxWorldSize = 4096, kMaxSlotsPerDevice = 4096;
  if (getWorldSize() < 1 || getSlotsPerDevice() < 1 ||
      getWorldSize() > kMaxWorldSize ||
      getSlotsPerDevice() > kMaxSlotsPerDevice)
    return layer() << "world_size and slots_per_device must be in [1, 4096]";
  if (auto program = (*this)->getParentOfType<ProgramOp>())
    if (program.getWorldSize() != getWorldSize())
      return layer() << "placement is for world size " << getWorldSize()
                     << " but the program runs on " << program.getWorldSize();
  ArrayAttr replicas = getReplicas();
  if (static_cast<int64_t>(replicas.size()) != getNumExperts())
    return layer() << "the placement lists " << replicas.size()
                   << " experts but the layer has " << getNumExperts();
  SmallVector<int64_t> held(getWorldSize(), 0);
  for (auto [e, attr] : llvm::enumerate(replicas)) {
    ArrayRef<int64_t> devices = cast<DenseI64ArrayAttr>(attr).asArrayRef();
    if (devices.empty())
      return layer() << "expert " << e << " has no replica";
    for (auto [i, d] : llvm::enumerate(devices)) {
      if (d < 0 || d >= getWorldSize())
        return layer() << "expert " << e << " has a replica on device " << d
                       << ", outside [0, " << getWorldSize() << ")";
      if (llvm::is_contained(devices.take_front(i), d))
        return layer() << "expert " << e << " lists device " << d << " twice";
      if (++held[d] > getSlotsPerDevice())
        return layer() << "device " << d << " holds more than "
                       << getSlotsPerDevice() << " experts";
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// KernelOp and CollectiveOp
//===----------------------------------------------------------------------===//

template <typename InstructionOp>
static SmallVector<NamedAttribute> opAttrsOf(InstructionOp op) {
  SmallVector<NamedAttribute> attrs;
  for (NamedAttribute attr : op->getAttrs())
    if (attr.getName() != op.getOpcodeAttrName() &&
        attr.getName() != op.getLayerAttrName() &&
        attr.getName() != op.getOperandSegmentSizesAttrName())
      attrs.push_back(attr);
  return attrs;
}

SmallVector<NamedAttribute> KernelOp::getOpAttrs() { return opAttrsOf(*this); }
SmallVector<NamedAttribute> CollectiveOp::getOpAttrs() {
  return opAttrsOf(*this);
}

static bool attrHasKind(Attribute attr, const AttrSpec &spec) {
  switch (spec.kind) {
  case AttrKind::I64:
    return isa<IntegerAttr>(attr) &&
           cast<IntegerAttr>(attr).getType().isSignlessInteger(64);
  case AttrKind::F32:
    return isa<FloatAttr>(attr) && cast<FloatAttr>(attr).getType().isF32();
  case AttrKind::Bool:
    return isa<BoolAttr>(attr);
  case AttrKind::Str: {
    auto s = dyn_cast<StringAttr>(attr);
    if (!s)
      return false;
    SmallVector<StringRef> allowed;
    StringRef(spec.allowed).split(allowed, '|');
    return llvm::is_contained(allowed, s.getValue());
  }
  case AttrKind::I64Array:
    return isa<DenseI64ArrayAttr>(attr);
  }
  return false;
}

static StringRef kindName(const AttrSpec &spec) {
  switch (spec.kind) {
  case AttrKind::I64:
    return "an i64 integer";
  case AttrKind::F32:
    return "an f32 float";
  case AttrKind::Bool:
    return "a bool";
  case AttrKind::Str:
    return spec.allowed;
  case AttrKind::I64Array:
    return "an array<i64: ...>";
  }
  return "";
}

static LogicalResult checkOperands(Operation *op, StringRef role,
                                   ValueRange values, StringRef types,
                                   bool variadic, Type firstInputElement) {
  for (auto [i, value] : llvm::enumerate(values)) {
    char want = variadic ? 'f' : types[i];
    Type element = cast<BufferType>(value.getType()).getElementType();
    if (want == '*') {
      if (firstInputElement && element != firstInputElement)
        return op->emitOpError() << role << " " << i << " must have element "
                                 << "type " << firstInputElement;
      continue;
    }
    bool wantInt = want == 'i';
    if (element.isSignlessInteger(32) != wantInt)
      return op->emitOpError() << role << " " << i << " must be a buffer of "
                               << (wantInt ? "i32" : "f32");
  }
  return success();
}

template <typename InstructionOp>
static LogicalResult verifyInstruction(InstructionOp op, bool collective) {
  const OpcodeSpec &spec = getOpcodeSpec(op.getOpcode());
  StringRef name = stringifyOpcode(op.getOpcode());
  if (spec.isCollective != collective)
    return op.emitOpError("'") << name << "' is "
                               << (collective ? "not a collective; use "
                                                "exec.kernel"
                                              : "a collective; use "
                                                "exec.collective");
  unsigned numIns = op.getInputs().size(), numOuts = op.getOutputs().size();
  if (numIns < spec.minInputs || numIns > spec.maxInputs) {
    auto diag = op.emitOpError("'") << name << "' takes ";
    if (spec.minInputs == spec.maxInputs)
      diag << spec.minInputs;
    else
      diag << spec.minInputs << " to " << spec.maxInputs;
    return diag << " inputs, not " << numIns;
  }
  unsigned wantOuts = spec.variadicSameCount ? numIns : spec.outputTypes.size();
  if (numOuts != wantOuts)
    return op.emitOpError("'")
           << name << "' produces " << wantOuts << " outputs, not " << numOuts;
  Type first =
      numIns ? cast<BufferType>(op.getInputs()[0].getType()).getElementType()
             : Type();
  if (failed(checkOperands(op, "input", op.getInputs(), spec.inputTypes,
                           spec.variadicSameCount, Type())) ||
      failed(checkOperands(op, "output", op.getOutputs(), spec.outputTypes,
                           spec.variadicSameCount, first)))
    return failure();
  if (spec.variadicSameCount)
    for (auto [in, out] : llvm::zip(op.getInputs(), op.getOutputs()))
      if (in.getType() != out.getType())
        return op.emitOpError("'")
               << name << "' outputs must have the types of its inputs";
  if (spec.needsLayer != static_cast<bool>(op.getLayer()))
    return op.emitOpError("'") << name << "' "
                               << (spec.needsLayer ? "must name its MoE layer"
                                                   : "takes no MoE layer");

  llvm::StringSet<> seen;
  for (NamedAttribute attr : op.getOpAttrs()) {
    const AttrSpec *attrSpec =
        llvm::find_if(spec.attrs, [&](const AttrSpec &s) {
          return s.name == attr.getName();
        });
    if (attrSpec == spec.attrs.end())
      return op.emitOpError("'") << name << "' has no attribute '"
                                 << attr.getName().getValue() << "'";
    if (!attrHasKind(attr.getValue(), *attrSpec))
      return op.emitOpError("attribute '")
             << attrSpec->name << "' of '" << name << "' must be "
             << kindName(*attrSpec);
    seen.insert(attr.getName().getValue());
  }
  for (const AttrSpec &attrSpec : spec.attrs)
    if (!seen.contains(attrSpec.name))
      return op.emitOpError("'")
             << name << "' needs attribute '" << attrSpec.name << "'";
  return success();
}

template <typename InstructionOp>
static LogicalResult verifyLayerUse(InstructionOp op,
                                    SymbolTableCollection &symbols) {
  if (!op.getLayer())
    return success();
  if (!symbols.lookupNearestSymbolFrom<MoeLayerOp>(op, op.getLayerAttr()))
    return op.emitOpError("names MoE layer ")
           << op.getLayerAttr() << ", which the program does not declare";
  return success();
}

LogicalResult KernelOp::verify() { return verifyInstruction(*this, false); }
LogicalResult CollectiveOp::verify() { return verifyInstruction(*this, true); }
LogicalResult KernelOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyLayerUse(*this, symbols);
}
LogicalResult CollectiveOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return verifyLayerUse(*this, symbols);
}

#define GET_OP_CLASSES
#include "flexmoe/Dialect/Exec/ExecOps.cpp.inc"
