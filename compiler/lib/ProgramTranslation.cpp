//===- ProgramTranslation.cpp - exec → .fmoe program ----------------------===//
//
// Walks the one exec.program of a module and writes the flatbuffer of
// runtime/schema/program.fbs: buffers (exec.buffer and exec.view, in order,
// ids by position), the MoE layer table with the plan library's slot table
// and replica groups, the instructions with their attribute tables, the
// in-place updates and the AdamW defaults. docs/program-format.md.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Compiler/ProgramTranslation.h"
#include "flexmoe/Dialect/Exec/ExecOps.h"

#include "runtime/plan/Placement.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/program/Program.h"
#include "runtime/schema/program_generated.h"

#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace flexmoe;
using exec::Opcode;

// The exec enums and the schema's share names and values.
#define FLEXMOE_CHECK_OPCODE(name)                                             \
  static_assert(static_cast<int>(Opcode::name) ==                              \
                    static_cast<int>(fb::OpCode::name),                        \
                "exec and program.fbs disagree on opcode " #name);
FLEXMOE_CHECK_OPCODE(Embedding)
FLEXMOE_CHECK_OPCODE(EmbeddingGrad)
FLEXMOE_CHECK_OPCODE(Linear)
FLEXMOE_CHECK_OPCODE(LinearGrad)
FLEXMOE_CHECK_OPCODE(Matmul)
FLEXMOE_CHECK_OPCODE(LayerNorm)
FLEXMOE_CHECK_OPCODE(LayerNormGrad)
FLEXMOE_CHECK_OPCODE(Gelu)
FLEXMOE_CHECK_OPCODE(GeluGrad)
FLEXMOE_CHECK_OPCODE(Softmax)
FLEXMOE_CHECK_OPCODE(SoftmaxGrad)
FLEXMOE_CHECK_OPCODE(Attention)
FLEXMOE_CHECK_OPCODE(AttentionGrad)
FLEXMOE_CHECK_OPCODE(Add)
FLEXMOE_CHECK_OPCODE(Mul)
FLEXMOE_CHECK_OPCODE(Scale)
FLEXMOE_CHECK_OPCODE(ReduceSum)
FLEXMOE_CHECK_OPCODE(Reshape)
FLEXMOE_CHECK_OPCODE(Transpose)
FLEXMOE_CHECK_OPCODE(Roll)
FLEXMOE_CHECK_OPCODE(Dropout)
FLEXMOE_CHECK_OPCODE(CrossEntropy)
FLEXMOE_CHECK_OPCODE(CrossEntropyGrad)
FLEXMOE_CHECK_OPCODE(Fill)
FLEXMOE_CHECK_OPCODE(AdamW)
FLEXMOE_CHECK_OPCODE(Gate)
FLEXMOE_CHECK_OPCODE(GateGrad)
FLEXMOE_CHECK_OPCODE(AuxLoss)
FLEXMOE_CHECK_OPCODE(AuxLossGrad)
FLEXMOE_CHECK_OPCODE(Dispatch)
FLEXMOE_CHECK_OPCODE(DispatchGrad)
FLEXMOE_CHECK_OPCODE(Experts)
FLEXMOE_CHECK_OPCODE(ExpertsGrad)
FLEXMOE_CHECK_OPCODE(Combine)
FLEXMOE_CHECK_OPCODE(CombineGrad)
FLEXMOE_CHECK_OPCODE(AllToAllDispatch)
FLEXMOE_CHECK_OPCODE(AllToAllCombine)
FLEXMOE_CHECK_OPCODE(ReplicaGradSync)
FLEXMOE_CHECK_OPCODE(AllReduceMean)
FLEXMOE_CHECK_OPCODE(AllReduceSum)
FLEXMOE_CHECK_OPCODE(Copy)
#undef FLEXMOE_CHECK_OPCODE
static_assert(static_cast<int>(exec::getMaxEnumValForOpcode()) ==
                  static_cast<int>(fb::OpCode::MAX),
              "exec and program.fbs have different opcode counts");

#define FLEXMOE_CHECK_KIND(name)                                               \
  static_assert(static_cast<int>(exec::BufferKind::name) ==                    \
                    static_cast<int>(fb::BufferKind::name),                    \
                "exec and program.fbs disagree on buffer kind " #name);
FLEXMOE_CHECK_KIND(Parameter)
FLEXMOE_CHECK_KIND(Gradient)
FLEXMOE_CHECK_KIND(AdamM)
FLEXMOE_CHECK_KIND(AdamV)
FLEXMOE_CHECK_KIND(InputTokens)
FLEXMOE_CHECK_KIND(InputLabels)
FLEXMOE_CHECK_KIND(Activation)
FLEXMOE_CHECK_KIND(Loss)
FLEXMOE_CHECK_KIND(Scratch)
#undef FLEXMOE_CHECK_KIND

namespace {

class Translator {
public:
  explicit Translator(exec::ProgramOp program) : program(program) {}
  LogicalResult translate(std::vector<uint8_t> &bytes);

private:
  exec::ProgramOp program;
  flatbuffers::FlatBufferBuilder b;
  DenseMap<Value, uint32_t> bufferIds;
  DenseMap<Value, exec::BufferOp> roots;
  llvm::StringMap<int32_t> layerIndex;

  int32_t layerOf(FlatSymbolRefAttr layer) const {
    return layer ? layerIndex.lookup(layer.getValue()) : -1;
  }
  LogicalResult
  addLayers(std::vector<flatbuffers::Offset<fb::MoeLayer>> &layers);
  flatbuffers::Offset<fb::Buffer> addBuffer(Operation *op, uint32_t id);
  FailureOr<std::pair<fb::OpAttrs, flatbuffers::Offset<void>>>
  addAttrs(Operation *op, Opcode opcode);
};

std::vector<int64_t> shapeOf(Type type) {
  ArrayRef<int64_t> shape = cast<exec::BufferType>(type).getShape();
  return std::vector<int64_t>(shape.begin(), shape.end());
}

fb::ElementType elementTypeOf(Type type) {
  return cast<exec::BufferType>(type).getElementType().isF32()
             ? fb::ElementType::F32
             : fb::ElementType::I32;
}

} // namespace

LogicalResult
Translator::addLayers(std::vector<flatbuffers::Offset<fb::MoeLayer>> &layers) {
  for (auto layer : program.getBody().getOps<exec::MoeLayerOp>()) {
    plan::Placement placement;
    placement.worldSize = layer.getWorldSize();
    placement.slotsPerDevice = layer.getSlotsPerDevice();
    for (Attribute devices : layer.getReplicas()) {
      ArrayRef<int64_t> list = cast<DenseI64ArrayAttr>(devices).asArrayRef();
      placement.replicas.emplace_back(list.begin(), list.end());
    }
    Status valid = plan::validatePlacement(placement, layer.getSymName());
    if (!valid)
      return layer.emitError(valid.message());

    std::vector<flatbuffers::Offset<fb::ExpertReplicas>> replicas;
    for (const std::vector<int64_t> &devices : placement.replicas) {
      std::vector<int32_t> ids(devices.begin(), devices.end());
      replicas.push_back(fb::CreateExpertReplicasDirect(b, &ids));
    }
    auto fbPlacement = fb::CreatePlacementDirect(
        b, placement.worldSize, placement.slotsPerDevice, &replicas);

    plan::SlotTable table = plan::buildSlotTable(placement);
    std::vector<int32_t> slots;
    for (const std::vector<int64_t> &device : table.slotExpert)
      slots.insert(slots.end(), device.begin(), device.end());
    std::vector<flatbuffers::Offset<fb::ReplicaGroup>> groups;
    for (const plan::ReplicaGroup &group :
         plan::buildReplicaGroups(placement)) {
      std::vector<int32_t> devices, groupSlots;
      for (const plan::ReplicaMember &member : group.members) {
        devices.push_back(static_cast<int32_t>(member.device));
        groupSlots.push_back(static_cast<int32_t>(member.slot));
      }
      groups.push_back(fb::CreateReplicaGroupDirect(
          b, static_cast<int32_t>(group.expert), &devices, &groupSlots));
    }
    fb::Activation activation = layer.getActivation() == "relu"
                                    ? fb::Activation::Relu
                                    : fb::Activation::Gelu;
    layerIndex[layer.getSymName()] = static_cast<int32_t>(layers.size());
    layers.push_back(fb::CreateMoeLayerDirect(
        b, layer.getSymName().str().c_str(), layer.getNumExperts(),
        layer.getTopK(), layer.getDModel(), layer.getFfnHidden(),
        layer.getCapacity(), activation, fbPlacement, &slots, &groups));
  }
  return success();
}

flatbuffers::Offset<fb::Buffer> Translator::addBuffer(Operation *op,
                                                      uint32_t id) {
  Value result = op->getResult(0);
  std::vector<int64_t> shape = shapeOf(result.getType());
  if (auto view = dyn_cast<exec::ViewOp>(op)) {
    exec::BufferOp root = roots.lookup(view.getSource());
    roots[result] = root;
    return fb::CreateBufferDirect(
        b, id, view.getName().str().c_str(),
        static_cast<fb::BufferKind>(root.getKind()),
        elementTypeOf(result.getType()), &shape, root.getOffset(),
        root.getSize(), fb::InitKind::None, 0, nullptr, -1,
        layerOf(root.getLayerAttr()),
        static_cast<int32_t>(bufferIds.lookup(view.getSource())));
  }
  auto buffer = cast<exec::BufferOp>(op);
  roots[result] = buffer;
  fb::InitKind init = fb::InitKind::None;
  if (auto kind = buffer.getInit())
    init = llvm::StringSwitch<fb::InitKind>(*kind)
               .Case("normal", fb::InitKind::Normal)
               .Case("zeros", fb::InitKind::Zeros)
               .Case("ones", fb::InitKind::Ones)
               .Default(fb::InitKind::None);
  float std = buffer.getInitStd() ? buffer.getInitStd()->convertToFloat() : 0;
  std::string param = buffer.getParam() ? buffer.getParam()->str() : "";
  int32_t stateOf =
      buffer.getStateOf()
          ? static_cast<int32_t>(bufferIds.lookup(buffer.getStateOf()))
          : -1;
  return fb::CreateBufferDirect(b, id, buffer.getName().str().c_str(),
                                static_cast<fb::BufferKind>(buffer.getKind()),
                                elementTypeOf(result.getType()), &shape,
                                buffer.getOffset(), buffer.getSize(), init, std,
                                param.empty() ? nullptr : param.c_str(),
                                stateOf, layerOf(buffer.getLayerAttr()), -1);
}

FailureOr<std::pair<fb::OpAttrs, flatbuffers::Offset<void>>>
Translator::addAttrs(Operation *op, Opcode opcode) {
  // The exec verifier guarantees every attribute is present with its kind.
  auto i64 = [&](StringRef name) {
    return cast<IntegerAttr>(op->getAttr(name)).getInt();
  };
  auto f32 = [&](StringRef name) {
    return static_cast<float>(
        cast<FloatAttr>(op->getAttr(name)).getValueAsDouble());
  };
  auto boolean = [&](StringRef name) {
    return cast<BoolAttr>(op->getAttr(name)).getValue();
  };
  auto array = [&](StringRef name) {
    ArrayRef<int64_t> values =
        cast<DenseI64ArrayAttr>(op->getAttr(name)).asArrayRef();
    return b.CreateVector(values.data(), values.size());
  };
  auto str = [&](StringRef name) {
    return cast<StringAttr>(op->getAttr(name)).getValue();
  };
  auto activation = [&]() {
    return str("activation") == "relu" ? fb::Activation::Relu
                                       : fb::Activation::Gelu;
  };
  using R = std::pair<fb::OpAttrs, flatbuffers::Offset<void>>;
  switch (opcode) {
  case Opcode::EmbeddingGrad:
    return R{fb::OpAttrs::EmbeddingGradAttrs,
             fb::CreateEmbeddingGradAttrs(b, i64("vocab_size")).Union()};
  case Opcode::Matmul:
    return R{fb::OpAttrs::MatmulAttrs,
             fb::CreateMatmulAttrs(b, boolean("transpose_lhs"),
                                   boolean("transpose_rhs"))
                 .Union()};
  case Opcode::LayerNorm:
  case Opcode::LayerNormGrad:
    return R{fb::OpAttrs::LayerNormAttrs,
             fb::CreateLayerNormAttrs(b, f32("epsilon")).Union()};
  case Opcode::Gelu:
  case Opcode::GeluGrad:
    return R{fb::OpAttrs::GeluAttrs,
             fb::CreateGeluAttrs(b, str("approximate") == "none"
                                        ? fb::GeluApproximation::None
                                        : fb::GeluApproximation::Tanh)
                 .Union()};
  case Opcode::Softmax:
  case Opcode::SoftmaxGrad:
    return R{fb::OpAttrs::SoftmaxAttrs,
             fb::CreateSoftmaxAttrs(b, i64("axis")).Union()};
  case Opcode::Attention:
  case Opcode::AttentionGrad:
    return R{fb::OpAttrs::AttentionAttrs,
             fb::CreateAttentionAttrs(b, i64("num_heads"), boolean("causal"),
                                      i64("window"))
                 .Union()};
  case Opcode::Scale:
    return R{fb::OpAttrs::ScaleAttrs,
             fb::CreateScaleAttrs(b, f32("factor")).Union()};
  case Opcode::ReduceSum: {
    auto dims = array("dims");
    return R{fb::OpAttrs::ReduceSumAttrs,
             fb::CreateReduceSumAttrs(b, dims, boolean("keep_dims")).Union()};
  }
  case Opcode::Transpose: {
    auto permutation = array("permutation");
    return R{fb::OpAttrs::TransposeAttrs,
             fb::CreateTransposeAttrs(b, permutation).Union()};
  }
  case Opcode::Roll: {
    auto shifts = array("shifts");
    auto dims = array("dims");
    return R{fb::OpAttrs::RollAttrs,
             fb::CreateRollAttrs(b, shifts, dims).Union()};
  }
  case Opcode::Dropout:
    return R{fb::OpAttrs::DropoutAttrs,
             fb::CreateDropoutAttrs(b, f32("rate"), i64("seed")).Union()};
  case Opcode::CrossEntropy:
  case Opcode::CrossEntropyGrad:
    return R{fb::OpAttrs::CrossEntropyAttrs,
             fb::CreateCrossEntropyAttrs(b, i64("ignore_index")).Union()};
  case Opcode::Fill:
    return R{fb::OpAttrs::FillAttrs,
             fb::CreateFillAttrs(b, f32("value")).Union()};
  case Opcode::AdamW:
    return R{fb::OpAttrs::AdamWAttrs,
             fb::CreateAdamWAttrs(b, f32("lr"), f32("beta1"), f32("beta2"),
                                  f32("epsilon"), f32("weight_decay"))
                 .Union()};
  case Opcode::Gate:
  case Opcode::GateGrad:
    return R{fb::OpAttrs::GateAttrs,
             fb::CreateGateAttrs(b, i64("top_k")).Union()};
  case Opcode::AuxLoss:
  case Opcode::AuxLossGrad:
    return R{fb::OpAttrs::AuxLossAttrs,
             fb::CreateAuxLossAttrs(b, f32("coef")).Union()};
  case Opcode::Dispatch:
    return R{fb::OpAttrs::DispatchAttrs,
             fb::CreateDispatchAttrs(b, i64("num_experts"), i64("capacity"))
                 .Union()};
  case Opcode::Experts:
  case Opcode::ExpertsGrad:
    return R{fb::OpAttrs::ExpertsAttrs,
             fb::CreateExpertsAttrs(b, activation(), i64("capacity")).Union()};
  default:
    if (!exec::getOpcodeSpec(opcode).attrs.empty())
      return op->emitError("program translation has no attribute table for '")
                 << exec::stringifyOpcode(opcode) << "'",
             failure();
    return R{fb::OpAttrs::NONE, 0};
  }
}

LogicalResult Translator::translate(std::vector<uint8_t> &bytes) {
  std::vector<flatbuffers::Offset<fb::MoeLayer>> layers;
  if (failed(addLayers(layers)))
    return failure();

  std::vector<flatbuffers::Offset<fb::Buffer>> buffers;
  std::vector<flatbuffers::Offset<fb::Instruction>> instructions;
  std::vector<flatbuffers::Offset<fb::InPlaceUpdate>> updates;
  int32_t loss = -1;
  for (Operation &op : program.getBody().front()) {
    if (isa<exec::BufferOp, exec::ViewOp>(op)) {
      uint32_t id = static_cast<uint32_t>(buffers.size());
      bufferIds[op.getResult(0)] = id;
      buffers.push_back(addBuffer(&op, id));
      if (auto buffer = dyn_cast<exec::BufferOp>(op);
          buffer && buffer.getKind() == exec::BufferKind::Loss)
        loss = static_cast<int32_t>(id);
      continue;
    }
    Opcode opcode;
    OperandRange inputs = op.getOperands(), outputs = op.getOperands();
    FlatSymbolRefAttr layer;
    if (auto kernel = dyn_cast<exec::KernelOp>(op)) {
      opcode = kernel.getOpcode();
      inputs = kernel.getInputs();
      outputs = kernel.getOutputs();
      layer = kernel.getLayerAttr();
    } else if (auto collective = dyn_cast<exec::CollectiveOp>(op)) {
      opcode = collective.getOpcode();
      inputs = collective.getInputs();
      outputs = collective.getOutputs();
      layer = collective.getLayerAttr();
    } else {
      continue; // exec.moe_layer, already in the layer table
    }
    std::vector<uint32_t> in, out;
    for (Value value : inputs)
      in.push_back(bufferIds.lookup(value));
    uint32_t index = static_cast<uint32_t>(instructions.size());
    for (Value value : outputs) {
      out.push_back(bufferIds.lookup(value));
      if (exec::BufferOp root = roots.lookup(value);
          root && (root.getKind() == exec::BufferKind::Parameter ||
                   root.getKind() == exec::BufferKind::AdamM ||
                   root.getKind() == exec::BufferKind::AdamV))
        updates.push_back(
            fb::CreateInPlaceUpdate(b, bufferIds.lookup(value), index));
    }
    auto attrs = addAttrs(&op, opcode);
    if (failed(attrs))
      return failure();
    instructions.push_back(fb::CreateInstructionDirect(
        b, static_cast<fb::OpCode>(opcode), &in, &out, layerOf(layer),
        attrs->first, attrs->second));
  }
  if (loss < 0)
    return program.emitError("program '")
           << program.getSymName()
           << "' has no loss buffer; the runtime needs one";

  auto optimizer = fb::CreateOptimizerDefaults(
      b, program.getLr() ? program.getLr()->convertToFloat() : 1e-3f,
      program.getBeta1() ? program.getBeta1()->convertToFloat() : 0.9f,
      program.getBeta2() ? program.getBeta2()->convertToFloat() : 0.999f,
      program.getEpsilon() ? program.getEpsilon()->convertToFloat() : 1e-8f,
      program.getWeightDecay() ? program.getWeightDecay()->convertToFloat()
                               : 0.01f);
  auto root = fb::CreateProgramDirect(
      b, program::kFormatVersionMajor, program::kFormatVersionMinor,
      program.getSymName().str().c_str(),
      static_cast<int32_t>(program.getWorldSize()),
      program.getComputeDtype() == "bf16" ? fb::ComputeType::BF16
                                          : fb::ComputeType::F32,
      static_cast<uint64_t>(program.getArenaSize()), &buffers, &layers,
      &instructions, loss, &updates, optimizer);
  fb::FinishProgramBuffer(b, root);
  bytes.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  return success();
}

LogicalResult flexmoe::translateExecToProgram(ModuleOp module,
                                              llvm::raw_ostream &os) {
  SmallVector<exec::ProgramOp> programs(module.getOps<exec::ProgramOp>());
  if (programs.size() != 1)
    return module.emitError("program translation needs exactly one "
                            "exec.program in the module, found ")
           << programs.size() << " (run lower-to-exec first)";
  exec::ProgramOp program = programs.front();
  if (failed(mlir::verify(program)))
    return failure();

  std::vector<uint8_t> bytes;
  if (failed(Translator(program).translate(bytes)))
    return failure();
  // The runtime's own verifier is the last word: never write a file it
  // would reject.
  StatusOr<const fb::Program *> verified = program::verifyProgram(bytes);
  if (!verified)
    return program.emitError("the program does not pass the runtime's "
                             "verifier: ")
           << verified.status().message();
  os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
  return success();
}
